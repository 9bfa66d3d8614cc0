"""`ChatClient`: ask a chat model a question and get its parsed answer, whatever it takes.

Everything that talks to an OpenAI-compatible endpoint goes through here: the judge, the pairwise judge, the
proposer and response collection. The client owns the answer cache, retries with backoff, the replicas (requests
alternate between base URLs), the concurrency bound, the endpoint's rate limits (`rate_limit`) and the cost counts,
and it never raises for a failed question: the `Asked` it returns has `error` set instead, so a failure is counted
and reported, never scored. At temperature 0, a question asked while the identical question is in flight waits for
that one's answer (or its failure) instead of sending a request of its own (single flight; counted as a cache hit).

HTTP clients and the concurrency semaphore belong to one event loop, so they are created lazily inside the
coroutine and re-created when the running loop changes (TRL awaits rewards on its own background loop; tests and
the monitor call `asyncio.run` repeatedly). `aclose` may be called any number of times; a later `ask` opens
everything again. Retries are ours (`max_retries=0` on the openai client) so that each one is counted and a
malformed answer is re-asked like a failed request; like the openai client's own, they wait at least what a
server's `Retry-After` asks (up to `retry_after_max_s`).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Generic, TypeVar

import openai

from rubric_rft.config_values import ConfigError
from rubric_rft.llm import rate_limit
from rubric_rft.llm.answers import MalformedAnswer
from rubric_rft.llm.cache import AnswerCache, cache_key
from rubric_rft.llm.costs import CallOutcome
from rubric_rft.llm.endpoint import ChatEndpointConfig
from rubric_rft.llm.rate_limit import estimate_tokens

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Statuses worth asking again: the server is busy or broken for now. Any other 4xx is the request's fault.
RETRYABLE_STATUSES = frozenset({408, 429})
# First-token candidates asked for with `first_token`: enough for the spellings of yes and no to show up.
TOP_LOGPROBS = 20


@dataclass
class Asked(CallOutcome, Generic[T]):
    """The outcome of one question: `value` is None exactly when `error` says why."""

    value: T | None = None


class _Refused(Exception):
    """A request the server refused for good (a non-retryable HTTP error)."""


class _Transient(Exception):
    """A failure worth retrying: timeout, connection error, 408/429/5xx; `retry_after_s`: how long the server
    asked the client to wait (its `Retry-After` header), if it said."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass
class _LoopResources:
    """What must be created on the event loop that uses it."""

    loop: asyncio.AbstractEventLoop
    clients: list[tuple[str, openai.AsyncOpenAI]]  # (base URL, client), base URLs alternating
    in_flight: asyncio.Semaphore
    asking: dict[str, asyncio.Future] = field(default_factory=dict)  # cache key -> the answer on its way


