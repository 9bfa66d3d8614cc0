"""Rubrics that survive a crash: the rubric store goes into every checkpoint, the rubrics a run ended with into
`OUTPUT_DIR/rubrics.jsonl`, and every version a run used, each with its `parent` and `reason`, into
`OUTPUT_DIR/rubric_lineage.jsonl` (both rubric JSONL, what `rubric-rft validate` reads). Resuming loads the store back
(`RubricStore.restore`), so a resumed run grades with the rubrics the interrupted one had."""

from __future__ import annotations

import logging
from pathlib import Path

from transformers import TrainerCallback

from rubric_rft.rubrics.format import save_rubrics
from rubric_rft.rubrics.store import FINAL_RUBRICS_FILE, LINEAGE_FILE, RubricStore

logger = logging.getLogger(__name__)


class RubricStoreCallback(TrainerCallback):
    """Saves the store into every checkpoint and, at the end of training, the current rubrics into
    `OUTPUT_DIR/rubrics.jsonl` (rubric JSONL, what `rubric-rft validate` reads); on the main process only."""

    def __init__(self, store: RubricStore) -> None:
        self.store = store

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            path = self.store.save(Path(args.output_dir) / f"checkpoint-{state.global_step}")
            logger.info("rubric store: saved %d prompts to %s", len(self.store), path)
        return control

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            save_rubrics(self.store.current(), Path(args.output_dir) / FINAL_RUBRICS_FILE)
            save_rubrics(self.store.lineage(), Path(args.output_dir) / LINEAGE_FILE)
        return control
