"""Group-relative (listwise) judging: a prompt's group of completions graded in one question.

GRPO samples a group of completions per prompt and only their differences matter to it. Asked one at a time, a judge
reads the same conversation and rubric once per completion and holds each answer to its own standard; asked about
the whole group at once, it reads them once and sees the answers side by side. The request holds the conversation,
the rubric's criteria and the group's distinct responses (a collapsed group's repeats are shown once and share the
verdicts), and asks for every response's verdicts (`group_request: per_rubric`), or one question per criterion for
all responses (`per_criterion`). Groups larger than `max_group_size` are split into several questions.

Position bias: the responses are shown in an order shuffled with `shuffle_seed` and the group's texts (the same group
is always asked in the same order, so answers cache), and each verdict records where its response stood (`position`
of `group_size`). `benchmarks/listwise_judging.py` measures the order effect by asking the same groups reversed.
An answer missing any response or criterion is malformed: asked again, and after the retries every response of that
question is unscored (a failed verdict), never given a made-up score.

    judge:
      backend: listwise
      model: Qwen/Qwen3-8B
      base_urls: [http://judge:8000/v1]
      group_request: per_rubric
      max_group_size: 8
      structured_answers: true
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field

from rubric_rft.judges.base import AsyncClosing, CriterionVerdict, GradeRequest, Verdict
from rubric_rft.judges.parsing import parse_batched, parse_grouped
from rubric_rft.judges.prompts import (
    LISTWISE_TEMPLATE_VERSION,
    listwise_constraint,
    listwise_criterion_messages,
    listwise_rubric_messages,
)
from rubric_rft.judges.registry import register_backend
from rubric_rft.llm.client import ChatClient
from rubric_rft.llm.costs import Costs
from rubric_rft.llm.endpoint import ChatEndpointConfig

logger = logging.getLogger(__name__)


class ListwiseJudgeConfig(ChatEndpointConfig):
    """A judge behind an OpenAI-compatible endpoint that grades a prompt's group of responses in one question."""

    backend: Literal["listwise"] = "listwise"  # type: ignore[assignment]
    group_request: Literal["per_rubric", "per_criterion"] = Field(
        default="per_rubric",
        description="One question for the group and every criterion, or one question per criterion for the group.",
    )
    max_group_size: int = Field(default=8, ge=1, description="The most responses shown in one question.")
    shuffle_seed: int | None = Field(
        default=0, description="Seed of the order responses are shown in; none: the order they come in.")
    structured_answers: bool = Field(
        default=False, description="A JSON schema in `response_format`, so the server decodes only well-formed "
        "answers (OpenAI, vLLM, SGLang).")


