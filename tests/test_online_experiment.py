"""`scripts/summarize_online_refinement.py`: the online-refinement experiment's table, from the files its runs
leave (the runs themselves are `scripts/reproduce_online_refinement.sh`, too long for the suite)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def write_run(run: Path, gold: list[float], onset, win_rate: float, records=(), steps: int = 40,
              gold_calls: int | None = None) -> None:
    run.mkdir(parents=True)
    history = [{"step": 4 * i, "proxy": 0.3 + 0.1 * i, "gold": g, "completion_length": 30} for i, g in enumerate(gold)]
    (run / "overopt.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
    (run / "overopt.json").write_text(json.dumps({"peak_step": 4, "onset_step": onset, "detected_step": onset and
                                                  onset + 4, "gold_metric": "gold"}))
    state = {"global_step": steps, "train_batch_size": 8, "log_history": [{"train_runtime": 300.0}]}
    if gold_calls is not None:  # what online refinement checkpoints: its spending, pooled proposals included
        state["stateful_callbacks"] = {"OnlineRefinementCallback": {"attributes": {"progress": {
            "gold_calls": gold_calls}}}}
    (run / "trainer_state.json").write_text(json.dumps(state))
    (run / "test_eval.json").write_text(json.dumps({"win_rate": win_rate, "wins": 9, "ties": 3, "losses": 4}))
    (run / "refinements.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    sample = {"step": 0, "prompt_id": "scrambled-eggs", "response": "Whisk the eggs and stir them over low heat."}
    (run / "overopt_samples.jsonl").write_text(json.dumps(sample) + "\n")


def test_the_summary_pools_seeds_counts_gold_calls_and_relates_accepted_criteria_to_the_gold(tmp_path):
    accepted = {"step": 4, "prompt_id": "boil-egg", "status": "accepted", "pairs": [{}] * 12,
                "edit": {"added": {"id": "words_20"}}}
    transfer = {"step": 4, "prompt_id": None, "transfer": "words_20", "status": "accepted", "changes": 5,
                "pairs": [{}] * 30}
    rejected = {"step": 8, "prompt_id": "rice", "status": "rejected", "pairs": [{}] * 10}
    pooled = {"step": 4, "prompt_id": None, "pooled_proposal": True, "criterion": "on_subject", "status": "accepted",
              "changes": 40}
    sampled = {"step": 4, "status": "sampled", "completions": 64}
    for seed, onset in ((1, 8), (2, None)):
        write_run(tmp_path / f"seed{seed}" / "static", [0.6, 0.5, 0.3], onset=8, win_rate=0.3)
        write_run(tmp_path / f"seed{seed}" / "online", [0.6, 0.6, 0.7], onset=onset, win_rate=0.6,
                  records=[sampled, accepted, transfer, rejected, pooled], gold_calls=52 + 200)
        write_run(tmp_path / f"seed{seed}" / "gold_reward", [0.6, 0.7, 0.8], onset=None, win_rate=0.8)

    printed = subprocess.run([sys.executable, "scripts/summarize_online_refinement.py", str(tmp_path)], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout
    assert "| static | 2 | 8, 8 | 0.60 [0.60, 0.60] -> 0.30 [0.30, 0.30] | 0.30 [0.30, 0.30] | 0.00" in printed
    assert "| online | 2 | 8, none |" in printed and "refined" not in printed.split("per run:")[0]
    summary = json.loads((tmp_path / "summary.json").read_text())
    online = summary["online"][0]
    assert online["gold_calls"] == 252 and online["rubric_changes"] == 46 and online["fresh_answers"] == 64
    assert online["accepted_criteria"] == {"words_20": 1, "words_20 (transferred)": 1, "on_subject (pooled)": 1}
    assert summary["gold_reward"][0]["gold_calls"] == 40 * 8  # the gold graded every completion
    assert "words_20 (transferred)" in printed and "best gold: substance" in printed
    assert (tmp_path / "summary.png").stat().st_size > 10_000
