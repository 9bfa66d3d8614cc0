"""Tolerant parsing of judge answers into verdicts, strict about which criterion a verdict belongs to.

Judges wrap JSON in code fences and prose, use single quotes, trailing commas, Python literals, and many
spellings of yes and no. All of that is accepted. What is never guessed: a verdict only counts for a label
whose key matches it exactly (ignoring case and whitespace), and a missing label, an unrecognised value,
conflicting duplicate keys, truncated JSON or no JSON at all raise `MalformedAnswer`, so the caller re-asks.
Pairwise answers are read the same way: a winner (A, B or tie) is only ever one the answer states.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from rubric_rft.llm.answers import JsonPairs, MalformedAnswer, find_json_pairs, normalise_key

Winner = Literal["A", "B", "tie"]

TRUE_WORDS = frozenset({"yes", "y", "true", "1", "met", "satisfied", "pass", "passed"})
FALSE_WORDS = frozenset({"no", "n", "false", "0", "not met", "unmet", "unsatisfied", "not satisfied", "fail", "failed"})

# Keys under which a nested object (`{"c1": {"verdict": "yes", "reason": ...}}`) or a single-criterion
# answer (`{"satisfied": "yes"}`) carries its verdict.
VERDICT_KEYS = ("satisfied", "verdict", "answer", "met", "result", "decision", "value")

# Pairwise answers: `{"winner": "A"}` (or another winner key), or a bare "A", "Response B", "tie", "[[A]]".
WINNER_KEYS = ("winner", "better", "preferred", "preference", "choice", "verdict", "answer", "result", "decision")
TIE_WORDS = frozenset({"tie", "a tie", "tied", "draw", "equal", "neither", "both"})
_WINNER_WORD = re.compile(r"(?:(?:response|answer|assistant|output)\s*)?([ab])")

_LEADING_WORD = re.compile(r"[\W_]*([A-Za-z]+)")



def parse_batched(text: str, labels: list[str]) -> dict[str, bool]:
    """Verdicts for exactly `labels` from an answer like `{"c1": "yes", "c2": "no"}`."""
    wanted = _wanted(labels)
    return _verdicts(find_json_pairs(text, set(wanted)), wanted, labels, "")


def parse_grouped(text: str, response_labels: list[str], criterion_labels: list[str]) -> dict[str, dict[str, bool]]:
    """Verdicts for every response label and, inside each, every criterion label, from a listwise answer like
    `{"r1": {"c1": "yes", "c2": "no"}, "r2": {...}}`. A response without its object, or missing a criterion, is
    malformed: a partial answer is asked again, never half-used."""
    responses = _wanted(response_labels)
    criteria = _wanted(criterion_labels)
    found: dict[str, JsonPairs] = {}
    for key, value in find_json_pairs(text, set(responses)):
        label = responses.get(normalise_key(key))
        if label is None:
            continue
        if not isinstance(value, JsonPairs):
            raise MalformedAnswer(f"{label} is not an object of criterion verdicts: {_short(value)}")
        if label in found:
            raise MalformedAnswer(f"duplicate key {label!r}")
        found[label] = value
    missing = [label for label in response_labels if label not in found]
    if missing:
        raise MalformedAnswer(f"no verdicts for {', '.join(missing)}")
    return {label: _verdicts(found[label], criteria, criterion_labels, f"{label} ") for label in response_labels}


def _wanted(labels: list[str]) -> dict[str, str]:
    wanted = {normalise_key(label): label for label in labels}
    if len(wanted) != len(labels):
        raise ValueError(f"labels must differ after case/whitespace normalisation, got {labels}")
    return wanted


def _verdicts(pairs: JsonPairs, wanted: dict[str, str], labels: list[str], where: str) -> dict[str, bool]:
    """The verdict under each label among `pairs`; `where` prefixes error messages (the response, if nested)."""
    verdicts: dict[str, bool] = {}
    for key, value in pairs:
        label = wanted.get(normalise_key(key))
        if label is None:
            continue
        satisfied = _as_bool(value, where + label)
        if verdicts.get(label, satisfied) != satisfied:
            raise MalformedAnswer(f"conflicting duplicate keys for {where}{label!r}")
        verdicts[label] = satisfied
    missing = [where + label for label in labels if label not in verdicts]
    if missing:
        raise MalformedAnswer(f"no verdict for {', '.join(missing)}")
    return verdicts


def parse_single(text: str) -> bool:
    """The verdict of a one-criterion answer: `{"satisfied": "yes"}` (or another verdict key), or a bare word."""
    word = _normalise_word(text.strip().strip("`"))
    if word in TRUE_WORDS or word in FALSE_WORDS:
        return word in TRUE_WORDS
    return _verdict_of_object(find_json_pairs(text, set(VERDICT_KEYS)), "the answer")


def parse_yes_no(text: str) -> bool:
    """The verdict of an answer asked for one word, Yes or No: its first word, so "No, it does not ..." is a no.
    Small judges rarely stop after the word; anything but yes or no first is malformed."""
    match = _LEADING_WORD.match(text)
    word = match.group(1).lower() if match else ""
    if word not in ("yes", "no"):
        raise MalformedAnswer(f"the answer does not start with yes or no: {_short(text)}")
    return word == "yes"


def parse_pairwise(text: str) -> Winner:
    """The winner of a pairwise answer: `{"winner": "A"|"B"|"tie"}` (or another winner key), or a bare word.

    Letters may be lowercase or named ("Response A"); several winner keys must agree.
    """
    bare = _as_winner(text.strip().strip("`[]()*"))
    if bare is not None:
        return bare
    winners: set[Winner] = set()
    for key, value in find_json_pairs(text, set(WINNER_KEYS)):
        if normalise_key(key) not in WINNER_KEYS:
            continue
        winner = _as_winner(value) if isinstance(value, str) else None
        if winner is None:
            raise MalformedAnswer(f"unrecognised winner: {_short(value)}")
        winners.add(winner)
    if len(winners) > 1:
        raise MalformedAnswer(f"conflicting winners: {', '.join(sorted(winners))}")
    return winners.pop()


def _as_winner(value: str) -> Winner | None:
    word = _normalise_word(value).strip("[]()*`")
    if word in TIE_WORDS:
        return "tie"
    letter = _WINNER_WORD.fullmatch(word)
    return "A" if letter and letter.group(1) == "a" else "B" if letter else None


def _as_bool(value: Any, label: str) -> bool:
    """A label's value: a yes/no word, a boolean, 0/1, or an object carrying one of those under a verdict key."""
    if isinstance(value, JsonPairs):
        return _verdict_of_object(value, label)
    return _scalar_as_bool(value, label)


def _verdict_of_object(pairs: JsonPairs, label: str) -> bool:
    """The verdict an object carries under a verdict key; several verdict keys must agree."""
    found = {_scalar_as_bool(value, label) for key, value in pairs if normalise_key(key) in VERDICT_KEYS}
    if not found:
        raise MalformedAnswer(f"no verdict key in the object for {label}")
    if len(found) > 1:
        raise MalformedAnswer(f"conflicting verdicts for {label}")
    return found.pop()


def _scalar_as_bool(value: Any, label: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = _normalise_word(value)
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
    raise MalformedAnswer(f"unrecognised verdict for {label}: {_short(value)}")


def _normalise_word(value: str) -> str:
    return " ".join(value.lower().replace("_", " ").split()).strip(" .!\"'")


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, JsonPairs) else "an object"
    return text if len(text) <= 40 else text[:37] + "..."
