"""Online refinement inside the training script: the reward fills the tail buffer, rubrics change at refinement
steps only, every decision is recorded, and a resumed run continues from the checkpoint's state."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_training import store_in

from rubric_rft.rubrics.format import load_rubrics

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = ["How do I make tea?", "How do I boil an egg?", "How do I save money?", "How do I sleep better?"]
ANYTHING = {"id": "answers", "kind": "rule", "weight": 1, "text": "Says something.",
            "check": {"type": "word_count", "max": 1000}}
LONG = {"id": "long", "kind": "rule", "weight": 1, "text": "Takes at least 25 characters.",
        "check": {"type": "char_count", "min": 25}}
POLITE = {"id": "polite", "kind": "rule", "weight": 1, "text": "Is polite.",
          "check": {"type": "contains", "any_of": ["hope this helps"]}}


def write_rows(path: Path, criteria: list[dict]) -> Path:
    rows = [{"prompt_id": f"p{i}", "prompt": [{"role": "user", "content": p}],
             "rubric": {"id": f"p{i}", "prompt_id": f"p{i}", "criteria": criteria}} for i, p in enumerate(PROMPTS)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def train(out: Path, model: str, data: Path, refinement: dict, *extra: str) -> None:
    command = [
        sys.executable, str(ROOT / "scripts" / "train_grpo.py"), "--model_name_or_path", model, "--use_peft", "false",
        "--dataset_path", str(data), "--num_samples", "0", "--output_dir", str(out),
        "--per_device_train_batch_size", "4", "--num_generations", "4", "--max_completion_length", "8",
        "--learning_rate", "1e-3", "--report_to", "none", "--save_steps", "2", "--use_cpu", "true",
        "--refinement", json.dumps(refinement), *extra,
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this tree's package, also when another is installed
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]


def saturated_bank_world(tmp_path: Path) -> tuple[Path, dict]:
    """Prompts whose rubric every answer passes (saturated from the start), a gold that prefers longer answers, and
    a bank offering `polite` and `long`: the training data and the `refinement:` settings."""
    data = write_rows(tmp_path / "data.jsonl", [ANYTHING])
    gold = write_rows(tmp_path / "gold.jsonl", [LONG])
    bank = tmp_path / "bank.jsonl"
    bank.write_text("".join(json.dumps({"prompt_id": f"p{i}", "criteria": [POLITE, LONG]}) + "\n" for i in range(4)))
    refinement = {"refine_steps": 2, "min_completions": 4, "saturation": {"top_k": 2}, "buffer_size": 8,
                  "gold": {"rubrics_path": str(gold)}, "proposer": {"type": "bank", "bank_path": str(bank)},
                  "selection": {"min_tail": 2, "max_similarity": 1.0},
                  "acceptance": {"min_pairs": 2, "min_newly_ordered": 1}}  # 4 answers a prompt: one pair to test
    return data, refinement


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "refinements.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_the_training_script_refines_rubrics_online_and_resumes(tmp_path, tiny_model_path):
    data, refinement = saturated_bank_world(tmp_path)
    out = tmp_path / "run"
    train(out, tiny_model_path, data, refinement, "--max_steps", "4")

    first = records(out)
    assert {r["step"] for r in first} <= {2, 4} and {r["prompt_id"] for r in first} <= {f"p{i}" for i in range(4)}
    final = {r.prompt_id: r for r in load_rubrics(out / "rubrics.jsonl")}
    accepted = [r for r in first if r["status"] == "accepted"]
    assert accepted, "a saturated rubric that the bank can fix was refined"
    for prompt_id, rubric in final.items():  # every accepted change, and only those, is a new version
        changes = [r for r in accepted if r["prompt_id"] == prompt_id]
        assert rubric.version == 1 + len(changes)
        assert [c.id for c in rubric.criteria] == ["answers", "long"][: 1 + len(changes)]
    for change in (r for r in accepted if r["step"] == 2):  # graded with the new version since: nothing to judge yet
        later = next(r for r in first if r["step"] == 4 and r["prompt_id"] == change["prompt_id"])
        assert (later["status"], later["reason"]) == ("not_triggered", "too_few_completions")
    saved = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())["stateful_callbacks"]
    assert saved["OnlineRefinementCallback"]["attributes"]["progress"]["accepted"] == sum(
        r["step"] == 2 for r in accepted)

    # resumed from step 2: the records after it are redone, the store and the budgets come back
    train(out, tiny_model_path, data, refinement, "--max_steps", "4", "--resume_from_checkpoint",
          str(out / "checkpoint-2"))
    again = records(out)
    assert [r for r in again if r["step"] == 2] == [r for r in first if r["step"] == 2]
    assert {r["step"] for r in again} == {2, 4}
    before = store_in(out / "checkpoint-2").state_dict()["versions"]
    after = store_in(out / "checkpoint-4").state_dict()["versions"]
    assert all(version in after for version in before)
