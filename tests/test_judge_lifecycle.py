"""Judges can be closed and used again, by any caller, on any event loop: the monitor closes its judges after
every evaluation, and each evaluation runs on a fresh loop. A judge whose model cannot load stops the run at the
start, naming the model, instead of failing every grade of the run."""

import asyncio
from pathlib import Path

import pytest

from rubric_rft.judges.base import GradeRequest
from rubric_rft.judges.hf_local import HFJudgeConfig, JudgeModelError
from rubric_rft.judges.openai_compat import OpenAIJudgeConfig
from rubric_rft.judges.registry import build_judge
from rubric_rft.rubrics.format import Criterion
from rubric_rft.training.monitor.callback import OverOptimizationMonitor
from tests.test_monitor import grpo_trainer, monitor_config, read_jsonl

ROOT = Path(__file__).resolve().parent.parent
EVERYDAY = ROOT / "data" / "everyday"
REQUEST = GradeRequest(
    "What is the capital of France?",
    "The capital of France is Paris.",
    (Criterion(id="paris", text="The response names Paris.", weight=1),),
)


@pytest.mark.slow
def test_a_monitor_with_a_cached_hf_gold_judge_evaluates_more_than_once(tmp_path, tiny_model_path):
    gold = {
        "rubrics_path": str(EVERYDAY / "heldout_llm.jsonl"),
        "judge": {"backend": "hf", "model": tiny_model_path, "cache_path": str(tmp_path / "gold.sqlite")},
    }
    monitor = OverOptimizationMonitor(
        monitor_config(gold=gold, num_prompts=2, samples_per_prompt=1), str(tmp_path), max_new_tokens=8
    )
    grpo_trainer(tiny_model_path, tmp_path, monitor, max_steps=2).train()

    history = read_jsonl(tmp_path / "overopt.jsonl")
    assert [r["step"] for r in history] == [0, 1, 2]
    assert all(r["gold_failures"] == 0 and r["gold"] is not None for r in history)


@pytest.mark.parametrize("backend", ["hf", "openai"])
def test_a_closed_judge_grades_again_from_its_cache_on_a_new_event_loop(backend, tmp_path, tiny_model_path):
    cache = str(tmp_path / "verdicts.sqlite")
    if backend == "hf":
        config = HFJudgeConfig(model=tiny_model_path, cache_path=cache)
    else:  # nothing listens on port 9: only the cache can answer the second time
        config = OpenAIJudgeConfig(model="m", base_urls=["http://127.0.0.1:9/v1"], cache_path=cache, max_retries=0)
    judge = build_judge(config)

    async def grade_and_close():
        async with judge:
            return await judge.grade(REQUEST)

    if backend == "hf":
        first = asyncio.run(grade_and_close())
        assert first.ok and first.calls == 1
    again = asyncio.run(grade_and_close())
    asyncio.run(judge.aclose())  # closing twice is harmless
    if backend == "hf":
        assert again.ok and again.cache_hits == 1 and again.calls == 0
    else:
        assert not again.ok and "connection" in again.error


def test_a_judge_model_that_cannot_load_fails_at_start_naming_it(tmp_path):
    (tmp_path / "config.json").write_text("{}")  # a folder that is no model
    with pytest.raises(JudgeModelError, match=f"judge model '{tmp_path}' cannot be loaded"):
        build_judge({"backend": "hf", "model": str(tmp_path)})
