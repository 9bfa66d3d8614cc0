"""Where the monitor's findings go: local files (read by people and tests) and Weights & Biases.

In `output_dir`: `overopt.jsonl` (one line per evaluation), `overopt.json` (the summary: peak and onset steps
and the figures at both), `overopt_samples.jsonl` (every evaluated sample with its scores) and `overopt.png`
(proxy and gold over steps, the peak and the onset marked). In W&B: `overopt/*` metrics against the trainer's
global step, an alert at onset, summary fields, a proxy-vs-gold chart and tables of samples at peak and onset.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def write_history(path: Path, history: list[dict[str, Any]]) -> None:
    """Rewrite the whole file: after a resume, lines past the checkpoint must go."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        for record in history:
            handle.write(json.dumps(record) + "\n")


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(summary, indent=2) + "\n")
    temporary.replace(path)


def refinement_records(run_dir: Path) -> list[dict[str, Any]]:
    """Every decision of a run with online refinement (`refinements.jsonl`); [] without it."""
    path = Path(run_dir) / "refinements.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def refinements(run_dir: Path) -> list[dict[str, Any]]:
    """The accepted rubric changes of a run with online refinement; [] without it."""
    return [r for r in refinement_records(run_dir) if r.get("status") == "accepted"]


def train_runtime(run_dir: Path) -> float | None:
    """The trainer's `train_runtime` in seconds (of the last launch only, when the run was resumed)."""
    path = Path(run_dir) / "trainer_state.json"
    if not path.exists():
        return None
    logged = json.loads(path.read_text()).get("log_history", [])
    return next((r["train_runtime"] for r in reversed(logged) if "train_runtime" in r), None)


