"""Live voice latency: from the end of speech to the first reply audio, against the upload turn.

The same spoken question (about 5 s of Piper speech) about the same document, on the same
stack (the embedded defaults: Whisper base, MiniLM, SmolLM2-135M int4, Piper, Silero VAD),
in the same run, alternating:

- **upload turn (baseline)**: the person has finished speaking and the recording is sent
  whole: ``POST /v1/voice`` with ``stream=true``, timed from the request to the first
  audio byte;
- **live**: the question streamed over ``/v1/realtime`` in real time (20 ms PCM16
  messages), timed from the moment the last voiced 20 ms of it was sent to the first
  reply audio byte. The server detects the end of speech after
  ``JUNE_REALTIME_END_SILENCE_S`` of silence, so that wait is part of the figure.

Each turn starts a new conversation. Reported: medians of ``runs``, the ratio, and where
the live wait goes (end detected, transcript, first reply text, first audio). Run with
``june bench realtime``.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.voice_turn import (
    DOCUMENT,
    QUESTION,
    STAGES,
    TurnTimes,
    bench_database,
    june_client,
    start_june,
)
from orchestrator.config import Settings

log = logging.getLogger("june.bench.realtime")

UPLOAD = "upload turn: POST /v1/voice, streamed (baseline)"
LIVE = "live: /v1/realtime, streamed in real time"
# client-side marks of a live turn, from the end of speech
MARKS = (
    ("speech_stopped", "end of speech detected"),
    ("transcript", "transcript"),
    ("delta", "first reply text"),
    ("audio_bytes", "first reply audio"),
)


@dataclass
class LiveTimes:
    first_audio_s: list[float] = field(default_factory=list)
    marks_ms: dict[str, list[float]] = field(default_factory=dict)
    stages_ms: dict[str, list[float]] = field(default_factory=dict)


def last_voiced_sample(audio: np.ndarray, frame: int = 320, floor_db: float = -40.0) -> int:
    """The sample just after the last 20 ms frame louder than ``floor_db`` dBFS."""
    frames = len(audio) // frame
    rms = np.sqrt(np.mean(np.square(audio[: frames * frame].reshape(frames, frame)), axis=1))
    loud = np.flatnonzero(rms > 10 ** (floor_db / 20))
    return int((loud[-1] + 1) * frame) if loud.size else 0


async def live_turn(url: str, key: str, audio: np.ndarray, times: LiveTimes) -> None:
    from benchmarks.live_client import LiveClient, silence

    lead = silence(0.3)
    voiced_until = len(lead) + last_voiced_sample(audio)
    stream = np.concatenate([lead, audio, silence(2.0)])
    async with LiveClient(url, key, language="en") as client:
        await client.wait_for("ready")
        sender = asyncio.create_task(client.send_audio(stream, voiced_until=voiced_until))
        done = await client.wait_for("turn_done", timeout=120)
        await sender
    end = client.last_voiced_at
    assert end is not None
    for kind, _ in MARKS:
        event = next(e for e in client.received if e.kind == kind and e.at >= end)
        times.marks_ms.setdefault(kind, []).append((event.at - end) * 1000)
    times.first_audio_s.append(times.marks_ms["audio_bytes"][-1] / 1000)
    log.debug("live transcript %r reply %r", done.body["transcript"], done.body["reply"])
    for stage, ms in done.body["timings_ms"].items():
        times.stages_ms.setdefault(stage, []).append(ms)


def run_benchmark(
    settings: Settings, runtime_dir: Path, *, runs: int = 10
) -> tuple[TurnTimes, LiveTimes]:
    """The stack ``june serve`` would run for ``settings``, built into ``runtime_dir``."""
    from benchmarks.speech import piper_wav, to_16k
    from benchmarks.voice_turn import streamed_turn
    from exporters.cli import build_from_settings

    wav = piper_wav(QUESTION)
    audio = to_16k(wav)
    log.info("question: %.1f s of speech", last_voiced_sample(audio) / 16000)
    upload, live = TurnTimes(UPLOAD), LiveTimes()
    with ExitStack() as stack:
        database_url, key = bench_database(stack, runtime_dir, "realtime")
        repo = build_from_settings(settings, profile="cpu", out=runtime_dir / "repo")
        url = start_june(stack, repo, runtime_dir, database_url, port=28390)
        client = june_client(stack, url, key, DOCUMENT)
        streamed_turn(client, wav, TurnTimes("warm-up"))
        asyncio.run(live_turn(url, key, audio, LiveTimes()))
        for i in range(runs):  # alternating, so drift hits both alike
            streamed_turn(client, wav, upload)
            asyncio.run(live_turn(url, key, audio, live))
            log.info(
                "run %d: upload %.2f s, live %.2f s from the end of speech",
                i + 1,
                upload.first_audio_s[-1],
                live.first_audio_s[-1],
            )
    return upload, live


def markdown_tables(upload: TurnTimes, live: LiveTimes) -> str:
    first = statistics.median(live.first_audio_s)
    lines = [
        "| mode | end of speech to first audio byte (median) | vs upload turn |",
        "|---|---:|---:|",
        f"| {UPLOAD} | {upload.first:.2f} s | 1.00x |",
        f"| {LIVE} | {first:.2f} s | {first / upload.first:.2f}x |",
        "",
        "| live turn, from the end of speech | median ms |",
        "|---|---:|",
    ]
    for kind, label in MARKS:
        lines.append(f"| {label} | {statistics.median(live.marks_ms[kind]):.0f} |")
    lines += ["", "| server stage (median ms) | upload turn | live |", "|---|---:|---:|"]
    for stage in STAGES[: STAGES.index("first_audio") + 1]:  # up to the first audio
        cells = [
            f"{statistics.median(t[stage]):.0f}" if stage in t else "-"
            for t in (upload.stages_ms, live.stages_ms)
        ]
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
