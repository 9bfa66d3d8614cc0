"""RubricStore: rubrics by prompt_id with their versions, state and checkpoints, the same on every rank; the reward
reading it."""

import asyncio
import pickle

import pytest
import torch.distributed as dist
from transformers import TrainerState

from rubric_rft.cli import main as cli_main
from rubric_rft.reward.rubric_reward import RubricReward
from rubric_rft.rubrics.format import Rubric
from rubric_rft.rubrics.store import (
    FINAL_RUBRICS_FILE,
    LINEAGE_FILE,
    RubricStore,
    RubricUpdate,
    UnknownPromptError,
)
from rubric_rft.training.rubric_checkpoints import RubricStoreCallback


def says(word: str, weight: float = 1, criterion_id: str = "c1") -> dict:
    return {"id": criterion_id, "text": f"Says {word}.", "weight": weight, "kind": "rule",
            "check": {"type": "contains", "any_of": [word]}}


def rubric(rubric_id: str, *criteria: dict) -> Rubric:
    return Rubric.model_validate({"id": rubric_id, "criteria": list(criteria) or [says("tea")]})


def rows() -> list[dict]:
    """Dataset rows: JSON text cells, as `load_prompt_dataset` makes them; `tea` appears twice."""
    cells = {"tea": rubric("tea", says("water")), "egg": rubric("egg", says("boil"), says("cold", -1, "c2"))}
    return [{"prompt_id": p, "rubric": cells[p].model_dump_json()} for p in ("tea", "egg", "tea")]


def test_the_store_holds_each_prompts_rubric_under_its_prompt_id():
    store = RubricStore.from_rows(rows())
    assert len(store) == 2 and "tea" in store and "coffee" not in store
    tea = store.rubric_for("tea")
    assert (tea.id, tea.prompt_id, tea.version, tea.parent) == ("tea", "tea", 1, None)
    assert [r.prompt_id for r in store.current()] == ["tea", "egg"]
    assert [v.step for v in store.history("egg")] == [None]


def test_an_update_is_the_next_version_with_its_parent_reason_and_step():
    store = RubricStore.from_rows(rows())
    second = store.update("tea", rubric("anything", says("kettle")), step=4, reason="rewards kettles")
    third = store.update("tea", rubric("anything", says("leaves")), step=9)
    assert (second.id, second.version, second.parent, second.reason) == ("tea-v2", 2, "tea", "rewards kettles")
    assert (third.id, third.version, third.parent, third.prompt_id) == ("tea-v3", 3, "tea-v2", "tea")
    assert store.rubric_for("tea") == third
    assert [(v.rubric.id, v.step) for v in store.history("tea")] == [("tea", None), ("tea-v2", 4), ("tea-v3", 9)]
    assert store.rubric_for("egg").version == 1


def test_unknown_and_conflicting_prompt_ids_are_named():
    store = RubricStore.from_rows(rows())
    with pytest.raises(UnknownPromptError, match="prompt_id 'coffee'"):
        store.rubric_for("coffee")
    with pytest.raises(UnknownPromptError, match="prompt_id 'coffee'"):
        store.update("coffee", rubric("x"), step=1)
    conflicting = [*rows(), {"prompt_id": "egg", "rubric": rubric("egg-other", says("fry")).model_dump_json()}]
    with pytest.raises(ValueError, match=r"train.jsonl: prompt_id 'egg' has two different rubrics"):
        RubricStore.from_rows(conflicting, "train.jsonl")


def test_state_round_trip():
    store = RubricStore.from_rows(rows())
    store.update("egg", rubric("x", says("salt")), step=3, reason="salt")
    restored = RubricStore()
    restored.load_state_dict(pickle.loads(pickle.dumps(store.state_dict())))
    assert restored.state_dict() == store.state_dict()
    assert restored.history("egg") == store.history("egg") and restored.current() == store.current()


def save_checkpoint(folder, *callbacks) -> None:
    """What the trainer writes last into a checkpoint: `trainer_state.json`, with the callbacks' states."""
    folder.mkdir(parents=True, exist_ok=True)
    TrainerState(stateful_callbacks=list(callbacks)).save_to_json(str(folder / "trainer_state.json"))


