"""Callback state that lives inside each checkpoint's `trainer_state.json`: a checkpoint holds all of a run's state,
or it is not complete.

When transformers saves a checkpoint it writes the weights, the optimizer and the RNG state, then
`trainer_state.json`, and only then calls the callbacks' `on_save`. A callback that wrote its own file in `on_save`
left a gap in which a killed job had a checkpoint that looked complete but lacked that file. A callback that is an
`ExportableState` is instead asked for its `state()` just before `trainer_state.json` is written, and that state is
stored in the file (`stateful_callbacks`): written with it and read back with it (`saved_state`).
`last_complete_checkpoint` skips a checkpoint whose `trainer_state.json` is missing or cut short, as the Slurm scripts
do (`slurm/common.sh resume_args`).
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

logger = logging.getLogger(__name__)

TRAINER_STATE = "trainer_state.json"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


class ResumeSettingsError(ValueError):
    """A training setting that would break resuming these callbacks."""


def check_resume_settings(args) -> None:
    """Refuse `restore_callback_states_from_checkpoint`: transformers would rebuild `CheckpointedCallback`s from
    their saved `args`, but they take objects (models, stores) that JSON cannot hold and restore themselves."""
    if args.restore_callback_states_from_checkpoint:
        raise ResumeSettingsError(
            "restore_callback_states_from_checkpoint: leave it false; the rubric store, the monitor and online "
            "refinement restore their own state from the checkpoint's trainer_state.json")


class CheckpointedCallback(TrainerCallback, ExportableState):
    """A callback whose `state_dict()` is saved in every checkpoint's `trainer_state.json`; it restores itself from
    there (`saved_state`), so training must not set `restore_callback_states_from_checkpoint`."""

    def state_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def state(self) -> dict[str, Any]:
        return {"args": {}, "attributes": self.state_dict()}

    def on_train_begin(self, args, state, control, **kwargs):
        # A run resumed from a checkpoint saved without this callback: transformers' save looks its entry up by name.
        state.stateful_callbacks.setdefault(type(self).__name__, self.state())
        return control


def saved_state(checkpoint: str | Path, callback: str) -> dict[str, Any] | None:
    """The state `callback` (a class name) saved in `checkpoint`, or None when it saved none there."""
    path = Path(checkpoint) / TRAINER_STATE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no trainer state; {checkpoint} is not a complete checkpoint")
    entry = json.loads(path.read_text(encoding="utf-8")).get("stateful_callbacks", {}).get(callback)
    return None if entry is None else entry["attributes"]


def last_complete_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest `checkpoint-N` in `output_dir` whose `trainer_state.json` reads as JSON (the trainer writes it
    last); newer ones cut short by a kill are named in a warning and skipped."""
    folder = Path(output_dir)
    steps = sorted(
        (int(match.group(1)), path)
        for path in (folder.iterdir() if folder.is_dir() else [])
        if path.is_dir() and (match := _CHECKPOINT.match(path.name))
    )
    for _, path in reversed(steps):
        try:
            json.loads((path / TRAINER_STATE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            logger.warning("%s is incomplete (no readable %s): skipped", path, TRAINER_STATE)
            continue
        return path
    return None
