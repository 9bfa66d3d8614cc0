"""Reading the JSON object a model was asked for out of the text it answered.

Models wrap their JSON in prose, code fences and Python literals, repeat keys, or stop mid-object. Every
parser of model answers (judge verdicts, pairwise winners, proposer edits) finds its object here, and says why
there is none with `MalformedAnswer`, which the chat client answers by asking again.
"""

from __future__ import annotations

import json
import re
from typing import Any


class MalformedAnswer(ValueError):
    """An answer that does not parse; the message says why, briefly. The chat client asks the question again."""


_BARE_WORDS = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*(?:[ \t]+[A-Za-z_][A-Za-z0-9_\-]*)*")
_PYTHON_LITERALS = {"True": "true", "False": "false", "None": "null"}
_TRUNCATED = "truncated JSON object"
_INVALID = "invalid JSON object"
_NO_EXPECTED_KEY = "none of the expected keys in the JSON object"


class JsonPairs(list):
    """A decoded JSON object kept as its (key, value) pairs, so duplicate keys stay visible."""


def find_json_pairs(text: str, wanted_keys: set[str]) -> JsonPairs:
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
            if any(normalise_key(key) in wanted_keys for key, _ in pairs):
                return pairs
            seen.add(_NO_EXPECTED_KEY)
        start = text.find("{", end)
    for problem in (_TRUNCATED, _INVALID, _NO_EXPECTED_KEY):
        if problem in seen:
            raise MalformedAnswer(problem)
    raise MalformedAnswer("no JSON object in the answer")


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


def _decode(snippet: str) -> JsonPairs:
    """Decode the object `snippet` (from `{` to its `}`): as strict JSON, or else after repairing near-JSON."""
    try:
        return json.loads(snippet, object_pairs_hook=JsonPairs)
    except (ValueError, RecursionError):
        repaired = _repair(snippet)
    try:
        return json.loads(repaired, object_pairs_hook=JsonPairs)
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


def normalise_key(key: str) -> str:
    """A key compared without case or whitespace: `"C 1"` and `"c1"` are one key."""
    return "".join(key.split()).lower()


def find_json_object(text: str, wanted_keys: set[str]) -> dict[str, Any]:
    """The first JSON object in `text` with one of `wanted_keys`, as plain dicts and lists."""
    return _plain(find_json_pairs(text, wanted_keys))


def _plain(value: Any) -> Any:
    if isinstance(value, JsonPairs):
        keys = [key for key, _ in value]
        repeated = sorted({key for key in keys if keys.count(key) > 1})
        if repeated:
            raise MalformedAnswer(f"duplicate keys {repeated}")
        return {key: _plain(item) for key, item in value}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value