class ChatClient:
    """Asks the model of a `ChatEndpointConfig`; `async with ChatClient(config) as client:` closes it after."""

    def __init__(self, config: ChatEndpointConfig) -> None:
        self.config = config
        self.name = f"openai:{config.model}"
        self._api_key = _read_api_key(config.api_key_env)
        self._limiter = rate_limit.shared_limiter(config.base_urls, config.model, config.max_rpm, config.max_tpm)
        self._next_client = itertools.count()
        self._jitter = random.Random()
        self._resources: _LoopResources | None = None
        self._cache = AnswerCache(config.cache_path) if config.cache_path else None

    def __repr__(self) -> str:
        return f"ChatClient(model={self.config.model!r}, base_urls={self.config.base_urls!r})"

    async def __aenter__(self) -> ChatClient:
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.aclose()

    async def ask(
        self,
        messages: list[dict],
        parse: Callable[[str], dict[str, Any]],
        key: dict[str, Any],
        *,
        first_token: Callable[[list[dict]], dict[str, Any]] | None = None,
        constraint: dict[str, Any] | None = None,
    ) -> Asked[dict[str, Any]]:
        """The parsed answer to one chat question: from the cache, or asked (and re-asked) until it parses.

        `parse` turns the answer text into a JSON object, which is what gets cached, or raises `MalformedAnswer`
        to have the question asked again. `key` holds everything besides the model and temperature that determines
        the answer (template version, prompt, ...): the cache key is made of them. With `first_token`, the top
        log-probabilities of the answer's first token are requested too, and what it makes of them (`[]` when the
        server gave none) is merged into the answer. `constraint` holds request fields that constrain the answer's
        form (`response_format`, vLLM's `structured_outputs`); it is part of the cache key.
        """
        if constraint is not None:
            key = {**key, "constraint": constraint}
        full_key = cache_key(backend="openai", model=self.config.model, temperature=self.config.temperature, **key)
        cached = self._cache.get(full_key) if self._cache is not None else None
        if cached is not None:
            return Asked(cache_hits=1, value=cached)
        if self.config.temperature != 0:  # a sampled answer is one draw: an identical question gets its own
            return await self._ask(messages, parse, full_key, first_token, constraint)
        asking = self._loop_resources().asking
        if full_key in asking:
            # Single flight: the same question is on its way (a collapsed GRPO group repeats one answer), and at
            # temperature 0 its answer is this question's too. Counted as a cache hit: no request was sent.
            value, error = await asking[full_key]
            return Asked(cache_hits=1, value=None if value is None else dict(value), error=error)
        answer = asking[full_key] = asyncio.get_running_loop().create_future()
        try:
            asked = await self._ask(messages, parse, full_key, first_token, constraint)
            answer.set_result((None if asked.value is None else dict(asked.value), asked.error))  # callers may edit
            return asked
        finally:
            del asking[full_key]
            if not answer.done():  # cancelled: the questions waiting on this one are cancelled with it
                answer.cancel()

    async def _ask(
        self,
        messages: list[dict],
        parse: Callable[[str], dict[str, Any]],
        full_key: str,
        first_token: Callable[[list[dict]], dict[str, Any]] | None,
        constraint: dict[str, Any] | None = None,
    ) -> Asked[dict[str, Any]]:
        """Ask (and re-ask) until the answer parses or the retries run out; cache a parsed answer."""
        asked: Asked[dict[str, Any]] = Asked()
        last_failure, retry_after_s = "", None
        for attempt in range(self.config.max_retries + 1):
            if attempt:
                asked.retries += 1
                await asyncio.sleep(self._backoff_s(attempt, retry_after_s))
                logger.debug("retry %d after: %s", attempt, last_failure)
            try:
                text, top_logprobs = await self._complete(messages, asked, logprobs=first_token is not None,
                                                          constraint=constraint)
                answer = parse(text)
                if first_token is not None:
                    answer.update(first_token(top_logprobs))
            except _Refused as refused:
                asked.error = f"{self.name}: {refused}"
                return asked
            except (_Transient, MalformedAnswer) as problem:
                last_failure = str(problem) if isinstance(problem, _Transient) else f"malformed answer: {problem}"
                asked.malformed += isinstance(problem, MalformedAnswer)
                retry_after_s = problem.retry_after_s if isinstance(problem, _Transient) else None
                continue
            if self._cache is not None:
                self._cache.put(full_key, answer)
            asked.value = answer
            return asked
        asked.error = (
            f"{self.name}: gave up after {self.config.max_retries + 1} attempts; last failure: {last_failure}"
        )
        return asked

    async def _complete(
        self, messages: list[dict], costs: CallOutcome, *, logprobs: bool = False,
        constraint: dict[str, Any] | None = None,
    ) -> tuple[str, list[dict]]:
        """Send one chat request to the next replica: the answer's text and, with `logprobs`, the top
        log-probabilities of its first token (empty when the server gives none); or `_Transient`/`_Refused`."""
        body = {
            "model": self.config.model,
            "messages": messages,
            "temperature": self.config.temperature,
            "max_tokens": self.config.max_tokens,
        }
        if logprobs:
            body.update(logprobs=True, top_logprobs=TOP_LOGPROBS)
        body.update(constraint or {})
        resources = self._loop_resources()
        url, client = resources.clients[next(self._next_client) % len(resources.clients)]
        estimated = estimate_tokens(messages, self.config.max_tokens)
        if self._limiter is not None:  # before a concurrency slot: a request waiting for its turn holds none
            costs.rate_limit_wait_s += await self._limiter.acquire(estimated)
        async with resources.in_flight:
            costs.calls += 1
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
                    raise _Transient(message, _retry_after_s(exc.response.headers)) from None
                raise _Refused(message) from None
        usage = (completion.get("usage") if isinstance(completion, dict) else None) or {}
        prompt_tokens, completion_tokens = usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0
        costs.prompt_tokens += prompt_tokens
        costs.completion_tokens += completion_tokens
        if self._limiter is not None and usage:
            self._limiter.settle(estimated, prompt_tokens + completion_tokens)
        text = _answer_text(completion)
        if not isinstance(text, str) or not text.strip():
            raise MalformedAnswer("empty answer")
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

    def _backoff_s(self, attempt: int, retry_after_s: float | None = None) -> float:
        """Exponential backoff with full jitter: uniform in [0, min(max, initial * 2^(attempt-1))]; at least what
        the server asked for in `Retry-After` (a rate-limited API says when it will answer again), up to
        `retry_after_max_s`."""
        ceiling = min(self.config.backoff_max_s, self.config.backoff_initial_s * 2 ** (attempt - 1))
        asked = min(retry_after_s or 0.0, self.config.retry_after_max_s)
        return max(self._jitter.uniform(0, ceiling), asked)

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

    async def aclose(self) -> None:
        """Close the HTTP clients of the running loop and the cache connection; safe to call again, and a later
        `ask` opens them again."""
        resources, self._resources = self._resources, None
        if resources is not None and resources.loop is asyncio.get_running_loop():
            await asyncio.gather(*(client.close() for _, client in resources.clients))
        if self._cache is not None:
            self._cache.close()


def _read_api_key(env_var: str | None) -> str:
    """The key from the named variable; "EMPTY" when none is configured (what vLLM expects)."""
    if env_var is None:
        return "EMPTY"
    key = os.environ.get(env_var)
    if not key:
        raise ConfigError(f"api_key_env: the environment variable {env_var} is not set: export it with the API key, "
                          "or leave api_key_env out for a server that needs none")
    return key


def _retry_after_s(headers: Mapping[str, str]) -> float | None:
    """The wait a response asks for: `retry-after-ms` (OpenAI's), `Retry-After` in seconds or as an HTTP date."""
    try:
        if headers.get("retry-after-ms"):
            return max(float(headers["retry-after-ms"]) / 1000, 0.0)
        value = headers.get("retry-after")
        if not value:
            return None
        try:
            return max(float(value), 0.0)
        except ValueError:
            return max((parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds(), 0.0)
    except (TypeError, ValueError):  # a header no server should send: back off as if there were none
        return None


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


def _answer_text(completion: Any) -> Any:
    """`choices[0].message.content` of a chat completion body, or None when any part of it is missing."""
    choices = completion.get("choices") if isinstance(completion, dict) else None
    if not choices or not isinstance(choices[0], dict):
        return None
    message = choices[0].get("message")
    return message.get("content") if isinstance(message, dict) else None
