"""A fake Telegram Bot API on 127.0.0.1: the one fake in June's tests.

It answers the methods the bot uses (getMe, deleteWebhook, setWebhook, getUpdates,
getFile, file downloads, sendChatAction, sendMessage, sendVoice), accepting JSON, form
and multipart bodies as Telegram does, queues updates the test pushes, and records
everything the bot sends.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

BOT = {"id": 4242, "is_bot": True, "first_name": "June", "username": "june_test_bot"}


@dataclass
class Sent:
    method: str
    params: dict[str, Any]
    files: dict[str, bytes] = field(default_factory=dict)
    at: float = field(default_factory=time.monotonic)  # when the bot sent it


class FakeTelegram:
    def __init__(self, port: int) -> None:
        self.port = port
        self.updates: list[dict] = []
        self.files: dict[str, tuple[str, bytes]] = {}
        self.sent: list[Sent] = []
        self._message_id = 1000
        self._lock = threading.Lock()
        app = Starlette(
            routes=[
                Route("/bot{token}/{method}", self._method, methods=["GET", "POST"]),
                Route("/file/bot{token}/{path:path}", self._file, methods=["GET"]),
            ]
        )
        self._server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        )
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    # --- test side ------------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/bot"

    @property
    def file_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/file/bot"

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            assert time.monotonic() < deadline, "fake Telegram did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)

    def add_file(self, file_id: str, data: bytes, path: str) -> None:
        self.files[file_id] = (path, data)

    def push(self, update: dict) -> None:
        with self._lock:
            self.updates.append(update)

    def sent_to(self, chat_id: int) -> list[Sent]:
        with self._lock:
            return [s for s in self.sent if str(s.params.get("chat_id")) == str(chat_id)]

    def wait_for(
        self, chat_id: int, method: str, count: int = 1, timeout_s: float = 120
    ) -> list[Sent]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = [s for s in self.sent_to(chat_id) if s.method == method]
            if len(found) >= count:
                return found
            time.sleep(0.1)
        raise AssertionError(f"no {method} to chat {chat_id}; sent: {self.sent_to(chat_id)}")

    # --- server side ----------------------------------------------------------------------

    async def _params(self, request: Request) -> tuple[dict[str, Any], dict[str, bytes]]:
        kind = request.headers.get("content-type", "")
        params: dict[str, Any] = dict(request.query_params)
        files: dict[str, bytes] = {}
        if "application/json" in kind:
            body = await request.body()
            params.update(json.loads(body) if body else {})
        elif "form" in kind:
            form = await request.form()
            for key, value in form.multi_items():
                if hasattr(value, "read"):
                    files[key] = await value.read()
                else:
                    params[key] = value
        return params, files

    def _message(self, chat_id: Any, **extra: Any) -> dict:
        self._message_id += 1
        return {
            "message_id": self._message_id,
            "date": int(time.time()),
            "chat": {"id": int(chat_id), "type": "private"},
            "from": BOT,
            **extra,
        }

    async def _method(self, request: Request) -> Response:
        method = request.path_params["method"]
        params, files = await self._params(request)
        if method == "getMe":
            return _ok(BOT)
        if method in ("deleteWebhook", "setWebhook", "close", "logOut"):
            return _ok(True)
        if method == "getUpdates":
            offset = int(params.get("offset") or 0)
            wait = min(float(params.get("timeout") or 0), 1.0)
            deadline = time.monotonic() + wait
            while True:
                with self._lock:
                    ready = [u for u in self.updates if u["update_id"] >= offset]
                if ready or time.monotonic() >= deadline:
                    return _ok(ready)
                await asyncio.sleep(0.05)
        if method == "getFile":
            path, data = self.files[params["file_id"]]
            return _ok(
                {"file_id": params["file_id"], "file_unique_id": params["file_id"] + "-u",
                 "file_size": len(data), "file_path": path}
            )  # fmt: skip
        with self._lock:
            self.sent.append(Sent(method, params, files))
        chat_id = params.get("chat_id", 0)
        if method == "sendMessage":
            return _ok(self._message(chat_id, text=params.get("text", "")))
        if method == "sendVoice":
            voice = {"file_id": "sent-voice", "file_unique_id": "sent-voice-u", "duration": 1}
            return _ok(self._message(chat_id, voice=voice, caption=params.get("caption")))
        if method == "sendChatAction":
            return _ok(True)
        return JSONResponse({"ok": False, "error_code": 400, "description": f"no {method}"}, 400)

    async def _file(self, request: Request) -> Response:
        wanted = request.path_params["path"]
        for path, data in self.files.values():
            if path == wanted:
                return Response(data, media_type="application/octet-stream")
        return Response(status_code=404)


def _ok(result: Any) -> JSONResponse:
    return JSONResponse({"ok": True, "result": result})
