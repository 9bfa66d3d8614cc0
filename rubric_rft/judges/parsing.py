"""Tolerant parsing of judge answers into verdicts, strict about which criterion a verdict belongs to.

Judges wrap JSON in code fences and prose, use single quotes, trailing commas, Python literals, and many
spellings of yes and no. All of that is accepted. What is never guessed: a verdict only counts for a label
whose key matches it exactly (ignoring case and whitespace), and a missing label, an unrecognised value,
conflicting duplicate keys, truncated JSON or no JSON at all raise `MalformedVerdict`, so the caller re-asks.
Pairwise answers are read the same way: a winner (A, B or tie) is only ever one the answer states.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from rubric_rft.llm.client import MalformedAnswer

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

_BARE_WORDS = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*(?:[ \t]+[A-Za-z_][A-Za-z0-9_\-]*)*")
_LEADING_WORD = re.compile(r"[\W_]*([A-Za-z]+)")
_PYTHON_LITERALS = {"True": "true", "False": "false", "None": "null"}

_TRUNCATED = "truncated JSON object"
_INVALID = "invalid JSON object"
_NO_EXPECTED_KEY = "none of the expected keys in the JSON object"


class MalformedVerdict(MalformedAnswer):
    """The judge's answer could not be read as a verdict; the message says why, briefly."""


class _Pairs(list):
    """A decoded JSON object kept as its (key, value) pairs, so duplicate keys stay visible."""


def parse_batched(text: str, labels: list[str]) -> dict[str, bool]:
    """Verdicts for exactly `labels` from an answer like `{"c1": "yes", "c2": "no"}`."""
    wanted = {_normalise_key(label): label for label in labels}
    if len(wanted) != len(labels):
        raise ValueError(f"labels must differ after case/whitespace normalisation, got {labels}")
    pairs = _find_object(text, set(wanted))
    verdicts: dict[str, bool] = {}
    for key, value in pairs:
        label = wanted.get(_normalise_key(key))
        if label is None:
            continue
        satisfied = _as_bool(value, label)
        if verdicts.get(label, satisfied) != satisfied:
            raise MalformedVerdict(f"conflicting duplicate keys for {label!r}")
        verdicts[label] = satisfied
    missing = [label for label in labels if label not in verdicts]
    if missing:
        raise MalformedVerdict(f"no verdict for {', '.join(missing)}")
    return verdicts


def parse_single(text: str) -> bool:
    """The verdict of a one-criterion answer: `{"satisfied": "yes"}` (or another verdict key), or a bare word."""
    word = _normalise_word(text.strip().strip("`"))
    if word in TRUE_WORDS or word in FALSE_WORDS:
        return word in TRUE_WORDS
    return _verdict_of_object(_find_object(text, set(VERDICT_KEYS)), "the answer")


def parse_yes_no(text: str) -> bool:
    """The verdict of an answer asked for one word, Yes or No: its first word, so "No, it does not ..." is a no.
    Small judges rarely stop after the word; anything but yes or no first is malformed."""
    match = _LEADING_WORD.match(text)
    word = match.group(1).lower() if match else ""
    if word not in ("yes", "no"):
        raise MalformedVerdict(f"the answer does not start with yes or no: {_short(text)}")
    return word == "yes"


def parse_pairwise(text: str) -> Winner:
    """The winner of a pairwise answer: `{"winner": "A"|"B"|"tie"}` (or another winner key), or a bare word.

    Letters may be lowercase or named ("Response A"); several winner keys must agree.
    """
    bare = _as_winner(text.strip().strip("`[]()*"))
    if bare is not None:
        return bare
    winners: set[Winner] = set()
    for key, value in _find_object(text, set(WINNER_KEYS)):
        if _normalise_key(key) not in WINNER_KEYS:
            continue
        winner = _as_winner(value) if isinstance(value, str) else None
        if winner is None:
            raise MalformedVerdict(f"unrecognised winner: {_short(value)}")
        winners.add(winner)
    if len(winners) > 1:
        raise MalformedVerdict(f"conflicting winners: {', '.join(sorted(winners))}")
    return winners.pop()


def _as_winner(value: str) -> Winner | None:
    word = _normalise_word(value).strip("[]()*`")
    if word in TIE_WORDS:
        return "tie"
    letter = _WINNER_WORD.fullmatch(word)
    return "A" if letter and letter.group(1) == "a" else "B" if letter else None


