"""The Telegram bot: voice messages in, voice replies out, through python-telegram-bot.

The bot is thin: it calls the same voice turn as ``POST /v1/voice`` (in process, through
the app's :class:`~orchestrator.turn.TurnService`) and adds only Telegram I/O. It lives in
the orchestrator's lifespan: long polling by default, or webhook mode, where Telegram
posts updates to ``/telegram/webhook`` on the orchestrator and they are fed to the
bot's queue (``Application.builder().updater(None)``).

Each Telegram user is the June user ``tg:<id>``; their current conversation is their
most recent one, and ``/reset`` forgets it. An update is answered once: its id is the
turn's request id, so a redelivered update (Telegram resends after a restart) finds the
stored turn and is not answered again.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import uuid
from collections.abc import Awaitable
from typing import Any

from telegram import Message, Update
from telegram.constants import ChatAction
from telegram.ext import (
    Application,
    BaseUpdateProcessor,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from orchestrator import metrics
from orchestrator.admission import Overloaded, RateLimited
from orchestrator.audio import AudioError
from orchestrator.auth import Principal, RateLimiter
from orchestrator.config import Settings
from orchestrator.db import conversations as crud
from orchestrator.log import REQUEST_ID
from orchestrator.rag import store
from orchestrator.rag.extract import DocumentError, document_type, read_document
from orchestrator.triton.client import TritonUnavailable
from orchestrator.turn import DIDNT_CATCH, NoSpeech, TurnRequest, TurnService, collect

log = logging.getLogger("june.bot")

HELP = (
    "I'm June, a voice assistant. Send me a voice message and I'll answer by voice, "
    "from your documents and our conversation.\n\n"
    "Send a .txt, .md or .pdf file to add it to your documents.\n"
    "/docs lists them, /forget <id> deletes one.\n"
    "/voice on|off: also answer text messages by voice.\n"
    "/reset forgets our conversation."
)
APOLOGY = "Sorry, something went wrong on my side. Please try again in a moment."
CAPTION_LIMIT = 1024  # Telegram's limit for a voice message's caption
BUSY = "I'm answering a lot of people right now. Please try again in a minute."


def principal_for(telegram_user_id: int) -> Principal:
    user = f"tg:{telegram_user_id}"
    return Principal(key_id=uuid.uuid5(uuid.NAMESPACE_URL, user), user_id=user, is_admin=False)


class PerUserOrder(BaseUpdateProcessor):
    """Updates are handled concurrently, up to a bound, but each user's in the order sent.

    One slow voice turn or PDF then never holds up other users, and a user's second
    message is never answered before their first.
    """

    def __init__(self, max_concurrent_updates: int) -> None:
        super().__init__(max_concurrent_updates)
        self._locks: dict[int, asyncio.Lock] = {}

    async def do_process_update(self, update: object, coroutine: Awaitable[Any]) -> None:
        user = update.effective_user if isinstance(update, Update) else None
        if user is None:
            await coroutine
            return
        lock = self._locks.setdefault(user.id, asyncio.Lock())
        try:
            async with lock:
                await coroutine
        finally:
            if not lock.locked() and self._locks.get(user.id) is lock:
                del self._locks[user.id]

    async def initialize(self) -> None:
        pass

    async def shutdown(self) -> None:
        pass


class JuneBot:
    """python-telegram-bot's Application, wired to June's voice turn."""

    def __init__(self, settings: Settings, turns: TurnService) -> None:
        assert settings.telegram_bot_token is not None
        self.settings = settings
        self.turns = turns
        self.limiter = RateLimiter(settings.telegram_rate_limit_per_minute)
        self.allowed = set(settings.telegram_allowed_users)
        if not self.allowed:
            log.warning("TELEGRAM_ALLOWED_USERS is empty: the bot answers anyone")
        builder = (
            Application.builder()
            .token(settings.telegram_bot_token.get_secret_value())
            .base_url(settings.telegram_api_url)
            .base_file_url(settings.telegram_file_url)
            .concurrent_updates(PerUserOrder(settings.telegram_concurrent_updates))
        )
        if settings.telegram_webhook_url:
            builder = builder.updater(None)  # updates arrive through /telegram/webhook
        self.app = builder.build()
        self.app.add_handler(CommandHandler(["start", "help"], self.on_help))
        self.app.add_handler(CommandHandler("reset", self.on_reset))
        self.app.add_handler(CommandHandler("docs", self.on_docs))
        self.app.add_handler(CommandHandler("forget", self.on_forget))
        self.app.add_handler(CommandHandler("voice", self.on_voice_setting))
        self.app.add_handler(MessageHandler(filters.VOICE | filters.AUDIO, self.on_voice))
        self.app.add_handler(MessageHandler(filters.Document.ALL, self.on_document))
        self.app.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND, self.on_text))
        self.app.add_error_handler(self.on_error)

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        await self.app.initialize()
        await self.app.start()
        if self.settings.telegram_webhook_url:
            await self.app.bot.set_webhook(
                self.settings.telegram_webhook_url,
                secret_token=self._secret(),
                allowed_updates=Update.ALL_TYPES,
            )
            log.info("Telegram bot started (webhook %s)", self.settings.telegram_webhook_url)
        else:
            assert self.app.updater is not None
            await self.app.updater.start_polling(
                poll_interval=self.settings.telegram_poll_interval_s,
                allowed_updates=Update.ALL_TYPES,
            )
            log.info("Telegram bot started (long polling)")

    async def stop(self) -> None:
        if self.app.updater is not None and self.app.updater.running:
            await self.app.updater.stop()
        if self.app.running:
            await self.app.stop()
        await self.app.shutdown()

    def _secret(self) -> str | None:
        secret = self.settings.telegram_webhook_secret
        return secret.get_secret_value() if secret else None

    def secret_ok(self, secret: str | None) -> bool:
        """Webhook mode: is this Telegram's secret token? (constant-time comparison)"""
        expected = self._secret()
        if expected is None or secret is None:
            return False
        return hmac.compare_digest(secret.encode(), expected.encode())

    async def feed(self, payload: dict[str, Any]) -> None:
        """Webhook mode: queue one update (its secret was checked before it was read)."""
        await self.app.update_queue.put(Update.de_json(payload, self.app.bot))

    # --- guards -----------------------------------------------------------------------------

    @staticmethod
    async def _refuse(message: Message, outcome: str, text: str) -> None:
        """Answer an update that gets no turn, counted once by why
        (``june_bot_updates_total``)."""
        metrics.BOT_UPDATES.labels(outcome=outcome).inc()
        await message.reply_text(text)

    async def _admit(self, update: Update) -> Principal | None:
        """The sender as a June user, or None (with a polite answer) when not allowed now."""
        REQUEST_ID.set(f"tg-{update.update_id}")  # this update's task: on its every log line
        user, message = update.effective_user, update.effective_message
        if user is None or message is None:
            return None
        if self.allowed and user.id not in self.allowed:
            log.info("update %s: user %s is not on the allowlist", update.update_id, user.id)
            await self._refuse(message, "not_allowed", "Sorry, this June is private.")
            return None
        principal = principal_for(user.id)
        if self.limiter.acquire(principal.key_id) > 0:
            await self._refuse(
                message, "rate_limited", "You're sending messages quickly; give me a moment."
            )
            return None
        return principal

    async def _current_conversation(self, principal: Principal) -> uuid.UUID | None:
        async with self.turns.sessions() as session:
            return await crud.latest_conversation(session, user_id=principal.user_id)

    # --- handlers ---------------------------------------------------------------------------

    async def on_help(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if await self._admit(update) and update.effective_message:
            await update.effective_message.reply_text(HELP)

    async def on_reset(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        principal = await self._admit(update)
        if principal is None or update.effective_message is None:
            return
        async with self.turns.sessions() as session:
            await crud.delete_all_conversations(session, user_id=principal.user_id)
        await update.effective_message.reply_text("Done: I've forgotten our conversation.")

    async def on_docs(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        principal = await self._admit(update)
        if principal is None or update.effective_message is None:
            return
        async with self.turns.sessions() as session:
            docs = await store.list_documents(session, user_id=principal.user_id, limit=50)
        own = [d for d in docs if not d.shared]
        if not own:
            await update.effective_message.reply_text("You have no documents yet.")
            return
        lines = [f"{d.id}  {d.title} ({d.n_chars} characters)" for d in own]
        await update.effective_message.reply_text("Your documents:\n" + "\n".join(lines))

    async def on_forget(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        principal = await self._admit(update)
        message = update.effective_message
        if principal is None or message is None:
            return
        try:
            document_id = uuid.UUID((context.args or [""])[0])
        except ValueError:
            await message.reply_text("Usage: /forget <document id> (see /docs).")
            return
        async with self.turns.sessions() as session:
            deleted = await store.delete_document(
                session, document_id=document_id, user_id=principal.user_id
            )
        await message.reply_text("Deleted." if deleted else "I have no such document of yours.")

    async def on_voice_setting(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if await self._admit(update) is None or update.effective_message is None:
            return
        choice = (context.args or [""])[0].lower()
        if choice not in ("on", "off"):
            await update.effective_message.reply_text("Usage: /voice on or /voice off.")
            return
        context.user_data["voice"] = choice == "on"  # type: ignore[index]
        await update.effective_message.reply_text(
            "I'll answer text by voice too." if choice == "on" else "Text answers only."
        )

    async def on_document(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        principal = await self._admit(update)
        message = update.effective_message
        if principal is None or message is None or message.document is None:
            return
        doc = message.document
        limit = self.settings.telegram_max_document_bytes
        if doc.file_size and doc.file_size > limit:
            await message.reply_text(f"That file is too big; the limit is {limit // 1024} KB.")
            return
        try:
            name = doc.file_name or "document.txt"
            document_type(name)  # refuse before downloading
            data = bytes(await (await doc.get_file()).download_as_bytearray())
            text = await read_document(
                name,
                data[:limit],
                max_pages=self.settings.pdf_max_pages,
                timeout_s=self.settings.pdf_timeout_s,
            )
        except DocumentError as exc:
            await message.reply_text(str(exc))
            return
        async with self.turns.sessions() as session:
            summary = await store.ingest_document(
                session,
                self.turns.triton,
                title=name,
                text_=text[: self.settings.max_document_chars],
                source=f"telegram:{doc.file_unique_id}",
                owner_id=principal.user_id,
                max_words=self.settings.chunk_max_words,
                overlap_words=self.settings.chunk_overlap_words,
                batch_size=self.settings.embed_batch_size,
            )
        metrics.BOT_UPDATES.labels(outcome="document_added").inc()
        await message.reply_text(f"Added {name} to your documents ({summary.id}).")

    async def on_text(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        principal = await self._admit(update)
        message = update.effective_message
        if principal is None or message is None or not message.text:
            return
        want_voice = bool(context.user_data.get("voice")) if context.user_data else False
        await self._answer(update, principal, text=message.text.strip(), speak=want_voice)

    async def on_voice(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        principal = await self._admit(update)
        message = update.effective_message
        if principal is None or message is None:
            return
        media = message.voice or message.audio
        if media is None:
            return
        limit_s = self.settings.telegram_max_voice_seconds
        too_long = f"That message is a bit long for me; please keep it under {limit_s} seconds."
        if media.duration and media.duration > limit_s:
            await self._refuse(message, "too_long", too_long)
            return
        # The declared duration is the sender's word: check the file's real size before
        # downloading, and the decoded audio's length in the turn.
        max_bytes = self.settings.telegram_max_voice_bytes
        file = await media.get_file()
        if (file.file_size or media.file_size or 0) > max_bytes:
            await self._refuse(message, "too_long", too_long)
            return
        await message.reply_chat_action(ChatAction.RECORD_VOICE)
        data = bytes(await file.download_as_bytearray())
        if len(data) > max_bytes:
            await self._refuse(message, "too_long", too_long)
            return
        try:
            await self._answer(update, principal, audio=data, speak=True)
        except NoSpeech:
            await self._refuse(message, "no_speech", DIDNT_CATCH)
        except AudioError as exc:
            if exc.status == 413:
                await self._refuse(message, "too_long", too_long)
            else:
                await self._refuse(
                    message,
                    "bad_audio",
                    "Sorry, I couldn't play that audio. Could you send it again?",
                )

    async def _answer(
        self,
        update: Update,
        principal: Principal,
        *,
        text: str | None = None,
        audio: bytes | None = None,
        speak: bool,
    ) -> None:
        """Run the turn and reply (voice + caption, or text); a redelivered update is
        answered once (its id is the turn's request id)."""
        message = update.effective_message
        assert message is not None
        request = TurnRequest(
            principal=principal,
            request_id=f"tg-{update.update_id}",
            text=text,
            audio=audio,
            conversation_id=await self._current_conversation(principal),
            fmt="ogg" if speak else None,
            max_audio_seconds=self.settings.telegram_max_voice_seconds,
            replay_audio=False,  # a redelivered update is not answered again
        )
        try:
            result, voice = await collect(self.turns.run(request))
        except (Overloaded, RateLimited, TritonUnavailable):
            await self._refuse(message, "busy", BUSY)
            return
        metrics.BOT_UPDATES.labels(outcome="replayed" if result.replayed else "answered").inc()
        if result.replayed:
            log.info("update %s was answered before: not answering again", update.update_id)
            return
        reply = result.reply or "I don't have an answer to that."
        if speak and voice:
            caption = reply if len(reply) <= CAPTION_LIMIT else None
            await message.reply_voice(voice=voice, caption=caption)
            if caption is None:
                await message.reply_text(reply)
        else:
            await message.reply_text(reply)

    async def on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Any failure inside a turn: log it with the update id, apologise, keep running."""
        update_id = update.update_id if isinstance(update, Update) else None
        log.error("update %s failed: %s", update_id, context.error, exc_info=context.error)
        metrics.BOT_UPDATES.labels(outcome="failed").inc()
        if isinstance(update, Update) and update.effective_message is not None:
            try:
                await update.effective_message.reply_text(APOLOGY)
            except Exception:  # the apology itself failed: already logged above
                log.warning("update %s: could not send the apology", update_id)
