"""A judge panel: several judges (other models, servers or prompts) grade each response, and their verdicts are
aggregated per criterion.

One judge's blind spots become the policy's loopholes; a panel of judges from different families is harder to game
and is what rubric-RL papers use as a gold. The members are asked concurrently. Per criterion, among the members that
answered:
- `majority`: satisfied when more members say yes than no (a tie is not satisfied);
- `mean`: the mean of the members' P(yes) (a member without probabilities counts 1 or 0), satisfied at `threshold`;
- `strictest`: what is hardest on the response: a positive criterion needs every yes, a pitfall (negative weight)
  is met when any member says yes.
Each criterion's verdict carries its `disagreement`: the share of answering members outside the majority (0 when
they all agree), logged by the reward as `rubric/judge_disagreement`. A member that fails is counted
(`member_failures`) and the panel decides on the rest when at least `quorum` members answered; below quorum the
response is unscored (a failed verdict), never a zero.

    judge:
      backend: panel
      aggregate: majority
      quorum: 2
      members:
        - {backend: openai, model: Qwen/Qwen3-8B, base_urls: [http://judge-a:8000/v1]}
        - {backend: openai, model: meta-llama/Llama-3.1-8B-Instruct, base_urls: [http://judge-b:8000/v1]}
        - {backend: openai, model: gpt-4.1-mini, base_urls: [https://api.openai.com/v1], api_key_env: OPENAI_API_KEY}
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from rubric_rft.judges.base import AsyncClosing, CriterionVerdict, GradeRequest, Verdict, grade_all
from rubric_rft.judges.registry import build_judge, load_judge_config, register_backend

logger = logging.getLogger(__name__)


class PanelJudgeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: Literal["panel"] = "panel"
    members: list[Any] = Field(min_length=2, description="Judge configs (any backend), one per member.")
    aggregate: Literal["majority", "mean", "strictest"] = "majority"
    threshold: float = Field(default=0.5, gt=0, lt=1, description="`mean`: the P(yes) at which a criterion is met.")
    quorum: int | None = Field(default=None, ge=1, description="Members that must answer; default: more than half.")

    @field_validator("members")
    @classmethod
    def _member_configs(cls, members: list[Any]) -> list[BaseModel]:
        return [load_judge_config(member) for member in members]

    @model_validator(mode="after")
    def _reachable_quorum(self) -> PanelJudgeConfig:
        if self.quorum is not None and self.quorum > len(self.members):
            raise ValueError(f"quorum ({self.quorum}) is above the number of members ({len(self.members)})")
        return self

    @property
    def needed(self) -> int:
        return self.quorum if self.quorum is not None else len(self.members) // 2 + 1


@register_backend
class PanelJudge(AsyncClosing):
    Config = PanelJudgeConfig

    def __init__(self, config: PanelJudgeConfig) -> None:
        self.config = config
        self.members = [build_judge(member) for member in config.members]
        self.name = f"panel({', '.join(member.name for member in self.members)})"
        self.member_failures: Counter[str] = Counter()

    async def grade(self, request: GradeRequest) -> Verdict:
        return (await self.grade_group([request]))[0]

    async def grade_group(self, requests: Sequence[GradeRequest]) -> list[Verdict]:
        """Each member grades the group its own way (a listwise member in one question, any other one request at a
        time), all members concurrently; then the panel decides request by request."""
        started = time.perf_counter()
        answers = await asyncio.gather(*(grade_all(member, requests) for member in self.members))
        verdicts = [self._decide(request, [member_answers[i] for member_answers in answers])
                    for i, request in enumerate(requests)]
        for verdict in verdicts:
            verdict.latency_s = time.perf_counter() - started
        return verdicts

    def _decide(self, request: GradeRequest, answers: list[Verdict]) -> Verdict:
        verdict = Verdict()
        for answer in answers:
            verdict.add(answer)
        answered = [answer for answer in answers if answer.ok]
        for member, answer in zip(self.members, answers, strict=True):
            if not answer.ok:
                self.member_failures[member.name] += 1
                logger.warning("panel member %s failed: %s", member.name, answer.error)
        if len(answered) < self.config.needed:
            failures = "; ".join(a.error for a in answers if not a.ok)
            verdict.error = (f"{self.name}: {len(answered)} of {len(self.members)} members answered, quorum "
                             f"{self.config.needed}: {failures}")
        else:
            verdict.criteria = {c.id: self._aggregate(c.weight, [a.criteria[c.id] for a in answered])
                                for c in request.criteria}
        return verdict

    def _aggregate(self, weight: float, votes: list[CriterionVerdict]) -> CriterionVerdict:
        yes = sum(vote.satisfied for vote in votes)
        disagreement = min(yes, len(votes) - yes) / len(votes)
        if self.config.aggregate == "mean":
            p_yes = statistics.fmean(v.probability if v.probability is not None else float(v.satisfied) for v in votes)
            return CriterionVerdict(p_yes >= self.config.threshold, p_yes, disagreement)
        if self.config.aggregate == "strictest":
            return CriterionVerdict(yes == len(votes) if weight >= 0 else yes > 0, None, disagreement)
        return CriterionVerdict(yes > len(votes) - yes, None, disagreement)

    async def aclose(self) -> None:
        for member in self.members:
            await member.aclose()
