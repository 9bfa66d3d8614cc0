"""Rubric types: what validation rejects (and how it says so), scoring, files, and dataset cells."""

import json
import math
import re

import pytest
from pydantic import ValidationError

from rubric_rft.config_values import describe_validation_error
from rubric_rft.rubrics.format import Criterion, Rubric, RubricFileError, load_rubrics, save_rubrics


def rubric_dict(*criteria: dict, **fields) -> dict:
    return {"id": "tea", "criteria": list(criteria), **fields}


def llm(id_: str, weight: float, text: str = "Says how long to steep the tea.") -> dict:
    return {"id": id_, "text": text, "weight": weight}


def rule(id_: str, weight: float, check: dict) -> dict:
    return {"id": id_, "text": "A checkable property.", "weight": weight, "kind": "rule", "check": check}


def problems(value: dict) -> str:
    with pytest.raises(ValidationError) as error:
        Rubric.model_validate(value)
    return describe_validation_error(error.value)


TEA = Rubric.model_validate(
    rubric_dict(
        llm("steep", 3),
        rule("water", 1, {"type": "contains", "any_of": ["water"]}),
        llm("rude", -2, "Is rude to the user."),
    )
)


# --- validation -------------------------------------------------------------------------------------------


def test_unknown_criterion_kind_is_named_with_its_field():
    message = problems(rubric_dict(llm("steep", 3) | {"kind": "vibes"}))
    assert message.startswith("criteria.0.kind:") and "'llm' or 'rule'" in message


def test_empty_criteria_are_rejected():
    assert problems(rubric_dict()).startswith("criteria: List should have at least 1 item")


@pytest.mark.parametrize("weight", [0, 0.0, math.nan, math.inf, -math.inf])
def test_zero_and_non_finite_weights_are_rejected(weight):
    message = problems(rubric_dict(llm("steep", 3), llm("other", weight)))
    assert message.startswith("criteria.1.weight:") and "finite non-zero" in message


def test_a_rubric_of_pitfalls_only_is_rejected():
    assert "at least one criterion with a positive weight" in problems(rubric_dict(llm("rude", -1), llm("bad", -2)))


def test_duplicate_criterion_ids_are_named():
    message = problems(rubric_dict(llm("steep", 3), llm("water", 1), llm("steep", 2)))
    assert "criterion ids must be unique, repeated: ['steep']" in message


def test_rule_without_check_and_check_without_rule_are_rejected():
    assert "kind 'rule' but no 'check'" in problems(rubric_dict(llm("steep", 3) | {"kind": "rule"}))
    with_check = llm("steep", 3) | {"check": {"type": "contains", "any_of": ["minutes"]}}
    assert "set kind to 'rule'" in problems(rubric_dict(with_check))


def test_bad_regex_names_the_pattern():
    message = problems(rubric_dict(rule("finishes", 1, {"type": "regex", "pattern": "[.!?"})))
    assert message.startswith("criteria.0.check.regex.pattern:") and "invalid regular expression '[.!?'" in message


def test_unknown_fields_are_rejected_not_ignored():
    message = problems(rubric_dict(llm("steep", 3) | {"wieght": 2}))
    assert message.startswith("criteria.0.wieght: Extra inputs are not permitted")


def test_word_count_bounds_must_make_sense():
    assert "give at least one of min and max" in problems(rubric_dict(rule("len", 1, {"type": "word_count"})))
    message = problems(rubric_dict(rule("len", 1, {"type": "word_count", "min": 50, "max": 20})))
    assert "min (50) is greater than max (20)" in message


def test_several_problems_are_all_reported():
    message = problems(rubric_dict(llm("steep", 0), llm("water", 1) | {"kind": "vibes"}))
    assert "criteria.0.weight:" in message and "criteria.1.kind:" in message


# --- scoring ------------------------------------------------------------------------------------------------


def test_normalized_score_divides_by_positive_weight():
    assert TEA.total_positive_weight == 4
    assert TEA.score({"steep": True, "water": True, "rude": False}) == 1.0
    assert TEA.score({"steep": True, "water": False, "rude": False}) == 0.75
    assert TEA.score({"steep": True, "water": True, "rude": True}) == pytest.approx(0.5)


def test_normalized_score_is_clipped_at_zero():
    assert TEA.score({"steep": False, "water": False, "rude": True}) == 0.0


