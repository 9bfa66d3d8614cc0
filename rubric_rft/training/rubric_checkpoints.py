"""Rubrics that survive a crash: the rubric store is saved in every checkpoint's `trainer_state.json`
(`rubric_rft.training.checkpoint_state`), the rubrics a run ended with go to `OUTPUT_DIR/rubrics.jsonl`, and every
version a run used, each with its `parent` and `reason`, to `OUTPUT_DIR/rubric_lineage.jsonl` (both rubric JSONL,
what `rubric-rft validate` reads). `restore(checkpoint)` loads the store back, so a resumed run grades with the
rubrics the interrupted one had."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from rubric_rft.rubrics.format import save_rubrics
from rubric_rft.rubrics.store import FINAL_RUBRICS_FILE, LINEAGE_FILE, RubricStore
from rubric_rft.training.checkpoint_state import CheckpointedCallback, saved_state

logger = logging.getLogger(__name__)


class RubricStoreCallback(CheckpointedCallback):
    """Saves the store in every checkpoint and, at the end of training, the current rubrics into
    `OUTPUT_DIR/rubrics.jsonl` and every version into `OUTPUT_DIR/rubric_lineage.jsonl` (main process only)."""

    def __init__(self, store: RubricStore) -> None:
        self.store = store

    def state_dict(self) -> dict[str, Any]:
        return self.store.state_dict()

    def restore(self, checkpoint: str | Path) -> None:
        """Load the store saved in `checkpoint`; a checkpoint without one is an error (its run had no rubric reward)."""
        saved = saved_state(checkpoint, type(self).__name__)
        if saved is None:
            raise FileNotFoundError(f"{checkpoint}: no rubric store in this checkpoint (was it saved by a run with "
                                    "the rubric reward?)")
        self.store.load_state_dict(saved)
        logger.info("rubric store: resumed %d prompts from %s", len(self.store), checkpoint)

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            save_rubrics(self.store.current(), Path(args.output_dir) / FINAL_RUBRICS_FILE)
            save_rubrics(self.store.lineage(), Path(args.output_dir) / LINEAGE_FILE)
        return control
