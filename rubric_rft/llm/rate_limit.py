"""Requests and tokens per minute for an API endpoint (`max_rpm`, `max_tpm` in an endpoint or judge config).

An API judge refuses what goes over its account's limits (HTTP 429), and a GRPO step asks hundreds of questions at
once: retrying after refusals wastes attempts and can exhaust them. A limiter spaces the requests instead. Every
client in a process that talks to the same endpoint (the same base URLs and model, with the same limits) shares one
limiter, whichever event loop it runs on: the reward, the monitor's gold and the refinement proxy spend one budget.

Each limit is a token bucket holding a minute's worth, refilled continuously (limit / 60 a second), full at the
start. A request takes one request and its estimated tokens (its text's characters / 4, plus `max_tokens`), and
waits while either bucket lacks them; the answer's usage then settles the estimate. The seconds waited are counted
in the request's costs (`rate_limit_wait_s`), so the wait shows in the reward's metrics.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable

CHARS_PER_TOKEN = 4  # a rough count of the tokens of a request's text before the server counts them


class _Bucket:
    def __init__(self, per_minute: int, now: float) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.level = self.capacity
        self.at = now

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.at) * self.rate)
        self.at = now

    def shortfall_s(self, amount: float) -> float:
        """Seconds until `amount` is in the bucket (a request larger than the whole bucket waits for a full one)."""
        return max(0.0, (min(amount, self.capacity) - self.level) / self.rate)


class RateLimiter:
    """`max_rpm` requests and `max_tpm` tokens per minute (None: no limit). `clock` and `sleep` are the time it reads
    and waits on (tests pass their own)."""

    def __init__(self, max_rpm: int | None, max_tpm: int | None, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.clock, self.sleep = clock, sleep
        self.max_rpm, self.max_tpm = max_rpm, max_tpm
        now = clock()
        self._requests = _Bucket(max_rpm, now) if max_rpm else None
        self._tokens = _Bucket(max_tpm, now) if max_tpm else None
        self._lock = threading.Lock()  # shared across event loops and threads; held only to read and take

    async def acquire(self, tokens: int) -> float:
        """Wait until one request and `tokens` tokens fit, take them, and return the seconds waited."""
        waited = 0.0
        while True:
            with self._lock:
                now = self.clock()
                needs = [(bucket, amount) for bucket, amount in ((self._requests, 1), (self._tokens, tokens))
                         if bucket is not None]
                for bucket, _ in needs:
                    bucket.refill(now)
                wait = max((bucket.shortfall_s(amount) for bucket, amount in needs), default=0.0)
                if wait <= 0:
                    for bucket, amount in needs:
                        bucket.level -= min(amount, bucket.capacity)
                    return waited
            await self.sleep(wait)
            waited += wait

    def settle(self, estimated: int, used: int) -> None:
        """The answer's usage is known: return what the estimate overcharged, or take what it missed."""
        if self._tokens is not None:
            with self._lock:
                self._tokens.level = min(self._tokens.capacity, self._tokens.level + estimated - used)


def estimate_tokens(messages: list[dict], max_tokens: int) -> int:
    """Tokens a request may use before its usage is known: its text's characters / 4, plus the answer's bound."""
    chars = sum(len(m["content"]) if isinstance(m.get("content"), str) else 0 for m in messages)
    return chars // CHARS_PER_TOKEN + max_tokens


_SHARED: dict[tuple, RateLimiter] = {}
_SHARED_LOCK = threading.Lock()


def shared_limiter(base_urls: list[str], model: str, max_rpm: int | None, max_tpm: int | None) -> RateLimiter | None:
    """The process's limiter for this endpoint and these limits (created on first use); None without limits."""
    if not max_rpm and not max_tpm:
        return None
    key = (tuple(sorted(base_urls)), model, max_rpm, max_tpm)
    with _SHARED_LOCK:
        if key not in _SHARED:
            _SHARED[key] = RateLimiter(max_rpm, max_tpm)
        return _SHARED[key]


def share(base_urls: list[str], model: str, limiter: RateLimiter) -> None:
    """Make `limiter` the one clients of this endpoint share (its limits are read from it): for a limiter with
    its own clock, in tests."""
    with _SHARED_LOCK:
        _SHARED[(tuple(sorted(base_urls)), model, limiter.max_rpm, limiter.max_tpm)] = limiter