def test_raw_score_keeps_the_weighted_sum_with_pitfalls():
    assert TEA.score({"steep": False, "water": False, "rude": True}, normalize=False) == -2
    assert TEA.score({"steep": True, "water": True, "rude": True}, normalize=False) == 2


def test_degrees_of_satisfaction_weight_their_criteria():
    assert TEA.score({"steep": 0.5, "water": 1.0, "rude": 0.25}, normalize=False) == pytest.approx(2.0)


def test_missing_verdict_raises_naming_the_criteria():
    with pytest.raises(KeyError, match=r"no verdict for criteria \['water', 'rude'\]"):
        TEA.score({"steep": True})


def test_llm_and_rule_criteria_are_split_by_kind():
    assert [c.id for c in TEA.llm_criteria] == ["steep", "rude"]
    assert [c.id for c in TEA.rule_criteria] == ["water"]


# --- files --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["rubrics.json", "rubrics.jsonl"])
def test_save_and_load_round_trip(tmp_path, name):
    other = Rubric.model_validate(rubric_dict(llm("a", 1), id="coffee", prompt_id="p2", version=2, parent="coffee@1"))
    path = tmp_path / "nested" / name
    save_rubrics([TEA, other], path)
    assert load_rubrics(path) == [TEA, other]
    if name.endswith(".json"):
        assert isinstance(json.loads(path.read_text()), list)
    else:
        assert len(path.read_text().splitlines()) == 2


def test_a_json_file_may_hold_one_rubric(tmp_path):
    path = tmp_path / "one.json"
    path.write_text(TEA.model_dump_json())
    assert load_rubrics(path) == [TEA]


def test_load_error_names_file_line_and_field(tmp_path):
    path = tmp_path / "rubrics.jsonl"
    bad = rubric_dict(llm("steep", 3), llm("water", 0))
    path.write_text(TEA.model_dump_json() + "\n\n" + json.dumps(bad) + "\n")
    with pytest.raises(RubricFileError, match=rf"^{re.escape(str(path))}:3: criteria\.1\.weight: "):
        load_rubrics(path)


def test_load_error_for_invalid_json_and_missing_file(tmp_path):
    path = tmp_path / "rubrics.jsonl"
    path.write_text(TEA.model_dump_json() + "\n{not json\n")
    with pytest.raises(RubricFileError, match=rf"^{re.escape(str(path))}:2: invalid JSON"):
        load_rubrics(path)
    with pytest.raises(RubricFileError, match="no such file"):
        load_rubrics(tmp_path / "absent.jsonl")


# --- dataset cells --------------------------------------------------------------------------------------------


def test_from_value_accepts_json_text_and_rubrics():
    assert Rubric.from_value(TEA.model_dump_json()) == TEA
    assert Rubric.from_value(TEA) is TEA


def test_from_value_drops_the_nulls_arrow_fills_in():
    struct_row = {
        "id": "tea",
        "prompt_id": None,
        "parent": None,
        "criteria": [
            {"id": "steep", "text": "Says how long.", "weight": 3.0, "kind": "llm", "check": None},
            {
                "id": "water",
                "text": "Mentions water.",
                "weight": 1.0,
                "kind": "rule",
                "check": {"type": "contains", "any_of": ["water"], "pattern": None, "none_of": None, "min": None},
            },
        ],
    }
    rubric = Rubric.from_value(struct_row)
    assert rubric.prompt_id is None and rubric.criteria[0].check is None
    assert rubric.criteria[1].check.any_of == ["water"]


def test_from_value_still_validates():
    with pytest.raises(ValidationError, match="weight"):
        Rubric.from_value({"id": "tea", "criteria": [{"id": "a", "text": "x", "weight": 0}]})


def test_contains_checks_reject_empty_phrases():
    for check in ({"type": "contains", "any_of": ["ok", " "]}, {"type": "not_contains", "none_of": [""]}):
        with pytest.raises(ValidationError, match="phrases must not be empty"):
            Criterion(id="c", text="t", weight=1, kind="rule", check=check)


def test_non_utf8_jsonl_is_a_file_error(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes('{"id": "caf\xe9"}\n'.encode("latin-1"))
    with pytest.raises(RubricFileError, match="not UTF-8 text"):
        load_rubrics(path)
