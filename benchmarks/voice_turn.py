"""Voice turn latency: a spoken question in, the spoken answer out, against a hand-built pipeline.

The same spoken question (about 5 s of Piper speech) about the same document, on the same
machine, in the same run:

- **hand-built (baseline)**: what a user would write in one process: faster-whisper int8
  (the same Whisper base weights), llama.cpp on the same SmolLM2 GGUF with June's own
  prompt (system prompt, the document as a numbered source, the question), and piper-tts
  on the same voice, stopping at the first sentence's audio. llama.cpp keeps the prefix a
  prompt shares with the one before, so its system prompt is evaluated before each turn,
  untimed, as June's is pre-filled while idle;
- **June before**: the whole stack over real HTTP (``POST /v1/voice``, ``stream=true``)
  with fp32 Whisper graphs, Whisper's fixed 30 s window, the LLM at the same CPU
  priority as speech and no warm system prompt: the settings June had;
- **June now, but the first sentence whole**: the defaults except
  ``tts_stream_first_sentence`` off, which shows what streaming the first sentence's audio
  (its first 0.3 s sent before the rest is decoded) is worth on its own;
- **June now**: the defaults: adaptive window, int8 decoder (fp32 encoder), the LLM at
  nice 10 with its system prompt pre-filled, the first sentence streamed, and (in every
  June mode, as the code now runs) the VAD trim and focused sources.

Each June mode runs its own tritonserver (the embedded defaults: Whisper base, MiniLM,
SmolLM2-135M int4, Piper) and orchestrator under uvicorn, on loopback, all started first
and sharing one new embedded Postgres + pgvector; each run starts a new conversation.
The modes take turns, run by run (hand-built, then each June mode), so a slower minute
of a shared machine falls on all of them rather than on one mode's block of runs. Only
the stack being measured has traffic: the others sit idle, their health probes off, and
each June turn starts a second after the turn before it, once that stack's LLM has
pre-filled its system prompt again.
Reported: time to the first audio byte and to the last byte (median of ``runs``), the
ratios the goals name, and the server's per-stage timings. The hand-built pipeline needs
the ``bench`` extra (llama-cpp-python). Run with ``june bench voice-turn``.
"""

from __future__ import annotations

import base64
import json
import logging
import re
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
STAGES = (
    "decode",
    "vad",
    "transcribe",
    "retrieve",
    "prompt",
    "first_token",
    "first_audio",
    "generate",
    "synthesise",
)
# Pause before each June turn: a stack with the warm system prompt pre-fills it again once
# its turn is done, and that must not land on the next mode's transcription.
SETTLE_S = 1.0
BASELINE = "hand-built: faster-whisper + llama.cpp + piper (baseline)"
FULL = "June before: fp32 Whisper, full 30 s window, LLM at equal CPU priority"
WHOLE = "June now, but the first sentence synthesised whole"
ADAPTIVE = "June now: adaptive window, int8 decoder, VAD trim, LLM at nice 10, warm system prompt, first sentence streamed"
_SENTENCE_END = re.compile(r"[.!?](\s|$)")


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
    def last(self) -> float | None:
        return statistics.median(self.last_byte_s) if self.last_byte_s else None


class HandBuilt:
    """faster-whisper int8 + llama.cpp + piper-tts in this process, loaded once."""

    def __init__(self, cache_dir: Path, threads: int = 2) -> None:
        from faster_whisper import WhisperModel
        from llama_cpp import Llama

        from benchmarks.speech import _piper
        from exporters.llm import resolve_source as llm_source
        from exporters.whisper import resolve_source as whisper_source

        ct2_dir, _ = whisper_source("whisper-base", cache_dir)
        self.asr = WhisperModel(
            str(ct2_dir), device="cpu", compute_type="int8", cpu_threads=threads
        )
        gguf, _ = llm_source("smollm2-135m-instruct")
        self.llm = Llama(model_path=str(gguf), n_ctx=2048, n_threads=threads, verbose=False)
        self.voice = _piper()
        self.system_prefix = self._system_prefix()

    def prompt(self, question: str, *, sources: bool = True) -> list[int]:
        from benchmarks.llm import rendered_prompt
        from orchestrator.chat import SYSTEM_PROMPT

        asked = f"Sources:\n[1] Office notes: {DOCUMENT}\n\nQuestion: {question}"
        messages = [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": asked if sources else question},
        ]
        text = rendered_prompt(messages)
        return self.llm.tokenize(text.encode(), add_bos=False, special=True)

    def _system_prefix(self) -> list[int]:
        """The prompt's tokens up to where the user's words begin: the same for every turn."""
        a, b = self.prompt("x", sources=False), self.prompt("7", sources=False)
        n = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), len(a))
        return a[:n]

    def turn(self, wav: bytes, times: TurnTimes) -> None:
        from benchmarks.speech import to_16k

        # As June keeps its system prompt pre-filled between turns, llama.cpp keeps the
        # prefix a prompt shares with the last one it evaluated: every turn pays the
        # prefill of the rest of its prompt, not of the system prompt.
        self.llm.reset()
        self.llm.eval(self.system_prefix)
        start = time.perf_counter()
        audio = to_16k(wav)
        segments, _ = self.asr.transcribe(
            audio, language="en", beam_size=1, without_timestamps=True,
            condition_on_previous_text=False, vad_filter=False,
        )  # fmt: skip
        question = " ".join(s.text.strip() for s in segments)
        heard = time.perf_counter()
        text = ""
        for chunk in self.llm.create_completion(
            self.prompt(question), max_tokens=96, temperature=0.0, stream=True
        ):
            text += chunk["choices"][0]["text"]
            if _SENTENCE_END.search(text):
                break
        first_sentence = _SENTENCE_END.split(text)[0] + "."
        written = time.perf_counter()
        first_chunk = next(iter(self.voice.synthesize(first_sentence)))
        assert len(first_chunk.audio_float_array) > 0
        done = time.perf_counter()
        times.first_audio_s.append(done - start)
        times.add_stages(
            {
                "transcribe": (heard - start) * 1000,
                "first_sentence": (written - heard) * 1000,
                "synthesise_first": (done - written) * 1000,
            }
        )


def streamed_turn(client: httpx.Client, wav: bytes, times: TurnTimes) -> None:
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
                done = json.loads(line[6:])
                times.add_stages(done["timings_ms"])
            elif line.startswith("data: ") and event == "error":
                raise RuntimeError(line)
    times.last_byte_s.append(time.perf_counter() - start)
    times.first_audio_s.append(first if first is not None else times.last_byte_s[-1])


def bench_database(stack: ExitStack, runtime_dir: Path, name: str) -> tuple[str, str]:
    """A new embedded Postgres + pgvector until ``stack`` closes, migrated, with a user's
    key. New each run: the user's documents of an earlier run would be retrieved too (the
    same passage three times, tripling its prefill)."""
    import shutil

    from sqlalchemy.orm import Session

    from orchestrator.auth import create_key
    from orchestrator.db.engine import EmbeddedPostgres, make_sync_engine
    from orchestrator.db.migrate import upgrade

    shutil.rmtree(runtime_dir / "pgdata", ignore_errors=True)  # the benchmark's own scratch
    pg = stack.enter_context(EmbeddedPostgres(runtime_dir / "pgdata"))
    upgrade(pg.url)
    engine = make_sync_engine(pg.url)
    with Session(engine) as session:
        key = create_key(session, user_id="bench", name=name).key
    engine.dispose()
    return pg.url, key


def start_june(
    stack: ExitStack,
    repo: Path,
    runtime_dir: Path,
    database_url: str,
    port: int = 28380,
    *,
    slot: int = 0,
    **settings: object,
) -> str:
    """tritonserver on ``repo`` and the orchestrator under uvicorn (with ``settings``), on
    loopback, until ``stack`` closes; returns the orchestrator's URL. Stacks side by side
    take different ``slot``s (their own ports and Triton runtime folder). The model
    doctor's idle probes are off: they would be traffic of their own beside the measured
    stack."""
    import uvicorn

    from orchestrator.api.app import create_app
    from orchestrator.config import Settings
    from orchestrator.triton.launcher import TritonServer

    base, port = 28300 + 10 * slot, port + slot
    triton = stack.enter_context(
        TritonServer(
            repo, runtime_dir=runtime_dir / ("triton" if slot == 0 else f"triton-{slot}"),
            http_port=base, grpc_port=base + 1, metrics_port=base + 2,
        )
    )  # fmt: skip
    settings = Settings(
        database_url=database_url,
        triton_grpc_port=triton.grpc_port,
        triton_http_port=triton.http_port,
        model_repository=repo,
        rate_limit_per_minute=10_000,
        health_probe_interval_s=3600,
        port=port,
        **settings,
    )
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    stack.callback(thread.join, 30)
    stack.callback(setattr, server, "should_exit", True)
    while not server.started:
        time.sleep(0.1)
    return f"http://127.0.0.1:{port}"


def june_client(stack: ExitStack, url: str, key: str, document: str | None) -> httpx.Client:
    client = stack.enter_context(
        httpx.Client(base_url=url, headers={"authorization": f"Bearer {key}"}, timeout=120)
    )
    if document:
        client.post("/v1/documents", json={"title": "Office notes", "text": document})
    return client


def run_benchmark(
    cache_dir: Path,
    runtime_dir: Path,
    *,
    runs: int = 10,
    asr_model: str = "whisper-base",
    asr_precision: str = "int8-decoder",
    llm_threads: int = 0,
    hand_built: bool = True,
) -> list[TurnTimes]:

    from benchmarks.speech import piper_wav, to_16k
    from exporters.repository import PROFILE_DEFAULTS, build_repository

    wav = piper_wav(QUESTION)
    log.info("question: %.1f s of speech", len(to_16k(wav)) / 16000)
    pipeline = HandBuilt(cache_dir) if hand_built else None
    baseline = TurnTimes(BASELINE)
    with ExitStack() as stack:
        database_url, key = bench_database(stack, runtime_dir, "voice-turn")
        adaptive = PROFILE_DEFAULTS["cpu"]["asr_window_floor_s"]
        nice = PROFILE_DEFAULTS["cpu"]["llm_nice"]
        warm = PROFILE_DEFAULTS["cpu"]["llm_warm_system_prompt"]
        modes = (
            (FULL, "30", "fp32", "0", "0", False),
            (WHOLE, adaptive, asr_precision, nice, warm, False),
            (ADAPTIVE, adaptive, asr_precision, nice, warm, True),
        )
        clients: dict[str, httpx.Client] = {}
        for slot, (mode, floor, precision, llm_nice, warm_prompt, stream) in enumerate(modes):
            repo = build_repository(
                profile="cpu",
                out=runtime_dir / f"repo-{slot}",
                cache_dir=cache_dir,
                sources={"whisper": asr_model},
                options={"whisper": {"precision": precision}},
                overrides={
                    "llm_threads": str(llm_threads),
                    "asr_window_floor_s": floor,
                    "llm_nice": llm_nice,
                    "llm_warm_system_prompt": warm_prompt,
                },
            )
            url = start_june(
                stack, repo, runtime_dir, database_url, slot=slot, tts_stream_first_sentence=stream
            )
            # the user's document is stored once, in the database all stacks share
            clients[mode] = june_client(stack, url, key, DOCUMENT if slot == 0 else None)
        if pipeline:
            pipeline.turn(wav, TurnTimes("warm-up"))
        for client in clients.values():
            streamed_turn(client, wav, TurnTimes("warm-up"))
        # Round robin: run i of every mode back to back, so the machine's drift (a busy
        # neighbour, a slower minute) falls on every mode alike, not on one block of runs.
        times = {mode: TurnTimes(mode) for mode in clients}
        for i in range(runs):
            if pipeline:
                pipeline.turn(wav, baseline)
                log.info(
                    "hand-built, run %d: first audio %.2f s", i + 1, baseline.first_audio_s[-1]
                )
            for mode, client in clients.items():
                time.sleep(SETTLE_S)  # the stack before may still pre-fill its system prompt
                streamed_turn(client, wav, times[mode])
                log.info(
                    "%s, run %d: first audio %.2f s", mode, i + 1, times[mode].first_audio_s[-1]
                )
    return ([baseline] if pipeline else []) + list(times.values())


def markdown_tables(results: list[TurnTimes]) -> str:
    by_mode = {r.mode: r for r in results}
    lines = [
        "| mode | first audio byte (median) | vs hand-built | vs full window | last byte (median) |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in results:
        vs_base = f"{r.first / by_mode[BASELINE].first:.2f}x" if BASELINE in by_mode else "-"
        vs_full = f"{r.first / by_mode[FULL].first:.2f}x" if FULL in by_mode else "-"
        last = f"{r.last:.2f} s" if r.last is not None else "-"
        lines.append(f"| {r.mode} | {r.first:.2f} s | {vs_base} | {vs_full} | {last} |")
    june = [r for r in results if r.mode != BASELINE]
    lines += ["", "| stage (server side, median ms) | " + " | ".join(r.mode for r in june) + " |"]
    lines += ["|---|" + "---:|" * len(june)]
    for stage in STAGES:
        if any(stage in r.stages_ms for r in june):
            cells = [
                f"{statistics.median(r.stages_ms[stage]):.0f}" if stage in r.stages_ms else "-"
                for r in june
            ]
            lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    if BASELINE in by_mode:
        base = by_mode[BASELINE]
        lines += ["", "| hand-built stage | median ms |", "|---|---:|"]
        for stage, values in base.stages_ms.items():
            lines.append(f"| {stage} | {statistics.median(values):.0f} |")
    return "\n".join(lines)
