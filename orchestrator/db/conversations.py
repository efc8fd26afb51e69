"""Conversations and their turns: every query June makes about them, in one place.

Keyword-only functions on an ``AsyncSession``. Two rules make turns exactly-once:

- a turn's ``request_id`` is *reserved* (a ``turn_requests`` row) before any work is
  done, so a concurrent duplicate waits for the first and then gets the stored turn;
  a reservation expires, so a crashed owner does not block the id forever;
- a turn's ordinal is taken under a row lock on its conversation, so concurrent turns
  in one conversation are all stored, in order.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from orchestrator.db.models import Conversation, Turn, TurnRequest


class ConversationNotFound(LookupError):
    """No conversation with that id belongs to the caller (404)."""


@dataclass(frozen=True)
class NewTurn:
    """What a finished turn stores."""

    user_id: str
    request_id: str
    transcript: str
    reply: str
    sources: list[dict]
    timings_ms: dict[str, float]
    models: dict[str, str]
    interrupted: bool = False
    reasoning: str | None = None  # a thinking model's, kept only with store_reasoning


async def owned_conversation(
    session: AsyncSession, *, user_id: str, conversation_id: uuid.UUID, lock: bool = False
) -> Conversation:
    """The caller's conversation (row-locked with ``lock``); ConversationNotFound otherwise."""
    stmt = select(Conversation).where(Conversation.id == conversation_id)
    if lock:
        stmt = stmt.with_for_update()
    conversation = await session.scalar(stmt)
    if conversation is None or conversation.user_id != user_id:
        raise ConversationNotFound(f"no conversation {conversation_id}")
    return conversation


async def history(
    session: AsyncSession, *, user_id: str, conversation_id: uuid.UUID | None
) -> list[Turn]:
    """The conversation's turns in order (none for a new conversation)."""
    if conversation_id is None:
        return []
    await owned_conversation(session, user_id=user_id, conversation_id=conversation_id)
    turns = await session.scalars(
        select(Turn).where(Turn.conversation_id == conversation_id).order_by(Turn.ordinal)
    )
    return list(turns)


async def latest_conversation(session: AsyncSession, *, user_id: str) -> uuid.UUID | None:
    """The user's most recent conversation (the bot continues it)."""
    return await session.scalar(
        select(Conversation.id)
        .where(Conversation.user_id == user_id)
        .order_by(Conversation.created_at.desc())
        .limit(1)
    )


async def delete_conversation(
    session: AsyncSession, *, user_id: str, conversation_id: uuid.UUID
) -> bool:
    result = await session.execute(
        delete(Conversation).where(
            Conversation.id == conversation_id, Conversation.user_id == user_id
        )
    )
    await session.commit()
    return bool(result.rowcount)


async def delete_all_conversations(session: AsyncSession, *, user_id: str) -> None:
    await session.execute(delete(Conversation).where(Conversation.user_id == user_id))
    await session.commit()


async def find_turn(session: AsyncSession, *, user_id: str, request_id: str) -> Turn | None:
    return await session.scalar(
        select(Turn).where(Turn.user_id == user_id, Turn.request_id == request_id)
    )


async def reserve_request(
    session: AsyncSession, *, user_id: str, request_id: str, ttl_s: float
) -> uuid.UUID | None:
    """Reserve ``request_id`` for one turn; the token, or None while another holds it.

    An expired reservation (its owner died) is taken over.
    """
    token = uuid.uuid4()
    now = datetime.now(UTC)
    stmt = (
        insert(TurnRequest)
        .values(
            user_id=user_id,
            request_id=request_id,
            token=token,
            expires_at=now + timedelta(seconds=ttl_s),
        )
        .on_conflict_do_update(
            index_elements=[TurnRequest.user_id, TurnRequest.request_id],
            set_={"token": token, "expires_at": now + timedelta(seconds=ttl_s)},
            where=TurnRequest.expires_at < now,
        )
        .returning(TurnRequest.token)
    )
    taken = await session.scalar(stmt)
    await session.commit()
    return taken


async def release_request(
    session: AsyncSession, *, user_id: str, request_id: str, token: uuid.UUID
) -> None:
    """Give a reservation back (the turn failed): a retry may run it again."""
    await session.execute(
        delete(TurnRequest).where(
            TurnRequest.user_id == user_id,
            TurnRequest.request_id == request_id,
            TurnRequest.token == token,
        )
    )
    await session.commit()


async def store_turn(
    session: AsyncSession,
    *,
    turn: NewTurn,
    conversation_id: uuid.UUID | None,
    token: uuid.UUID | None,
) -> Turn:
    """Write the turn (and a new conversation) in one transaction, and end its reservation.

    The conversation row is locked while the next ordinal is taken, so concurrent turns
    of one conversation are serialised here, and only here.
    """
    if conversation_id is None:
        conversation = Conversation(user_id=turn.user_id)
        session.add(conversation)
        await session.flush()
        conversation_id = conversation.id
    else:
        await owned_conversation(
            session, user_id=turn.user_id, conversation_id=conversation_id, lock=True
        )
    last = await session.scalar(
        select(func.coalesce(func.max(Turn.ordinal), 0)).where(
            Turn.conversation_id == conversation_id
        )
    )
    row = Turn(
        conversation_id=conversation_id,
        user_id=turn.user_id,
        request_id=turn.request_id,
        ordinal=int(last or 0) + 1,
        transcript=turn.transcript,
        reply=turn.reply,
        sources=turn.sources,
        timings_ms=turn.timings_ms,
        models=turn.models,
        interrupted=turn.interrupted,
        reasoning=turn.reasoning,
    )
    session.add(row)
    if token is not None:
        await session.execute(
            delete(TurnRequest).where(
                TurnRequest.user_id == turn.user_id,
                TurnRequest.request_id == turn.request_id,
                TurnRequest.token == token,
            )
        )
    await session.commit()
    return row


async def mark_interrupted(
    session: AsyncSession, *, user_id: str, turn_id: uuid.UUID, heard: str
) -> bool:
    """The user talked over a stored turn's reply: keep only what they heard of it."""
    result = await session.execute(
        update(Turn)
        .where(Turn.id == turn_id, Turn.user_id == user_id)
        .values(reply=heard, interrupted=True)
    )
    await session.commit()
    return bool(result.rowcount)
