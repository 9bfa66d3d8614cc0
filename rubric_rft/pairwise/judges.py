"""Pairwise judges: which of two answers to a prompt is better, in the order shown.

An LLM judge asks a chat model through a `ChatClient`; a rubric judge prefers the higher score under the item's
rubric (so a gold rubric can stand in for a gold judge). A `PairVerdict` carries the first answer's share of a win
(1, 0, or 0.5 for a tie) or, when the comparison failed, an `error`: never a made-up preference.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator

from rubric_rft.config_values import load_validated, read_mapping
from rubric_rft.judges.base import AsyncClosing
from rubric_rft.judges.parsing import parse_pairwise
from rubric_rft.judges.prompts import PAIRWISE_TEMPLATE_VERSION, pairwise_messages
from rubric_rft.judges.registry import build_judge, load_judge_config
from rubric_rft.llm.client import ChatClient
from rubric_rft.llm.costs import CallOutcome, Costs
from rubric_rft.llm.endpoint import ChatEndpointConfig, load_endpoint, without_judge_settings
from rubric_rft.reward.rubric_reward import RubricReward
from rubric_rft.rubrics.format import Rubric

logger = logging.getLogger(__name__)

# The first-shown response's share of a win, by the judge's answer.
PREFERENCE = {"A": 1.0, "B": 0.0, "tie": 0.5}


@dataclass
class PairVerdict(CallOutcome):
    """A judge's answer for one order: `preference` is 1.0 when the response shown first is better, 0.0 when the
    second is, 0.5 for a tie; None exactly when `error` says why there is no answer."""

    preference: float | None = None


@runtime_checkable
class PairwiseJudge(Protocol):
    """Compares two responses in the order given. Implementations bound their own concurrency and retries, and
    return a `PairVerdict` with `error` set rather than raise when a comparison fails."""

    name: str

    async def compare(self, prompt: str, first: str, second: str, rubric: Rubric | None = None) -> PairVerdict: ...

    async def aclose(self) -> None: ...


class LLMPairwiseJudge(AsyncClosing):
    """A judge behind any OpenAI-compatible endpoint, asked through a `ChatClient` (its cache, retries, replicas
    and concurrency bound). The rubric is not shown: a gold judge weighs the answers as a whole."""

    def __init__(self, config: ChatEndpointConfig) -> None:
        self.config = config
        self.client = ChatClient(config)
        self.name = self.client.name

    def __repr__(self) -> str:
        return f"LLMPairwiseJudge(model={self.config.model!r}, base_urls={self.config.base_urls!r})"

    async def compare(self, prompt: str, first: str, second: str, rubric: Rubric | None = None) -> PairVerdict:
        key = dict(template=PAIRWISE_TEMPLATE_VERSION, shape="pairwise", prompt=prompt, responses=[first, second])
        messages = pairwise_messages(prompt, first, second)
        asked = await self.client.ask(messages, lambda text: {"winner": parse_pairwise(text)}, key)
        verdict = PairVerdict(error=asked.error).add(asked)
        if asked.ok:
            verdict.preference = PREFERENCE[asked.value["winner"]]
        else:
            logger.warning("pairwise judge gave up: %s", verdict.error)
        return verdict

    async def aclose(self) -> None:
        await self.client.aclose()


class RubricPairwiseJudge(AsyncClosing):
    """Prefers the response that scores higher under the given rubric (equal scores tie), so a gold rubric can
    act as the gold judge where no strong LLM judge is at hand. A comparison fails when either grade does."""

    def __init__(self, reward: RubricReward) -> None:
        self.reward = reward
        self.name = f"rubric:{reward.judge.name}" if reward.judge is not None else "rubric:rules"

    async def compare(self, prompt: str, first: str, second: str, rubric: Rubric | None = None) -> PairVerdict:
        if rubric is None:
            return PairVerdict(error=f"{self.name}: no rubric to compare the responses by (set the item's rubric)")
        graded = await self.reward.grade([prompt, prompt], [first, second], [rubric, rubric])
        result = PairVerdict().add(Costs.total(g.verdict for g in graded))
        labelled = zip(("first", "second"), graded, strict=True)
        errors = [f"grading the {which} response: {g.error}" for which, g in labelled if g.error]
        if errors:
            result.error = "; ".join(errors)
            return result
        first_score, second_score = graded[0].score, graded[1].score
        tied = math.isclose(first_score, second_score, rel_tol=1e-9, abs_tol=1e-12)
        result.preference = 0.5 if tied else float(first_score > second_score)
        return result

    async def aclose(self) -> None:
        await self.reward.aclose()


# --- configuration ------------------------------------------------------------------------------------------


class RubricPairwiseConfig(BaseModel):
    """Compare by score under each item's rubric; `judge` grades its llm criteria (rule criteria need none)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    backend: Literal["rubric"] = "rubric"
    judge: Any = Field(
        default=None, description="Judge config for the rubric's llm criteria: a mapping or a YAML/JSON path."
    )

    @field_validator("judge", mode="before")
    @classmethod
    def _parsed_judge(cls, value: Any) -> Any:
        return None if value is None else load_judge_config(value)


PairwiseJudgeConfig = Annotated[ChatEndpointConfig | RubricPairwiseConfig, Field(discriminator="backend")]
_adapter: TypeAdapter[PairwiseJudgeConfig] = TypeAdapter(PairwiseJudgeConfig)


def load_pairwise_judge(value: str | dict[str, Any] | BaseModel) -> ChatEndpointConfig | RubricPairwiseConfig:
    """Parse a pairwise judge config (`backend: openai`, an endpoint, or `backend: rubric`) from a dict, a JSON
    string, or a YAML/JSON file path; errors name the file and the field."""
    if isinstance(value, RubricPairwiseConfig) or type(value) is ChatEndpointConfig:
        return value
    if isinstance(value, BaseModel):
        return load_endpoint(value, "pairwise judge config")
    mapping, source = read_mapping(value, "pairwise judge config")
    if mapping.get("backend") == "openai":
        mapping = without_judge_settings(mapping, source)
    return load_validated(mapping, _adapter, source)[0]


def build_pairwise_judge(config: ChatEndpointConfig | RubricPairwiseConfig) -> PairwiseJudge:
    """Instantiate the judge a config names. Rubric scores are raw weighted sums: clipping at zero would tie two
    responses that trip pitfalls by different amounts."""
    if isinstance(config, ChatEndpointConfig):
        return LLMPairwiseJudge(config)
    judge = build_judge(config.judge) if config.judge is not None else None
    return RubricPairwiseJudge(RubricReward(judge, normalize=False))
