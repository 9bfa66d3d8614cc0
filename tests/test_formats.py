"""Format import: each known format detected from content and converted with the right weights, ids and prompt."""

import hashlib
import json
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from rubric_rft.rubrics.format import Rubric, RubricFileError
from rubric_rft.rubrics.imports import (
    FORMATS,
    FormatError,
    detect_format,
    import_records,
    prompt_key,
    read_records,
    to_dataset_row,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "formats"


def records(name: str) -> list[dict]:
    return [json.loads(line) for line in (FIXTURES / f"{name}.jsonl").read_text().splitlines()]


def rows(name: str, **kwargs) -> list[dict]:
    return [row for _, row in read_records(FIXTURES / f"{name}.jsonl", **kwargs)]


def weights(row: dict) -> list[float]:
    return [c["weight"] for c in row["rubric"]["criteria"]]


def ids(row: dict) -> list[str]:
    return [c["id"] for c in row["rubric"]["criteria"]]


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


@pytest.mark.parametrize("name", FORMATS)
def test_every_fixture_record_is_detected_as_its_format(name):
    assert [detect_format(record) for record in records(name)] == [name] * len(records(name))


@pytest.mark.parametrize("name", FORMATS)
def test_every_imported_rubric_validates_and_keys_match(name):
    for row in rows(name):
        rubric = Rubric.model_validate(row["rubric"])
        assert row["prompt_id"] in (rubric.prompt_id, rubric.id)


def test_paper_records_get_numbered_ids_and_a_prompt_hash():
    first, second = rows("paper")
    source = records("paper")[0]
    assert first["prompt"] == user(source["prompt"])
    assert ids(first) == ["c1", "c2", "c3", "c4"] and weights(first) == [3, 2, 3, 1]
    assert [c["text"] for c in first["rubric"]["criteria"]] == [r["criterion"] for r in source["rubrics"]]
    expected = hashlib.sha1(json.dumps(user(source["prompt"]), ensure_ascii=False, sort_keys=True).encode())
    assert first["prompt_id"] == expected.hexdigest()[:12]
    assert first["rubric"]["id"] == first["rubric"]["prompt_id"] == first["prompt_id"]
    assert second["prompt_id"] != first["prompt_id"]
    assert all(c["kind"] == "llm" for c in first["rubric"]["criteria"]) and "reference" not in first


def test_prompt_hash_is_the_same_for_a_string_and_its_message_list():
    source = records("paper")[0]
    as_messages = source | {"prompt": user(source["prompt"])}
    assert to_dataset_row(as_messages)["prompt_id"] == to_dataset_row(source)["prompt_id"]


def test_paper_generator_keeps_its_ids_and_local_ids():
    first, second = rows("paper_generator")
    assert first["prompt_id"] == first["rubric"]["id"] == "gen-0001"
    assert ids(first) == ["c1", "c2", "c3"] and weights(first) == [3, 2, 2]
    assert ids(second) == ["rice_days", "rice_cool"]


def test_healthbench_keeps_signed_points_the_conversation_and_the_reference():
    first, second = rows("healthbench")
    assert first["prompt_id"] == "1f548d5b-cd00-49a0-b327-283a2e00debd"
    assert weights(first) == [7, 9, -10] and ids(first) == ["c1", "c2", "c3"]
    assert first["rubric"]["criteria"][2]["text"] == "Recommends giving aspirin to the child."
    assert first["reference"].startswith("A fever of 38.5 C in a playful two-year-old")
    assert [m["role"] for m in second["prompt"]] == ["user", "assistant", "user"]
    assert "reference" not in second
    assert weights(second) == [8, 6, -4]


def test_rar_pitfalls_keep_their_sign_when_phrased_as_mentions():
    first, second = rows("rar")
    assert weights(first) == [5, 4, 2, -1] and weights(second) == [5, 3, -2]
    assert first["prompt"] == user(records("rar")[0]["question"])
    assert second["prompt"] == user("Why does ice float on liquid water?")
    assert first["rubric"]["criteria"][0]["text"] == (
        "Essential Criteria: Identifies acute myocardial infarction as the most likely diagnosis."
    )
    assert first["reference"].startswith("Acute myocardial infarction.")


def test_rar_pitfalls_become_rewards_when_phrased_as_avoids():
    record = {
        "question": "I have a cold. Should I take antibiotics?",
        "rubric": [
            {"title": "Viral Cause", "description": "Essential Criteria: Explains that colds are viral.", "weight": 5},
            {
                "title": "No Antibiotics",
                "description": "Pitfall Criteria: Avoids recommending antibiotics.",
                "weight": -2,
            },
        ],
    }
    assert weights(to_dataset_row(record, pitfall_phrasing="avoids")) == [5, 2]
    assert weights(to_dataset_row(record, pitfall_phrasing="mentions")) == [5, -2]
    assert [weights(row) for row in rows("rar", pitfall_phrasing="avoids")] == [[5, 4, 2, 1], [5, 3, 2]]


def test_rubrichub_reads_message_and_question_prompts():
    first, second = rows("rubrichub")
    assert first["prompt"] == records("rubrichub")[0]["prompt"]
    assert weights(first) == [8, 6, -5]
    assert second["prompt"] == user("What is the difference between a virus and a bacterium?")
    assert weights(second) == [7, 7, -8]


def test_our_rubric_records_have_no_prompt_and_keep_everything():
    first, second = rows("rubric")
    assert "prompt" not in first
    assert first["prompt_id"] == "boil-egg" and second["prompt_id"] == "sleep-better"
    assert first["rubric"] == Rubric.model_validate(records("rubric")[0]).model_dump(mode="json", exclude_none=True)
    assert first["rubric"]["criteria"][1]["check"] == {"type": "word_count", "min": 20, "max": 80}


def test_our_dataset_rows_pass_through_with_string_prompts_as_messages():
    first, second = rows("dataset")
    assert first["reference"].startswith("Fill the kettle halfway")
    assert second["prompt"] == user("Why are the leaves on my pothos turning yellow?")
    assert second["prompt_id"] == "houseplant-yellow"
    assert ids(first) == ["vinegar_or_citric", "rinse", "no_bleach"] and weights(first) == [3, 2, -3]


def test_dataset_rubric_may_be_json_text_with_arrow_nulls():
    record = records("dataset")[1]
    rubric = record.pop("rubric") | {"prompt_id": None, "version": None}
    rubric["criteria"][0]["check"] = None
    rubric["criteria"][2]["check"] |= {"any_of": None, "min": None, "ngram": None}
    row = to_dataset_row(record | {"rubric": json.dumps(rubric)})
    assert row["prompt_id"] == "houseplant-yellow"
    assert "check" not in row["rubric"]["criteria"][0] and row["rubric"]["version"] == 1
    assert row["rubric"]["criteria"][2]["check"] == {"type": "regex", "pattern": "[.!?]\\s*$", "ignore_case": True}


def test_dataset_rows_without_prompt_id_take_the_rubrics_then_the_prompt_hash():
    record = records("dataset")[0]
    del record["prompt_id"]
    assert to_dataset_row(record)["prompt_id"] == "descale-kettle", "the rubric's prompt_id"
    del record["rubric"]["prompt_id"]
    assert to_dataset_row(record)["prompt_id"] == prompt_key(record["prompt"]), "not the rubric's id, which repeats"


def test_prompt_key_hashes_the_messages_whatever_their_form():
    text = "Why are the leaves on my pothos turning yellow?"
    expected = hashlib.sha1(json.dumps(user(text), ensure_ascii=False, sort_keys=True).encode()).hexdigest()[:12]
    assert prompt_key(text) == prompt_key(user(text)) == prompt_key([user(text)[0] | {"name": None}]) == expected
    with pytest.raises(ValidationError, match=r"prompt\n  Value error, the prompt is empty"):
        prompt_key("  ")


def test_prompt_id_is_preferred_to_id():
    record = records("healthbench")[0] | {"id": "row-17"}
    assert to_dataset_row(record)["prompt_id"] == "1f548d5b-cd00-49a0-b327-283a2e00debd"
    del record["prompt_id"]
    assert to_dataset_row(record)["prompt_id"] == "row-17"


def test_integer_ids_become_strings():
    record = records("paper_generator")[0] | {"id": 17}
    record["criteria"] = [c | {"local_id": i} for i, c in enumerate(record["criteria"], 1)]
    row = to_dataset_row(record)
    assert row["prompt_id"] == "17" and ids(row) == ["1", "2", "3"]


# --- errors -------------------------------------------------------------------------------------------------


def test_unrecognised_record_names_the_keys_seen_and_each_format():
    record = {"prompt": "Hi", "checklist": [{"item": "Greets back", "score": 3}], "meta": {"lang": "en"}}
    with pytest.raises(FormatError) as error:
        detect_format(record)
    message = str(error.value)
    assert "keys prompt, checklist[{item, score}], meta{lang}" in message
    for name in FORMATS:
        assert f"{name}: " in message
    assert "rubrics: [{criterion, points, tags}]" in message and "reward_model: {rubrics:" in message


def test_record_matching_two_formats_must_be_named():
    record = {"prompt": "Hi", "rubrics": [{"criterion": "Greets back.", "weight": 1, "points": 1}]}
    with pytest.raises(FormatError, match=r"several formats \(paper, healthbench\)"):
        detect_format(record)
    assert weights(to_dataset_row(record, fmt="healthbench")) == [1]


def test_zero_weight_names_the_criterion_index_and_the_record_line(tmp_path):
    lines = [json.dumps(r) for r in records("healthbench")]
    bad = records("healthbench")[0]
    bad["rubrics"][1]["points"] = 0
    path = tmp_path / "hb.jsonl"
    path.write_text("\n".join([lines[0], lines[1], json.dumps(bad)]) + "\n")
    with pytest.raises(FormatError, match=rf"^{re.escape(str(path))}:3: rubrics\.1\.points: .*non-zero.*got 0"):
        list(read_records(path))


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("paper", ("rubrics", 0, "weight")),
        ("rar", ("rubric", 2, "weight")),
        ("rubrichub", ("reward_model", "rubrics", 1, "points")),
        ("paper_generator", ("criteria", 0, "weight")),
    ],
)
def test_zero_weight_is_an_error_in_every_source(name, path):
    record = records(name)[0]
    target = record
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = 0
    with pytest.raises(FormatError, match=re.escape(".".join(map(str, path))) + ": .*non-zero"):
        to_dataset_row(record)


