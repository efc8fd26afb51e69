"""Dependency aliases for route handlers."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request, status
from sqlalchemy.ext.asyncio import AsyncSession

from orchestrator.auth import AuthError, Principal, authenticate
from orchestrator.config import Settings
from orchestrator.triton.client import TritonGateway


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    async with request.app.state.sessionmaker() as session:
        yield session


def _triton(request: Request) -> TritonGateway:
    return request.app.state.triton


def _settings(request: Request) -> Settings:
    return request.app.state.settings


SessionDep = Annotated[AsyncSession, Depends(_session)]


async def require_key(
    request: Request,
    session: SessionDep,
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> Principal:
    """The caller's key, checked and counted against its rate limit (401 / 429 otherwise)."""
    key = x_api_key
    if key is None and authorization:
        scheme, _, value = authorization.partition(" ")
        key = value.strip() if scheme.lower() == "bearer" else None
    try:
        principal = await authenticate(session, key)
    except AuthError as exc:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, str(exc), headers={"WWW-Authenticate": "Bearer"}
        ) from exc
    wait = request.app.state.rate_limiter.acquire(principal.key_id)
    if wait > 0:
        per_minute = request.app.state.settings.rate_limit_per_minute
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"rate limit of {per_minute} requests a minute exceeded for this key",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )
    request.state.principal = principal
    return principal


TritonDep = Annotated[TritonGateway, Depends(_triton)]
SettingsDep = Annotated[Settings, Depends(_settings)]
PrincipalDep = Annotated[Principal, Depends(require_key)]
