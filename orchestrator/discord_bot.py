"""The Discord bot: voice messages in, voice messages out, through discord.py.

Thin, like the Telegram bot: every message becomes a call on the shared
:class:`~orchestrator.channel.ChatChannel` (the same voice turn as ``POST /v1/voice``),
and only Discord I/O is done here. It lives in the orchestrator's lifespan when
``DISCORD_BOT_TOKEN`` is set.

- A voice message, or an audio attachment, in a DM or where the bot is mentioned gets
  a spoken reply: an OGG/Opus voice message (the voice-message flag, its length and a
  waveform) and the reply's text beside it. Discord refuses text inside a voice
  message, so the text is a second message.
- A text message gets text (and speech too after ``/voice on``).
- A ``.txt``, ``.md`` or ``.pdf`` attachment joins the user's documents.
- Slash commands: ``/reset``, ``/docs``, ``/forget``, ``/voice``.

Each Discord user is the June user ``discord:<id>``. A message's id is its turn's
request id, so a message the gateway delivers again (a resumed session replays events)
is answered once.
"""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import re
from collections import OrderedDict
from typing import Any, Literal

import discord
import numpy as np
import yarl
from discord import app_commands
from discord.gateway import DiscordWebSocket
from discord.http import Route, handle_message_parameters

from orchestrator.audio import SAMPLE_RATE, decode_audio
from orchestrator.auth import Principal
from orchestrator.channel import APOLOGY, ChatChannel, Refused, Reply, UserOrder
from orchestrator.config import Settings
from orchestrator.log import REQUEST_ID
from orchestrator.turn import TurnService

log = logging.getLogger("june.discord")

HELP = (
    "I'm June, a voice assistant. Send me a voice message and I'll answer by voice, "
    "from your documents and our conversation. In a server, mention me.\n\n"
    "Attach a .txt, .md or .pdf file to add it to your documents.\n"
    "/docs lists them, /forget deletes one, /voice on|off answers text by voice too, "
    "/reset forgets our conversation."
)
MESSAGE_LIMIT = 2000  # Discord's limit for a message's text
AUDIO_SUFFIXES = (".ogg", ".oga", ".opus", ".mp3", ".wav", ".m4a", ".webm", ".flac", ".aac")
DOWNLOAD_TIMEOUT_S = 30.0  # an attachment that takes longer to fetch gets an apology
WAVEFORM_POINTS_PER_SECOND = 10  # what Discord's own clients send, at most 256 in all
_MENTION = re.compile(r"<@!?\d+>")