def test_boolean_and_text_weights_are_rejected():
    record = records("paper")[0]
    record["rubrics"][0]["weight"] = True
    with pytest.raises(FormatError, match=r"rubrics\.0\.weight"):
        to_dataset_row(record)
    record["rubrics"][0]["weight"] = "3"
    with pytest.raises(FormatError, match=r"rubrics\.0\.weight"):
        to_dataset_row(record)


def test_a_rubric_of_pitfalls_only_is_rejected_on_import():
    record = {"question": "Q?", "rubric": [{"title": "t", "description": "Mentions a myth.", "weight": -1}]}
    with pytest.raises(FormatError, match=r"at least one criterion with a positive weight.*read as format 'rar'"):
        to_dataset_row(record)


def test_explicit_format_that_does_not_fit_names_the_missing_fields():
    with pytest.raises(
        FormatError, match=r"prompt: Field required; rubrics: Field required \(read as format 'paper'\)"
    ):
        to_dataset_row(records("rar")[0], fmt="paper")


def test_empty_prompt_and_empty_criteria_are_errors():
    record = records("paper")[0]
    with pytest.raises(FormatError, match=r"prompt: .*empty"):
        to_dataset_row(record | {"prompt": "  "}, fmt="paper")
    with pytest.raises(FormatError, match="rubrics: List should have at least 1 item"):
        to_dataset_row(record | {"rubrics": []}, fmt="paper")


