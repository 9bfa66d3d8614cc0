"""Local run files: metrics.jsonl is cut back to a checkpoint's step when a run resumes from it."""

import json
from types import SimpleNamespace

from rubric_rft.training.tracking import MetricsJsonlCallback


def test_metrics_are_cut_back_to_the_checkpoint_a_run_resumes_from(tmp_path):
    metrics = MetricsJsonlCallback(str(tmp_path))
    for step in range(1, 6):  # the crashed run logged steps 1..5; its last checkpoint is at step 3
        metrics.on_log(None, SimpleNamespace(is_world_process_zero=True, global_step=step), None, logs={"loss": step})
    checkpoint = tmp_path / "checkpoint-3"
    checkpoint.mkdir()
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": 3}))
    metrics.restore(checkpoint)
    metrics.on_log(None, SimpleNamespace(is_world_process_zero=True, global_step=4), None, logs={"loss": 40})
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(m["step"], m["loss"]) for m in lines] == [(1, 1), (2, 2), (3, 3), (4, 40)]


def test_a_run_resumed_before_it_logged_anything_starts_the_file(tmp_path):
    checkpoint = tmp_path / "checkpoint-2"
    checkpoint.mkdir()
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": 2}))
    MetricsJsonlCallback(str(tmp_path)).restore(checkpoint)
    assert not (tmp_path / "metrics.jsonl").exists()
