"""What a chat app's bot does for its users, whichever app it is (Telegram, Discord).

A bot only translates: its platform's message becomes one of these calls, and the
:class:`Reply` or the :class:`Refused` words go back the platform's way. Everything a
user can do (a voice or text turn, documents, forgetting) runs here, on the same
:class:`~orchestrator.turn.TurnService` as ``POST /v1/voice``, so every channel has
the same limits, answers and refusals.

Each platform user is the June user ``<platform>:<id>``; their current conversation is
their most recent one. A message's id is its turn's request id, so a redelivered message
finds the stored turn and is not answered twice.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from orchestrator import metrics
from orchestrator.admission import Overloaded, RateLimited
from orchestrator.audio import AudioError
from orchestrator.auth import Principal, RateLimiter
from orchestrator.config import Settings
from orchestrator.db import conversations as crud
from orchestrator.rag import store
from orchestrator.rag.extract import DocumentError, document_type, read_document
from orchestrator.triton.client import TritonUnavailable
from orchestrator.turn import DIDNT_CATCH, NoSpeech, TurnRequest, TurnService, collect

log = logging.getLogger("june.channel")

NOT_ALLOWED = "Sorry, this June is private."
SLOW_DOWN = "You're sending messages quickly; give me a moment."
BUSY = "I'm answering a lot of people right now. Please try again in a minute."
BAD_AUDIO = "Sorry, I couldn't play that audio. Could you send it again?"
APOLOGY = "Sorry, something went wrong on my side. Please try again in a moment."
NO_ANSWER = "I don't have an answer to that."


def principal_for(platform: str, platform_user_id: int) -> Principal:
    """The June user ``<platform>:<id>``, with a key id of its own for the rate limits."""
    user = f"{platform}:{platform_user_id}"
    return Principal(key_id=uuid.uuid5(uuid.NAMESPACE_URL, user), user_id=user, is_admin=False)


class Refused(Exception):
    """A message that gets no turn: ``text`` is the polite answer, ``outcome`` why."""

    def __init__(self, outcome: str, text: str) -> None:
        super().__init__(text)
        self.outcome = outcome
        self.text = text


@dataclass(frozen=True)
class Reply:
    text: str
    voice: bytes | None  # OGG/Opus, when the reply is spoken
    replayed: bool  # a redelivered message: answered before, not to be sent again


@dataclass
class _UserQueue:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    messages: int = 0  # this user's messages handled or waiting now


class UserLocks:
    """One lock per user, so each user's messages are handled in the order sent.

    A user's lock is kept while any of their messages is held or waiting, and dropped
    with the last: dropping it as soon as it is unlocked would let a newer message take a
    fresh lock while a woken waiter has yet to run.
    """

    def __init__(self) -> None:
        self._users: dict[int, _UserQueue] = {}

    def __len__(self) -> int:
        return len(self._users)

    @asynccontextmanager
    async def hold(self, user_id: int) -> AsyncIterator[None]:
        queue = self._users.setdefault(user_id, _UserQueue())
        queue.messages += 1
        try:
            async with queue.lock:
                yield
        finally:
            queue.messages -= 1
            if queue.messages == 0:
                del self._users[user_id]


class UserOrder:
    """Messages handled concurrently, ``concurrent`` at most, each user's in the order
    sent; at most ``waiting`` more wait for a slot, and any beyond are refused at once
    (:class:`Refused` busy) rather than queued without end.

    One slow voice turn or PDF never holds up other users, and a user's second message
    is never answered before their first.
    """

    def __init__(self, concurrent: int, waiting: int) -> None:
        self.capacity = concurrent + waiting
        self._slots = asyncio.Semaphore(concurrent)
        self._users = UserLocks()
        self._messages = 0

    @asynccontextmanager
    async def turn(self, user_id: int) -> AsyncIterator[None]:
        if self._messages >= self.capacity:
            raise Refused("busy", BUSY)
        self._messages += 1
        try:
            async with self._users.hold(user_id), self._slots:
                yield
        finally:
            self._messages -= 1


class ChatChannel:
    """One bot's view of June: its users, their limits, and what they can ask for."""

    def __init__(
        self,
        settings: Settings,
        turns: TurnService,
        *,
        platform: str,
        rate_per_minute: int,
        max_voice_seconds: int,
        max_voice_bytes: int,
        max_document_bytes: int,
    ) -> None:
        self.settings = settings
        self.turns = turns
        self.platform = platform
        self.limiter = RateLimiter(rate_per_minute)
        self.max_voice_seconds = max_voice_seconds
        self.max_voice_bytes = max_voice_bytes
        self.max_document_bytes = max_document_bytes
        self._speak_text: set[int] = set()  # users who asked for /voice on (in memory)

    # --- who ------------------------------------------------------------------------------

    def principal(self, platform_user_id: int) -> Principal:
        return principal_for(self.platform, platform_user_id)

    def count(self, outcome: str) -> None:
        """``june_bot_updates_total{bot, outcome}``: each message counted once, by its end."""
        metrics.BOT_UPDATES.labels(bot=self.platform, outcome=outcome).inc()

    def admit(self, platform_user_id: int, *, allowed: bool) -> Principal:
        """The sender as a June user; :class:`Refused` when not allowed or too fast."""
        if not allowed:
            log.info("%s user %s is not on the allowlist", self.platform, platform_user_id)
            raise Refused("not_allowed", NOT_ALLOWED)
        principal = self.principal(platform_user_id)
        if self.limiter.acquire(principal.key_id) > 0:
            raise Refused("rate_limited", SLOW_DOWN)
        return principal

    @property
    def too_long(self) -> Refused:
        return Refused(
            "too_long",
            "That message is a bit long for me; "
            f"please keep it under {self.max_voice_seconds} seconds.",
        )

    def check_voice(self, *, seconds: float | None = None, size: int | None = None) -> None:
        """Refuse voice by its stated length or its size, before (or after) downloading it:
        what the sender states is checked again on the decoded audio in the turn."""
        if (seconds or 0) > self.max_voice_seconds or (size or 0) > self.max_voice_bytes:
            raise self.too_long

    # --- what they can do -------------------------------------------------------------------

    def set_voice(self, platform_user_id: int, on: bool) -> str:
        """``/voice on|off``: answer this user's text by voice too, or not."""
        if on:
            self._speak_text.add(platform_user_id)
            return "I'll answer text by voice too."
        self._speak_text.discard(platform_user_id)
        return "Text answers only."

    def speaks_text(self, platform_user_id: int) -> bool:
        return platform_user_id in self._speak_text

    async def reset(self, principal: Principal) -> str:
        async with self.turns.sessions() as session:
            await crud.delete_all_conversations(session, user_id=principal.user_id)
        return "Done: I've forgotten our conversation."

    async def documents(self, principal: Principal) -> str:
        async with self.turns.sessions() as session:
            docs = await store.list_documents(session, user_id=principal.user_id, limit=50)
        own = [d for d in docs if not d.shared]
        if not own:
            return "You have no documents yet."
        return "Your documents:\n" + "\n".join(
            f"{d.id}  {d.title} ({d.n_chars} characters)" for d in own
        )

    async def forget(self, principal: Principal, document: str) -> str:
        try:
            document_id = uuid.UUID(document.strip())
        except ValueError:
            return "Usage: /forget <document id> (see /docs)."
        async with self.turns.sessions() as session:
            deleted = await store.delete_document(
                session, document_id=document_id, user_id=principal.user_id
            )
        return "Deleted." if deleted else "I have no such document of yours."

    def check_document(self, name: str, size: int | None) -> None:
        """Refuse a document by its name and declared size, before downloading it."""
        if size and size > self.max_document_bytes:
            raise Refused(
                "too_big",
                f"That file is too big; the limit is {self.max_document_bytes // 1024} KB.",
            )
        try:
            document_type(name)
        except DocumentError as exc:
            raise Refused("bad_document", str(exc)) from exc

    async def add_document(
        self, principal: Principal, name: str, data: bytes, *, source: str
    ) -> str:
        """Read, chunk, embed and store one document; the answer says its id."""
        self.check_document(name, len(data))
        try:
            text = await read_document(
                name,
                data,
                max_pages=self.settings.pdf_max_pages,
                timeout_s=self.settings.pdf_timeout_s,
            )
        except DocumentError as exc:
            raise Refused("bad_document", str(exc)) from exc
        async with self.turns.sessions() as session:
            summary = await store.ingest_document(
                session,
                self.turns.triton,
                title=name,
                text_=text[: self.settings.max_document_chars],
                source=source,
                owner_id=principal.user_id,
                max_words=self.settings.chunk_max_words,
                overlap_words=self.settings.chunk_overlap_words,
                batch_size=self.settings.embed_batch_size,
            )
        self.count("document_added")
        return f"Added {name} to your documents ({summary.id})."

    async def answer(
        self,
        principal: Principal,
        request_id: str,
        *,
        text: str | None = None,
        audio: bytes | None = None,
        speak: bool,
    ) -> Reply:
        """One turn in the user's current conversation; :class:`Refused` with the words
        to send when it cannot be had (busy, no speech, audio that will not play)."""
        async with self.turns.sessions() as session:
            conversation = await crud.latest_conversation(session, user_id=principal.user_id)
        request = TurnRequest(
            principal=principal,
            request_id=request_id,
            text=text,
            audio=audio,
            conversation_id=conversation,
            fmt="ogg" if speak else None,
            max_audio_seconds=self.max_voice_seconds,
            replay_audio=False,  # a redelivered message is not answered again
        )
        try:
            result, voice = await collect(self.turns.run(request))
        except (Overloaded, RateLimited, TritonUnavailable) as exc:
            raise Refused("busy", BUSY) from exc
        except NoSpeech as exc:
            raise Refused("no_speech", DIDNT_CATCH) from exc
        except AudioError as exc:
            if exc.status == 413:
                raise self.too_long from exc
            raise Refused("bad_audio", BAD_AUDIO) from exc
        self.count("replayed" if result.replayed else "answered")
        if result.replayed:
            log.info("%s was answered before: not answering again", request_id)
        return Reply(
            text=result.reply or NO_ANSWER,
            voice=voice if speak and voice else None,
            replayed=result.replayed,
        )
