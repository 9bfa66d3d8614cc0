"""`rubric-rft overopt-report`: runs side by side, and the share of samples that carry a pattern (an artifact)."""

import json
import re
from pathlib import Path

import pytest

from rubric_rft.cli import main
from rubric_rft.training.monitor.report import compare_runs, pattern_share, plot_history, refinements

LIST_ITEM = r"^\s*([-*]|\d+[.)])\s"


def write_run(run_dir: Path, gold: list[float], proxy: list[float], responses: list[list[str]], onset=None) -> Path:
    """A monitored run's files as the monitor writes them, evaluated every 2 steps."""
    run_dir.mkdir(parents=True)
    steps = [2 * index for index in range(len(gold))]
    history = [
        {"step": s, "gold": g, "proxy": p, "kl": 0.5 * s, "completion_length": 64 - s}
        for s, g, p in zip(steps, gold, proxy, strict=True)
    ]
    peak = max(range(len(gold)), key=gold.__getitem__)
    summary = {
        "gold_metric": "gold", "peak_step": steps[peak], "onset_step": onset, "detected_step": onset,
        "at_peak": history[peak], "monitor_share": 0.25,
    }
    samples = [
        {"step": s, "prompt_id": f"p{n}", "response": text, "proxy": 0.5, "gold": 0.5}
        for s, texts in zip(steps, responses, strict=True)
        for n, text in enumerate(texts)
    ]
    (run_dir / "overopt.json").write_text(json.dumps(summary))
    (run_dir / "overopt.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
    (run_dir / "overopt_samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in samples))
    return run_dir


@pytest.fixture
def two_runs(tmp_path):
    prose, listed = "Boil water, then add the egg.", "Here is how:\n1. Boil water.\n2. Add the egg."
    learns_lists = write_run(
        tmp_path / "bt", gold=[0.6, 0.7, 0.65, 0.5], proxy=[0.5, 0.6, 0.7, 0.8], onset=4,
        responses=[[prose, prose, prose, listed], [prose, listed, listed, listed], [listed] * 4, [listed] * 4],
    )
    stays_prose = write_run(
        tmp_path / "rubric", gold=[0.6, 0.65, 0.7, 0.75], proxy=[0.4, 0.5, 0.6, 0.7],
        responses=[[prose, listed, prose, prose], [prose] * 4, [prose] * 4, ["- Boil water."] + [prose] * 3],
    )
    return learns_lists, stays_prose


def test_pattern_share_is_the_share_of_each_steps_samples_that_match(two_runs):
    learns_lists, stays_prose = two_runs
    pattern = re.compile(LIST_ITEM, re.MULTILINE)
    assert pattern_share(learns_lists / "overopt_samples.jsonl", pattern) == {0: 0.25, 2: 0.75, 4: 1.0, 6: 1.0}
    assert pattern_share(stays_prose / "overopt_samples.jsonl", pattern) == {0: 0.25, 2: 0.0, 4: 0.0, 6: 0.25}
    assert pattern_share(learns_lists / "overopt_samples.jsonl", re.compile("^1\\. ")) == {0: 0, 2: 0, 4: 0, 6: 0}


def test_compare_runs_reports_each_run_and_the_pattern_at_its_first_and_last_step(two_runs, tmp_path):
    rows = compare_runs(list(two_runs), tmp_path / "report" / "comparison", re.compile(LIST_ITEM, re.MULTILINE))
    bt, rubric = rows
    assert (bt["run"], bt["peak_step"], bt["onset_step"], bt["gold_at_peak"], bt["gold_last"]) == ("bt", 2, 4, 0.7, 0.5)
    assert (rubric["peak_step"], rubric["onset_step"], rubric["proxy_first"], rubric["proxy_last"]) == (
        6, None, 0.4, 0.7
    )
    assert (bt["length_first"], bt["length_last"], bt["kl_last"]) == (64, 58, 3.0)
    assert (bt["pattern_first"], bt["pattern_last"], rubric["pattern_first"], rubric["pattern_last"]) == (
        0.25, 1.0, 0.25, 0.25
    )
    assert json.loads((tmp_path / "report" / "comparison.json").read_text()) == rows
    assert (tmp_path / "report" / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    plain = compare_runs(list(two_runs), tmp_path / "plain")
    assert all("pattern_first" not in row for row in plain)
    assert [{k: v for k, v in row.items() if not k.startswith("pattern")} for row in rows] == plain
    assert all("refinements" not in row for row in plain)  # no run refined its rubrics: no columns for it


def test_the_command_prints_the_pattern_columns_and_refuses_a_bad_pattern(two_runs, tmp_path, capsys):
    runs = [str(path) for path in two_runs]
    assert main(["overopt-report", *runs, "--out", str(tmp_path / "cmp"), "--pattern", LIST_ITEM]) == 0
    out = capsys.readouterr().out
    assert "pattern first" in out and "pattern last" in out and "1.000" in out
    with pytest.raises(SystemExit) as exited:
        main(["overopt-report", *runs, "--out", str(tmp_path / "bad"), "--pattern", "(unclosed"])
    assert exited.value.code == 2
    assert "--pattern: not a regular expression: '(unclosed'" in capsys.readouterr().err


def test_the_command_names_a_run_without_monitor_files(two_runs, tmp_path, capsys):
    bt, _ = two_runs
    (bt / "overopt_samples.jsonl").unlink()
    assert main(["overopt-report", str(bt), "--out", str(tmp_path / "cmp"), "--pattern", "x"]) == 1
    assert f"{bt / 'overopt_samples.jsonl'}: no monitor samples to search for 'x'" in capsys.readouterr().err
    assert main(["overopt-report", str(tmp_path / "never_trained"), "--out", str(tmp_path / "cmp")]) == 1
    assert "never_trained/overopt.json: no monitor summary" in capsys.readouterr().err


def test_the_report_and_the_monitor_plot_mark_the_accepted_rubric_refinements(two_runs, tmp_path, capsys):
    bt, rubric = two_runs
    attempt = {"pairs": [{}] * 6, "judge_calls": 0, "proposer_costs": {"calls": 1}}
    decisions = [
        {"step": 2, "prompt_id": "p0", "status": "accepted", "reason": "improved_agreement", **attempt},
        {"step": 2, "prompt_id": "p1", "status": "rejected", "reason": "no_improvement", **attempt},
        {"step": 4, "prompt_id": "p1", "status": "accepted", "reason": "improved_agreement", **attempt},
        {"step": 4, "prompt_id": "p2", "status": "not_triggered", "reason": "not_saturated"},
        {"step": 4, "prompt_id": None, "status": "sampled", "prompt_ids": ["p2"], "completions": 8,
         "generation_s": 1.5},
    ]
    (rubric / "refinements.jsonl").write_text("".join(json.dumps(d) + "\n" for d in decisions))
    assert [r["step"] for r in refinements(rubric)] == [2, 4] and refinements(bt) == []

    rows = {row["run"]: row for row in compare_runs([bt, rubric], tmp_path / "cmp")}
    assert (rows["rubric"]["refinements"], rows["rubric"]["first_refinement_step"]) == (2, 2)
    assert (rows["bt"]["refinements"], rows["bt"]["first_refinement_step"]) == (0, None)
    costs = ("refinement_attempts", "gold_calls", "judge_calls", "proposer_calls", "fresh_answers",
             "fresh_generation_s")
    assert [rows["rubric"][c] for c in costs] == [3, 18, 0, 3, 8, 1.5] and [rows["bt"][c] for c in costs] == [0] * 6
    assert main(["overopt-report", str(bt), str(rubric), "--out", str(tmp_path / "cmp2")]) == 0
    assert "refinements" in capsys.readouterr().out

    history = [json.loads(line) for line in (rubric / "overopt.jsonl").read_text().splitlines()]
    summary = json.loads((rubric / "overopt.json").read_text())
    plot_history(tmp_path / "marked.png", history, summary, [2, 4, 4])
    plot_history(tmp_path / "plain.png", history, summary)
    marked, plain = (tmp_path / "marked.png").read_bytes(), (tmp_path / "plain.png").read_bytes()
    assert marked[:8] == b"\x89PNG\r\n\x1a\n" and marked != plain
