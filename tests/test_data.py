"""Prompt datasets: the bundled data, local files of any format, and the errors bad files give."""

import json
from pathlib import Path

import pytest
from datasets import Dataset

from rubric_rft.rubrics.datasets import as_messages, completion_text, load_prompt_dataset, render_prompt
from rubric_rft.rubrics.format import Rubric, RubricFileError

DATA = Path(__file__).resolve().parent.parent / "data" / "everyday"


@pytest.mark.parametrize("name", ["train_rules", "heldout_rules", "train_llm", "heldout_llm"])
def test_bundled_data_loads_with_valid_rubrics(name):
    dataset = load_prompt_dataset(str(DATA / f"{name}.jsonl"))
    assert {"prompt", "prompt_id", "rubric"} <= set(dataset.column_names)
    for row in dataset:
        rubric = Rubric.model_validate_json(row["rubric"])
        assert row["prompt"][0]["role"] == "user"
        assert any(c.weight < 0 for c in rubric.criteria), "every bundled rubric has a pitfall"
        kinds = {c.kind for c in rubric.criteria}
        assert kinds == ({"rule"} if name.endswith("rules") else {"rule", "llm"})


def test_heldout_prompts_are_not_in_training():
    train = set(load_prompt_dataset(str(DATA / "train_rules.jsonl"))["prompt_id"])
    heldout = set(load_prompt_dataset(str(DATA / "heldout_rules.jsonl"))["prompt_id"])
    assert len(train) == 40 and len(heldout) == 8 and not train & heldout


def test_bad_criterion_kind_names_file_line_and_field(tmp_path):
    good = json.loads((DATA / "train_rules.jsonl").read_text().splitlines()[0])
    bad = json.loads(json.dumps(good))
    bad["rubric"]["criteria"][1]["kind"] = "vibes"
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(RubricFileError) as error:
        load_prompt_dataset(str(path))
    message = str(error.value)
    assert f"{path}:2" in message and "criteria.1" in message and "kind" in message


def test_parquet_without_rubric_column_is_a_clear_error(tmp_path):
    path = tmp_path / "prompts.parquet"
    Dataset.from_list([{"prompt": "Hi?", "answer": "Hello"}]).to_parquet(str(path))
    with pytest.raises(ValueError, match=r"no \['rubric'\] column.*columns are \['prompt', 'answer'\]"):
        load_prompt_dataset(str(path))


def test_parquet_with_struct_rubrics_is_normalised(tmp_path):
    rubric = {"id": "r1", "criteria": [{"id": "a", "text": "Says hi.", "weight": 1.0, "kind": "rule",
                                        "check": {"type": "contains", "any_of": ["hi"]}}]}
    path = tmp_path / "prompts.parquet"
    Dataset.from_list([{"prompt": "Greet me.", "rubric": rubric}]).to_parquet(str(path))
    dataset = load_prompt_dataset(str(path))
    assert dataset[0]["prompt"] == [{"role": "user", "content": "Greet me."}]
    assert dataset[0]["prompt_id"] == "0"
    assert Rubric.model_validate_json(dataset[0]["rubric"]).criteria[0].check.any_of == ["hi"]


def test_parquet_with_invalid_rubric_names_the_row(tmp_path):
    rubric = {"id": "r1", "criteria": [{"id": "a", "text": "Says hi.", "weight": 0.0}]}
    path = tmp_path / "prompts.parquet"
    Dataset.from_list([{"prompt": "Greet me.", "rubric": rubric}]).to_parquet(str(path))
    with pytest.raises(RubricFileError, match=r"row 0: rubric\.criteria\.0\.weight"):
        load_prompt_dataset(str(path))


def test_prompt_and_completion_rendering():
    conversation = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Tea?"},
    ]
    assert render_prompt("Tea?") == "Tea?"
    assert render_prompt(conversation) == "User: Hi\n\nAssistant: Hello!\n\nUser: Tea?"
    assert as_messages("Tea?") == [{"role": "user", "content": "Tea?"}]
    assert completion_text([{"role": "assistant", "content": "Yes."}]) == "Yes."
    assert completion_text("plain") == "plain"
