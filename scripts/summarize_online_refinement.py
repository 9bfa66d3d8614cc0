"""The table of `scripts/reproduce_online_refinement.sh`: every arm over its seeds, side by side.

    python scripts/summarize_online_refinement.py OUTDIR

Reads OUTDIR/seed*/ARM/ (the monitor's `overopt.json` and `overopt.jsonl`, `refinements.jsonl`, the trainer's
state, and `test_eval.json`: the win rate against the starting policy on the test prompts, which no run trains on,
refines on or monitors). Prints one row per arm (mean and range over seeds) and one per run, which criteria online
refinement accepted and how each behaves against the gold (`data/everyday/bank_overlap.py`'s functional overlap),
and writes OUTDIR/summary.json and OUTDIR/summary.png (held-out gold over steps, every seed).
"""

import argparse
import json
import statistics
import subprocess
import sys
from collections import Counter
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from rubric_rft.training.monitor.report import refinement_records, train_runtime  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ARMS = ("static", "online", "refined", "gold_reward")
COLORS = {"static": "tab:red", "online": "tab:blue", "refined": "tab:green", "gold_reward": "tab:purple"}
STYLES = {"online": "--"}  # dashed: a run identical to its static run still shows


def finished(run: Path) -> bool:
    """A run that trained to the end (the monitor writes `overopt.json` from the first evaluation on)."""
    return (run / "overopt.json").exists() and (run / "trainer_state.json").exists()


def run_row(run: Path) -> dict:
    summary = json.loads((run / "overopt.json").read_text())
    history = [json.loads(line) for line in (run / "overopt.jsonl").read_text().splitlines()]
    metric = summary["gold_metric"]
    test = json.loads((run / "test_eval.json").read_text()) if (run / "test_eval.json").exists() else None
    records = refinement_records(run)
    accepted = [r for r in records if r.get("status") == "accepted"]
    state = json.loads((run / "trainer_state.json").read_text())
    steps = state["global_step"]
    completions = steps * state.get("train_batch_size", 8)
    refinement = (state.get("stateful_callbacks", {}).get("OnlineRefinementCallback") or {}).get(
        "attributes", {}).get("progress")
    return {
        "run": str(run.relative_to(run.parent.parent)),
        "peak_step": summary["peak_step"],
        "onset_step": summary["onset_step"],
        "detected_step": summary["detected_step"],
        "heldout_gold_first": history[0][metric],
        "heldout_gold_last": history[-1][metric],
        "proxy_last": history[-1]["proxy"],
        "length_last": history[-1].get("completion_length"),
        "test_win_rate": test["win_rate"] if test else None,
        "test_wins_ties_losses": [test["wins"], test["ties"], test["losses"]] if test else None,
        # gold calls: pair preferences for online refinement (its checkpointed count); one gold grading per
        # completion for the gold reward
        "gold_calls": refinement.get("gold_calls", 0) if refinement else (
            completions if run.name == "gold_reward" else 0),
        "rubric_changes": sum(r.get("changes", 1) for r in accepted),
        "accepted_criteria": dict(Counter(_added(r) for r in accepted)),
        "fresh_answers": sum(r["completions"] for r in records if r.get("status") == "sampled"),
        "train_s": train_runtime(run),
        "history": [{"step": r["step"], "gold": r[metric], "proxy": r["proxy"]} for r in history],
    }


def _added(record: dict) -> str:
    if "transfer" in record:
        return f"{record['transfer']} (transferred)"
    if record.get("pooled_proposal"):
        return f"{record['criterion']} (pooled)"
    added = (record.get("edit") or {}).get("added")
    return added["id"] if added else "edit"


def spread(values: list) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.fmean(values):.2f} [{min(values):.2f}, {max(values):.2f}]"