def test_the_store_rides_in_the_checkpoints_trainer_state_and_comes_back(tmp_path):
    store = RubricStore.from_rows(rows())
    store.update("egg", rubric("x", says("salt")), step=3, reason="salt")
    save_checkpoint(tmp_path / "checkpoint-3", RubricStoreCallback(store))

    dataset_only = RubricStore.from_rows(rows())
    RubricStoreCallback(dataset_only).restore(tmp_path / "checkpoint-3")
    assert dataset_only.state_dict() == store.state_dict()
    assert dataset_only.rubric_for("egg").reason == "salt"

    save_checkpoint(tmp_path / "checkpoint-4")  # saved by a run without the rubric reward
    with pytest.raises(FileNotFoundError, match="checkpoint-4: no rubric store in this checkpoint"):
        RubricStoreCallback(dataset_only).restore(tmp_path / "checkpoint-4")
    with pytest.raises(FileNotFoundError, match="checkpoint-5.*not a complete checkpoint"):
        RubricStoreCallback(dataset_only).restore(tmp_path / "checkpoint-5")


def test_updates_decided_on_the_main_process_reach_every_rank(monkeypatch):
    """The logic of `apply` for a non-main rank: whatever it passes, it applies what rank 0 broadcast."""
    decided = [RubricUpdate("tea", rubric("x", says("kettle")), step=2, reason="kettles")]

    def broadcast_from_rank_0(box, src):
        assert src == 0
        box[0] = pickle.loads(pickle.dumps(decided))  # what crosses the wire is a pickle

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "broadcast_object_list", broadcast_from_rank_0)
    main, other = RubricStore.from_rows(rows()), RubricStore.from_rows(rows())
    main.apply(decided)
    other.apply(None)
    assert other.state_dict() == main.state_dict()
    assert other.rubric_for("tea").id == "tea-v2"


class Args:
    def __init__(self, output_dir):
        self.output_dir = str(output_dir)


class State:
    def __init__(self, step, main=True):
        self.global_step, self.is_world_process_zero = step, main


def test_the_callback_writes_the_final_rubrics_on_the_main_process(tmp_path):
    store = RubricStore.from_rows(rows())
    callback = RubricStoreCallback(store)
    callback.on_train_end(Args(tmp_path), State(2, main=False), None)
    assert list(tmp_path.iterdir()) == []
    store.update("tea", rubric("x", says("kettle")), step=3, reason="kettles")
    callback.on_train_end(Args(tmp_path), State(3), None)
    final = tmp_path / FINAL_RUBRICS_FILE
    assert cli_main(["validate", str(final)]) == 0
    assert [Rubric.model_validate_json(line).id for line in final.read_text().splitlines()] == ["tea-v2", "egg"]
    lineage = tmp_path / LINEAGE_FILE
    assert cli_main(["validate", str(lineage)]) == 0
    versions = [Rubric.model_validate_json(line) for line in lineage.read_text().splitlines()]
    assert [(v.id, v.parent, v.reason) for v in versions] == [("tea", None, None), ("tea-v2", "tea", "kettles"),
                                                             ("egg", None, None)]


def grade(reward: RubricReward, prompt_ids: list[str], texts: list[str]) -> list[float | None]:
    return asyncio.run(reward(["q"] * len(texts), texts, prompt_id=prompt_ids))


def test_the_reward_reads_rubrics_from_the_store_and_follows_its_updates():
    store = RubricStore.from_rows(rows())
    reward = RubricReward(None, store=store)
    assert grade(reward, ["tea", "egg"], ["hot water", "boil it cold"]) == [1.0, 0.0]
    store.update("tea", rubric("x", says("kettle")), step=1)
    assert grade(reward, ["tea", "egg"], ["hot water", "boil it cold"]) == [0.0, 0.0]


def test_a_store_reward_needs_the_prompt_id_column_and_known_prompt_ids():
    reward = RubricReward(None, store=RubricStore.from_rows(rows()))
    with pytest.raises(ValueError, match=r"needs a 'prompt_id' column.*store.*\['rubric'\]"):
        asyncio.run(reward(["q"], ["water"], rubric=[rubric("tea").model_dump_json()]))
    with pytest.raises(UnknownPromptError, match="prompt_id 'coffee'"):
        grade(reward, ["coffee"], ["water"])
