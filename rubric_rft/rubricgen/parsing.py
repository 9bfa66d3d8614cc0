"""Reading proposer answers: the JSON object in the text, validated against the rubric types.

JSON is found as tolerantly as judge verdicts are (code fences, prose around it, single quotes, trailing
commas: `rubric_rft.judges.parsing`); its content is checked strictly. Anything that does not validate raises
`MalformedVerdict` with the field at fault, which is what makes `OpenAIJudge.ask` ask again.
"""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter, ValidationError

from rubric_rft.judges.parsing import MalformedVerdict, _find_object, _Pairs
from rubric_rft.rubric import Rubric, describe_validation_error
from rubric_rft.rubricgen.edits import EditError, ProposedCriterion, Refinement, apply_edits

_criteria_adapter: TypeAdapter[list[ProposedCriterion]] = TypeAdapter(list[ProposedCriterion])


def find_json_object(text: str, wanted_keys: set[str]) -> dict[str, Any]:
    """The first JSON object in `text` with one of `wanted_keys`, as plain dicts and lists."""
    return _plain(_find_object(text, wanted_keys))


def _plain(value: Any) -> Any:
    if isinstance(value, _Pairs):
        keys = [key for key, _ in value]
        repeated = sorted({key for key in keys if keys.count(key) > 1})
        if repeated:
            raise MalformedVerdict(f"duplicate keys {repeated}")
        return {key: _plain(item) for key, item in value}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def parse_generated(text: str, rubric_id: str, prompt_id: str | None = None) -> Rubric:
    """A new rubric (version 1) from `{"criteria": [{"id", "text", "weight"}, ...]}`."""
    answer = find_json_object(text, {"criteria"})
    try:
        proposed = _criteria_adapter.validate_python(answer.get("criteria"))
        return Rubric(id=rubric_id, prompt_id=prompt_id, criteria=[c.to_criterion() for c in proposed])
    except ValidationError as exc:
        raise MalformedVerdict(f"criteria: {describe_validation_error(exc)}") from None


def parse_refinement(text: str, rubric: Rubric) -> Refinement:
    """`{"reason", "edits"}`, checked to apply to `rubric` (so an edit that cannot apply is asked again)."""
    answer = find_json_object(text, {"edits"})
    try:
        refinement = Refinement.model_validate(answer)
        apply_edits(rubric, refinement.edits)
    except ValidationError as exc:
        raise MalformedVerdict(describe_validation_error(exc)) from None
    except EditError as exc:
        raise MalformedVerdict(str(exc)) from None
    return refinement
