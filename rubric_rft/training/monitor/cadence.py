"""When the monitor evaluates: every `monitor_steps` steps, or, with `cadence.adaptive`, only when the training
run's own gold-free signals say something changed.

A held-out evaluation samples and grades the policy: at a fixed cadence it can cost a third of a small run. The
training logs already carry cheap signals of what the policy is doing, at no cost: the mean training reward and
the mean completion length (TRL's `reward` and `completions/mean_length`). An adaptive monitor looks at them at
every `monitor_steps`-th step and evaluates only when, over the last `window` logged steps, the reward moved by
`reward_move` or the length by a share `length_move` since the last evaluation, or when `max_gap` steps passed
without one. A policy that learns steadily moves those signals and is evaluated often; a plateau is evaluated
rarely. Logs of a step reach `log_history` after its `on_step_end`, so the signals read the steps before.

The training reward can stay flat while the policy runs off (a reward hacked by a few tokens, a held-out gold
falling): with `drift_move`, the monitor also estimates at every check how far the policy moved from the start
(`rubric_rft.training.monitor.drift`: KL(start ‖ policy) on a few of the start's answers, one forward pass) and
evaluates when that moved by `drift_move` of its value at the last evaluation (at least `drift_move` nats).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

REWARD_KEY, LENGTH_KEY = "reward", "completions/mean_length"


class Cadence(BaseModel):
    model_config = ConfigDict(extra="forbid")

    adaptive: bool = Field(default=False, description="Evaluate when the training signals move, not every time.")
    window: int = Field(default=4, ge=1, description="Logged steps the training signals are averaged over.")
    reward_move: float = Field(default=0.1, gt=0, description="A move of the mean training reward that calls "
                                                               "for an evaluation.")
    length_move: float = Field(default=0.25, gt=0, description="A relative move of the mean completion length that "
                                                                "calls for an evaluation.")
    max_gap: int = Field(default=8, ge=1, description="Steps without an evaluation after which one is due anyway.")
    drift_move: float | None = Field(default=None, gt=0, description="A relative move of the policy's KL from the "
                                     "start (at least this many nats) that calls for an evaluation; none: not read.")
    probe_size: int = Field(default=4, ge=1, description="The start's answers the KL from the start is read on.")


def training_signals(log_history: Sequence[Mapping[str, Any]], window: int, first: bool = False
                     ) -> dict[str, float | None]:
    """Mean training reward and completion length over the last (`first`: the first) `window` logged steps; None
    where nothing is logged."""
    logged = [entry for entry in log_history if REWARD_KEY in entry]
    logged = logged[:window] if first else logged[-window:]
    signals = {}
    for name, key in (("train_reward", REWARD_KEY), ("train_length", LENGTH_KEY)):
        values = [entry[key] for entry in logged if entry.get(key) is not None]
        signals[name] = statistics.fmean(values) if values else None
    return signals


def checks(step: int, monitor_steps: int) -> bool:
    """Whether the monitor looks at `step` at all (and an adaptive one reads its signals)."""
    return step % monitor_steps == 0


def due(step: int, monitor_steps: int, cadence: Cadence, last: Mapping[str, Any] | None,
        log_history: Sequence[Mapping[str, Any]], drift: float | None = None) -> str | None:
    """Why the monitor evaluates at `step`, or None. `last` is the last evaluation's record, with the training
    signals it was taken at; the evaluation at step 0 has none, so the first logged steps stand in for them.
    `drift` is the policy's KL from the start now (None: not measured)."""
    if not checks(step, monitor_steps):
        return None
    if not cadence.adaptive or last is None:
        return "cadence"
    if step - last["step"] >= cadence.max_gap:
        return "max_gap"
    if cadence.drift_move is not None and _moved(drift, last.get("drift"),
                                                 cadence.drift_move * max(last.get("drift") or 0.0, 1.0)):
        return "policy_moved"
    now = training_signals(log_history, cadence.window)
    then = last if last.get("train_reward") is not None else training_signals(log_history, cadence.window, first=True)
    if _moved(now["train_reward"], then.get("train_reward"), cadence.reward_move):
        return "reward_moved"
    then_length = then.get("train_length")
    if then_length and _moved(now["train_length"], then_length, cadence.length_move * then_length):
        return "length_moved"
    return None


def _moved(now: float | None, then: float | None, by: float) -> bool:
    return now is not None and then is not None and abs(now - then) >= by
