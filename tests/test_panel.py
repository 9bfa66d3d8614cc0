"""A panel of judges: per-criterion aggregation (majority, mean P(yes), strictest), disagreement, quorum, and a panel
of three real clients against scripted servers as the reward."""

import asyncio

import pytest

from rubric_rft.judges.base import CriterionVerdict, GradeRequest, Verdict
from rubric_rft.judges.panel import PanelJudge
from rubric_rft.judges.registry import build_judge, load_judge_config
from rubric_rft.reward.rubric_reward import RubricReward
from rubric_rft.rubrics.format import Criterion, Rubric
from rubric_rft.testing.judge_server import DEFAULT_MODEL, default_policy

HELPS = Criterion(id="helps", text="Mentions 'water'.", weight=2)
PITFALL = Criterion(id="rude", text="Is rude.", weight=-1)
REQUEST = GradeRequest("How do I make tea?", "Boil water.", (HELPS, PITFALL))


class Member:
    """A judge that answers with fixed votes ({criterion id: (satisfied, P(yes))}), or fails."""

    def __init__(self, name, votes=None, error=None):
        self.name, self.votes, self.error = name, votes, error

    async def grade(self, request):
        if self.error:
            return Verdict(calls=1, error=self.error)
        return Verdict(calls=1, criteria={cid: CriterionVerdict(*vote) for cid, vote in self.votes.items()})

    async def aclose(self):
        pass


def panel(*members, **settings) -> PanelJudge:
    endpoint = {"backend": "openai", "model": "m", "base_urls": ["http://127.0.0.1:9/v1"]}
    judge = build_judge({"backend": "panel", "members": [endpoint] * len(members), **settings})
    judge.members = list(members)
    return judge


def grade(judge, request=REQUEST) -> Verdict:
    return asyncio.run(judge.grade(request))


YES_YES_NO = [Member("a", {"helps": (True, 0.9), "rude": (False, 0.1)}),
              Member("b", {"helps": (True, 0.6), "rude": (True, 0.7)}),
              Member("c", {"helps": (False, 0.1), "rude": (False, 0.2)})]


def test_majority_mean_and_strictest_aggregate_each_criterion_and_say_how_much_the_members_disagree():
    majority = grade(panel(*YES_YES_NO))
    assert majority.ok and majority.calls == 3
    assert (majority.criteria["helps"].satisfied, majority.criteria["rude"].satisfied) == (True, False)
    assert majority.criteria["helps"].disagreement == pytest.approx(1 / 3)
    mean = grade(panel(*YES_YES_NO, aggregate="mean"))
    assert mean.criteria["helps"].probability == pytest.approx(1.6 / 3) and mean.criteria["helps"].satisfied
    assert mean.criteria["rude"].probability == pytest.approx(1.0 / 3) and not mean.criteria["rude"].satisfied
    strictest = grade(panel(*YES_YES_NO, aggregate="strictest"))  # hardest on the response
    assert not strictest.criteria["helps"].satisfied and strictest.criteria["rude"].satisfied
    tie = grade(panel(*YES_YES_NO[:2]))  # one yes, one no on `rude`: a tie is not met
    assert not tie.criteria["rude"].satisfied and tie.criteria["rude"].disagreement == 0.5


def test_a_failed_member_is_counted_and_below_quorum_the_response_is_unscored():
    down = Member("down", error="gave up after 4 attempts")
    judge = panel(YES_YES_NO[0], YES_YES_NO[1], down)
    decided = grade(judge)  # two of three answered: a quorum of the default (more than half)
    assert decided.ok and decided.criteria["helps"].satisfied and judge.member_failures == {"down": 1}
    judge = panel(YES_YES_NO[0], down, Member("down2", error="HTTP 401"))
    failed = grade(judge)
    assert not failed.ok and failed.criteria == {} and "1 of 3 members answered, quorum 2" in failed.error
    assert "HTTP 401" in failed.error
    assert grade(panel(YES_YES_NO[0], down, Member("x", error="e"), quorum=1)).ok


def test_panel_configs_validate_their_members_and_quorum():
    endpoint = {"backend": "openai", "model": "m", "base_urls": ["http://x/v1"]}
    with pytest.raises(ValueError, match="members"):
        load_judge_config({"backend": "panel", "members": [endpoint]})
    with pytest.raises(ValueError, match=r"quorum \(3\) is above the number of members \(2\)"):
        load_judge_config({"backend": "panel", "members": [endpoint, endpoint], "quorum": 3})
    with pytest.raises(ValueError, match="'nope'"):
        load_judge_config({"backend": "panel", "members": [endpoint, {"backend": "nope"}]})


def test_a_panel_of_served_judges_is_a_reward_that_logs_its_disagreement(start_judge_server):
    servers = [start_judge_server(), start_judge_server(),
               start_judge_server(policy=lambda prompt, response, criterion: not default_policy(
                   prompt, response, criterion))]  # a contrarian: outvoted
    members = [{"backend": "openai", "model": DEFAULT_MODEL, "base_urls": [s.base_url], "timeout_s": 5.0}
               for s in servers]
    reward = RubricReward(build_judge({"backend": "panel", "members": members}))
    rubric = Rubric(id="tea", criteria=[HELPS])
    graded = asyncio.run(reward.grade(["How?", "How?"], ["Boil water.", "Boil milk."], [rubric, rubric]))
    assert [g.score for g in graded] == [1.0, 0.0]
    assert all(s.stats.requests == 2 for s in servers)
    metrics = reward.batch_metrics(graded, wall_s=0.1)
    assert metrics["rubric/judge_disagreement"] == pytest.approx(1 / 3) and metrics["rubric/judge_calls"] == 6
