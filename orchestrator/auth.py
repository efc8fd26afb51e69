"""API keys and per-key rate limits.

A key is ``june_`` plus 43 random URL-safe characters, shown once when it is made. Only
its SHA-256 is stored: the keys are long random strings, so a fast hash is enough, and
a database leak does not reveal them. Clients send ``Authorization: Bearer <key>`` (or
``X-API-Key: <key>``). Each key belongs to a user; what a user stores and says is theirs.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from orchestrator.buckets import Bucket, BucketStore, MemoryBuckets
from orchestrator.cli_errors import CommandError
from orchestrator.db.models import ApiKey

KEY_PREFIX = "june_"


class KeyAdminError(CommandError):
    """A ``june keys`` command could not be done; the message says why in one line."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's id, its user, and whether it may manage shared data."""

    key_id: uuid.UUID
    user_id: str
    is_admin: bool


@dataclass(frozen=True)
class NewKey:
    id: uuid.UUID
    user_id: str
    name: str
    key: str  # the secret: shown once, never stored


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def create_key(session: Session, *, user_id: str, name: str, is_admin: bool = False) -> NewKey:
    if not user_id.strip():
        raise KeyAdminError("a key needs a user id")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(
        user_id=user_id.strip(),
        name=name.strip() or "default",
        prefix=key[:12],
        key_sha256=hash_key(key),
        is_admin=is_admin,
    )
    session.add(row)
    session.commit()
    return NewKey(id=row.id, user_id=row.user_id, name=row.name, key=key)


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)))


def revoke_key(session: Session, key_ref: str) -> ApiKey:
    """Revoke by id or by the key's shown prefix; raises KeyAdminError if none or ambiguous."""
    clauses = [ApiKey.prefix == key_ref]
    with contextlib.suppress(ValueError):
        clauses.append(ApiKey.id == uuid.UUID(key_ref))
    rows = list(session.scalars(select(ApiKey).where(or_(*clauses))))
    if not rows:
        raise KeyAdminError(f"no API key {key_ref!r}")
    if len(rows) > 1:
        raise KeyAdminError(f"{key_ref!r} matches {len(rows)} keys: give the key id")
    row = rows[0]
    if row.revoked_at is None:
        row.revoked_at = datetime.now(UTC)
        session.commit()
    return row


class AuthError(PermissionError):
    """The request's key is missing, unknown or revoked (HTTP 401)."""


async def authenticate(session: AsyncSession, key: str | None) -> Principal:
    if not key:
        raise AuthError("an API key is required: send 'Authorization: Bearer <key>'")
    row = await session.scalar(select(ApiKey).where(ApiKey.key_sha256 == hash_key(key)))
    if row is None:
        raise AuthError("the API key is not valid")
    if row.revoked_at is not None:
        raise AuthError("the API key has been revoked")
    return Principal(key_id=row.id, user_id=row.user_id, is_admin=row.is_admin)


class RateLimiter:
    """A token bucket per key: ``per_minute`` requests a minute, bursts up to ``burst``,
    in this process or shared by every replica (``store``, see buckets.py)."""

    def __init__(
        self, per_minute: int, burst: int | None = None, *, store: BucketStore | None = None
    ) -> None:
        self.bucket = Bucket("requests", per_minute / 60.0, float(burst or per_minute))
        self.store = store or MemoryBuckets()
        self._local = self.store if isinstance(self.store, MemoryBuckets) else MemoryBuckets()

    def acquire(self, key_id: uuid.UUID) -> float:
        """0 when the request may go ahead, else the seconds until it may (this process's
        bucket: for a channel with one replica, the Telegram bot)."""
        return self._local.take_now(self.bucket, key_id, 1.0)

    async def take(self, key_id: uuid.UUID) -> float:
        """As :meth:`acquire`, from the configured store (shared across replicas)."""
        return await self.store.take(self.bucket, key_id, 1.0)
