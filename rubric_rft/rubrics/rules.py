"""Deterministic grading of `rule` criteria: checks that run in-process, so they never cost a judge call.

Every function here is pure and cheap; it runs once per rule criterion per completion during training.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Iterable
from typing import Any

from rubric_rft.rubrics.format import (
    CharCountCheck,
    ContainsCheck,
    Criterion,
    NoRepetitionCheck,
    NotContainsCheck,
    RegexCheck,
    RuleCheck,
    WordCountCheck,
)

# A sentence ends at a run of final punctuation or at a line break (lists and headings have no full stops).
_SENTENCE_END = re.compile(r"[.!?]+|\n")


def grade_rules(criteria: Iterable[Criterion], response: str) -> dict[str, bool]:
    """Criterion id -> whether `response` satisfies it, for `rule` criteria only.

    An `llm` criterion here is a caller's mistake (it would get a made-up verdict), so it raises.
    """
    verdicts = {}
    for criterion in criteria:
        if criterion.kind != "rule" or criterion.check is None:
            raise ValueError(
                f"criterion {criterion.id!r} has kind {criterion.kind!r}; grade_rules grades only 'rule' criteria"
            )
        verdicts[criterion.id] = check_rule(criterion.check, response)
    return verdicts


def check_rule(check: RuleCheck, response: str) -> bool:
    """Whether `response` satisfies `check`."""
    return _CHECKERS[check.type](check, response)


def _regex(check: RegexCheck, response: str) -> bool:
    flags = re.IGNORECASE if check.ignore_case else 0
    return re.search(check.pattern, response, flags) is not None


def _contains(check: ContainsCheck, response: str) -> bool:
    return _count_found(check.any_of, response, check.case_sensitive) >= check.min_matches


def _not_contains(check: NotContainsCheck, response: str) -> bool:
    return _count_found(check.none_of, response, check.case_sensitive) == 0


def _count_found(phrases: list[str], response: str, case_sensitive: bool) -> int:
    """How many distinct phrases occur in `response` (phrases equal up to case count once when case-blind)."""
    if not case_sensitive:
        response = response.casefold()
        phrases = [phrase.casefold() for phrase in phrases]
    return sum(phrase in response for phrase in set(phrases))


def _word_count(check: WordCountCheck, response: str) -> bool:
    return _within(len(response.split()), check.min, check.max)


def _char_count(check: CharCountCheck, response: str) -> bool:
    return _within(len(response.strip()), check.min, check.max)


def _within(value: int, low: int | None, high: int | None) -> bool:
    return (low is None or value >= low) and (high is None or value <= high)


def _no_repetition(check: NoRepetitionCheck, response: str) -> bool:
    """No sentence said twice, and few repeated word n-grams: the two ways a degenerate policy loops.

    Sentences and words are compared in lower case; words also without surrounding punctuation, so that
    "it." at the end of one sentence repeats "it" in the middle of another.
    """
    sentences = [" ".join(part.lower().split()) for part in _SENTENCE_END.split(response)]
    sentences = [sentence for sentence in sentences if sentence]
    if len(set(sentences)) < len(sentences):
        return False
    words = [word.strip(string.punctuation) for word in response.lower().split()]
    words = [word for word in words if word]
    if len(words) < check.ngram:
        return True
    seen: set[tuple[str, ...]] = set()
    repeats = 0
    for start in range(len(words) - check.ngram + 1):
        ngram = tuple(words[start : start + check.ngram])
        repeats += ngram in seen
        seen.add(ngram)
    return repeats / (len(words) - check.ngram + 1) <= check.max_repeat_fraction


_CHECKERS: dict[str, Callable[[Any, str], bool]] = {
    "regex": _regex,
    "contains": _contains,
    "not_contains": _not_contains,
    "word_count": _word_count,
    "char_count": _char_count,
    "no_repetition": _no_repetition,
}