def waveform(ogg: bytes) -> tuple[float, bytes]:
    """A voice message's length in seconds and its waveform: one byte of loudness (0-255)
    per tenth of a second, at most 256, as Discord draws it."""
    samples = decode_audio(ogg, max_seconds=3600)
    seconds = len(samples) / SAMPLE_RATE
    per_point = SAMPLE_RATE // WAVEFORM_POINTS_PER_SECOND
    points = max(1, min(256, -(-len(samples) // per_point)))  # a point per started tenth
    peaks = np.array([np.abs(part).max(initial=0.0) for part in np.array_split(samples, points)])
    loudest = float(peaks.max(initial=0.0))
    scaled = peaks / loudest * 255 if loudest > 0 else peaks
    return round(seconds, 2), bytes(np.clip(scaled, 0, 255).astype(np.uint8))


class VoiceFile(discord.File):
    """An OGG/Opus attachment that Discord plays as a voice message."""

    def __init__(self, ogg: bytes) -> None:
        super().__init__(io.BytesIO(ogg), filename="voice-message.ogg")
        self.duration, self.waveform = waveform(ogg)

    def to_dict(self, index: int) -> dict[str, Any]:
        return {
            **super().to_dict(index),
            "duration_secs": self.duration,
            "waveform": base64.b64encode(self.waveform).decode(),
        }


def is_audio(attachment: discord.Attachment) -> bool:
    return (
        attachment.is_voice_message()
        or (attachment.content_type or "").startswith("audio/")
        or attachment.filename.lower().endswith(AUDIO_SUFFIXES)
    )


def guild_of(message: discord.Message) -> int | None:
    """The server a message was sent in (None for a DM), cached or not."""
    if message.guild is not None:
        return message.guild.id
    return getattr(message.channel, "guild_id", None)


class JuneDiscord:
    """discord.py's Client, wired to June's voice turn."""

    def __init__(self, settings: Settings, turns: TurnService) -> None:
        assert settings.discord_bot_token is not None
        self.settings = settings
        self.channel = ChatChannel(
            settings,
            turns,
            platform="discord",
            rate_per_minute=settings.discord_rate_limit_per_minute,
            max_voice_seconds=settings.discord_max_voice_seconds,
            max_voice_bytes=settings.discord_max_voice_bytes,
            max_document_bytes=settings.discord_max_document_bytes,
        )
        self.allowed_users = set(settings.discord_allowed_users)
        self.allowed_guilds = set(settings.discord_allowed_guilds)
        if not self.allowed_users and not self.allowed_guilds:
            log.warning("DISCORD_ALLOWED_USERS and _GUILDS are empty: the bot answers anyone")
        self.order = UserOrder(
            settings.discord_concurrent_messages, settings.discord_waiting_messages
        )
        self._seen: OrderedDict[int, None] = OrderedDict()  # recent message ids
        # June answers voice *messages*; it never joins voice channels, which would need
        # PyNaCl and davey (discord.py warns of their absence otherwise).
        discord.VoiceClient.warn_nacl = discord.VoiceClient.warn_dave = False
        intents = discord.Intents.none()
        intents.guilds = intents.guild_messages = intents.dm_messages = True
        intents.message_content = True  # privileged: enable it in the developer portal
        self.client = discord.Client(intents=intents, chunk_guilds_at_startup=False)
        self.client.event(self.on_message)
        self.tree = app_commands.CommandTree(self.client)
        self._add_commands()
        self._connection: asyncio.Task[None] | None = None

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Log in (a bad token fails here), register the slash commands, and keep the
        gateway connected in the background (discord.py reconnects and resumes)."""
        assert self.settings.discord_bot_token is not None
        # discord.py reads both from class attributes: one Discord bot per process.
        Route.BASE = self.settings.discord_api_url.rstrip("/")
        DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self.settings.discord_gateway_url)
        await self.client.login(self.settings.discord_bot_token.get_secret_value())
        if self.settings.discord_sync_commands:
            try:
                await self.tree.sync()
            except discord.HTTPException as exc:
                log.warning("Discord refused the slash commands: %s", exc)
        self._connection = asyncio.create_task(self.client.connect(reconnect=True))
        self._connection.add_done_callback(self._connection_ended)
        log.info("Discord bot started (gateway %s)", self.settings.discord_gateway_url)

    async def stop(self) -> None:
        await self.client.close()
        if self._connection is not None:
            self._connection.cancel()
            await asyncio.gather(self._connection, return_exceptions=True)

    def _connection_ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("the Discord gateway connection ended: %s", exc)

    # --- guards -----------------------------------------------------------------------------

    def _allowed(self, user_id: int, guild_id: int | None) -> bool:
        if not self.allowed_users and not self.allowed_guilds:
            return True
        return user_id in self.allowed_users or (
            guild_id is not None and guild_id in self.allowed_guilds
        )

    def _first_time(self, message_id: int) -> bool:
        """False for a message this process has handled (a gateway replay)."""
        if message_id in self._seen:
            return False
        self._seen[message_id] = None
        if len(self._seen) > 4096:
            self._seen.popitem(last=False)
        return True

    # --- messages ---------------------------------------------------------------------------

    async def on_message(self, message: discord.Message) -> None:
        me = self.client.user
        if me is None or message.author.bot:
            return
        if guild_of(message) is not None and me not in message.mentions:
            return  # in a server, only what is addressed to June
        if not self._first_time(message.id):
            log.info("message %s was delivered again: not answering again", message.id)
            return
        REQUEST_ID.set(f"dc-{message.id}")  # this message's task: on its every log line
        try:
            async with self.order.turn(message.author.id):
                await self._handle(message)
        except Refused as refused:
            await self._refuse(message, refused)
        except Exception as exc:  # anything else: log it, apologise, keep running
            log.error("message %s failed: %s", message.id, exc, exc_info=exc)
            self.channel.count("failed")
            try:
                await message.reply(APOLOGY, mention_author=False)
            except discord.DiscordException:
                log.warning("message %s: could not send the apology", message.id)

    async def _refuse(self, message: discord.Message, refused: Refused) -> None:
        self.channel.count(refused.outcome)
        await message.reply(refused.text, mention_author=False)

    async def _handle(self, message: discord.Message) -> None:
        principal = self.channel.admit(
            message.author.id, allowed=self._allowed(message.author.id, guild_of(message))
        )
        audio = next((a for a in message.attachments if is_audio(a)), None)
        if audio is not None:
            await self._voice(message, principal, audio)
            return
        if message.attachments:
            document = message.attachments[0]
            self.channel.check_document(document.filename, document.size)  # before reading
            async with asyncio.timeout(DOWNLOAD_TIMEOUT_S):
                data = await document.read()
            added = await self.channel.add_document(
                principal, document.filename, data, source=f"discord:{document.id}"
            )
            await message.reply(added, mention_author=False)
            return
        text = _MENTION.sub("", message.content).strip()
        if not text:
            await message.reply(HELP, mention_author=False)
            return
        async with message.channel.typing():
            reply = await self.channel.answer(
                principal,
                f"dc-{message.id}",
                text=text,
                speak=self.channel.speaks_text(message.author.id),
            )
        await self._reply(message, reply)

    async def _voice(
        self, message: discord.Message, principal: Principal, attachment: discord.Attachment
    ) -> None:
        # Discord's own count of the size; the length is checked again in the turn
        self.channel.check_voice(seconds=attachment.duration, size=attachment.size)
        async with message.channel.typing():
            async with asyncio.timeout(DOWNLOAD_TIMEOUT_S):
                data = await attachment.read()
            reply = await self.channel.answer(principal, f"dc-{message.id}", audio=data, speak=True)
        await self._reply(message, reply)

    async def _reply(self, message: discord.Message, reply: Reply) -> None:
        """The voice message first (when spoken), then its text, in Discord-sized parts."""
        if reply.replayed:
            return
        if reply.voice:
            params = handle_message_parameters(
                file=VoiceFile(reply.voice), flags=discord.MessageFlags(voice=True)
            )
            with params:
                await self.client.http.send_message(message.channel.id, params=params)
        for start in range(0, len(reply.text), MESSAGE_LIMIT):
            text = reply.text[start : start + MESSAGE_LIMIT]
            await message.reply(text, mention_author=False)

    # --- slash commands ---------------------------------------------------------------------

    def _add_commands(self) -> None:
        channel = self.channel

        @self.tree.command(name="reset", description="Forget our conversation.")
        async def reset(interaction: discord.Interaction) -> None:
            if principal := await self._admit_command(interaction):
                await self._answer_command(interaction, await channel.reset(principal))

        @self.tree.command(name="docs", description="List your documents.")
        async def docs(interaction: discord.Interaction) -> None:
            if principal := await self._admit_command(interaction):
                await self._answer_command(interaction, await channel.documents(principal))

        @self.tree.command(name="forget", description="Delete one of your documents.")
        @app_commands.describe(document="The document's id, from /docs.")
        async def forget(interaction: discord.Interaction, document: str) -> None:
            if principal := await self._admit_command(interaction):
                answer = await channel.forget(principal, document)
                await self._answer_command(interaction, answer)

        @self.tree.command(name="voice", description="Answer my text messages by voice too.")
        @app_commands.describe(mode="on: voice and text; off: text only.")
        async def voice(interaction: discord.Interaction, mode: Literal["on", "off"]) -> None:
            if await self._admit_command(interaction) is not None:
                answer = channel.set_voice(interaction.user.id, mode == "on")
                await self._answer_command(interaction, answer)

        @self.tree.error
        async def on_command_error(
            interaction: discord.Interaction, error: app_commands.AppCommandError
        ) -> None:
            log.error("command %s failed: %s", interaction.command, error, exc_info=error)
            channel.count("failed")
            if not interaction.response.is_done():
                await interaction.response.send_message(APOLOGY, ephemeral=True)

    async def _admit_command(self, interaction: discord.Interaction) -> Principal | None:
        REQUEST_ID.set(f"dc-{interaction.id}")
        user = interaction.user.id
        try:
            return self.channel.admit(user, allowed=self._allowed(user, interaction.guild_id))
        except Refused as refused:
            self.channel.count(refused.outcome)
            await self._answer_command(interaction, refused.text)
            return None

    @staticmethod
    async def _answer_command(interaction: discord.Interaction, text: str) -> None:
        """Only the user who asked sees the answer."""
        await interaction.response.send_message(text[:MESSAGE_LIMIT], ephemeral=True)