def plot_history(
    path: Path, history: list[dict[str, Any]], summary: dict[str, Any], refined_steps: list[int] | None = None
) -> None:
    """Proxy and gold (with their bootstrap bands) over training steps; peak, onset and the steps at which online
    refinement changed a rubric marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in history]
    figure, axis = plt.subplots(figsize=(7, 4))
    for name, color in (("proxy", "tab:blue"), ("gold", "tab:orange"), ("win_rate", "tab:green")):
        if not any(r.get(name) is not None for r in history):
            continue
        points = [(r["step"], r[name], r.get(f"{name}_ci_low"), r.get(f"{name}_ci_high")) for r in history
                  if r.get(name) is not None]
        xs = [p[0] for p in points]
        axis.plot(xs, [p[1] for p in points], marker="o", color=color, label=name.replace("_", " "))
        if all(p[2] is not None for p in points):
            axis.fill_between(xs, [p[2] for p in points], [p[3] for p in points], color=color, alpha=0.15)
    peak, onset = summary["peak_step"], summary.get("onset_step")
    axis.axvline(peak, color="tab:gray", linestyle=":", label=f"gold peak (step {peak})")
    if onset is not None:
        axis.axvline(onset, color="tab:red", linestyle="--", label=f"onset (step {onset})")
    _mark_refinements(axis, refined_steps or [], "tab:green", "rubric refined")
    axis.set_xlabel("training step")
    axis.set_ylabel("held-out score")
    axis.set_xlim(min(steps) - 0.5, max(steps) + 0.5)
    axis.set_title(summary.get("title") or "proxy vs gold on held-out prompts")
    axis.grid(alpha=0.3)
    axis.legend(loc="best", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _mark_refinements(axis, steps: list[int], color: str, label: str) -> None:
    """A tick at the bottom of the plot per step at which rubrics changed (the count beside it when several)."""
    counts: dict[int, int] = {}
    for step in steps:
        counts[step] = counts.get(step, 0) + 1
    if not counts:
        return
    axis.plot(list(counts), [0.0] * len(counts), marker="^", linestyle="none", color=color, markersize=8,
              transform=axis.get_xaxis_transform(), clip_on=False, label=f"{label} ({len(steps)})")
    for step, count in counts.items():
        if count > 1:
            axis.annotate(str(count), (step, 0.03), xycoords=("data", "axes fraction"), ha="center", fontsize=7)


def wandb_run():
    """The active W&B run, or None (W&B not installed, not reporting, or not on this process)."""
    try:
        import wandb
    except ImportError:
        return None
    return wandb.run


def log_evaluation(run, record: dict[str, Any]) -> None:
    metrics = {f"overopt/{k}": v for k, v in record.items() if k != "step" and isinstance(v, (int, float))}
    run.log({**metrics, "train/global_step": record["step"]})


def alert_onset(run, summary: dict[str, Any]) -> None:
    import wandb

    text = (
        f"Gold peaked at step {summary['peak_step']} and has fallen since step {summary['onset_step']} while the "
        f"proxy held (proxy {summary['at_onset'].get('proxy'):.3f}, gold {summary['at_onset'].get('gold'):.3f}). "
        f"Best-by-gold model: {summary.get('best_gold_dir') or 'not kept'}."
    )
    try:
        run.alert(title="Reward over-optimization onset", text=text, level=wandb.AlertLevel.WARN)
    except Exception as exc:  # offline runs and some W&B servers refuse alerts; the summary still says it
        logger.warning("W&B alert not sent (%s): %s", exc, text)


def log_summary(run, summary: dict[str, Any], history: list[dict[str, Any]], samples: list[dict[str, Any]],
                plot_path: Path) -> None:
    """Summary fields, the proxy-vs-gold chart and the tables of samples at the peak and at onset."""
    import wandb

    for key in ("peak_step", "onset_step", "detected_step"):
        run.summary[f"overopt/{key}"] = summary.get(key)
    steps = [r["step"] for r in history]
    series = [(name, [r.get(name) for r in history]) for name in ("proxy", "gold", "win_rate")]
    series = [(name, values) for name, values in series if all(v is not None for v in values)]
    run.log({
        "overopt/proxy_vs_gold": wandb.plot.line_series(
            xs=steps, ys=[v for _, v in series], keys=[n for n, _ in series], title="proxy vs gold", xname="step"
        ),
        "overopt/plot": wandb.Image(str(plot_path)),
    })
    for label in ("peak_step", "onset_step"):
        step = summary.get(label)
        rows = [s for s in samples if s["step"] == step]
        if rows:
            columns = list(rows[0])
            table = wandb.Table(columns=columns, data=[[_cell(row[c]) for c in columns] for row in rows])
            run.log({f"overopt/samples_at_{label.removesuffix('_step')}": table})


def _cell(value: Any) -> Any:
    """A table cell: per-criterion verdicts ({criterion id: passed}) as JSON text."""
    return json.dumps(value, sort_keys=True) if isinstance(value, dict) else value


def pattern_share(samples_path: Path, pattern: re.Pattern) -> dict[int, float]:
    """Per evaluated step, the share of the monitor's samples in which `pattern` occurs: whether a policy took up
    a style or marker (an artifact) that the proxy rewards and the gold ignores."""
    if not samples_path.exists():
        raise FileNotFoundError(f"{samples_path}: no monitor samples to search for {pattern.pattern!r}")
    hits: dict[int, list[bool]] = {}
    for line in samples_path.read_text().splitlines():
        sample = json.loads(line)
        hits.setdefault(sample["step"], []).append(pattern.search(sample["response"]) is not None)
    return {step: sum(found) / len(found) for step, found in sorted(hits.items())}


_REFINEMENT_COLUMNS = ("refinements", "first_refinement_step", "refinement_attempts", "gold_calls", "judge_calls",
                       "proposer_calls", "fresh_answers", "fresh_generation_s")


def compare_runs(run_dirs: list[Path], out_prefix: Path, pattern: re.Pattern | None = None) -> list[dict[str, Any]]:
    """Side by side: each run's proxy and gold over steps in one PNG (onsets and rubric refinements marked), a JSON
    of the key figures,
    and the rows of the table `rubric-rft overopt-report` prints. With `pattern`, also the share of samples that
    match it, per step (a second panel) and first and last (`pattern_first`, `pattern_last`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, refined_any = [], False
    if pattern is None:
        figure, axis = plt.subplots(figsize=(8, 4.5))
    else:
        figure, (axis, share_axis) = plt.subplots(2, 1, figsize=(8, 7), sharex=True, height_ratios=(3, 2))
    for color, run_dir in zip(("tab:red", "tab:blue", "tab:green", "tab:purple"), run_dirs, strict=False):
        summary_path = run_dir / "overopt.json"
        if not summary_path.exists():
            raise FileNotFoundError(f"{summary_path}: no monitor summary (was the run trained with `monitor:`?)")
        summary = json.loads(summary_path.read_text())
        history = [json.loads(line) for line in (run_dir / "overopt.jsonl").read_text().splitlines()]
        metric, name = summary["gold_metric"], run_dir.name
        steps = [r["step"] for r in history]
        axis.plot(steps, [r[metric] for r in history], color=color, marker="o", label=f"{name}: gold")
        axis.plot(steps, [r["proxy"] for r in history], color=color, linestyle=":", alpha=0.7, label=f"{name}: proxy")
        if summary["onset_step"] is not None:
            axis.axvline(summary["onset_step"], color=color, linestyle="--", alpha=0.8, label=f"{name}: onset")
        records = refinement_records(run_dir)
        accepted = [r for r in records if r.get("status") == "accepted"]
        attempts = [r for r in records if "pairs" in r]
        refined_any = refined_any or bool(records)
        _mark_refinements(axis, [r["step"] for r in accepted], color, f"{name}: rubric refined")
        last = history[-1]
        rows.append({
            "run": name,
            "peak_step": summary["peak_step"],
            "onset_step": summary["onset_step"],
            "detected_step": summary["detected_step"],
            "gold_at_peak": summary["at_peak"][metric],
            "gold_last": last[metric],
            "proxy_first": history[0]["proxy"],
            "proxy_last": last["proxy"],
            "kl_last": last.get("kl"),
            "length_first": history[0].get("completion_length"),
            "length_last": last.get("completion_length"),
            "monitor_share": summary.get("monitor_share"),
            "wall_s": train_runtime(run_dir),
            "refinements": sum(r.get("changes", 1) for r in accepted),  # a transfer changes several rubrics
            "first_refinement_step": min((r["step"] for r in accepted), default=None),
            "refinement_attempts": len(attempts),
            "gold_calls": sum(len(r["pairs"]) for r in attempts),
            "judge_calls": sum(r.get("judge_calls", 0) for r in attempts),
            "proposer_calls": sum(r.get("proposer_costs", {}).get("calls", 0) for r in attempts),
            "fresh_answers": sum(r["completions"] for r in records if r.get("status") == "sampled"),
            "fresh_generation_s": sum(r["generation_s"] for r in records if r.get("status") == "sampled"),
        })
        if pattern is not None:
            shares = pattern_share(run_dir / "overopt_samples.jsonl", pattern)
            share_axis.plot(list(shares), list(shares.values()), color=color, marker="o", label=name)
            rows[-1].update(pattern_first=shares[steps[0]], pattern_last=shares[steps[-1]])
    if not refined_any:  # runs without online refinement: no columns for it
        for row in rows:
            for column in _REFINEMENT_COLUMNS:
                del row[column]
    axis.set_ylabel("held-out score")
    axis.set_title("gold (solid) and proxy (dotted) scores on held-out prompts")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, loc="best")
    if pattern is None:
        axis.set_xlabel("training step")
    else:
        share_axis.set_xlabel("training step")
        share_axis.set_ylabel("share of samples")
        share_axis.set_ylim(-0.05, 1.05)
        share_axis.set_title(f"held-out samples that match /{pattern.pattern}/", fontsize=9)
        share_axis.grid(alpha=0.3)
        share_axis.legend(fontsize=7, loc="best")
    figure.tight_layout()
    out_prefix.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_prefix.with_suffix(".png"), dpi=120)
    plt.close(figure)
    out_prefix.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")
    return rows
