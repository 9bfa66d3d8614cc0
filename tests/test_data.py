"""Prompt datasets: the bundled data, local files of any format, and the errors bad files give."""

import json
from pathlib import Path

import pytest
from datasets import Dataset

from rubric_rft.rubrics.datasets import as_messages, completion_text, load_prompt_dataset, render_prompt
from rubric_rft.rubrics.format import Rubric, RubricFileError
from rubric_rft.rubrics.imports import prompt_key

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
    assert dataset[0]["prompt_id"] == prompt_key("Greet me.")
    assert Rubric.model_validate_json(dataset[0]["rubric"]).criteria[0].check.any_of == ["hi"]


RUBRIC = {"id": "r1", "criteria": [{"id": "a", "text": "Is polite.", "weight": 1.0},
                                   {"id": "b", "text": "Says hi.", "weight": 1.0, "kind": "rule",
                                    "check": {"type": "contains", "any_of": ["hi"]}}]}


def write_jsonl(rows: list[dict], path: Path) -> str:
    path.with_suffix(".jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path.with_suffix(".jsonl"))


def write_json(rows: list[dict], path: Path) -> str:
    path.with_suffix(".json").write_text(json.dumps(rows))
    return str(path.with_suffix(".json"))


def write_parquet(rows: list[dict], path: Path) -> str:
    Dataset.from_list(rows).to_parquet(str(path.with_suffix(".parquet")))
    return str(path.with_suffix(".parquet"))


def write_hub_folder(rows: list[dict], path: Path) -> str:
    """A dataset repository as the hub serves one: `load_dataset(folder)` reads it, as it would a hub id."""
    (path / "data").mkdir(parents=True)
    write_jsonl(rows, path / "data" / "train")
    return str(path)


def load_in_memory(rows: list[dict], path: Path, monkeypatch) -> str:
    """An in-memory `Dataset` returned for a hub id, through the same path as any hub dataset."""
    hub_id = f"someone/{path.stem}"
    datasets = {hub_id: Dataset.from_list(rows)}
    monkeypatch.setattr("rubric_rft.rubrics.datasets.load_dataset", lambda source, split: datasets[source])
    return hub_id


WRITERS = {"jsonl": write_jsonl, "json": write_json, "parquet": write_parquet, "hub_folder": write_hub_folder}


def ids_of(source: str, rows: list[dict], path: Path, monkeypatch) -> list[str]:
    """The prompt ids `load_prompt_dataset` gives `rows` written as `source` at `path` (a name without suffix)."""
    location = load_in_memory(rows, path, monkeypatch) if source == "in_memory" else WRITERS[source](rows, path)
    return list(load_prompt_dataset(location)["prompt_id"])


@pytest.mark.parametrize("source", [*WRITERS, "in_memory"])
def test_rows_without_prompt_id_are_keyed_by_their_prompt_in_every_source(source, tmp_path, monkeypatch):
    """Never by position or by the rubric's id: held-out prompt i must not find training prompt i's rubric."""
    train = [{"prompt": "Greet me.", "rubric": RUBRIC}, {"prompt": "Say bye.", "rubric": RUBRIC}]
    heldout = [{"prompt": [{"role": "user", "content": "Say bye."}], "rubric": RUBRIC},
               {"prompt": [{"role": "user", "content": "Thank me."}], "rubric": RUBRIC}]
    train_ids = ids_of(source, train, tmp_path / "train", monkeypatch)
    heldout_ids = ids_of(source, heldout, tmp_path / "heldout", monkeypatch)
    assert train_ids == [prompt_key("Greet me."), prompt_key("Say bye.")]
    assert heldout_ids[0] == train_ids[1], "the same prompt in two files, as a string and as a message"
    assert heldout_ids[1] != train_ids[1] and heldout_ids[0] != train_ids[0], "different prompts at the same index"


def test_every_source_gives_a_prompt_the_same_id(tmp_path, monkeypatch):
    rows = [{"prompt": [{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello!"},
                        {"role": "user", "content": "Tea?"}], "rubric": RUBRIC}]
    ids = {source: ids_of(source, rows, tmp_path / source, monkeypatch) for source in [*WRITERS, "in_memory"]}
    assert len({tuple(v) for v in ids.values()}) == 1, ids


@pytest.mark.parametrize("source", [*WRITERS, "in_memory"])
def test_a_given_prompt_id_wins_then_the_rubrics(source, tmp_path, monkeypatch):
    rows = [{"prompt_id": "tea", "prompt": "Greet me.", "rubric": RUBRIC},
            {"prompt_id": None, "prompt": "Say bye.", "rubric": RUBRIC | {"prompt_id": "bye"}},
            {"prompt_id": None, "prompt": "Thank me.", "rubric": RUBRIC}]
    assert ids_of(source, rows, tmp_path / "rows", monkeypatch) == ["tea", "bye", prompt_key("Thank me.")]


def test_integer_prompt_ids_become_strings_in_every_source(tmp_path, monkeypatch):
    rows = [{"prompt_id": 7, "prompt": "Greet me.", "rubric": RUBRIC}]
    for source in [*WRITERS, "in_memory"]:
        assert ids_of(source, rows, tmp_path / source, monkeypatch) == ["7"], source


def test_a_prompt_that_cannot_be_keyed_names_the_row(tmp_path):
    rows = [{"prompt": [{"role": "user", "content": "Hi."}], "rubric": RUBRIC},
            {"prompt": [{"role": "user", "content": None}], "rubric": RUBRIC}]
    with pytest.raises(RubricFileError, match=r"row 1: prompt\.0\.content: Input should be a valid string"):
        load_prompt_dataset(write_parquet(rows, tmp_path / "prompts"))


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
