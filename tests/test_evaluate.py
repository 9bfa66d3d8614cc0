"""scripts/evaluate.py on the tiny model, with the scripted judge server as the gold judge."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rubric_rft.rubrics.datasets import load_prompt_dataset, render_prompt
from rubric_rft.rubrics.format import Rubric
from rubric_rft.rubrics.rules import grade_rules
from rubric_rft.testing.judge_server import DEFAULT_MODEL, default_policy, more_words_wins

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "evaluate.py"
SECRET = "sk-eval-test-0123456789"
# (prompt, reference): references with and without the rubric's keywords, short and long.
PROMPTS = [
    ("How do I make tea?", "Boil water, then steep the leaves."),
    ("How do I boil an egg?", "Put it in a pan, cover it, heat it until it bubbles, then wait nine more minutes."),
    ("How do I clean a kettle?", "Use bleach."),
    ("How do I sleep better?", "Keep a schedule."),
]
CRITERIA = [
    {"id": "water", "text": "Mentions 'water'.", "weight": 2},
    {"id": "bleach", "text": "Mentions 'bleach'.", "weight": -3},
    {"id": "short", "text": "At most 12 words.", "weight": 1, "kind": "rule",
     "check": {"type": "word_count", "max": 12}},
]  # fmt: skip


def write_dataset(path: Path, references: bool = True) -> Path:
    rows = [
        {"prompt_id": f"p{i}", "prompt": [{"role": "user", "content": prompt}],
         "rubric": {"id": f"p{i}", "criteria": CRITERIA}, **({"reference": reference} if references else {})}
        for i, (prompt, reference) in enumerate(PROMPTS)
    ]  # fmt: skip
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def openai_judge(server, **extra) -> str:
    return json.dumps({"backend": "openai", "model": DEFAULT_MODEL, "base_urls": [server.base_url], **extra})


def run_evaluate(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=ROOT, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def check_report(report: dict, num_rows: int) -> None:
    """Fields present, counts adding up, and the estimate agreeing with the rows."""
    rows = report["rows"]
    assert len(rows) == report["num_pairs"] == report["num_prompts"] == num_rows
    assert report["wins"] + report["ties"] + report["losses"] + report["failures"] == num_rows
    assert report["failures"] == 0 and all(row["error"] is None for row in rows)
    outcomes = [row["outcome"] for row in rows]
    assert report["wins"] == sum(o > 0.5 for o in outcomes) and report["ties"] == outcomes.count(0.5)
    assert report["win_rate"] == pytest.approx(sum(outcomes) / num_rows)
    assert report["win_rate_ci_low"] <= report["win_rate"] <= report["win_rate_ci_high"]
    assert report["confidence"] == 0.95
    assert report["position_consistency"] == sum(r["consistent"] for r in rows) / num_rows
    for row in rows:
        assert row["outcome"] == (row["candidate_first"] + row["candidate_second"]) / 2


def tiny_answers(model_path: str, prompts: list, max_new_tokens: int, adapter: Path | None = None) -> list[str]:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rubric_rft.llm.generation import generate

    model = AutoModelForCausalLM.from_pretrained(model_path)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, adapter)
    return generate(model, AutoTokenizer.from_pretrained(model_path), prompts, max_new_tokens=max_new_tokens).texts


@pytest.mark.slow
def test_an_adapter_against_its_starting_policy(tmp_path, tiny_model_path, start_judge_server):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    adapter = tmp_path / "adapter"
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    torch.manual_seed(0)  # random adapters whose answers differ from the start's on every prompt (some seeds' do not)
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_path), lora).save_pretrained(adapter)
    server = start_judge_server()
    out = tmp_path / "eval" / "report.json"
    result = run_evaluate(
        "--model", str(adapter), "--prompts", str(write_dataset(tmp_path / "data.jsonl")), "--num_prompts", "3",
        "--max_new_tokens", "12", "--judge", openai_judge(server, api_key_env="EVAL_JUDGE_KEY"), "--out", str(out),
        env={"EVAL_JUDGE_KEY": SECRET},
    )  # fmt: skip

    report = json.loads(out.read_text())
    check_report(report, 3)
    assert report["judge_calls"] == server.stats.requests == 6  # both orders of 3 pairs
    prompts = [row["prompt"] for row in load_prompt_dataset(str(tmp_path / "data.jsonl"))][:3]
    rows = report["rows"]
    assert [row["prompt"] for row in rows] == [render_prompt(p) for p in prompts]
    assert [row["candidate"] for row in rows] == tiny_answers(tiny_model_path, prompts, 12, adapter)
    assert [row["baseline"] for row in rows] == tiny_answers(tiny_model_path, prompts, 12)
    assert all(row["candidate"] != row["baseline"] for row in rows)  # so that no pair's two orders are one question
    for row in rows:
        expected = {"A": 1.0, "B": 0.0, "tie": 0.5}[more_words_wins("", row["candidate"], row["baseline"])]
        assert row["outcome"] == expected and row["consistent"] is True
    assert report["config"]["baseline"] == "start" and report["config"]["base_model"] == tiny_model_path
    assert report["config"]["judge"]["api_key_env"] == "EVAL_JUDGE_KEY"
    assert server.stats.authorizations == {f"Bearer {SECRET}"}
    assert SECRET not in out.read_text() + result.stdout + result.stderr
    assert "win rate" in result.stdout


@pytest.mark.slow
def test_a_model_against_references_under_a_gold_rubric(tmp_path, tiny_model_path, judge_server):
    out = tmp_path / "report.json"
    judge = json.dumps({"backend": "rubric", "judge": json.loads(openai_judge(judge_server))})
    run_evaluate(
        "--model", tiny_model_path, "--baseline", "reference", "--prompts", str(write_dataset(tmp_path / "d.jsonl")),
        "--max_new_tokens", "8", "--judge", judge, "--out", str(out),
    )  # fmt: skip
    report = json.loads(out.read_text())
    check_report(report, len(PROMPTS))
    rubric = Rubric.model_validate({"id": "r", "criteria": CRITERIA})

    def score(response: str) -> float:
        verdicts = grade_rules(rubric.rule_criteria, response)
        verdicts |= {c.id: default_policy("", response, c.text) for c in rubric.llm_criteria}
        return rubric.score(verdicts, normalize=False)

    for row, (_, reference) in zip(report["rows"], PROMPTS, strict=True):
        assert row["baseline"] == reference
        candidate, baseline = score(row["candidate"]), score(reference)
        assert row["outcome"] == (0.5 if candidate == baseline else float(candidate > baseline))
    assert len({row["outcome"] for row in report["rows"]}) > 1, "the fixture should give more than one outcome"
    assert report["position_consistency"] == 1.0
    # 2 orders x 2 grades, the same 2 grades in both orders, asked together: one request each (single flight)
    assert report["judge_calls"] == judge_server.stats.requests == 2 * len(PROMPTS)
    assert report["config"]["base_model"] is None and report["config"]["judge"]["backend"] == "rubric"


@pytest.mark.slow
def test_a_model_against_itself_ties_every_pair(tmp_path, tiny_model_path, judge_server):
    out = tmp_path / "report.json"
    data = write_dataset(tmp_path / "d.jsonl")
    run_evaluate(
        "--model", tiny_model_path, "--base_model", tiny_model_path, "--prompts", str(data),
        "--max_new_tokens", "8", "--judge", openai_judge(judge_server), "--out", str(out),
    )  # fmt: skip
    report = json.loads(out.read_text())
    check_report(report, len(PROMPTS))
    assert all(row["candidate"] == row["baseline"] for row in report["rows"])
    assert (report["win_rate"], report["ties"]) == (0.5, len(PROMPTS))


def load_script():
    spec = importlib.util.spec_from_file_location("evaluate_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bad_arguments_are_reported_before_any_model_is_loaded(tmp_path, judge_server):
    script = load_script()
    data = str(write_dataset(tmp_path / "d.jsonl"))
    judge = openai_judge(judge_server)

    def args(**options):
        return script.EvalArguments(**{"model": str(tmp_path), "prompts": data, "judge": judge, "out": "x", **options})

    (tmp_path / "config.json").write_text("{}")  # a "full model" folder that would fail to load
    with pytest.raises(ValueError, match="is a full model, so name the starting policy: --base_model"):
        script.main(args())
    with pytest.raises(ValueError, match="only --baseline start uses"):
        script.main(args(baseline="reference", base_model="m"))
    with pytest.raises(ValueError, match=r"has no 'reference' for prompt ids \['p0', 'p1'\]"):
        script.main(args(baseline="reference", prompts=str(write_dataset(tmp_path / "n.jsonl", references=False)),
                         num_prompts=2))  # fmt: skip
    with pytest.raises(ValueError, match=r"openai\.max_retries"):
        script.main(args(judge=openai_judge(judge_server, max_retries=-1)))
    with pytest.raises(ValueError, match="--num_prompts must be at least 1"):
        script.main(args(num_prompts=0))
    assert judge_server.stats.requests == 0
