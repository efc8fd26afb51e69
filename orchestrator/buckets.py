"""Token buckets for the per-key limits, kept in this process or shared in PostgreSQL.

Both limits use them: requests a minute (``RateLimiter``, the key gate's 429) and units of
work a minute (``WorkLimiter``). In one process (``june serve``) the buckets live in
memory. With replicas (compose scaled out, Kubernetes) each replica would keep its own, and
every key would get its limit once per replica; ``JUNE_RATE_LIMIT_STORE=database`` keeps
them in the ``rate_buckets`` table instead, where every replica takes from the same bucket.

A take is one short transaction: the bucket's row is locked (``SELECT ... FOR UPDATE``),
refilled by the database clock's elapsed time, and written back. If the database cannot
be reached, the take falls back to this process's bucket (and says so in the log): a
limit held per replica for a while is better than refusing every user.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import async_sessionmaker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Bucket:
    """``rate`` tokens a second, at most ``capacity`` saved up."""

    kind: str  # "requests" or "work"
    rate: float
    capacity: float

    def take(self, tokens: float, elapsed_s: float, cost: float) -> tuple[float, float]:
        """(tokens left, seconds to wait): 0 s when taken. A cost above the capacity is let
        through from a full bucket and leaves it in debt (a long recording)."""
        tokens = min(self.capacity, tokens + max(0.0, elapsed_s) * self.rate)
        need = min(cost, self.capacity)
        if tokens >= need:
            return tokens - cost, 0.0
        return tokens, (need - tokens) / self.rate if self.rate > 0 else math.inf


class BucketStore(Protocol):
    async def take(self, bucket: Bucket, key_id: uuid.UUID, cost: float) -> float: ...


class MemoryBuckets:
    """This process's buckets (one replica)."""

    def __init__(self) -> None:
        self._state: dict[tuple[str, uuid.UUID], tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take_now(self, bucket: Bucket, key_id: uuid.UUID, cost: float) -> float:
        now = time.monotonic()
        with self._lock:
            tokens, last = self._state.get((bucket.kind, key_id), (bucket.capacity, now))
            left, wait = bucket.take(tokens, now - last, cost)
            self._state[(bucket.kind, key_id)] = (left, now)
        return wait

    async def take(self, bucket: Bucket, key_id: uuid.UUID, cost: float) -> float:
        return self.take_now(bucket, key_id, cost)


_ENSURE = text(
    "INSERT INTO rate_buckets (key_id, kind, tokens, updated_at) "
    "VALUES (:key_id, :kind, :capacity, clock_timestamp()) ON CONFLICT DO NOTHING"
)
_LOCK = text(
    "SELECT tokens, EXTRACT(EPOCH FROM clock_timestamp() - updated_at) AS elapsed "
    "FROM rate_buckets WHERE key_id = :key_id AND kind = :kind FOR UPDATE"
)
_WRITE = text(
    "UPDATE rate_buckets SET tokens = :tokens, updated_at = clock_timestamp() "
    "WHERE key_id = :key_id AND kind = :kind"
)


class DatabaseBuckets:
    """Buckets in PostgreSQL, shared by every replica on the same database."""

    def __init__(self, sessions: async_sessionmaker) -> None:
        self.sessions = sessions
        self.fallback = MemoryBuckets()

    async def take(self, bucket: Bucket, key_id: uuid.UUID, cost: float) -> float:
        ids = {"key_id": key_id, "kind": bucket.kind}
        try:
            async with self.sessions() as session, session.begin():
                await session.execute(_ENSURE, {**ids, "capacity": bucket.capacity})
                row = (await session.execute(_LOCK, ids)).one()
                left, wait = bucket.take(float(row.tokens), float(row.elapsed), cost)
                await session.execute(_WRITE, {**ids, "tokens": left})
            return wait
        except (SQLAlchemyError, OSError) as exc:
            log.warning("rate limits held in this process: the database failed (%s)", exc)
            return self.fallback.take_now(bucket, key_id, cost)
