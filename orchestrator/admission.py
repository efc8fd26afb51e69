"""Admission control: every stage has a concurrency budget and a bounded queue.

A request that would wait past the stage's deadline, or find its queue full, is refused at
once with :class:`Overloaded` (HTTP 503 with ``Retry-After``), never after a timeout: the
decision is made on arrival, and a request let into the queue waits for its slot (up to
its own deadline). The expected wait is the queue ahead of it times the stage's service
time, divided by the stage's concurrency. The service time is the larger of the recent
hold times (an exponentially weighted mean) and the mean age of the requests holding
slots now, so a stage that has just slowed down under load is seen as slow at once.

Work is also weighed per key (:class:`WorkLimiter`): seconds of audio heard, reply tokens
asked for and characters spoken, so one client cannot take the machine with few requests.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from orchestrator import metrics
from orchestrator.buckets import Bucket, BucketStore, MemoryBuckets
from orchestrator.config import Settings


class Overloaded(RuntimeError):
    """The server is full for this stage now: 503, try again after ``retry_after`` s."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = max(1, math.ceil(retry_after))


class RateLimited(RuntimeError):
    """This key has used its share: 429, try again after ``retry_after`` s."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = max(1, math.ceil(retry_after)) if math.isfinite(retry_after) else 60


class Stage:
    """One stage's budget: ``concurrency`` at once, at most ``queue`` waiting."""

    def __init__(self, name: str, *, concurrency: int, queue: int, max_wait_s: float) -> None:
        self.name = name
        self.concurrency = concurrency
        self.queue = queue
        self.max_wait_s = max_wait_s
        self.waiting = 0
        self.service_s = 0.0  # EWMA of the time a slot is held
        self._holders: dict[int, float] = {}  # slot holder -> when it took the slot
        self._cond = asyncio.Condition()

    @property
    def active(self) -> int:
        return len(self._holders)

    def service_estimate(self) -> float:
        """Seconds a slot is held now: recent hold times, or longer if the holders say so."""
        if not self._holders:
            return self.service_s
        now = time.monotonic()
        age = sum(now - t for t in self._holders.values()) / len(self._holders)
        return max(self.service_s, age)

    def expected_wait(self) -> float:
        """Seconds a newcomer would wait, from the queue ahead and the service time."""
        if self.active < self.concurrency:
            return 0.0
        return (self.waiting + 1) * self.service_estimate() / self.concurrency

    def _refuse(self, why: str) -> Overloaded:
        metrics.ADMISSION_REFUSED.labels(stage=self.name).inc()
        retry = max(1.0, self.expected_wait() or self.service_s or 1.0)
        return Overloaded(f"June is busy ({self.name}: {why}); try again shortly", retry)

    @asynccontextmanager
    async def slot(self, deadline: float | None = None) -> AsyncIterator[None]:
        """Hold one of the stage's slots; refuses at once when it cannot be had in time."""
        now = time.monotonic()
        limit = self.max_wait_s
        if deadline is not None:
            limit = min(limit, deadline - now)
        async with self._cond:
            if self.active >= self.concurrency:
                if self.waiting >= self.queue:
                    raise self._refuse(f"{self.waiting} requests already waiting")
                if self.expected_wait() > limit:
                    raise self._refuse(f"expected wait {self.expected_wait():.0f} s")
                # Let in: it waits for its slot, up to its own deadline (a request with
                # none gets three times the stage's wait limit as a last resort).
                patience = (deadline - now) if deadline is not None else 3 * self.max_wait_s
                self.waiting += 1
                metrics.QUEUE_DEPTH.labels(stage=self.name).set(self.waiting)
                try:
                    await asyncio.wait_for(
                        self._cond.wait_for(lambda: self.active < self.concurrency),
                        timeout=max(patience, 0.001),
                    )
                except TimeoutError:
                    raise self._refuse("no slot before the request's deadline") from None
                finally:
                    self.waiting -= 1
                    metrics.QUEUE_DEPTH.labels(stage=self.name).set(self.waiting)
            token = object()
            self._holders[id(token)] = time.monotonic()
        try:
            yield
        finally:
            held = time.monotonic() - self._holders[id(token)]
            self.service_s = held if self.service_s == 0 else 0.7 * self.service_s + 0.3 * held
            async with self._cond:
                del self._holders[id(token)]
                self._cond.notify(1)


class Admission:
    """The stages of a turn, sized from settings: ``turn``, ``asr``, ``llm``, ``tts``,
    ``embed``, ``vad``."""

    def __init__(self, settings: Settings) -> None:
        sizes = {
            "turn": settings.turn_concurrency,
            "asr": settings.asr_concurrency,
            "llm": settings.llm_concurrency,
            "tts": settings.tts_concurrency,
            "embed": settings.embed_concurrency,
            "vad": settings.vad_concurrency,
        }
        self.stages = {
            name: Stage(
                name,
                concurrency=n,
                queue=settings.queue_depth,
                max_wait_s=settings.queue_wait_s,
            )
            for name, n in sizes.items()
        }

    def slot(self, stage: str, deadline: float | None = None):  # noqa: ANN201
        return self.stages[stage].slot(deadline)


class WorkLimiter:
    """A token bucket per key, in units of work (see the module docstring), in this
    process or shared by every replica (``store``, see buckets.py)."""

    def __init__(
        self, per_minute: float, *, burst: float | None = None, store: BucketStore | None = None
    ) -> None:
        self.bucket = Bucket("work", per_minute / 60.0, float(burst or per_minute))
        self.store = store or MemoryBuckets()

    async def charge(self, key_id: uuid.UUID, units: float) -> None:
        """Take ``units`` from the key's bucket, or raise :class:`RateLimited`.

        One request may cost more than the burst (a long recording): it is let through
        when the bucket is full and leaves it in debt, so the key waits afterwards.
        """
        wait = await self.store.take(self.bucket, key_id, units)
        if wait > 0:
            raise RateLimited(
                f"this key has used its work budget ({units:.0f} units asked); slow down", wait
            )


def work_units(*, audio_seconds: float = 0.0, tokens: int = 0, characters: int = 0) -> float:
    """The cost of a request in work units: audio seconds, tokens / 10, characters / 15."""
    return audio_seconds + tokens / 10 + characters / 15
