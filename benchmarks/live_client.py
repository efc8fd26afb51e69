"""A small client of ``/v1/realtime`` on the ``websockets`` package: tests and benchmarks.

It streams 16 kHz float audio as PCM16 in 20 ms messages (in real time, or as fast as
the socket takes it) and records every event with the time it arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from websockets.asyncio.client import ClientConnection, connect

RATE = 16000
MESSAGE_S = 0.02


@dataclass
class Received:
    kind: str  # an event type, or "audio" bytes
    at: float  # time.monotonic()
    body: dict[str, Any] = field(default_factory=dict)
    data: bytes = b""


class LiveClient:
    def __init__(
        self, url: str, key: str | None, *, headers: dict[str, str] | None = None, **start: object
    ) -> None:
        self.url = url.replace("http://", "ws://").rstrip("/") + "/v1/realtime"
        self.key = key
        self.headers = headers or {}
        self.start = start
        self.received: list[Received] = []
        self.ws: ClientConnection | None = None
        self.reader: asyncio.Task | None = None
        self._arrived = asyncio.Event()
        self.closed_code: int | None = None
        self.last_voiced_at: float | None = None  # when the last voiced sample went out

    async def __aenter__(self) -> LiveClient:
        self.ws = await connect(
            self.url, additional_headers=self.headers, max_size=2**22, open_timeout=20
        )
        start = {"type": "start", **self.start}
        if self.key is not None:
            start["key"] = self.key
        await self.ws.send(json.dumps(start))
        self.reader = asyncio.create_task(self.read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.reader is not None:
            await asyncio.wait({self.reader}, timeout=10)

    async def read(self) -> None:
        assert self.ws is not None
        try:
            async for message in self.ws:
                now = time.monotonic()
                if isinstance(message, bytes):
                    self.received.append(Received("audio_bytes", now, data=message))
                else:
                    body = json.loads(message)
                    self.received.append(Received(body["type"], now, body=body))
                self._arrived.set()
        except Exception:
            pass
        finally:
            self.closed_code = self.ws.close_code
            self._arrived.set()

    async def send_audio(
        self, samples: np.ndarray, *, realtime: bool = True, voiced_until: int | None = None
    ) -> None:
        """Stream ``samples``; ``voiced_until``: the sample after the last voiced one (its
        sending time is recorded as the end of speech)."""
        assert self.ws is not None
        step = int(RATE * MESSAGE_S)
        begun = time.monotonic()
        for i in range(0, len(samples), step):
            chunk = np.clip(samples[i : i + step], -1, 1)
            await self.ws.send((chunk * 32767).astype("<i2").tobytes())
            if voiced_until is not None and i <= voiced_until <= i + step:
                self.last_voiced_at = time.monotonic()
            if realtime:
                ahead = begun + (i + step) / RATE - time.monotonic()
                if ahead > 0:
                    await asyncio.sleep(ahead)

    async def send_json(self, body: dict) -> None:
        assert self.ws is not None
        await self.ws.send(json.dumps(body))

    async def wait_for(self, kind: str, *, after: int = 0, timeout: float = 60) -> Received:
        """The first ``kind`` event from index ``after`` on (or the socket's end: error)."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self.received[after:]:
                if event.kind == kind:
                    return event
            if self.reader is not None and self.reader.done():
                raise ConnectionError(f"closed ({self.closed_code}) before {kind!r}: {self.kinds}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {kind!r} in {timeout} s: {self.kinds}")
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), min(left, 0.5))

    async def closed(self, timeout: float = 20) -> int | None:
        if self.reader is not None:
            await asyncio.wait({self.reader}, timeout=timeout)
        return self.closed_code

    @property
    def kinds(self) -> list[str]:
        return [e.kind for e in self.received]

    def events(self, kind: str) -> list[Received]:
        return [e for e in self.received if e.kind == kind]

    def reply_pcm(self, after: int = 0) -> tuple[np.ndarray, int]:
        """The reply audio received from index ``after`` on, as float samples and its rate."""
        rate = 0
        pieces = []
        for event in self.received[after:]:
            if event.kind == "audio":
                rate = int(event.body["sample_rate"])
            elif event.kind == "audio_bytes":
                pieces.append(np.frombuffer(event.data, "<i2"))
            elif event.kind == "turn_done":
                break
        samples = np.concatenate(pieces).astype(np.float32) / 32768 if pieces else np.zeros(0)
        return samples, rate


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(RATE * seconds), np.float32)
