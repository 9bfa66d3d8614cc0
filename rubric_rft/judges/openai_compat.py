"""A judge behind any OpenAI-compatible chat endpoint (vLLM, SGLang, `transformers serve`, OpenAI, ...).

It turns a grade request into chat questions (all criteria in one JSON answer, one JSON answer per criterion, or
one Yes/No per criterion) and asks them through a `ChatClient`, which owns the cache, retries, replicas,
concurrency and costs. A grade that still fails is returned as `Verdict(error=...)`, never as a made-up verdict.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field, model_validator

from rubric_rft.judges.base import AsyncClosing, CriterionVerdict, GradeRequest, Verdict
from rubric_rft.judges.parsing import parse_batched, parse_single, parse_yes_no
from rubric_rft.judges.prompts import (
    TEMPLATE_VERSION,
    answer_constraint,
    batched_messages,
    demonstrated,
    per_criterion_messages,
    per_criterion_yes_no_messages,
)
from rubric_rft.judges.registry import register_backend
from rubric_rft.llm.client import Asked, ChatClient
from rubric_rft.llm.costs import Costs
from rubric_rft.llm.endpoint import ChatEndpointConfig
from rubric_rft.rubrics.format import Criterion

logger = logging.getLogger(__name__)


class OpenAIJudgeConfig(ChatEndpointConfig):
    """Any OpenAI-compatible chat endpoint: `vllm serve`, SGLang, `transformers serve`, OpenAI, ..."""

    request_shape: Literal["batched", "per_criterion", "yes_no"] = Field(
        default="batched",
        description="All criteria of a rubric in one JSON answer, one JSON answer per criterion, or one call per "
        "criterion answered Yes or No (for small judges that do not write JSON reliably).",
    )
    demonstrations: bool = Field(
        default=False,
        description="Show worked examples of the question answered in the expected format before each question: "
        "small judges (e.g. SmolLM2-135M) then answer in that format instead of prose.",
    )
    structured_answers: bool = Field(
        default=False,
        description="Have the server decode only answers of the expected form (structured outputs): a JSON schema "
        "in `response_format` for batched and per_criterion (OpenAI, vLLM, SGLang), vLLM's `structured_outputs` "
        "choice of Yes or No for yes_no. Fewer malformed answers and answer tokens; a server without support "
        "refuses the request or ignores the field.",
    )
    yes_probability: bool = Field(
        default=False,
        description="With request_shape yes_no: also request the top log-probabilities of the answer's first token "
        "and report P(yes) per criterion (vLLM, SGLang and OpenAI give them; servers that ignore the request, "
        "such as transformers serve, give verdicts only).",
    )

    @model_validator(mode="after")
    def _yes_probability_needs_yes_no(self) -> OpenAIJudgeConfig:
        if self.yes_probability and self.request_shape != "yes_no":
            raise ValueError(f"yes_probability needs request_shape 'yes_no', not {self.request_shape!r}")
        return self


@register_backend
class OpenAIJudge(AsyncClosing):
    """Judge backend `openai`. `calls` counts HTTP requests sent (retries included); `retries` the extra ones."""

    Config = OpenAIJudgeConfig

    def __init__(self, config: OpenAIJudgeConfig) -> None:
        self.config = config
        self.client = ChatClient(config)
        self.name = self.client.name

    def __repr__(self) -> str:
        return (
            f"OpenAIJudge(model={self.config.model!r}, base_urls={self.config.base_urls!r}, "
            f"request_shape={self.config.request_shape!r})"
        )

    async def grade(self, request: GradeRequest) -> Verdict:
        started = time.perf_counter()
        if self.config.request_shape == "batched":
            verdict = await self._grade_batched(request)
        else:
            verdict = await self._grade_per_criterion(request)
        if not verdict.ok:
            logger.warning("judge gave up: %s", verdict.error)
        verdict.latency_s = time.perf_counter() - started
        return verdict

    async def _grade_batched(self, request: GradeRequest) -> Verdict:
        if not request.criteria:
            return Verdict()
        labels = [f"c{i}" for i in range(1, len(request.criteria) + 1)]
        messages = batched_messages(
            request.prompt,
            request.response,
            [(label, c.text) for label, c in zip(labels, request.criteria, strict=True)],
        )
        asked = await self.client.ask(
            self._shown(messages), _in_label_order(labels), self._key("batched", request, request.criteria),
            constraint=self._constraint(labels),
        )
        verdict = Verdict(error=asked.error).add(asked)
        if asked.ok:
            verdict.criteria = {
                c.id: CriterionVerdict(satisfied=value)
                for c, value in zip(request.criteria, asked.value["satisfied"], strict=True)
            }
        return verdict

    async def _grade_per_criterion(self, request: GradeRequest) -> Verdict:
        answers = await asyncio.gather(*(self._ask_one_criterion(request, c) for c in request.criteria))
        verdict = Verdict().add(Costs.total(answers))
        failed = [(c, a) for c, a in zip(request.criteria, answers, strict=True) if not a.ok]
        if failed:
            criterion, asked = failed[0]
            # "openai:MODEL: criterion 'id': what went wrong"
            verdict.error = asked.error.replace(f"{self.name}: ", f"{self.name}: criterion {criterion.id!r}: ", 1)
            return verdict
        verdict.criteria = {
            c.id: CriterionVerdict(satisfied=a.value["satisfied"][0], probability=a.value.get("p_yes"))
            for c, a in zip(request.criteria, answers, strict=True)
        }
        return verdict

    async def _ask_one_criterion(self, request: GradeRequest, criterion: Criterion) -> Asked[dict[str, Any]]:
        shape = self.config.request_shape
        if shape == "yes_no":
            messages = per_criterion_yes_no_messages(request.prompt, request.response, criterion.text)
            parse = parse_yes_no
        else:
            messages = per_criterion_messages(request.prompt, request.response, criterion.text)
            parse = parse_single
        return await self.client.ask(
            self._shown(messages),
            lambda text: {"satisfied": [parse(text)]},
            self._key(shape, request, (criterion,)),
            first_token=_yes_probability if self.config.yes_probability else None,
            constraint=self._constraint([]),
        )

    def _constraint(self, labels: list[str]) -> dict[str, Any] | None:
        return answer_constraint(self.config.request_shape, labels) if self.config.structured_answers else None

    def _shown(self, messages: list[dict]) -> list[dict]:
        return demonstrated(messages, self.config.request_shape) if self.config.demonstrations else messages

    def _key(self, shape: str, request: GradeRequest, criteria: tuple[Criterion, ...]) -> dict[str, Any]:
        return dict(
            template=TEMPLATE_VERSION,
            shape=shape,
            demonstrations=self.config.demonstrations,
            yes_probability=self.config.yes_probability,
            prompt=request.prompt,
            response=request.response,
            criteria=[c.text for c in criteria],
        )

    async def aclose(self) -> None:
        await self.client.aclose()


def _yes_probability(top_logprobs: list[dict]) -> dict[str, Any]:
    """`{"p_yes": P(yes) / (P(yes) + P(no))}` over the first token's top candidates, or `{}` when neither word
    is among them (or the server gave none): then there is a verdict but no probability."""
    mass = {"yes": 0.0, "no": 0.0}
    for candidate in top_logprobs:
        word = str(candidate.get("token", "")).strip().lower()
        if word in mass and isinstance(candidate.get("logprob"), (int, float)):
            mass[word] += math.exp(candidate["logprob"])
    total = mass["yes"] + mass["no"]
    return {"p_yes": mass["yes"] / total} if total > 0 else {}


def _in_label_order(labels: list[str]) -> Callable[[str], dict[str, Any]]:
    """A parser of batched answers returning `{"satisfied": [verdicts in label order]}`."""

    def parse(text: str) -> dict[str, Any]:
        verdicts = parse_batched(text, labels)
        return {"satisfied": [verdicts[label] for label in labels]}

    return parse
