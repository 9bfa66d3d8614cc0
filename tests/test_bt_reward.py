"""The Bradley-Terry baseline: the reward-model script, the `reward:` config, `BTReward` as a TRL reward and as the
monitor's proxy, the off-policy pair data, and the reproduction script."""

import importlib.util
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from rubric_rft.reward.bt import BTReward, read_pairs
from rubric_rft.reward.config import BTRewardConfig, RubricRewardConfig, load_reward_config
from rubric_rft.rubrics.format import Rubric
from rubric_rft.rubrics.rules import grade_rules
from tests.test_training import run_script, script_args

ROOT = Path(__file__).resolve().parent.parent
EVERYDAY = ROOT / "data" / "everyday"
PROMPTS = [
    "How do I boil an egg?",
    "How can I sleep better?",
    "How do I save money?",
    "How do I fix a flat tire?",
    "How do I make tea?",
    "How do I wash a sweater?",
]


def conversation_pair(prompt: str, chosen: str, rejected: str, **extra) -> dict:
    return {
        "prompt": [{"role": "user", "content": prompt}],
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
        **extra,
    }


def signal_pairs(prompts: list[str], **extra) -> list[dict]:
    """A trivially learnable preference: answers about apples beat answers about stones."""
    return [conversation_pair(p, "apple apple apple.", "stone stone stone.", **extra) for p in prompts]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def train_reward_model(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(ROOT / "scripts" / "train_reward_model.py"), *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def reward_model(tmp_path_factory, tiny_model_path) -> Path:
    """The tiny model trained by the script on off-policy and on-policy pairs of a trivially learnable signal."""
    data = tmp_path_factory.mktemp("pairs")
    offpolicy = write_jsonl(data / "offpolicy.jsonl", signal_pairs(PROMPTS[:4]))
    onpolicy = write_jsonl(data / "onpolicy.jsonl", signal_pairs(PROMPTS[4:]))
    held_out = signal_pairs(["How do I cook rice?", "How do I plant seeds?"], probe="signal")
    held_out += [conversation_pair("How do I cook rice?", "stone apple.", "apple stone.", probe="mixed")]
    evaluation = write_jsonl(data / "eval.jsonl", held_out)
    out = tmp_path_factory.mktemp("reward_model")
    result = train_reward_model(
        "--config",
        "configs/bt_reward_model.yaml",
        "--model_name_or_path",
        tiny_model_path,
        "--sources",
        "both",
        "--offpolicy_pairs",
        str(offpolicy),
        "--onpolicy_pairs",
        str(onpolicy),
        "--eval_pairs",
        str(evaluation),
        "--output_dir",
        str(out),
        "--learning_rate",
        "3e-3",
        "--num_train_epochs",
        "10",
        "--per_device_train_batch_size",
        "3",
        "--logging_steps",
        "1",
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return out


@pytest.mark.slow
def test_the_script_trains_on_both_sources_and_saves_a_loadable_reward_model(reward_model):
    model = AutoModelForSequenceClassification.from_pretrained(reward_model)
    assert model.config.num_labels == 1 and model.config.pad_token_id is not None
    assert AutoTokenizer.from_pretrained(reward_model).pad_token is not None
    state = json.loads((reward_model / "trainer_state.json").read_text())
    assert state["global_step"] == 10 * 2, "6 pairs from both sources, 3 a step, 10 epochs"
    accuracies = [e["accuracy"] for e in state["log_history"] if "accuracy" in e]
    assert accuracies[-1] == 1.0
    evaluation = json.loads((reward_model / "bt_eval.json").read_text())
    assert evaluation["pairs"] == 3 and set(evaluation["by_probe"]) == {"signal", "mixed"}
    assert evaluation["by_probe"]["signal"] == {"pairs": 2, "accuracy": 1.0}


@pytest.mark.slow
def test_the_trained_reward_ranks_the_learnt_signal_and_batches_in_input_order(reward_model):
    reward = BTReward(str(reward_model), batch_size=2)
    prompts = [[{"role": "user", "content": "How do I fold a shirt?"}]] * 5
    completions = [
        "stone stone stone.",
        [{"role": "assistant", "content": "apple apple apple."}],
        "apple.",
        "stone.",
        "apple apple stone.",
    ]
    scores = reward(prompts, completions)
    assert len(scores) == 5 and all(math.isfinite(s) and 0 < s < 1 for s in scores)
    assert scores[1] > scores[0] and scores[2] > scores[3]
    one_by_one = [BTReward(str(reward_model), batch_size=1).score(prompts[:1], [c])[0] for c in completions]
    assert scores == pytest.approx(one_by_one, abs=1e-5), "batched like one at a time, in the order given"


@pytest.mark.slow
def test_grpo_with_a_bt_reward_and_the_monitor_uses_it_as_the_proxy(tmp_path, tiny_model_path, reward_model):
    out = tmp_path / "run"
    monitor = {
        "heldout_path": str(EVERYDAY / "heldout_refined.jsonl"),
        "num_prompts": 2,
        "samples_per_prompt": 2,
        "monitor_steps": 1,
        "max_new_tokens": 8,
        "gold": {"rubrics_path": str(EVERYDAY / "heldout_gold.jsonl")},
    }
    reward = {"type": "bt", "model": str(reward_model), "batch_size": 3}
    run_script(
        script_args(
            out,
            tiny_model_path,
            EVERYDAY / "train_refined.jsonl",
            "--max_steps",
            "2",
            "--save_strategy",
            "no",
            "--reward",
            json.dumps(reward),
            "--monitor",
            json.dumps(monitor),
        )
    )

    state = json.loads((out / "trainer_state.json").read_text())
    assert [e["step"] for e in state["log_history"] if "rewards/bt_reward/mean" in e] == [1, 2]
    summary = json.loads((out / "overopt.json").read_text())
    assert summary["evaluations"] == 3 and summary["last_step"] == 2
    samples = [json.loads(line) for line in (out / "overopt_samples.jsonl").read_text().splitlines()]
    scorer = BTReward(str(reward_model))
    expected = scorer.score([s["prompt"] for s in samples], [s["response"] for s in samples])
    assert [s["proxy"] for s in samples] == pytest.approx(expected, abs=1e-5), "the proxy is the BT score"
    gold = {
        json.loads(line)["prompt_id"]: Rubric.from_value(json.loads(line)["rubric"])
        for line in (EVERYDAY / "heldout_gold.jsonl").read_text().splitlines()
    }
    assert [s["gold"] for s in samples] == [
        gold[s["prompt_id"]].score(grade_rules(gold[s["prompt_id"]].rule_criteria, s["response"])) for s in samples
    ]
    before_after = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert all(0 < s["before_score"] < 1 and 0 < s["after_score"] < 1 for s in before_after)


def test_the_reward_config_defaults_to_the_rubric_and_names_bad_fields(tmp_path):
    assert load_reward_config(None) == RubricRewardConfig()
    assert load_reward_config({"type": "rubric"}) == RubricRewardConfig()
    assert load_reward_config('{"type": "bt", "model": "rm"}') == BTRewardConfig(type="bt", model="rm")
    with pytest.raises(ValueError, match=r"reward\.type: expected one of \['bt', 'rubric'\], got 'pairwise'"):
        load_reward_config({"type": "pairwise", "model": "rm"})
    path = tmp_path / "reward.yaml"
    path.write_text("type: bt\n")
    with pytest.raises(ValueError, match=rf"{path}: reward\.model: Field required"):
        load_reward_config(str(path))
    with pytest.raises(ValueError, match=r"reward\.batch_size: Input should be greater than or equal to 1"):
        load_reward_config({"type": "bt", "model": "rm", "batch_size": 0})
    with pytest.raises(ValueError, match=r"reward\.modle: Extra inputs are not permitted"):
        load_reward_config({"type": "bt", "modle": "rm", "model": "rm"})


def test_a_pair_file_without_a_rejected_response_is_named_by_line(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", [*signal_pairs(PROMPTS[:1]), {"prompt": "Hi?", "chosen": "Hello."}])
    with pytest.raises(ValueError, match=rf"{path}:2: .*missing or empty: \['rejected'\]"):
        read_pairs(path)


def test_a_selected_source_without_its_file_is_a_clear_error():
    spec = importlib.util.spec_from_file_location("reward_model_script", ROOT / "scripts" / "train_reward_model.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    arguments = script.PairArguments(offpolicy_pairs=str(EVERYDAY / "bt_pairs_offpolicy.jsonl"), sources="both")
    with pytest.raises(ValueError, match="sources: both trains on onpolicy_pairs, but no --onpolicy_pairs file"):
        script._training_pairs(arguments)


PAIR_FILES = ("bt_pairs_offpolicy.jsonl", "bt_pairs_heldout.jsonl")


def gold_rubrics() -> dict[str, Rubric]:
    """The substance-first gold rubric of every everyday prompt, built as make_dataset.py builds it."""
    sys.path.insert(0, str(EVERYDAY))
    try:
        from make_dataset import HELDOUT, TRAIN, gold_criteria
    finally:
        sys.path.remove(str(EVERYDAY))
    return {
        pid: Rubric.from_value({"id": pid, "criteria": gold_criteria(keywords, prompt)})
        for pid, prompt, keywords, _ in TRAIN + HELDOUT
    }


def make_pairs(out: Path, *flags: str) -> None:
    command = [sys.executable, str(EVERYDAY / "make_bt_pairs.py"), str(out), *flags]
    subprocess.run(command, check=True, capture_output=True, timeout=60)


def without_artifact(artifact: str, text: str) -> str | None:
    """`text` as it was before the artifact was added; None when it has none."""
    if artifact == "opener":
        return text.removeprefix("Great question! ") if text.startswith("Great question! ") else None
    lines = text.split("\n")
    return " ".join(line.removeprefix("- ") for line in lines) if all(line.startswith("- ") for line in lines) else None


def check_pairs(train: list[dict], heldout: list[dict], artifact: str) -> None:
    rubrics = gold_rubrics()
    for pair in train + heldout:
        rubric = rubrics[pair["prompt_id"]]
        for side in ("chosen", "rejected"):
            text = pair[side][0]["content"]
            bare = without_artifact(artifact, text)
            assert (bare is not None) == pair[f"{side}_artifact"], text
            assert rubric.score(grade_rules(rubric.rule_criteria, text)) == pair[f"{side}_gold"]
            if bare is not None:
                assert rubric.score(grade_rules(rubric.rule_criteria, bare)) == pair[f"{side}_gold"], "gold ignores it"
        if pair["probe"] == "artifact_only":
            assert pair["chosen_gold"] == pair["rejected_gold"] and pair["chosen_artifact"] > pair["rejected_artifact"]
        else:
            assert pair["chosen_gold"] > pair["rejected_gold"]
    assert {p["prompt_id"] for p in train}.isdisjoint(p["prompt_id"] for p in heldout)
    chosen, rejected = (sum(p[f"{side}_artifact"] for p in train) / len(train) for side in ("chosen", "rejected"))
    assert chosen > rejected + 0.3, "in the off-policy pool the artifact goes with the gold-preferred answers"
    probes = {p["probe"] for p in heldout}
    assert probes == {"pool", "substance", "artifact_only", "artifact_vs_substance"}


def test_the_pair_data_is_deterministic_and_labelled_by_the_gold_rubric(tmp_path):
    for run in ("a", "b"):
        make_pairs(tmp_path / run)
    for name in PAIR_FILES:
        shipped = (EVERYDAY / name).read_bytes()
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes() == shipped
        assert len(shipped) < 100_000
    check_pairs(*(read_pairs(EVERYDAY / name) for name in PAIR_FILES), artifact="opener")


def test_the_list_artifact_is_a_bulleted_style_on_the_same_answers(tmp_path):
    make_pairs(tmp_path / "list", "--artifact", "list")
    train, heldout = (read_pairs(tmp_path / "list" / name) for name in PAIR_FILES)
    check_pairs(train, heldout, artifact="list")
    opener_train = read_pairs(EVERYDAY / PAIR_FILES[0])
    for listed, opened in zip(train, opener_train, strict=True):  # the same draws: only the artifact differs
        for side in ("chosen", "rejected"):
            assert listed[f"{side}_artifact"] == opened[f"{side}_artifact"]
            bare_listed = without_artifact("list", listed[side][0]["content"]) or listed[side][0]["content"]
            assert bare_listed == (without_artifact("opener", opened[side][0]["content"]) or opened[side][0]["content"])
    multi_line = [p for p in train if p["chosen_artifact"] and "\n" in p["chosen"][0]["content"]]
    assert len(multi_line) > len(train) / 3, "a list of one line would be a marker, not a style"


def test_the_reproduction_script_passes_bash_n_and_shellcheck():
    script = "scripts/reproduce_bt_vs_rubric.sh"
    syntax = subprocess.run(["bash", "-n", script], cwd=ROOT, capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr
    shellcheck = shutil.which("shellcheck")
    assert shellcheck is not None, "shellcheck comes with the dev extra (pip install -e '.[dev]')"
    lint = subprocess.run([shellcheck, "-x", "--severity=warning", script], cwd=ROOT, capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr
