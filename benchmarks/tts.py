"""TTS speed: Triton ``tts_piper`` against piper-tts standalone, plus the FastPitch ensemble.

One run, one machine, the same 20 sentences (numbers, names, a question, a long one):

- (a) Triton ``tts_piper``: the default voice as June serves it (frontend + VITS on ONNX
  Runtime in the Python backend), called over gRPC; its first audio with the first
  sentence streamed (``tts_piper_stream``, as June speaks a reply) and, in a row of its
  own, synthesised whole;
- (b) piper-tts standalone with the same voice, in process: the named baseline;
- (c) Triton ``tts``: FastPitch + HiFi-GAN at the published sizes with random weights
  (no English weights are offline), for speed only.

RTF = synthesis time / audio time over all sentences (median of ``repeats`` passes). Time
to first audio is for a three-sentence reply, synthesised the way June speaks a reply:
split into sentences and sent as soon as the first sentence's audio (or its first streamed
piece) exists (for piper-tts, its own sentence-by-sentence generator). Each try starts a
second after the one before: the sentences a try leaves behind when it stops at its first
audio are still being synthesised on the server for a while, and would delay the next
try. Run with ``june bench tts``.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger("june.bench.tts")
SETTLE_S = 1.0
STREAM = "tts_piper_stream"


@dataclass(frozen=True)
class TtsResult:
    system: str
    rtf: float
    first_audio_s: float
    runs: list[float]


def _measure(
    name: str,
    synth: Callable[[str], tuple[np.ndarray, int]],
    first_audio: Callable[[str], float],
    sentences: list[str],
    reply: str,
    repeats: int,
) -> TtsResult:
    synth(sentences[0])  # warm-up
    rtfs = []
    for _ in range(repeats):
        spent = audio_s = 0.0
        for sentence in sentences:
            start = time.perf_counter()
            audio, rate = synth(sentence)
            spent += time.perf_counter() - start
            audio_s += len(audio) / rate
        rtfs.append(spent / audio_s)
    firsts = []
    for _ in range(max(repeats * 3, 5)):
        time.sleep(SETTLE_S)  # what the try before left running on the server is done
        firsts.append(first_audio(reply))
    result = TtsResult(name, statistics.median(rtfs), statistics.median(firsts), rtfs)
    log.info("%s: RTF %.3f, first audio %.3f s", name, result.rtf, result.first_audio_s)
    return result


def _piper_standalone() -> tuple[Callable, Callable]:
    from benchmarks.speech import _piper

    voice = _piper()

    def synth(text: str) -> tuple[np.ndarray, int]:
        chunks = list(voice.synthesize(text))
        return np.concatenate([c.audio_float_array for c in chunks]), chunks[0].sample_rate

    def first_audio(text: str) -> float:
        start = time.perf_counter()
        next(iter(voice.synthesize(text)))
        return time.perf_counter() - start

    return synth, first_audio


def _triton(url: str, model: str, stream_model: str | None) -> tuple[Callable, Callable]:
    import tritonclient.grpc as grpcclient

    from orchestrator.triton.client import TritonGateway
    from orchestrator.tts import speak

    client = grpcclient.InferenceServerClient(url)

    def synth(text: str) -> tuple[np.ndarray, int]:
        tensor = grpcclient.InferInput("TEXT", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([text.encode()], dtype=np.object_))
        result = client.infer(model, [tensor])
        return result.as_numpy("AUDIO"), int(result.as_numpy("SAMPLE_RATE")[0])

    async def first(text: str) -> float:
        gateway = TritonGateway(url)
        try:
            start = time.perf_counter()
            stream = speak(gateway, text, model=model, stream_model=stream_model)
            await anext(stream)
            elapsed = time.perf_counter() - start
            await stream.aclose()
            return elapsed
        finally:
            await gateway.close()

    def first_audio(text: str) -> float:
        return asyncio.run(first(text))

    return synth, first_audio


def run_benchmark(cache_dir: Path, runtime_dir: Path, *, repeats: int = 3) -> list[TtsResult]:
    from benchmarks.speech import THREE_SENTENCE_REPLY, TTS_SENTENCES
    from exporters.repository import FASTPITCH_MODELS, MODELS, build_repository
    from exporters.tts import random_checkpoints
    from orchestrator.triton.launcher import TritonServer

    results = [
        _measure(
            "piper-tts standalone (baseline)",
            *_piper_standalone(),
            TTS_SENTENCES,
            THREE_SENTENCE_REPLY,
            repeats,
        )
    ]
    acoustic, vocoder = random_checkpoints("real", cache_dir=cache_dir)
    piper_models = tuple(m for m in MODELS if m.name.startswith("tts_piper"))
    repo = build_repository(
        profile="cpu",
        out=runtime_dir / "repo",
        cache_dir=cache_dir,
        sources={"tts": str(acoustic)},
        options={"tts": {"vocoder": str(vocoder)}},
        models=piper_models + FASTPITCH_MODELS,
    )
    with TritonServer(
        repo, runtime_dir=runtime_dir / "triton", http_port=28200, grpc_port=28201,
        metrics_port=28202,
    ) as server:  # fmt: skip
        for name, model, stream_model in (
            ("Triton tts_piper (same voice), first sentence streamed", "tts_piper", STREAM),
            ("Triton tts_piper (same voice), first sentence whole", "tts_piper", None),
            ("Triton tts: FastPitch + HiFi-GAN, real size, random weights", "tts", None),
        ):
            results.append(
                _measure(
                    name,
                    *_triton(server.grpc_url, model, stream_model),
                    TTS_SENTENCES,
                    THREE_SENTENCE_REPLY,
                    repeats,
                )
            )
    return results


def markdown_table(results: list[TtsResult]) -> str:
    base = results[0].rtf
    lines = [
        "| system | median RTF | time vs baseline | first audio, 3-sentence reply |",
        "|---|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.system} | {r.rtf:.3f} | {r.rtf / base:.2f}x | {r.first_audio_s:.3f} s |"
        )
    return "\n".join(lines)
