"""A fake Discord on 127.0.0.1: REST API, gateway WebSocket and attachment CDN.

The one fake in the Discord bot's tests: the real discord.py client talks to it exactly
as it talks to Discord. It answers the routes the bot uses (login, application info,
slash-command registration, messages with JSON or multipart bodies, typing, interaction
callbacks), serves attachments, speaks the gateway protocol (HELLO, IDENTIFY, READY,
heartbeats, RESUME), lets the test dispatch events, and records everything the bot sends.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import WSMsgType, web

TOKEN = "fake-discord-token"
APP_ID = 7000
BOT = {
    "id": "7001",
    "username": "june",
    "discriminator": "0",
    "global_name": "June",
    "avatar": None,
    "bot": True,
}
GUILD_ID, GUILD_CHANNEL_ID = 7100, 7101
_ids = itertools.count(int(time.time() * 1000) % 10**9 * 1000)


def snowflake() -> str:
    return str(next(_ids))


def user(user_id: int, name: str = "ann") -> dict[str, Any]:
    return {
        "id": str(user_id),
        "username": name,
        "discriminator": "0",
        "global_name": name,
        "avatar": None,
    }


@dataclass
class Sent:
    route: str  # "message", "interaction" or "commands"
    channel_id: str | None
    payload: dict[str, Any]
    files: list[tuple[str, bytes]] = field(default_factory=list)
    at: float = field(default_factory=time.monotonic)


class FakeDiscord:
    def __init__(self, port: int) -> None:
        self.port = port
        self.sent: list[Sent] = []
        self.typing: list[str] = []
        self.attachments: dict[str, bytes] = {}
        self.downloads: list[str] = []  # attachment names the bot fetched from the CDN
        self.identified = threading.Event()
        self.connections = 0
        self._sockets: list[web.WebSocketResponse] = []
        self._seq = 0
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        api = "/api/v10"
        app.router.add_get(f"{api}/users/@me", self._me)
        app.router.add_get(f"{api}/oauth2/applications/@me", self._application)
        app.router.add_put(f"{api}/applications/{{app}}/commands", self._commands)
        app.router.add_post(f"{api}/channels/{{channel}}/messages", self._message)
        app.router.add_post(f"{api}/channels/{{channel}}/typing", self._typing)
        app.router.add_post(f"{api}/interactions/{{id}}/{{token}}/callback", self._callback)
        app.router.add_get("/cdn/{name}", self._cdn)
        app.router.add_get("/gateway", self._gateway)
        self._app = app

    # --- test side ------------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(10)

    def stop(self) -> None:
        async def down() -> None:
            for ws in list(self._sockets):
                await ws.close()
            if self._runner is not None:
                await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(down(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def attachment(
        self, data: bytes, filename: str, content_type: str, *, voice_seconds: float | None = None
    ) -> dict[str, Any]:
        """An attachment served from the fake CDN; a voice message's when ``voice_seconds``."""
        attachment_id = snowflake()
        name = f"{attachment_id}-{filename}"
        self.attachments[name] = data
        url = f"http://127.0.0.1:{self.port}/cdn/{name}"
        found = {
            "id": attachment_id,
            "filename": filename,
            "size": len(data),
            "url": url,
            "proxy_url": url,
            "content_type": content_type,
        }
        if voice_seconds is not None:
            found["duration_secs"] = voice_seconds
            found["waveform"] = base64.b64encode(bytes(range(0, 250, 5))).decode()
        return found

    def message(
        self,
        author: int,
        content: str = "",
        *,
        channel_id: int,
        guild_id: int | None = None,
        attachments: list[dict[str, Any]] = (),  # type: ignore[assignment]
        mentions: list[dict[str, Any]] = (),  # type: ignore[assignment]
        flags: int = 0,
    ) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": snowflake(),
            "channel_id": str(channel_id),
            "author": user(author),
            "content": content,
            "timestamp": datetime.now(UTC).isoformat(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": list(mentions),
            "mention_roles": [],
            "attachments": list(attachments),
            "embeds": [],
            "pinned": False,
            "type": 0,
            "flags": flags,
        }
        if guild_id is not None:
            data["guild_id"] = str(guild_id)
            data["member"] = {
                "roles": [],
                "joined_at": data["timestamp"],
                "deaf": False,
                "mute": False,
                "flags": 0,
            }
        return data

    def command(
        self, author: int, name: str, *, channel_id: int, options: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """A slash command as a DM interaction."""
        return {
            "id": snowflake(),
            "application_id": str(APP_ID),
            "type": 2,
            "token": f"tok{snowflake()}",
            "version": 1,
            "attachment_size_limit": 10 * 1024 * 1024,
            "locale": "en-US",
            "channel_id": str(channel_id),
            "channel": {"id": str(channel_id), "type": 1},
            "user": user(author),
            "app_permissions": "0",
            "context": 1,
            "data": {
                "id": snowflake(),
                "name": name,
                "type": 1,
                "options": [{"name": k, "type": 3, "value": v} for k, v in (options or {}).items()],
            },
        }

    def dispatch(self, event: str, data: dict[str, Any]) -> None:
        """Send one gateway event to every connected client."""
        asyncio.run_coroutine_threadsafe(self._dispatch(event, data), self._loop).result(10)

    def drop_connection(self) -> None:
        """Close the gateway socket as Discord does at times (discord.py resumes)."""

        async def close() -> None:
            for ws in list(self._sockets):
                await ws.close(code=4000, message=b"fake: reconnect")

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)

    def sent_to(self, channel_id: int | str, route: str = "message") -> list[Sent]:
        with self._lock:
            return [s for s in self.sent if s.route == route and s.channel_id == str(channel_id)]

    def wait_for(
        self, channel_id: int | str, count: int = 1, *, route: str = "message", timeout_s=120
    ) -> list[Sent]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = self.sent_to(channel_id, route)
            if len(found) >= count:
                return found
            time.sleep(0.1)
        raise AssertionError(f"no {count} {route}(s) to {channel_id}: {self.sent_to(channel_id)}")

    # --- server side ----------------------------------------------------------------------

    async def _serve(self) -> None:
        self._runner = web.AppRunner(self._app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def _authorised(self, request: web.Request) -> None:
        if request.headers.get("Authorization") != f"Bot {TOKEN}":
            raise web.HTTPUnauthorized(
                body=json.dumps({"message": "401: Unauthorized", "code": 0}).encode(),
                headers={"Content-Type": "application/json"},
            )

    async def _me(self, request: web.Request) -> web.Response:
        self._authorised(request)
        return _json(BOT)

    async def _application(self, request: web.Request) -> web.Response:
        self._authorised(request)
        return _json(
            {
                "id": str(APP_ID),
                "name": "June",
                "description": "",
                "icon": None,
                "bot_public": True,
                "bot_require_code_grant": False,
                "owner": user(1, "owner"),
                "verify_key": "00",
                "flags": 0,
                "summary": "",
            }
        )

    async def _commands(self, request: web.Request) -> web.Response:
        self._authorised(request)
        commands = await request.json()
        with self._lock:
            self.sent.append(Sent("commands", None, {"commands": commands}))
        return _json(
            [
                {
                    **c,
                    "id": snowflake(),
                    "application_id": str(APP_ID),
                    "version": "1",
                    "default_member_permissions": None,
                    "dm_permission": True,
                }
                for c in commands
            ]
        )

    async def _body(self, request: web.Request) -> tuple[dict[str, Any], list[tuple[str, bytes]]]:
        if request.content_type.startswith("multipart/"):
            payload: dict[str, Any] = {}
            files: list[tuple[str, bytes]] = []
            async for part in await request.multipart():
                if part.name == "payload_json":
                    payload = json.loads(await part.text())
                else:
                    files.append((part.filename or "", bytes(await part.read())))
            return payload, files
        return await request.json(), []

    async def _message(self, request: web.Request) -> web.Response:
        self._authorised(request)
        channel = request.match_info["channel"]
        payload, files = await self._body(request)
        with self._lock:
            self.sent.append(Sent("message", channel, payload, files))
        attachments = [
            {
                "id": snowflake(),
                "filename": name,
                "size": len(data),
                "url": "http://127.0.0.1/x",
                "proxy_url": "http://127.0.0.1/x",
                **meta,
            }
            for (name, data), meta in zip(files, payload.get("attachments", []), strict=False)
        ]
        return _json(
            {
                **self.message(
                    int(BOT["id"]),
                    payload.get("content") or "",
                    channel_id=int(channel),
                    attachments=attachments,
                    flags=payload.get("flags", 0),
                ),
                "author": BOT,
            }
        )

    async def _typing(self, request: web.Request) -> web.Response:
        self._authorised(request)
        with self._lock:
            self.typing.append(request.match_info["channel"])
        return web.Response(status=204)

    async def _callback(self, request: web.Request) -> web.Response:
        payload, files = await self._body(request)  # no bot token: the interaction's own
        interaction = request.match_info["id"]
        with self._lock:
            self.sent.append(Sent("interaction", interaction, payload, files))
        flags = payload.get("data", {}).get("flags", 0)
        return _json(
            {
                "interaction": {
                    "id": interaction,
                    "type": 2,
                    "response_message_id": snowflake(),
                    "response_message_loading": False,
                    "response_message_ephemeral": bool(flags & 64),
                }
            }
        )

    async def _cdn(self, request: web.Request) -> web.Response:
        self.downloads.append(request.match_info["name"])
        data = self.attachments.get(request.match_info["name"])
        if data is None:
            raise web.HTTPNotFound()
        return web.Response(body=data, content_type="application/octet-stream")

    async def _dispatch(self, event: str, data: dict[str, Any]) -> None:
        for ws in list(self._sockets):
            self._seq += 1
            await ws.send_json({"op": 0, "t": event, "s": self._seq, "d": data})

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.connections += 1
        await ws.send_json({"op": 10, "d": {"heartbeat_interval": 41250}, "s": None, "t": None})
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                break
            frame = json.loads(msg.data)
            if frame["op"] == 1:  # heartbeat
                await ws.send_json({"op": 11, "d": None, "s": None, "t": None})
            elif frame["op"] == 2:  # identify
                if frame["d"].get("token") != TOKEN:
                    await ws.close(code=4004, message=b"Authentication failed.")
                    break
                self._sockets.append(ws)
                await self._dispatch(
                    "READY",
                    {
                        "v": 10,
                        "user": BOT,
                        "guilds": [],
                        "session_id": "fake-session",
                        "resume_gateway_url": self.gateway_url,
                        "private_channels": [],
                        "application": {"id": str(APP_ID), "flags": 0},
                    },
                )
                await self._dispatch("GUILD_CREATE", _guild())
                self.identified.set()
            elif frame["op"] == 6:  # resume: nothing was missed in this fake
                self._sockets.append(ws)
                await self._dispatch("RESUMED", {})
        if ws in self._sockets:
            self._sockets.remove(ws)
        return ws


def _json(data: Any) -> web.Response:
    """JSON as Discord sends it: discord.py parses a body only when the content type is
    exactly ``application/json`` (no charset)."""
    return web.Response(
        body=json.dumps(data).encode(), headers={"Content-Type": "application/json"}
    )


def _guild() -> dict[str, Any]:
    return {
        "id": str(GUILD_ID),
        "name": "June's server",
        "owner_id": "1",
        "unavailable": False,
        "member_count": 2,
        "large": False,
        "features": [],
        "emojis": [],
        "stickers": [],
        "roles": [
            {
                "id": str(GUILD_ID),
                "name": "@everyone",
                "permissions": "3072",
                "position": 0,
                "color": 0,
                "hoist": False,
                "managed": False,
                "mentionable": False,
                "flags": 0,
            }
        ],
        "channels": [
            {
                "id": str(GUILD_CHANNEL_ID),
                "type": 0,
                "name": "general",
                "position": 0,
                "permission_overwrites": [],
                "guild_id": str(GUILD_ID),
            }
        ],
        "members": [],
        "threads": [],
        "presences": [],
        "voice_states": [],
        "stage_instances": [],
        "guild_scheduled_events": [],
        "soundboard_sounds": [],
        "joined_at": datetime.now(UTC).isoformat(),
        "premium_tier": 0,
    }
