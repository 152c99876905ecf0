"""Rate limiting for one target: token buckets (requests and tokens per minute), adaptive 429 backoff.

- :class:`TokenBucket` refills continuously at ``rate_per_minute / 60`` per second with a burst of
  at most one second's worth (so no minute ever sees much more than the allowed rate). A cost larger
  than the burst is allowed once the bucket is full and leaves it in debt, so the long-run rate holds.
- :class:`RateLimiter` combines the buckets with an AIMD controller: a 429 halves the effective rate
  and the allowed concurrency and pauses every request until ``Retry-After``; each success recovers
  a little, back up to the configured limits.
- :func:`backoff_delay`: exponential backoff with full jitter, never shorter than ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import math
import random
import time


class TokenBucket:
    def __init__(self, rate_per_minute: float, burst: float | None = None):
        if rate_per_minute <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate_per_minute / 60.0  # per second
        self.capacity = burst if burst is not None else max(1.0, self.rate)
        self.level = self.capacity
        self.factor = 1.0  # adaptive multiplier in (0, 1]
        self._t = time.monotonic()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self._t) * self.rate * self.factor)
        self._t = now

    async def acquire(self, cost: float = 1.0) -> None:
        """Wait until ``cost`` can be taken (or, for costs beyond the burst, the bucket is full)."""
        async with self._lock:
            need = min(cost, self.capacity)
            while True:
                self._refill()
                if self.level >= need:
                    self.level -= cost
                    return
                await asyncio.sleep((need - self.level) / (self.rate * self.factor))

    def adjust(self, delta: float) -> None:
        """Charge (``delta`` > 0) or refund (< 0) after the real cost is known."""
        self._refill()
        self.level = min(self.capacity, self.level - delta)


class AdaptiveConcurrency:
    """A semaphore whose limit halves on 429 and grows by one per ``limit`` successes (AIMD)."""

    def __init__(self, limit: int):
        self.max = max(1, limit)
        self.limit = self.max
        self.active = 0
        self._ok = 0
        self._cond = asyncio.Condition()

    async def acquire(self) -> None:
        async with self._cond:
            await self._cond.wait_for(lambda: self.active < self.limit)
            self.active += 1

    async def release(self) -> None:
        async with self._cond:
            self.active -= 1
            self._cond.notify_all()

    def decrease(self) -> None:
        self.limit = max(1, self.limit // 2)
        self._ok = 0

    async def success(self) -> None:
        if self.limit >= self.max:
            return
        self._ok += 1
        if self._ok >= self.limit:
            self._ok = 0
            async with self._cond:
                self.limit += 1
                self._cond.notify_all()


class RateLimiter:
    """Everything that paces requests to one target (shared by the collector's request tasks)."""

    def __init__(self, *, concurrency: int, rpm: float | None = None, tpm: float | None = None):
        self.rpm = TokenBucket(rpm) if rpm else None
        self.tpm = TokenBucket(tpm, burst=max(1.0, tpm / 60.0)) if tpm else None
        self.concurrency = AdaptiveConcurrency(concurrency)
        self.paused_until = 0.0
        self.rate_limited = 0

    async def acquire(self, est_tokens: float) -> None:
        await self.concurrency.acquire()
        try:
            while (wait := self.paused_until - time.monotonic()) > 0:
                await asyncio.sleep(wait)
            if self.rpm:
                await self.rpm.acquire(1)
            if self.tpm:
                await self.tpm.acquire(est_tokens)
        except BaseException:
            await self.concurrency.release()
            raise

    async def release(self) -> None:
        await self.concurrency.release()

    def charge_tokens(self, estimated: float, actual: float | None) -> None:
        if self.tpm and actual is not None:
            self.tpm.adjust(actual - estimated)

    def on_rate_limited(self, retry_after: float | None, fallback_delay: float) -> None:
        """A 429: pause everyone until Retry-After, halve rates and concurrency."""
        self.rate_limited += 1
        pause = retry_after if retry_after is not None else fallback_delay
        self.paused_until = max(self.paused_until, time.monotonic() + pause)
        for b in (self.rpm, self.tpm):
            if b:
                b._refill()
                b.factor = max(0.05, b.factor * 0.5)
        self.concurrency.decrease()

    async def on_success(self) -> None:
        for b in (self.rpm, self.tpm):
            if b and b.factor < 1.0:
                b._refill()
                b.factor = min(1.0, b.factor + 0.05)
        await self.concurrency.success()


def backoff_delay(attempt: int, *, base: float, cap: float, retry_after: float | None = None, rng=random) -> float:
    """Delay before retry ``attempt`` (1-based): full jitter over ``base * 2**(attempt-1)``, capped,
    and never less than ``retry_after``."""
    delay = rng.uniform(0, min(cap, base * math.pow(2, attempt - 1)))
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay
