"""A request id is answered once, on the real database, even when the first holder's
commit lands between a retry's look for the stored turn and its reservation.

The replicas test (test_replicas.py) sends one request id to two replicas at once; it
failed once in a fresh clone with a 500 on one of them: the retry looked for the stored
turn, the holder committed, and then the retry's reservation succeeded. That commit is
made here on purpose, just before the retry's reservation.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

from sqlalchemy import func, select

from orchestrator.auth import Principal
from orchestrator.config import Settings
from orchestrator.db import conversations as crud
from orchestrator.db.conversations import NewTurn
from orchestrator.db.engine import make_async_engine, make_sessionmaker
from orchestrator.db.models import TurnRequest as Reservation
from orchestrator.turn import TurnRequest, TurnResult, TurnService


def _service(database_url: str, tmp_path: Path) -> tuple[TurnService, object]:
    engine = make_async_engine(database_url)
    settings = Settings(_env_file=None, model_repository=tmp_path, database_url=database_url)
    return TurnService(settings, triton=None, sessions=make_sessionmaker(engine)), engine  # type: ignore[arg-type]


async def _reservations(service: TurnService, user: str, request_id: str) -> int:
    async with service.sessions() as session:
        return int(
            await session.scalar(
                select(func.count())
                .select_from(Reservation)
                .where(Reservation.user_id == user, Reservation.request_id == request_id)
            )
        )


def test_a_turn_stored_just_before_the_reservation_is_replayed(database_url, tmp_path, monkeypatch):
    user, request_id = f"race-{uuid.uuid4().hex[:6]}", f"r-{uuid.uuid4().hex[:8]}"
    principal = Principal(key_id=uuid.uuid4(), user_id=user, is_admin=False)

    async def scenario() -> None:
        service, engine = _service(database_url, tmp_path)
        try:
            real_reserve = crud.reserve_request
            calls = {"n": 0}
            stored: dict[str, object] = {}

            async def holder_commits_first(session, **kw):  # type: ignore[no-untyped-def]
                calls["n"] += 1
                if calls["n"] == 1:  # the holder's turn, stored and its reservation ended
                    async with service.sessions() as other:
                        stored["row"] = await crud.store_turn(
                            other,
                            turn=NewTurn(user, request_id, "Name a colour.", "Blue.", [], {}, {}),
                            conversation_id=None,
                            token=None,
                        )
                return await real_reserve(session, **kw)

            monkeypatch.setattr(crud, "reserve_request", holder_commits_first)
            got = await service._reserve(
                TurnRequest(principal=principal, request_id=request_id, text="Name a colour."),
                time.monotonic() + 5,
            )
            assert isinstance(got, TurnResult), "the retry reserved a stored turn's id"
            assert got.turn_id == stored["row"].id and got.replayed and got.reply == "Blue."
            assert calls["n"] == 1
            assert await _reservations(service, user, request_id) == 0  # given back

            # a new id is reserved, once
            monkeypatch.setattr(crud, "reserve_request", real_reserve)
            fresh = TurnRequest(principal=principal, request_id=request_id + "-2", text="Hi.")
            token = await service._reserve(fresh, time.monotonic() + 5)
            assert isinstance(token, uuid.UUID)
            assert await _reservations(service, user, request_id + "-2") == 1
        finally:
            await engine.dispose()  # type: ignore[attr-defined]

    asyncio.run(scenario())