def _find_object(text: str, wanted_keys: set[str]) -> _Pairs:
    """The first JSON object in `text` that has one of `wanted_keys` as a key.

    Objects without a wanted key (an example in the prose, say) are skipped, and so is a brace that never
    closes; when nothing qualifies, the error names the most telling problem seen.
    """
    seen: set[str] = set()
    start = text.find("{")
    while start != -1:
        end = _object_end(text, start)
        if end is None:
            seen.add(_TRUNCATED)
            start = text.find("{", start + 1)
            continue
        try:
            pairs = _decode(text[start:end])
        except ValueError:
            seen.add(_INVALID)
        else:
            if any(_normalise_key(key) in wanted_keys for key, _ in pairs):
                return pairs
            seen.add(_NO_EXPECTED_KEY)
        start = text.find("{", end)
    for problem in (_TRUNCATED, _INVALID, _NO_EXPECTED_KEY):
        if problem in seen:
            raise MalformedVerdict(problem)
    raise MalformedVerdict("no JSON object in the answer")


def _object_end(text: str, start: int) -> int | None:
    """Index just past the object opening at `start` (quotes of both kinds respected), or None if truncated."""
    depth = 0
    quote: str | None = None
    index = start
    while index < len(text):
        char = text[index]
        if quote:
            if char == "\\":
                index += 1
            elif char == quote:
                quote = None
        elif char in "\"'":
            quote = char
        elif char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
            if depth == 0:
                return index + 1
        index += 1
    return None


def _decode(snippet: str) -> _Pairs:
    """Decode the object `snippet` (from `{` to its `}`): as strict JSON, or else after repairing near-JSON."""
    try:
        return json.loads(snippet, object_pairs_hook=_Pairs)
    except (ValueError, RecursionError):
        repaired = _repair(snippet)
    try:
        return json.loads(repaired, object_pairs_hook=_Pairs)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _repair(snippet: str) -> str:
    """Rewrite single-quoted strings, bare words, Python literals and trailing commas into strict JSON."""
    out: list[str] = []
    index = 0
    while index < len(snippet):
        char = snippet[index]
        if char in "\"'":
            end = _string_end(snippet, index)
            body = snippet[index + 1 : end - 1]
            if char == "'":
                body = re.sub(r"\\(.)", r"\1", body, flags=re.S)
                out.append(json.dumps(body))
            else:
                out.append(snippet[index:end])
            index = end
        elif char in "}]":
            _drop_trailing_comma(out)
            out.append(char)
            index += 1
        elif match := _BARE_WORDS.match(snippet, index):
            word = match.group()
            out.append(_PYTHON_LITERALS.get(word, word if word in ("true", "false", "null") else json.dumps(word)))
            index = match.end()
        else:
            out.append(char)
            index += 1
    return "".join(out)


def _drop_trailing_comma(out: list[str]) -> None:
    """Remove a comma (and keep the whitespace after it) at the end of the pieces written so far."""
    spaces = []
    while out and out[-1].isspace():
        spaces.append(out.pop())
    if out and out[-1] == ",":
        out.pop()
    out.extend(reversed(spaces))


def _string_end(text: str, start: int) -> int:
    """Index just past the string literal opening at `start` (or the end of text if it never closes)."""
    index = start + 1
    while index < len(text):
        if text[index] == "\\":
            index += 2
            continue
        if text[index] == text[start]:
            return index + 1
        index += 1
    return len(text)


def _as_bool(value: Any, label: str) -> bool:
    """A label's value: a yes/no word, a boolean, 0/1, or an object carrying one of those under a verdict key."""
    if isinstance(value, _Pairs):
        return _verdict_of_object(value, label)
    return _scalar_as_bool(value, label)


def _verdict_of_object(pairs: _Pairs, label: str) -> bool:
    """The verdict an object carries under a verdict key; several verdict keys must agree."""
    found = {_scalar_as_bool(value, label) for key, value in pairs if _normalise_key(key) in VERDICT_KEYS}
    if not found:
        raise MalformedVerdict(f"no verdict key in the object for {label}")
    if len(found) > 1:
        raise MalformedVerdict(f"conflicting verdicts for {label}")
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
    raise MalformedVerdict(f"unrecognised verdict for {label}: {_short(value)}")


def _normalise_key(key: str) -> str:
    return "".join(key.split()).lower()


def _normalise_word(value: str) -> str:
    return " ".join(value.lower().replace("_", " ").split()).strip(" .!\"'")


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, _Pairs) else "an object"
    return text if len(text) <= 40 else text[:37] + "..."
