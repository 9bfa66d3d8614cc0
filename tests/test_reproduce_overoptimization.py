"""`scripts/reproduce_overoptimization.sh`: the prompt-only rubric is over-optimized, the refined one later or never."""

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


# The documented runs take 24 steps; the same seed gives the same first 8 (constant learning rate), which hold
# the prompt-only onset (detected at step 8) and keep CI's time in bounds.
STEPS = "8"


@pytest.mark.slow
def test_the_refined_rubric_delays_or_prevents_the_onset(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    command = ["bash", "scripts/reproduce_overoptimization.sh", str(tmp_path), "--max_steps", STEPS]
    subprocess.run(command, cwd=ROOT, env=env, check=True, timeout=1500)
    prompt_only, refined = (json.loads((tmp_path / run / "overopt.json").read_text()) for run in ("prompt_only",
                                                                                                   "refined"))
    assert prompt_only["onset_step"] is not None, "the prompt-only rubric's loophole is found and reported"
    assert prompt_only["at_onset"]["proxy"] >= prompt_only["at_peak"]["proxy"] - prompt_only["rule"]["proxy_tolerance"]
    assert refined["onset_step"] is None or refined["onset_step"] > prompt_only["onset_step"]
    assert prompt_only["evaluations"] == refined["evaluations"], "same steps, same cadence"
    comparison = json.loads((tmp_path / "comparison.json").read_text())
    assert [row["run"] for row in comparison] == ["prompt_only", "refined"]
    assert (tmp_path / "comparison.png").stat().st_size > 10_000
