"""A judge behind any OpenAI-compatible chat endpoint (vLLM, SGLang, `transformers serve`, OpenAI, ...).

Clients and the concurrency semaphore belong to one event loop, so they are created lazily inside the
coroutine and re-created when the running loop changes (TRL awaits rewards on its own background loop;
tests call `asyncio.run` repeatedly). Retries are ours (`max_retries=0` on the client) so that each one is
counted and a malformed answer is re-asked like a failed request. A grade that still fails is returned as
`Verdict(error=...)`, never as a made-up verdict. `ask` is that machinery (cache, retries, replicas, the
concurrency bound) for any question with a parser, so other judges built on it (pairwise) share it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import openai

from rubric_rft.judges.base import CallOutcome, CriterionVerdict, GradeRequest, Verdict
from rubric_rft.judges.cache import VerdictCache, cache_key
from rubric_rft.judges.config import OpenAIJudgeConfig
from rubric_rft.judges.parsing import MalformedVerdict, parse_batched, parse_single, parse_yes_no
from rubric_rft.judges.prompts import (
    TEMPLATE_VERSION,
    batched_messages,
    demonstrated,
    per_criterion_messages,
    per_criterion_yes_no_messages,
)
from rubric_rft.rubric import Criterion

logger = logging.getLogger(__name__)

# Statuses worth asking again: the server is busy or broken for now. Any other 4xx is the request's fault.
RETRYABLE_STATUSES = frozenset({408, 429})
# First-token candidates asked for with `yes_probability`: enough for the spellings of yes and no to show up.
TOP_LOGPROBS = 20


class JudgeFailure(Exception):
    """A chat call that cannot produce a verdict (retries exhausted, or a non-retryable HTTP error)."""


class _Transient(Exception):
    """A failure worth retrying: timeout, connection error, 408/429/5xx."""


@dataclass
class _LoopResources:
    """What must be created on the event loop that uses it."""

    loop: asyncio.AbstractEventLoop
    clients: list[tuple[str, openai.AsyncOpenAI]]  # (base URL, client), base URLs alternating
    in_flight: asyncio.Semaphore


class OpenAIJudge:
    """Judge backend for `OpenAIJudgeConfig`.

    `judge_calls` counts HTTP requests sent (retries included); `retries` the extra attempts among them.
    """

    def __init__(self, config: OpenAIJudgeConfig) -> None:
        self.config = config
        self.name = f"openai:{config.model}"
        self._api_key = _read_api_key(config.api_key_env)
        self._next_client = itertools.count()
        self._jitter = random.Random()
        self._resources: _LoopResources | None = None
        self._cache: VerdictCache | None = None

    def __repr__(self) -> str:
        return (
            f"OpenAIJudge(model={self.config.model!r}, base_urls={self.config.base_urls!r}, "
            f"request_shape={self.config.request_shape!r})"
        )

    async def grade(self, request: GradeRequest) -> Verdict:
        started = time.perf_counter()
        verdict = Verdict()
        try:
            if self.config.request_shape == "batched":
                criteria = await self._grade_batched(request, verdict)
            else:
                criteria = await self._grade_per_criterion(request, verdict)
        except JudgeFailure as failure:
            verdict.error = f"{self.name}: {failure}"
            logger.warning("judge gave up: %s", verdict.error)
        else:
            verdict.criteria = criteria
        verdict.latency_s = time.perf_counter() - started
        return verdict

    async def _grade_batched(self, request: GradeRequest, tally: Verdict) -> dict[str, CriterionVerdict]:
        if not request.criteria:
            return {}
        labels = [f"c{i}" for i in range(1, len(request.criteria) + 1)]
        messages = batched_messages(
            request.prompt,
            request.response,
            [(label, c.text) for label, c in zip(labels, request.criteria, strict=True)],
        )
        answer = await self.ask(
            self._shown(messages), self._key("batched", request, request.criteria), _in_label_order(labels), tally
        )
        return {
            c.id: CriterionVerdict(satisfied=value)
            for c, value in zip(request.criteria, answer["satisfied"], strict=True)
        }

    async def _grade_per_criterion(self, request: GradeRequest, tally: Verdict) -> dict[str, CriterionVerdict]:
        outcomes = await asyncio.gather(
            *(self._ask_one_criterion(request, c, tally) for c in request.criteria), return_exceptions=True
        )
        for criterion, outcome in zip(request.criteria, outcomes, strict=True):
            if isinstance(outcome, JudgeFailure):
                raise JudgeFailure(f"criterion {criterion.id!r}: {outcome}")
            if isinstance(outcome, BaseException):
                raise outcome
        return {c.id: outcome for c, outcome in zip(request.criteria, outcomes, strict=True)}

    async def _ask_one_criterion(self, request: GradeRequest, criterion: Criterion, tally: Verdict) -> CriterionVerdict:
        shape = self.config.request_shape
        if shape == "yes_no":
            messages = per_criterion_yes_no_messages(request.prompt, request.response, criterion.text)
            parse = parse_yes_no
        else:
            messages = per_criterion_messages(request.prompt, request.response, criterion.text)
            parse = parse_single
        answer = await self.ask(
            self._shown(messages),
            self._key(shape, request, (criterion,)),
            lambda text: {"satisfied": [parse(text)]},
            tally,
            first_token=_yes_probability if self.config.yes_probability else None,
        )
        return CriterionVerdict(satisfied=answer["satisfied"][0], probability=answer.get("p_yes"))

    def _shown(self, messages: list[dict]) -> list[dict]:
        return demonstrated(messages, self.config.request_shape) if self.config.demonstrations else messages

    def _key(self, shape: str, request: GradeRequest, criteria: tuple[Criterion, ...]) -> str:
        return cache_key(
            backend="openai",
            model=self.config.model,
            template=TEMPLATE_VERSION,
            shape=shape,
            # Options off by default enter the key only when on: caches written before they existed stay valid.
            **({"demonstrations": True} if self.config.demonstrations else {}),
            **({"yes_probability": True} if self.config.yes_probability else {}),
            temperature=self.config.temperature,
            prompt=request.prompt,
            response=request.response,
            criteria=[c.text for c in criteria],
        )

    async def ask(
        self,
        messages: list[dict],
        key: str,
        parse: Callable[[str], dict[str, Any]],
        tally: CallOutcome,
        *,
        first_token: Callable[[list[dict]], dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """The parsed answer to one chat question: from the cache, or asked (and re-asked) until it parses.

        `key` must change with everything that determines the answer (see `cache_key`); `parse` turns the answer
        text into a JSON object, which is what gets cached, or raises `MalformedVerdict` to have it asked again.
        With `first_token`, the top log-probabilities of the answer's first token are requested too and what it
        makes of them (`[]` when the server gave none) is merged into the answer.
        Raises `JudgeFailure` when retries run out or the request itself is refused; costs are added to `tally`.
        """
        cache = self._open_cache()
        if cache is not None:
            cached = cache.get(key)
            if cached is not None:
                tally.cache_hits += 1
                return cached
        last_failure = ""
        for attempt in range(self.config.max_retries + 1):
            if attempt:
                tally.retries += 1
                await asyncio.sleep(self._backoff_s(attempt))
                logger.debug("judge retry %d after: %s", attempt, last_failure)
            try:
                text, top_logprobs = await self._complete(messages, tally, logprobs=first_token is not None)
                answer = parse(text)
                if first_token is not None:
                    answer.update(first_token(top_logprobs))
            except (_Transient, MalformedVerdict) as problem:
                last_failure = str(problem) if isinstance(problem, _Transient) else f"malformed answer: {problem}"
                continue
            if cache is not None:
                cache.put(key, answer)
            return answer
        raise JudgeFailure(f"gave up after {self.config.max_retries + 1} attempts; last failure: {last_failure}")

    async def _complete(
        self, messages: list[dict], tally: CallOutcome, *, logprobs: bool = False
    ) -> tuple[str, list[dict]]:
        """Send one chat request to the next replica: the answer's text and, with `logprobs`, the top
        log-probabilities of its first token (empty when the server gives none); or `_Transient`/`JudgeFailure`."""
        body = {
            "model": self.config.model,
            "messages": messages,
            "temperature": self.config.temperature,
            "max_tokens": self.config.max_tokens,
        }
        if logprobs:
            body.update(logprobs=True, top_logprobs=TOP_LOGPROBS)
        resources = self._loop_resources()
        url, client = resources.clients[next(self._next_client) % len(resources.clients)]
        async with resources.in_flight:
            tally.judge_calls += 1
            try:
                # `post` with a plain body is the client's documented way to reach an endpoint directly; it keeps
                # its timeouts and typed errors but skips the per-request transform of typed parameters and
                # response models, which costs more CPU than the rest of the request on a busy event loop.
                completion = await client.post("/chat/completions", cast_to=dict, body=body)
            except openai.APIConnectionError as exc:  # APITimeoutError included
                raise _Transient(self._transport_failure(exc, url)) from None
            except openai.APIStatusError as exc:
                message = f"HTTP {exc.status_code} from {url}: {_status_message(exc)}"
                if exc.status_code in RETRYABLE_STATUSES or exc.status_code >= 500:
                    raise _Transient(message) from None
                raise JudgeFailure(message) from None
        usage = completion.get("usage") if isinstance(completion, dict) else None
        tally.prompt_tokens += (usage or {}).get("prompt_tokens") or 0
        tally.completion_tokens += (usage or {}).get("completion_tokens") or 0
        text = _answer_text(completion)
        if not isinstance(text, str) or not text.strip():
            raise MalformedVerdict("empty answer")
        return text, _first_token_top_logprobs(completion) if logprobs else []

    def _transport_failure(self, error: openai.APIConnectionError, url: str) -> str:
        """What went wrong on the way to the server. The aiohttp transport reports a refused or reset connection
        (a server that is down or died mid-request) as a timeout, so the cause chain decides, not the type."""
        cause: BaseException | None = error
        while cause is not None and not isinstance(cause, ConnectionError):
            cause = cause.__cause__ or cause.__context__
        if cause is not None:
            return f"connection error at {url}: {type(cause).__name__}: {cause}"
        if isinstance(error, openai.APITimeoutError):
            return f"timed out after {self.config.timeout_s:g} s at {url}"
        return f"connection error at {url}: {error}"

    def _backoff_s(self, attempt: int) -> float:
        """Exponential backoff with full jitter: uniform in [0, min(max, initial * 2^(attempt-1))]."""
        ceiling = min(self.config.backoff_max_s, self.config.backoff_initial_s * 2 ** (attempt - 1))
        return self._jitter.uniform(0, ceiling)

    def _loop_resources(self) -> _LoopResources:
        loop = asyncio.get_running_loop()
        if self._resources is None or self._resources.loop is not loop:
            # Clients of a previous loop are dropped, not closed: their connections belong to that loop.
            clients = [
                (
                    url,
                    openai.AsyncOpenAI(
                        base_url=url,
                        api_key=self._api_key,
                        max_retries=0,
                        timeout=self.config.timeout_s,
                        http_client=openai.DefaultAioHttpClient(),  # aiohttp: far less CPU per request than httpx
                    ),
                )
                for url in self.config.base_urls
            ]
            self._resources = _LoopResources(loop, clients, asyncio.Semaphore(self.config.max_concurrency))
        return self._resources

    def _open_cache(self) -> VerdictCache | None:
        if self._cache is None and self.config.cache_path:
            self._cache = VerdictCache(self.config.cache_path)
        return self._cache

    async def aclose(self) -> None:
        """Close the HTTP clients and the cache; a later `grade` opens them again."""
        resources, self._resources = self._resources, None
        if resources is not None and resources.loop is asyncio.get_running_loop():
            await asyncio.gather(*(client.close() for _, client in resources.clients))
        if self._cache is not None:
            self._cache.close()
            self._cache = None


def _read_api_key(env_var: str | None) -> str:
    """The key from the named variable; "EMPTY" when none is configured (what vLLM expects)."""
    if env_var is None:
        return "EMPTY"
    key = os.environ.get(env_var)
    if not key:
        raise ValueError(f"judge config sets api_key_env={env_var!r}, but that environment variable is not set")
    return key


def _status_message(error: openai.APIStatusError) -> str:
    """The client's message, plus the `detail` of a FastAPI error body (`transformers serve` answers a wrong model
    name or an unknown field that way), which the client leaves out of its message."""
    detail = error.body.get("detail") if isinstance(error.body, dict) else None
    return f"{error.message} - {detail}" if detail else error.message


def _first_token_top_logprobs(completion: dict) -> list[dict]:
    """`choices[0].logprobs.content[0].top_logprobs` of a chat completion; [] when any part of it is missing."""
    try:
        top = completion["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
    except (KeyError, IndexError, TypeError):
        return []
    return top if isinstance(top, list) else []


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


def _answer_text(completion: Any) -> Any:
    """`choices[0].message.content` of a chat completion body, or None when any part of it is missing."""
    choices = completion.get("choices") if isinstance(completion, dict) else None
    if not choices or not isinstance(choices[0], dict):
        return None
    message = choices[0].get("message")
    return message.get("content") if isinstance(message, dict) else None
