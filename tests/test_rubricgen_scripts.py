"""The generate -> collect -> refine -> report scripts on the shipped example, against the scripted server."""

import json
import runpy
import sys
from pathlib import Path

import pytest

from rubric_rft.rubrics.datasets import load_prompt_dataset
from rubric_rft.rubrics.format import Rubric
from rubric_rft.testing.judge_server import DEFAULT_MODEL

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "refinement"


def run_script(name: str, *args: str, monkeypatch) -> int:
    monkeypatch.setattr(sys, "argv", [name, *map(str, args)])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(ROOT / "scripts" / name), run_name="__main__")
    return exit_.value.code


def test_the_example_flow_end_to_end(judge_server, tmp_path, monkeypatch, capsys):
    endpoint = tmp_path / "endpoint.json"
    endpoint.write_text(json.dumps({"backend": "openai", "model": DEFAULT_MODEL, "base_urls": [judge_server.base_url]}))
    gold = ["--gold", '{"backend": "rubric"}', "--gold-rubrics", EXAMPLE / "gold_rubrics.jsonl"]
    rubrics, responses, refined = tmp_path / "rubrics.jsonl", tmp_path / "responses.jsonl", tmp_path / "refine"

    code = run_script("generate_rubrics.py", "--prompts", EXAMPLE / "prompts.jsonl", "--proposer", endpoint, "--out",
                      rubrics, monkeypatch=monkeypatch)  # fmt: skip
    assert code == 0 and len(load_prompt_dataset(str(rubrics))) == 6
    sources = [
        json.dumps({"type": "jsonl", "path": str(EXAMPLE / "responses.jsonl")}),
        json.dumps({"type": "rewrite", "name": "tidy", "endpoint": str(endpoint), "of": ["rambler", "lister"]}),
    ]
    code = run_script("collect_responses.py", "--prompts", rubrics, "--out", responses, "--source", sources[0],
                      "--source", sources[1], monkeypatch=monkeypatch)  # fmt: skip
    assert code == 0 and len(responses.read_text().splitlines()) == 48 + 12
    code = run_script("refine_rubrics.py", "--rubrics", rubrics, "--responses", responses, "--out-dir", refined,
                      "--proposer", endpoint, "--judge", endpoint, *gold, monkeypatch=monkeypatch)  # fmt: skip
    assert code == 0 and "refinement rounds" in capsys.readouterr().out
    dataset = load_prompt_dataset(str(refined / "rubrics.jsonl"))
    assert any(Rubric.from_value(r).version > 1 for r in dataset["rubric"])
    code = run_script("rubric_report.py", "--rubrics", f"before={rubrics}", "--rubrics",
                      f"after={refined / 'rubrics.jsonl'}", "--responses", EXAMPLE / "heldout_responses.jsonl",
                      "--judge", endpoint, *gold, "--out", tmp_path / "report", monkeypatch=monkeypatch)  # fmt: skip
    assert code == 0 and "pairwise accuracy (tail)" in capsys.readouterr().out
    report = json.loads((tmp_path / "report.json").read_text())
    before, after = report["sets"]["before"], report["sets"]["after"]
    assert after["tail_accuracy"] > before["tail_accuracy"] and after["accuracy"] > before["accuracy"]
    assert (tmp_path / "report.png").stat().st_size > 0


def test_generation_exits_1_and_lists_the_failures(start_judge_server, tmp_path, monkeypatch, capsys):
    server = start_judge_server(malformed_first_n=100)
    endpoint = json.dumps({"model": DEFAULT_MODEL, "base_urls": [server.base_url], "max_retries": 0})
    code = run_script("generate_rubrics.py", "--prompts", EXAMPLE / "prompts.jsonl", "--proposer", endpoint, "--out",
                      tmp_path / "rubrics.jsonl", monkeypatch=monkeypatch)  # fmt: skip
    assert code == 1 and "6 failed" in capsys.readouterr().out
    assert len((tmp_path / "rubrics.errors.jsonl").read_text().splitlines()) == 6
