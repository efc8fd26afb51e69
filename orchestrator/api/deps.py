"""Dependency aliases for route handlers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

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
TritonDep = Annotated[TritonGateway, Depends(_triton)]
SettingsDep = Annotated[Settings, Depends(_settings)]
