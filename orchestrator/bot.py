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

import hmac
import logging
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

from orchestrator.auth import Principal
from orchestrator.channel import APOLOGY, ChatChannel, Refused, UserLocks
from orchestrator.config import Settings
from orchestrator.log import REQUEST_ID
from orchestrator.turn import TurnService

log = logging.getLogger("june.bot")

HELP = (
    "I'm June, a voice assistant. Send me a voice message and I'll answer by voice, "
    "from your documents and our conversation.\n\n"
    "Send a .txt, .md or .pdf file to add it to your documents.\n"
    "/docs lists them, /forget <id> deletes one.\n"
    "/voice on|off: also answer text messages by voice.\n"
    "/reset forgets our conversation."
)
CAPTION_LIMIT = 1024  # Telegram's limit for a voice message's caption


class PerUserOrder(BaseUpdateProcessor):
    """Updates are handled concurrently, up to a bound, but each user's in the order sent.

    One slow voice turn or PDF then never holds up other users, and a user's second
    message is never answered before their first.
    """

    def __init__(self, max_concurrent_updates: int) -> None:
        super().__init__(max_concurrent_updates)
        self._users = UserLocks()

    async def do_process_update(self, update: object, coroutine: Awaitable[Any]) -> None:
        user = update.effective_user if isinstance(update, Update) else None
        if user is None:
            await coroutine
            return
        async with self._users.hold(user.id):
            await coroutine

    async def initialize(self) -> None:
        pass

    async def shutdown(self) -> None:
        pass


class JuneBot:
    """python-telegram-bot's Application, wired to June's voice turn."""

    def __init__(self, settings: Settings, turns: TurnService) -> None:
        assert settings.telegram_bot_token is not None
        self.settings = settings
        self.channel = ChatChannel(
            settings,
            turns,
            platform="tg",
            rate_per_minute=settings.telegram_rate_limit_per_minute,
            max_voice_seconds=settings.telegram_max_voice_seconds,
            max_voice_bytes=settings.telegram_max_voice_bytes,
            max_document_bytes=settings.telegram_max_document_bytes,
        )
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

    async def _refuse(self, message: Message, refused: Refused) -> None:
        """Answer an update that gets no turn, counted once by why."""
        self.channel.count(refused.outcome)
        await message.reply_text(refused.text)

    async def _admit(self, update: Update) -> tuple[Principal, Message] | None:
        """The sender as a June user and their message, or None (with a polite answer)
        when not allowed now."""
        REQUEST_ID.set(f"tg-{update.update_id}")  # this update's task: on its every log line
        user, message = update.effective_user, update.effective_message
        if user is None or message is None:
            return None
        allowed = not self.allowed or user.id in self.allowed
        try:
            return self.channel.admit(user.id, allowed=allowed), message
        except Refused as refused:
            await self._refuse(message, refused)
            return None

    # --- handlers ---------------------------------------------------------------------------

    async def on_help(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if admitted := await self._admit(update):
            await admitted[1].reply_text(HELP)

    async def on_reset(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if admitted := await self._admit(update):
            principal, message = admitted
            await message.reply_text(await self.channel.reset(principal))

    async def on_docs(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if admitted := await self._admit(update):
            principal, message = admitted
            await message.reply_text(await self.channel.documents(principal))

    async def on_forget(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if admitted := await self._admit(update):
            principal, message = admitted
            document = (context.args or [""])[0]
            await message.reply_text(await self.channel.forget(principal, document))

    async def on_voice_setting(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if not (admitted := await self._admit(update)):
            return
        message = admitted[1]
        choice = (context.args or [""])[0].lower()
        if choice not in ("on", "off"):
            await message.reply_text("Usage: /voice on or /voice off.")
            return
        await message.reply_text(self.channel.set_voice(update.effective_user.id, choice == "on"))

    async def on_document(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if not (admitted := await self._admit(update)):
            return
        principal, message = admitted
        doc = message.document
        if doc is None:
            return
        name = doc.file_name or "document.txt"
        try:
            self.channel.check_document(name, doc.file_size)  # before downloading
            data = bytes(await (await doc.get_file()).download_as_bytearray())
            added = await self.channel.add_document(
                principal,
                name,
                data[: self.settings.telegram_max_document_bytes],
                source=f"telegram:{doc.file_unique_id}",
            )
        except Refused as refused:
            await self._refuse(message, refused)
            return
        await message.reply_text(added)

    async def on_text(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if not (admitted := await self._admit(update)):
            return
        principal, message = admitted
        if not message.text:
            return
        speak = self.channel.speaks_text(update.effective_user.id)
        await self._answer(update, principal, text=message.text.strip(), speak=speak)

    async def on_voice(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if not (admitted := await self._admit(update)):
            return
        principal, message = admitted
        media = message.voice or message.audio
        if media is None:
            return
        try:
            self.channel.check_voice(seconds=media.duration)
            # The declared duration is the sender's word: check the file's real size before
            # downloading and after, and the decoded audio's length in the turn.
            file = await media.get_file()
            self.channel.check_voice(size=file.file_size or media.file_size)
            await message.reply_chat_action(ChatAction.RECORD_VOICE)
            data = bytes(await file.download_as_bytearray())
            self.channel.check_voice(size=len(data))
            await self._answer(update, principal, audio=data, speak=True)
        except Refused as refused:
            await self._refuse(message, refused)

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
        try:
            reply = await self.channel.answer(
                principal, f"tg-{update.update_id}", text=text, audio=audio, speak=speak
            )
        except Refused as refused:
            await self._refuse(message, refused)
            return
        if reply.replayed:
            return
        if reply.voice:
            caption = reply.text if len(reply.text) <= CAPTION_LIMIT else None
            await message.reply_voice(voice=reply.voice, caption=caption)
            if caption is None:
                await message.reply_text(reply.text)
        else:
            await message.reply_text(reply.text)

    async def on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Any failure inside a turn: log it with the update id, apologise, keep running."""
        update_id = update.update_id if isinstance(update, Update) else None
        log.error("update %s failed: %s", update_id, context.error, exc_info=context.error)
        self.channel.count("failed")
        if isinstance(update, Update) and update.effective_message is not None:
            try:
                await update.effective_message.reply_text(APOLOGY)
            except Exception:  # the apology itself failed: already logged above
                log.warning("update %s: could not send the apology", update_id)
