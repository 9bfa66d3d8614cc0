"""Where a run's results go: Weights & Biases (offline when there is no account) and plain local files.

Local files are the record that tests and users read back: W&B's offline run keeps its metrics in a binary
file that Python cannot read back, and writes no summary offline.
"""

from __future__ import annotations

import json
import netrc
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from transformers import TrainerCallback


def configure_wandb(report_to: list[str] | str | None, output_dir: str, project: str = "rubric-rft") -> None:
    """Default W&B to offline mode when no API key is available, and keep its files under `output_dir`.

    Explicit settings (`WANDB_MODE`, `WANDB_DIR`, `WANDB_PROJECT`) are left as they are.
    """
    targets = [report_to] if isinstance(report_to, str) else (report_to or [])
    if "wandb" not in targets and "all" not in targets:
        return
    os.environ.setdefault("WANDB_PROJECT", project)
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("WANDB_DIR", str(Path(output_dir).resolve()))
    if "WANDB_MODE" not in os.environ and not _has_wandb_credentials():
        os.environ["WANDB_MODE"] = "offline"


def _has_wandb_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def append_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> None:
    """Append `records` to a JSONL file, one line each; a run's logs grow by appending, so a crash loses no line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in records)


def cut_jsonl_after(path: str | Path, step: int) -> None:
    """Drop the lines of a run's JSONL log whose `step` is after `step`: on resume from a checkpoint at `step`, the
    steps after it were written by the run that crashed and are written again by the resumed one."""
    path = Path(path)
    if path.exists():
        kept = [line for line in path.read_text(encoding="utf-8").splitlines()
                if line.strip() and json.loads(line)["step"] <= step]
        path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")


class MetricsJsonlCallback(TrainerCallback):
    """Appends every log (loss, reward, rubric metrics, ...) to `OUTPUT_DIR/metrics.jsonl`, main process only."""

    def __init__(self, output_dir: str) -> None:
        self.path = Path(output_dir) / "metrics.jsonl"

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            append_jsonl(self.path, [{"step": state.global_step, **logs}])

    def restore(self, checkpoint: str | Path) -> None:
        """Cut `metrics.jsonl` back to the checkpoint's step (main process): the steps after it were logged by the
        run that crashed and are logged again by the resumed one."""
        step = json.loads((Path(checkpoint) / "trainer_state.json").read_text(encoding="utf-8"))["global_step"]
        cut_jsonl_after(self.path, step)


def log_samples_to_wandb(rows: list[dict[str, Any]]) -> None:
    """Before/after answers as a W&B table, when a W&B run is active."""
    try:
        import wandb
    except ImportError:
        return
    if wandb.run is None or not rows:
        return
    columns = list(rows[0])
    wandb.log({"samples": wandb.Table(columns=columns, data=[[row[c] for c in columns] for row in rows])})
