"""Reading proposer answers: the JSON object in the text, validated against the rubric types.

JSON is found as tolerantly as judge verdicts are (code fences, prose around it, single quotes, trailing
commas: `rubric_rft.judges.parsing`); its content is checked strictly. Anything that does not validate raises
`MalformedAnswer` with the field at fault, which is what makes `OpenAIJudge.ask` ask again.
"""

from __future__ import annotations

from pydantic import TypeAdapter, ValidationError

from rubric_rft.config_values import describe_validation_error
from rubric_rft.llm.answers import MalformedAnswer, find_json_object
from rubric_rft.rubricgen.edits import EditError, ProposedCriterion, Refinement, apply_edits
from rubric_rft.rubrics.format import Rubric

_criteria_adapter: TypeAdapter[list[ProposedCriterion]] = TypeAdapter(list[ProposedCriterion])


def parse_generated(text: str, rubric_id: str, prompt_id: str | None = None) -> Rubric:
    """A new rubric (version 1) from `{"criteria": [{"id", "text", "weight"}, ...]}`."""
    answer = find_json_object(text, {"criteria"})
    try:
        proposed = _criteria_adapter.validate_python(answer.get("criteria"))
        return Rubric(id=rubric_id, prompt_id=prompt_id, criteria=[c.to_criterion() for c in proposed])
    except ValidationError as exc:
        raise MalformedAnswer(f"criteria: {describe_validation_error(exc)}") from None


def parse_refinement(text: str, rubric: Rubric) -> Refinement:
    """`{"reason", "edits"}`, checked to apply to `rubric` (so an edit that cannot apply is asked again)."""
    answer = find_json_object(text, {"edits"})
    try:
        refinement = Refinement.model_validate(answer)
        apply_edits(rubric, refinement.edits)
    except ValidationError as exc:
        raise MalformedAnswer(describe_validation_error(exc)) from None
    except EditError as exc:
        raise MalformedAnswer(str(exc)) from None
    return refinement
