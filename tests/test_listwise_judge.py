"""Group-relative (listwise) judging against the scripted server: one question per GRPO group with the verdicts of a
one-at-a-time judge, repeats shown once, the order shuffled reproducibly and recorded, large groups split, partial
or malformed answers retried and then unscored, and a listwise member inside a panel."""

import asyncio

import pytest

from rubric_rft.judges.base import GradeRequest
from rubric_rft.judges.parsing import parse_grouped
from rubric_rft.judges.registry import build_judge
from rubric_rft.llm.answers import MalformedAnswer
from rubric_rft.llm.endpoint import load_endpoint
from rubric_rft.reward.rubric_reward import RubricReward
from rubric_rft.rubrics.format import Criterion, Rubric
from rubric_rft.testing.judge_server import DEFAULT_MODEL, JudgeServer

RUBRIC = Rubric(id="tea", criteria=[Criterion(id="water", text="Mentions 'water'.", weight=2),
                          Criterion(id="tea", text="Mentions 'tea'.", weight=1),
                          Criterion(id="rude", text="Uses the word 'stupid'.", weight=-1)])
GROUP_A = ["Boil water and add tea.", "Boil water.", "Tea is stupid.", "Boil water."]  # a repeat: shown once
GROUP_B = ["Water, then tea leaves.", "Ask someone.", "Tea.", "Water, stupid."]


def judge_config(server, **options):
    return {"backend": "listwise", "model": DEFAULT_MODEL, "base_urls": [server.base_url], "max_retries": 1,
            "backoff_initial_s": 0, **options}


def reward_scores(config, prompts, completions):
    async def run():
        async with RubricReward(build_judge(config)) as reward:
            return await reward.grade(prompts, completions, [RUBRIC] * len(completions))

    return asyncio.run(run())


def batch():
    return ["How do I make tea?"] * 4 + ["Make tea, quickly."] * 4, GROUP_A + GROUP_B


def test_a_group_is_one_question_with_the_verdicts_of_one_at_a_time_judging():
    prompts, completions = batch()
    with JudgeServer() as server:
        alone = reward_scores({**judge_config(server), "backend": "openai"}, prompts, completions)
        asked_alone = server.stats.requests
        grouped = reward_scores(judge_config(server), prompts, completions)
        asked_grouped = server.stats.requests - asked_alone
    assert asked_alone == 7 and asked_grouped == 2  # one question per group (the repeat single-flighted alone)
    assert [g.score for g in grouped] == [g.score for g in alone]
    assert [g.satisfied for g in grouped] == [g.satisfied for g in alone]
    verdicts = [g.verdict for g in grouped]
    assert sum(v.calls for v in verdicts) == 2  # each question's cost is counted once, on one verdict
    assert [v.group_size for v in verdicts] == [3] * 4 + [4] * 4
    assert verdicts[1].position == verdicts[3].position  # the repeat shares its verdicts and place
    assert sorted(v.position for v in verdicts[4:]) == [0, 1, 2, 3]


def test_the_order_shown_is_recorded_seeded_and_independent_of_the_batch_order():
    prompts, completions = batch()
    with JudgeServer() as server:
        graded = reward_scores(judge_config(server), prompts, completions)
        for group in (completions[:4], completions[4:]):
            shown = next(s for s in server.stats.shown if set(s) == set(group))
            for completion, g in zip(completions, graded, strict=True):
                if completion in group:
                    assert shown[g.verdict.position] == completion
        first = list(server.stats.shown)
        reward_scores(judge_config(server, cache_path=None), prompts[::-1], completions[::-1])
        assert sorted(server.stats.shown[2:]) == sorted(first)  # same seed, same order, whatever the batch order
        reward_scores(judge_config(server, shuffle_seed=None), prompts, completions)
        assert server.stats.shown[-2:] == [("Boil water and add tea.", "Boil water.", "Tea is stupid."),
                                           tuple(GROUP_B)]  # unshuffled: the order they came in
        orders = set()
        for seed in range(1, 6):
            reward_scores(judge_config(server, shuffle_seed=seed), prompts[4:], completions[4:])
            orders.add(server.stats.shown[-1])
        assert len(orders) > 1


