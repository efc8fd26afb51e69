"""The Telegram bot: voice messages in, voice replies out, through python-telegram-bot.

The bot is thin: it calls the same voice turn as ``POST /v1/voice`` (in process, through
the app's :class:`~orchestrator.turn.VoiceTurn`) and adds only Telegram I/O. It lives in
the orchestrator's lifespan: long polling by default, or webhook mode, where Telegram
posts updates to ``/telegram/webhook`` on the orchestrator and they are fed to the
bot's queue (``Application.builder().updater(None)``).

Each Telegram user is the June user ``tg:<id>``; their current conversation is their
most recent one, and ``/reset`` forgets it. An update is answered once: its id is the
turn's request id, so a redelivered update (Telegram resends after a restart) finds the
stored turn and is not answered again.
"""

from __future__ import annotations

import io
import logging
import uuid
from typing import Any

from sqlalchemy import delete, select
from telegram import Update
from telegram.constants import ChatAction
from telegram.ext import (
    Application,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from orchestrator.audio import AudioError
from orchestrator.auth import Principal, RateLimiter
from orchestrator.config import Settings
from orchestrator.db.models import Conversation
from orchestrator.rag import store
from orchestrator.turn import DIDNT_CATCH, NoSpeech, Stopwatch, VoiceTurn, collect

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
DOCUMENT_TYPES = {".txt", ".md", ".pdf"}


def principal_for(telegram_user_id: int) -> Principal:
    user = f"tg:{telegram_user_id}"
    return Principal(key_id=uuid.uuid5(uuid.NAMESPACE_URL, user), user_id=user, is_admin=False)


def document_type(name: str) -> str:
    """The file's suffix if the bot reads that type; ValueError with a friendly reason."""
    suffix = ("." + name.rsplit(".", 1)[-1].lower()) if "." in name else ""
    if suffix not in DOCUMENT_TYPES:
        raise ValueError("I can read .txt, .md and .pdf files only.")
    return suffix


def document_text(name: str, data: bytes) -> str:
    """The text of an uploaded .txt/.md/.pdf; ValueError with a friendly reason otherwise."""
    if document_type(name) == ".pdf":
        from pypdf import PdfReader
        from pypdf.errors import PdfReadError

        try:
            reader = PdfReader(io.BytesIO(data))
            text = "\n".join(page.extract_text() or "" for page in reader.pages)
        except (PdfReadError, ValueError, OSError) as exc:
            raise ValueError("I couldn't read that PDF.") from exc
    else:
        text = data.decode("utf-8", errors="replace")
    if not text.strip():
        raise ValueError("That file has no text I could read.")
    return text


class JuneBot:
    """python-telegram-bot's Application, wired to June's voice turn."""

    def __init__(self, settings: Settings, turn: VoiceTurn) -> None:
        assert settings.telegram_bot_token is not None
        self.settings = settings
        self.turn = turn
        self.limiter = RateLimiter(settings.telegram_rate_limit_per_minute)
        self.allowed = set(settings.telegram_allowed_users)
        if not self.allowed:
            log.warning("TELEGRAM_ALLOWED_USERS is empty: the bot answers anyone")
        builder = (
            Application.builder()
            .token(settings.telegram_bot_token.get_secret_value())
            .base_url(settings.telegram_api_url)
            .base_file_url(settings.telegram_file_url)
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

    async def feed(self, payload: dict[str, Any], secret: str | None) -> bool:
        """Webhook mode: queue one update; False when the secret token is wrong."""
        expected = self._secret()
        if expected is not None and secret != expected:
            return False
        await self.app.update_queue.put(Update.de_json(payload, self.app.bot))
        return True

    # --- guards -----------------------------------------------------------------------------

    async def _admit(self, update: Update) -> Principal | None:
        """The sender as a June user, or None (with a polite answer) when not allowed now."""
        user, message = update.effective_user, update.effective_message
        if user is None or message is None:
            return None
        if self.allowed and user.id not in self.allowed:
            log.info("update %s: user %s is not on the allowlist", update.update_id, user.id)
            await message.reply_text("Sorry, this June is private.")
            return None
        principal = principal_for(user.id)
        if self.limiter.acquire(principal.key_id) > 0:
            await message.reply_text("You're sending messages quickly; give me a moment.")
            return None
        return principal

    async def _current_conversation(self, principal: Principal) -> uuid.UUID | None:
        async with self.turn.sessions() as session:
            return await session.scalar(
                select(Conversation.id)
                .where(Conversation.user_id == principal.user_id)
                .order_by(Conversation.created_at.desc())
                .limit(1)
            )

    # --- handlers ---------------------------------------------------------------------------

    async def on_help(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if await self._admit(update) and update.effective_message:
            await update.effective_message.reply_text(HELP)

    async def on_reset(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        principal = await self._admit(update)
        if principal is None or update.effective_message is None:
            return
        async with self.turn.sessions() as session:
            await session.execute(
                delete(Conversation).where(Conversation.user_id == principal.user_id)
            )
            await session.commit()
        await update.effective_message.reply_text("Done: I've forgotten our conversation.")

    async def on_docs(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        principal = await self._admit(update)
        if principal is None or update.effective_message is None:
            return
        async with self.turn.sessions() as session:
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
        async with self.turn.sessions() as session:
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
            text = document_text(name, data)
        except ValueError as exc:
            await message.reply_text(str(exc))
            return
        async with self.turn.sessions() as session:
            summary = await store.ingest_document(
                session,
                self.turn.triton,
                title=name,
                text_=text[: self.settings.max_document_chars],
                source=f"telegram:{doc.file_unique_id}",
                owner_id=principal.user_id,
                max_words=self.settings.chunk_max_words,
                overlap_words=self.settings.chunk_overlap_words,
                batch_size=self.settings.embed_batch_size,
            )
        await message.reply_text(f"Added {name} to your documents ({summary.id}).")

    async def on_text(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        principal = await self._admit(update)
        message = update.effective_message
        if principal is None or message is None or not message.text:
            return
        want_voice = bool(context.user_data.get("voice")) if context.user_data else False
        await self._answer(update, principal, message.text.strip(), speak=want_voice)

    async def on_voice(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        principal = await self._admit(update)
        message = update.effective_message
        if principal is None or message is None:
            return
        media = message.voice or message.audio
        if media is None:
            return
        if media.duration and media.duration > self.settings.telegram_max_voice_seconds:
            await message.reply_text(
                "That message is a bit long for me; please keep it under "
                f"{self.settings.telegram_max_voice_seconds} seconds."
            )
            return
        await message.reply_chat_action(ChatAction.RECORD_VOICE)
        data = bytes(await (await media.get_file()).download_as_bytearray())
        clock = Stopwatch()
        try:
            audio = await self.turn.decode(data, clock)
            question = await self.turn.transcribe(audio, None, clock)
        except NoSpeech:
            await message.reply_text(DIDNT_CATCH)
            return
        except AudioError:
            await message.reply_text("Sorry, I couldn't play that audio. Could you send it again?")
            return
        await self._answer(update, principal, question, speak=True, clock=clock)

    async def _answer(
        self,
        update: Update,
        principal: Principal,
        question: str,
        *,
        speak: bool,
        clock: Stopwatch | None = None,
    ) -> None:
        """Run the turn for ``question`` and reply (voice + caption, or text)."""
        message = update.effective_message
        assert message is not None
        request_id = f"tg-{update.update_id}"
        if await self.turn.replay(principal, request_id) is not None:
            log.info("update %s was answered before: not answering again", update.update_id)
            return
        if speak:
            await message.reply_chat_action(ChatAction.RECORD_VOICE)
        events = self.turn.respond(
            principal,
            question=question,
            conversation_id=await self._current_conversation(principal),
            request_id=request_id,
            fmt="ogg" if speak else None,
            clock=clock or Stopwatch(),
        )
        result, audio = await collect(events)
        reply = result.reply or "I don't have an answer to that."
        if speak and audio:
            caption = reply if len(reply) <= CAPTION_LIMIT else None
            await message.reply_voice(voice=audio, caption=caption)
            if caption is None:
                await message.reply_text(reply)
        else:
            await message.reply_text(reply)

    async def on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Any failure inside a turn: log it with the update id, apologise, keep running."""
        update_id = update.update_id if isinstance(update, Update) else None
        log.error("update %s failed: %s", update_id, context.error, exc_info=context.error)
        if isinstance(update, Update) and update.effective_message is not None:
            try:
                await update.effective_message.reply_text(APOLOGY)
            except Exception:  # the apology itself failed: already logged above
                log.warning("update %s: could not send the apology", update_id)
