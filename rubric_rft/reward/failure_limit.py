"""Stop training on a judge that keeps failing.

A completion the judge could not grade gets a None reward, which TRL masks: right for an occasional failure, but
a judge that fails every request (a wrong model name, a bad key, an in-process judge out of memory) would leave
training running for hours on nothing. `FailureLimit` watches the last `window` completions sent to the judge and
raises `JudgeFailingError`, carrying the judge's own error text, once more than `max_rate * window` of them failed.

Failures count against the whole window, not the share of the completions seen so far, so that a few early
failures cannot stop a run, while a judge that fails everything stops after `max_rate * window` completions:
within a step or two at the usual batch sizes.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable

DEFAULT_MAX_FAILURE_RATE = 0.5
DEFAULT_FAILURE_WINDOW = 32


class JudgeFailingError(RuntimeError):
    """Too many recent completions could not be graded: the judge, not the policy, needs fixing."""


class FailureLimit:
    """The outcomes of the last `window` completions sent to the judge, checked as each batch is added."""

    def __init__(self, max_rate: float = DEFAULT_MAX_FAILURE_RATE, window: int = DEFAULT_FAILURE_WINDOW) -> None:
        if not 0 <= max_rate < 1:
            raise ValueError(f"max_rate must be in [0, 1) (a rate of 1 could never be exceeded), got {max_rate}")
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        self.max_rate = max_rate
        self.window = window
        self._errors: deque[str | None] = deque(maxlen=window)

    def record(self, errors: Iterable[str | None]) -> None:
        """Add a batch's outcomes (a completion's error text, or None when it was graded); raise
        `JudgeFailingError` when the window then holds more failures than the limit allows."""
        self._errors.extend(errors)
        failed = [error for error in self._errors if error is not None]
        if len(failed) > self.max_rate * self.window:
            raise JudgeFailingError(self._describe(failed))

    def _describe(self, failed: list[str]) -> str:
        """What failed, the setting that stopped the run, and the judge's most common error, which names the cause."""
        ((error, count),) = Counter(failed).most_common(1)
        return (
            f"{len(failed)} of the last {len(self._errors)} completions sent to the judge failed (the limit, "
            f"reward.max_failure_rate {self.max_rate:g} of reward.failure_window {self.window}, allows "
            f"{int(self.max_rate * self.window)}): every reward would be masked and training would go on on nothing. "
            "Check the judge config (model name, base URL, API key, memory of an in-process judge); "
            "`reward.max_failure_rate: null` turns this check off. "
            f"Most common judge error ({count} of {len(failed)}): {error}"
        )
