"""Dependency aliases for route handlers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from sqlalchemy.ext.asyncio import AsyncSession

from orchestrator.auth import Principal
from orchestrator.config import Settings
from orchestrator.triton.client import TritonGateway
from orchestrator.turn import TurnService


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    async with request.app.state.sessionmaker() as session:
        yield session


def _triton(request: Request) -> TritonGateway:
    return request.app.state.triton


def _settings(request: Request) -> Settings:
    return request.app.state.settings


def _turns(request: Request) -> TurnService:
    return request.app.state.turns


def require_key(request: Request) -> Principal:
    """The caller, as :class:`~orchestrator.api.gates.KeyGate` found it from the headers
    (before the body was read). The gate holds no database connection past its check."""
    principal = getattr(request.state, "principal", None)
    if principal is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "an API key is required: send 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return principal


SessionDep = Annotated[AsyncSession, Depends(_session)]
TritonDep = Annotated[TritonGateway, Depends(_triton)]
SettingsDep = Annotated[Settings, Depends(_settings)]
TurnsDep = Annotated[TurnService, Depends(_turns)]
PrincipalDep = Annotated[Principal, Depends(require_key)]