def overlap_table(outdir: Path) -> dict[str, dict]:
    """Bank criterion id -> its best-agreeing gold criterion, agreement and kappa (the functional overlap), over
    the shipped answers and every run's held-out samples."""
    samples, table = outdir / "overlap_samples.jsonl", outdir / "overlap.json"
    with samples.open("w") as handle:
        for path in sorted(outdir.glob("seed*/*/overopt_samples.jsonl")):
            for line in path.read_text().splitlines():
                row = json.loads(line)
                handle.write(json.dumps({"prompt_id": row["prompt_id"], "response": row["response"]}) + "\n")
    subprocess.run([sys.executable, "bank_overlap.py", "--bank", "criteria_bank_independent.jsonl", "--samples",
                    str(samples.resolve()), "--json", str(table.resolve())], cwd=ROOT / "data" / "everyday",
                   check=True, capture_output=True)
    return {row["id"]: row for row in json.loads(table.read_text())["criteria"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=Path)
    outdir = parser.parse_args().outdir
    seeds = sorted(outdir.glob("seed*"))
    runs = {arm: [run_row(seed / arm) for seed in seeds if finished(seed / arm)] for arm in ARMS}
    print("| arm | seeds | onset steps | held-out gold, first -> last | test win rate vs start | gold calls | "
          "rubric changes | training s |")
    print("|---|---|---|---|---|---|---|---|")
    for arm, rows in runs.items():
        if not rows:
            continue
        onsets = ", ".join(str(r["onset_step"]) if r["onset_step"] is not None else "none" for r in rows)
        print(f"| {arm} | {len(rows)} | {onsets} | {spread([r['heldout_gold_first'] for r in rows])} -> "
              f"{spread([r['heldout_gold_last'] for r in rows])} | {spread([r['test_win_rate'] for r in rows])} | "
              f"{spread([r['gold_calls'] for r in rows])} | {spread([r['rubric_changes'] for r in rows])} | "
              f"{spread([r['train_s'] for r in rows])} |")
    print("\nper run:")
    for rows in runs.values():
        for r in rows:
            print(f"  {r['run']:24} peak/onset/detected {r['peak_step']}/{r['onset_step']}/{r['detected_step']}  "
                  f"held-out gold {r['heldout_gold_first']:.2f} -> {r['heldout_gold_last']:.2f}  test win rate "
                  f"{r['test_win_rate']}  {r['test_wins_ties_losses']}  gold calls {r['gold_calls']}  "
                  f"changes {r['rubric_changes']}  fresh {r['fresh_answers']}  length {r['length_last']}")
    accepted = Counter()
    for r in runs["online"]:
        accepted.update(r["accepted_criteria"])
    if accepted:
        overlap = overlap_table(outdir)
        print("\naccepted criteria (all online runs) and how each behaves against the gold, over the shipped "
              "answers and the runs' held-out samples:")
        for name, count in accepted.most_common():
            row = overlap.get(name.split(" ")[0])
            if row is None:
                print(f"  {name:32} x{count:3}")
                continue
            print(f"  {name:32} x{count:3}  trap: {row['trap']!s:5}  best gold: {row['gold']:13} agreement "
                  f"{row['agreement']:.2f}  kappa {row['kappa'] if row['kappa'] is None else round(row['kappa'], 2)}")
    (outdir / "summary.json").write_text(json.dumps(runs, indent=2) + "\n")
    figure, axis = plt.subplots(figsize=(8, 5))
    for arm, rows in runs.items():
        for i, r in enumerate(rows):
            steps = [h["step"] for h in r["history"]]
            axis.plot(steps, [h["gold"] for h in r["history"]], color=COLORS[arm], linestyle=STYLES.get(arm, "-"),
                      alpha=0.7, label=arm if i == 0 else None)
    axis.set_xlabel("step")
    axis.set_ylabel("held-out gold")
    axis.set_title("Held-out gold over training, every seed")
    axis.legend()
    figure.tight_layout()
    figure.savefig(outdir / "summary.png", dpi=120)
    print(f"\nwrote {outdir / 'summary.json'} and {outdir / 'summary.png'}")


if __name__ == "__main__":
    main()
