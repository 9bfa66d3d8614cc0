"""Reward objectives by criterion tag: one TRL reward function per tag over one grading, TRL's aggregation reached
from the config, and the training script on the tiny model."""

import asyncio
import json

import pytest
from test_training import run_script, script_args

from rubric_rft.reward.config import load_reward_config
from rubric_rft.reward.objectives import RubricObjectives
from rubric_rft.reward.rubric_reward import RubricReward
from rubric_rft.rubrics.format import Rubric


def rule(cid, weight, tag, check):
    return {"id": cid, "text": cid, "kind": "rule", "weight": weight, "tags": [tag], "check": check}


RUBRIC = {"id": "tea", "criteria": [
    rule("steeps", 2, "content", {"type": "contains", "any_of": ["steep"]}),
    rule("milk", 1, "content", {"type": "contains", "any_of": ["milk"]}),
    rule("short", 1, "format", {"type": "word_count", "max": 6}),
    rule("shouts", -1, "safety", {"type": "regex", "pattern": "!"}),
]}


class CountingReward(RubricReward):
    """A rubric reward that counts the batches it grades."""

    def __init__(self):
        super().__init__(None)
        self.batches = 0

    async def grade(self, prompts, completions, rubrics):
        self.batches += 1
        return await super().grade(prompts, completions, rubrics)


def test_each_tag_is_a_reward_function_over_one_grading_of_the_whole_rubric():
    reward = CountingReward()
    objectives = RubricObjectives(reward, ["content", "format", "safety", "style"])
    completions = ["Steep it with milk.", "Just boil some water and pour it!"]
    logged = {}

    async def step():
        return await asyncio.gather(*(f(["q", "q"], completions, log_metric=logged.__setitem__,
                                        rubric=[RUBRIC, RUBRIC]) for f in objectives.functions))

    content, form, safety, style = asyncio.run(step())
    assert [f.__name__ for f in objectives.functions] == ["rubric_content", "rubric_format", "rubric_safety",
                                                           "rubric_style"]
    assert content == [1.0, 0.0] and form == [1.0, 0.0] and safety == [1.0, 0.0]
    assert style == [None, None]  # no criterion carries the tag
    assert reward.batches == 1 and "rubric/pass_rate" in logged  # graded once, the whole rubric's metrics logged
    asyncio.run(step())
    assert reward.batches == 2  # a new batch is graded anew


def test_objective_scores_and_the_config():
    rubric = Rubric.model_validate(RUBRIC)
    satisfied = {"steeps": True, "milk": False, "short": True, "shouts": True}
    assert rubric.objective_score("content", satisfied) == pytest.approx(2 / 3)
    assert rubric.objective_score("safety", satisfied) == 0.0 and rubric.objective_score("nope", satisfied) is None
    assert rubric.score(satisfied) == pytest.approx(2 / 4)  # the whole rubric is unchanged
    assert load_reward_config({"objectives": ["content", "format"]}).objectives == ["content", "format"]
    with pytest.raises(ValueError, match="reward.objectives"):
        load_reward_config({"objectives": ["content"]})


@pytest.mark.slow
def test_the_training_script_trains_on_objectives_with_gdpo_aggregation(tmp_path, tiny_model_path):
    prompts = ["How do I make tea?", "How do I boil an egg?", "How do I cook rice?", "How do I toast bread?"]
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"prompt_id": f"p{i}", "prompt": [{"role": "user", "content": p}],
                                        "rubric": {**RUBRIC, "id": f"p{i}"}}) + "\n" for i, p in enumerate(prompts)))
    out = tmp_path / "run"
    run_script(script_args(out, tiny_model_path, data, "--max_steps", "2", "--num_samples", "0",
                           "--reward", json.dumps({"objectives": ["content", "format", "safety"]}),
                           "--multi_objective_aggregation", "normalize_then_sum",
                           "--reward_weights", "2.0", "1.0", "1.0"))
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [m for m in logged if "reward" in m]
    assert len(steps) == 2
    for metrics in steps:
        for tag in ("content", "format", "safety"):
            assert 0.0 <= metrics[f"rewards/rubric_{tag}/mean"] <= 1.0
        assert "rubric/pass_rate" in metrics