def test_duplicate_local_ids_are_rejected():
    record = records("paper_generator")[0]
    record["criteria"][2]["local_id"] = "c1"
    with pytest.raises(FormatError, match=r"repeated: \['c1'\]"):
        to_dataset_row(record)


def test_bad_criterion_in_a_dataset_row_names_line_and_field(tmp_path):
    good, bad = records("dataset")
    bad["rubric"]["criteria"][1]["kind"] = "vibes"
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(RubricFileError, match=rf"^{re.escape(str(path))}:2: rubric\.criteria\.1\.kind: "):
        list(read_records(path))


def test_unknown_format_name_and_phrasing_are_rejected():
    with pytest.raises(ValueError, match="unknown format 'healthbnch'"):
        to_dataset_row(records("healthbench")[0], fmt="healthbnch")
    with pytest.raises(ValueError, match="pitfall_phrasing must be"):
        to_dataset_row(records("rar")[0], pitfall_phrasing="avoid")


def test_non_utf8_file_is_a_file_error(tmp_path):
    path = tmp_path / "binary.jsonl"
    path.write_bytes(b'{"prompt": "caf\xe9"}\n')
    with pytest.raises(RubricFileError, match=rf"^{re.escape(str(path))}: not UTF-8 text"):
        list(read_records(path))


def test_import_records_reports_the_format_of_each_record_in_a_mixed_file(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_text(json.dumps(records("rar")[1]) + "\n" + json.dumps(records("healthbench")[0]) + "\n")
    imported = list(import_records(path))
    assert [(r.location, r.format) for r in imported] == [(f"{path}:1", "rar"), (f"{path}:2", "healthbench")]


def test_json_list_files_are_read_with_item_locations(tmp_path):
    path = tmp_path / "paper.json"
    path.write_text(json.dumps(records("paper")))
    assert [location for location, _ in read_records(path)] == [f"{path}: item 0", f"{path}: item 1"]


def test_converted_rows_read_back_as_our_dataset_format(tmp_path):
    path = tmp_path / "rows.jsonl"
    converted = rows("healthbench")
    path.write_text("".join(json.dumps(row) + "\n" for row in converted))
    assert [r.format for r in import_records(path)] == ["dataset", "dataset"]
    assert [row for _, row in read_records(path)] == converted