def test_per_criterion_asks_one_question_per_criterion_and_big_groups_are_split():
    prompts, completions = batch()
    with JudgeServer() as server:
        alone = reward_scores({**judge_config(server), "backend": "openai"}, prompts, completions)
        before = server.stats.requests
        per_criterion = reward_scores(judge_config(server, group_request="per_criterion"), prompts, completions)
        assert server.stats.requests - before == 2 * 3
        before = server.stats.requests
        split = reward_scores(judge_config(server, max_group_size=2), prompts, completions)
        assert server.stats.requests - before == 2 + 2  # 3 distinct responses -> 2 questions, 4 -> 2
        assert all(len(shown) <= 2 for shown in server.stats.shown[-4:])
    assert [g.score for g in per_criterion] == [g.score for g in split] == [g.score for g in alone]
    assert sorted(g.verdict.group_size for g in split[4:]) == [2, 2, 2, 2]


def test_malformed_answers_are_retried_then_leave_the_whole_group_unscored():
    prompts, completions = batch()
    with JudgeServer(malformed_first_n=1) as server:
        graded = reward_scores(judge_config(server, shuffle_seed=None), prompts[:4], completions[:4])
    assert all(g.score is not None for g in graded)
    assert sum(g.verdict.malformed for g in graded) == 1 and sum(g.verdict.retries for g in graded) == 1
    with JudgeServer(truncated_first_n=2) as server:
        graded = reward_scores(judge_config(server), prompts[:4], completions[:4])
    assert all(g.score is None and "malformed" in g.error and g.error.startswith("listwise:") for g in graded)
    assert sum(g.verdict.calls for g in graded) == 2


def test_partial_listwise_answers_do_not_parse():
    complete = '{"r1": {"c1": "yes", "c2": "no"}, "r2": {"c1": "no", "c2": "no"}}'
    assert parse_grouped(complete, ["r1", "r2"], ["c1", "c2"]) == {"r1": {"c1": True, "c2": False},
                                                                   "r2": {"c1": False, "c2": False}}
    for partial, problem in [('{"r1": {"c1": "yes", "c2": "no"}}', "no verdicts for r2"),
                             ('{"r1": {"c1": "yes"}, "r2": {"c1": "no", "c2": "no"}}', "no verdict for r1 c2"),
                             ('{"r1": "yes", "r2": {"c1": "no", "c2": "no"}}', "r1 is not an object"),
                             ('{"r1": {"c1": "maybe", "c2": "no"}, "r2": {"c1": "no", "c2": "no"}}', "r1 c1")]:
        with pytest.raises(MalformedAnswer, match=problem):
            parse_grouped(partial, ["r1", "r2"], ["c1", "c2"])


def test_structured_answers_send_the_nested_schema():
    prompts, completions = batch()
    with JudgeServer() as server:
        reward_scores(judge_config(server, structured_answers=True), prompts[:4], completions[:4])
        reward_scores(judge_config(server, structured_answers=True, group_request="per_criterion"),
                      prompts[:4], completions[:4])
        nested, flat = server.stats.constraints[0], server.stats.constraints[-1]
    schema = nested["response_format"]["json_schema"]["schema"]
    assert schema["required"] == ["r1", "r2", "r3"]
    assert schema["properties"]["r2"]["required"] == ["c1", "c2", "c3"]
    assert flat["response_format"]["json_schema"]["schema"]["properties"]["r1"] == {"type": "string",
                                                                                    "enum": ["yes", "no"]}


def test_a_panel_asks_its_listwise_member_once_per_group():
    prompts, completions = batch()
    with JudgeServer() as listwise, JudgeServer() as alone:
        config = {"backend": "panel", "members": [judge_config(listwise),
                                                  {**judge_config(alone), "backend": "openai"}], "quorum": 2}
        graded = reward_scores(config, prompts, completions)
        assert listwise.stats.requests == 2 and alone.stats.requests == 7
    assert all(g.score is not None for g in graded)
    assert all(c.disagreement == 0 for g in graded for c in g.verdict.criteria.values())


def test_a_listwise_judge_grades_one_request_alone_and_its_config_serves_as_an_endpoint():
    with JudgeServer() as server:
        judge = build_judge(judge_config(server))
        verdict = asyncio.run(judge.grade(GradeRequest("How do I make tea?", "Boil water.",
                                                       tuple(RUBRIC.llm_criteria))))
        asyncio.run(judge.aclose())
    assert verdict.ok and verdict.group_size == 1 and verdict.position == 0
    assert verdict.criteria["water"].satisfied and not verdict.criteria["tea"].satisfied
    endpoint = load_endpoint(judge.config)  # e.g. the proposer on the judge's server
    assert endpoint.base_urls == judge.config.base_urls and endpoint.backend == "openai"