@register_backend
class ListwiseJudge(AsyncClosing):
    """Judge backend `listwise`. `grade` asks about one response alone (a group of one); the reward and the monitor
    call `grade_group` with each GRPO group (`rubric_rft.judges.base.grade_all`)."""

    Config = ListwiseJudgeConfig

    def __init__(self, config: ListwiseJudgeConfig) -> None:
        self.config = config
        self.client = ChatClient(config)
        self.name = f"listwise:{self.client.name}"

    def __repr__(self) -> str:
        return (f"ListwiseJudge(model={self.config.model!r}, base_urls={self.config.base_urls!r}, "
                f"group_request={self.config.group_request!r})")

    async def grade(self, request: GradeRequest) -> Verdict:
        return (await self.grade_group([request]))[0]

    async def grade_group(self, requests: Sequence[GradeRequest]) -> list[Verdict]:
        """Verdicts for requests that share a prompt and criteria, in their order. Each question's costs are carried
        by the verdict of the first request it answered, so that totals over the verdicts count every call once."""
        if not requests:
            return []
        prompt, criteria = requests[0].prompt, requests[0].criteria
        if any(r.prompt != prompt or r.criteria != criteria for r in requests):
            raise ValueError("a listwise group's requests must share their prompt and criteria")
        if not criteria:
            return [Verdict() for _ in requests]
        started = time.perf_counter()
        shown = self._order(prompt, list(dict.fromkeys(r.response for r in requests)))
        size = self.config.max_group_size
        chunks = [shown[start:start + size] for start in range(0, len(shown), size)]
        answers = await asyncio.gather(*(self._grade_chunk(prompt, criteria, chunk) for chunk in chunks))
        place = {response: divmod(index, size) for index, response in enumerate(shown)}
        charged: set[int] = set()
        verdicts = []
        for request in requests:
            chunk, position = place[request.response]
            costs, error, by_response = answers[chunk]
            verdict = Verdict(error=error, position=position, group_size=len(chunks[chunk]))
            if error is None:
                verdict.criteria = {c.id: CriterionVerdict(satisfied=value)
                                    for c, value in zip(criteria, by_response[position], strict=True)}
            if chunk not in charged:
                verdict.add(costs)
                charged.add(chunk)
            verdict.latency_s = time.perf_counter() - started
            verdicts.append(verdict)
        for error in {answer[1] for answer in answers if answer[1] is not None}:
            logger.warning("judge gave up: %s", error)
        return verdicts

    def _order(self, prompt: str, responses: list[str]) -> list[str]:
        """The distinct responses in the order they are shown: shuffled by a generator seeded with `shuffle_seed`
        and the group's texts (sorted, so the batch's order does not matter), or as they came."""
        if self.config.shuffle_seed is None:
            return responses
        material = "\0".join([str(self.config.shuffle_seed), prompt, *sorted(responses)])
        shuffled = sorted(responses)
        random.Random(hashlib.sha256(material.encode()).digest()).shuffle(shuffled)
        return shuffled

    async def _grade_chunk(self, prompt: str, criteria: tuple, responses: list[str]
                           ) -> tuple[Costs, str | None, list[list[bool]]]:
        """(costs, error, per response in shown order its verdicts in criteria order) for one question's responses
        (or, per criterion, one question per criterion)."""
        response_labels = [f"r{i}" for i in range(1, len(responses) + 1)]
        criterion_labels = [f"c{i}" for i in range(1, len(criteria) + 1)]
        key = dict(template=LISTWISE_TEMPLATE_VERSION, prompt=prompt, responses=responses)
        if self.config.group_request == "per_rubric":
            messages = listwise_rubric_messages(
                prompt, responses, [(label, c.text) for label, c in zip(criterion_labels, criteria, strict=True)])
            asked = await self.client.ask(
                messages,
                lambda text: {"verdicts": _grid(parse_grouped(text, response_labels, criterion_labels),
                                                response_labels, criterion_labels)},
                {**key, "shape": "per_rubric", "criteria": [c.text for c in criteria]},
                constraint=self._constraint(response_labels, criterion_labels),
            )
            if not asked.ok:  # "listwise:openai:MODEL: what went wrong"
                return Costs().add(asked), asked.error.replace(f"{self.client.name}: ", f"{self.name}: ", 1), []
            return Costs().add(asked), None, asked.value["verdicts"]
        answers = await asyncio.gather(*(
            self.client.ask(
                listwise_criterion_messages(prompt, responses, criterion.text),
                lambda text: {"verdicts": _in_order(parse_batched(text, response_labels), response_labels)},
                {**key, "shape": "per_criterion", "criteria": [criterion.text]},
                constraint=self._constraint(response_labels, None),
            )
            for criterion in criteria
        ))
        costs = Costs.total(answers)
        failed = [(c, a) for c, a in zip(criteria, answers, strict=True) if not a.ok]
        if failed:
            criterion, asked = failed[0]
            return costs, asked.error.replace(f"{self.client.name}: ", f"{self.name}: criterion {criterion.id!r}: ",
                                              1), []
        return costs, None, [[a.value["verdicts"][r] for a in answers] for r in range(len(responses))]

    def _constraint(self, response_labels: list[str], criterion_labels: list[str] | None) -> dict[str, Any] | None:
        return listwise_constraint(response_labels, criterion_labels) if self.config.structured_answers else None

    async def aclose(self) -> None:
        await self.client.aclose()


def _grid(verdicts: dict[str, dict[str, bool]], rows: list[str], columns: list[str]) -> list[list[bool]]:
    """A parsed listwise answer as lists in label order (responses, then criteria): what the cache stores."""
    return [_in_order(verdicts[row], columns) for row in rows]


def _in_order(verdicts: dict[str, bool], labels: list[str]) -> list[bool]:
    return [verdicts[label] for label in labels]
