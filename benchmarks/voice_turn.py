"""Voice turn latency: a spoken question in, the spoken answer out, over real HTTP.

The whole stack runs in this process's control, on loopback: tritonserver (the embedded
defaults: Whisper base, MiniLM, SmolLM2-135M int4, Piper), embedded Postgres + pgvector,
and the orchestrator under uvicorn. A user's document states a fact; the question (about
5 s of Piper speech) asks about it. Each run starts a new conversation.

- baseline: ``POST /v1/voice`` as JSON, which answers once the whole reply is spoken;
- streamed: the same with ``stream=true``: audio events are sent sentence by sentence.

Reported: time to the first audio byte and to the last byte (median of ``runs``), and the
server's per-stage timings. Run with ``june bench voice-turn``.
"""

from __future__ import annotations

import base64
import json
import logging
import statistics
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import httpx

log = logging.getLogger("june.bench.voice_turn")

DOCUMENT = (
    "Office notes. The Zorbit printer is on the fourth floor, next to the kitchen. "
    "Priya replaces the toner of the Zorbit printer every Monday morning."
)
QUESTION = "Hello June. Could you please tell me which floor the Zorbit printer is on, and who looks after it?"
STAGES = ("decode", "transcribe", "retrieve", "prompt", "first_audio", "generate", "synthesise")


@dataclass
class TurnTimes:
    mode: str
    first_audio_s: list[float] = field(default_factory=list)
    last_byte_s: list[float] = field(default_factory=list)
    stages_ms: dict[str, list[float]] = field(default_factory=dict)

    def add_stages(self, timings: dict[str, float]) -> None:
        for stage, ms in timings.items():
            self.stages_ms.setdefault(stage, []).append(ms)

    @property
    def first(self) -> float:
        return statistics.median(self.first_audio_s)

    @property
    def last(self) -> float:
        return statistics.median(self.last_byte_s)


def _json_turn(client: httpx.Client, wav: bytes, times: TurnTimes) -> None:
    start = time.perf_counter()
    r = client.post("/v1/voice", files={"file": ("q.wav", wav)}, data={"language": "en"})
    r.raise_for_status()
    elapsed = time.perf_counter() - start
    times.first_audio_s.append(elapsed)  # the audio arrives with the whole answer
    times.last_byte_s.append(elapsed)
    times.add_stages(r.json()["timings_ms"])


def _streamed_turn(client: httpx.Client, wav: bytes, times: TurnTimes) -> None:
    start = time.perf_counter()
    first: float | None = None
    event = ""
    data = {"language": "en", "stream": "true"}
    with client.stream("POST", "/v1/voice", files={"file": ("q.wav", wav)}, data=data) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "audio" and first is None:
                if base64.b64decode(json.loads(line[6:])["base64"]):
                    first = time.perf_counter() - start
            elif line.startswith("data: ") and event == "done":
                times.add_stages(json.loads(line[6:])["timings_ms"])
            elif line.startswith("data: ") and event == "error":
                raise RuntimeError(line)
    times.last_byte_s.append(time.perf_counter() - start)
    times.first_audio_s.append(first if first is not None else times.last_byte_s[-1])


def run_benchmark(
    cache_dir: Path,
    runtime_dir: Path,
    *,
    runs: int = 10,
    asr_model: str = "whisper-base",
    asr_precision: str = "fp32",
    llm_threads: int = 0,
) -> list[TurnTimes]:
    import uvicorn

    from benchmarks.speech import piper_wav, to_16k
    from exporters.repository import build_repository
    from orchestrator.api.app import create_app
    from orchestrator.config import Settings
    from orchestrator.db.engine import EmbeddedPostgres, make_sync_engine
    from orchestrator.db.migrate import upgrade
    from orchestrator.triton.launcher import TritonServer

    wav = piper_wav(QUESTION)
    log.info("question: %.1f s of speech", len(to_16k(wav)) / 16000)
    repo = build_repository(
        profile="cpu",
        out=runtime_dir / "repo",
        cache_dir=cache_dir,
        sources={"whisper": asr_model},
        options={"whisper": {"precision": asr_precision}},
        overrides={"llm_threads": str(llm_threads)},
    )
    results = [TurnTimes("JSON: whole answer, then audio (baseline)"), TurnTimes("streamed")]
    with ExitStack() as stack:
        triton = stack.enter_context(
            TritonServer(
                repo, runtime_dir=runtime_dir / "triton", http_port=28300, grpc_port=28301,
                metrics_port=28302,
            )
        )  # fmt: skip
        pg = stack.enter_context(EmbeddedPostgres(runtime_dir / "pgdata"))
        upgrade(pg.url)
        settings = Settings(
            database_url=pg.url,
            triton_grpc_port=triton.grpc_port,
            triton_http_port=triton.http_port,
            model_repository=repo,
            rate_limit_per_minute=10_000,
            port=28380,
        )
        from sqlalchemy.orm import Session

        from orchestrator.auth import create_key

        engine = make_sync_engine(pg.url)
        with Session(engine) as session:
            key = create_key(session, user_id="bench", name="voice-turn").key
        engine.dispose()

        server = uvicorn.Server(
            uvicorn.Config(create_app(settings), host="127.0.0.1", port=28380, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        stack.callback(thread.join, 30)
        stack.callback(setattr, server, "should_exit", True)
        while not server.started:
            time.sleep(0.1)
        client = stack.enter_context(
            httpx.Client(
                base_url="http://127.0.0.1:28380",
                headers={"authorization": f"Bearer {key}"},
                timeout=120,
            )
        )
        client.post("/v1/documents", json={"title": "Office notes", "text": DOCUMENT})
        _json_turn(client, wav, TurnTimes("warm-up"))
        for i in range(runs):
            _json_turn(client, wav, results[0])
            _streamed_turn(client, wav, results[1])
            log.info(
                "run %d: first audio %.2f s (json) / %.2f s (streamed)",
                i + 1, results[0].first_audio_s[-1], results[1].first_audio_s[-1],
            )  # fmt: skip
    return results


def markdown_tables(results: list[TurnTimes]) -> str:
    base = results[0]
    lines = [
        "| mode | first audio byte (median) | vs baseline | last byte (median) |",
        "|---|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.mode} | {r.first:.2f} s | {r.first / base.first:.2f}x | {r.last:.2f} s |"
        )
    streamed = results[-1]
    lines += ["", "| stage (streamed, server side) | median ms |", "|---|---:|"]
    for stage in STAGES:
        if stage in streamed.stages_ms:
            lines.append(f"| {stage} | {statistics.median(streamed.stages_ms[stage]):.0f} |")
    return "\n".join(lines)
