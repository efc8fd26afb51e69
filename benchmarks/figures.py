"""The serving figures of a running model repository, any profile: what
``benchmarks/gpu_check.sh`` prints for the gpu profile, against the cpu profile measured on
the same machine in the same run.

Each figure is a median over ``runs``, taken through the orchestrator's own Triton
gateway:

- ASR real-time factor: Piper (served ``tts_piper``) speaks three sentences, and ``asr``
  transcribes them; transcription time over audio length.
- LLM: time to the first token, and the decode rate after it, over a 128-token reply.
- TTS first byte: time until ``tts_piper`` returns one sentence's audio.
- Voice-turn server time: transcription, then the LLM until its first sentence, then that
  sentence's audio, in sequence as a turn runs them (no retrieval, no network).
"""

from __future__ import annotations

import asyncio
import io
import json
import platform
import statistics
import time
import wave
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from orchestrator.audio import SAMPLE_RATE, decode_audio
from orchestrator.chat import Sampling
from orchestrator.triton.client import Speech, TritonGateway
from orchestrator.tts import split_sentences

SENTENCES = [
    "The support desk opens at half past eight on weekdays.",
    "Visitors park in the north lot, on the second level.",
    "Please bring your badge and sign in at reception.",
]
QUESTION = "Tell me about the history of Paris in a few sentences."
GREEDY = Sampling(temperature=0.0, repetition_penalty=1.0)


@dataclass
class Figures:
    label: str
    machine: str
    asr_rtf: float
    llm_first_token_s: float
    llm_tokens_per_s: float
    tts_first_byte_s: float
    voice_turn_s: float
    transcript: str

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: Path) -> Figures:
        return cls(**json.loads(path.read_text()))


def to_16k(speech: Speech) -> np.ndarray:
    """Piper's audio at 16 kHz mono, resampled as an upload would be."""
    pcm = (np.clip(speech.audio, -1, 1) * 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(speech.sample_rate)
        out.writeframes(pcm.tobytes())
    return decode_audio(buffer.getvalue(), max_seconds=600, sample_rate=SAMPLE_RATE)


async def _measure(url: str, label: str, runs: int, tts_model: str) -> Figures:
    gateway = TritonGateway(url)
    try:
        speech = await gateway.synthesize(" ".join(SENTENCES), model=tts_model)
        audio = to_16k(speech)
        seconds = len(audio) / SAMPLE_RATE
        transcript = (await gateway.transcribe(audio)).text  # warm-up, and kept

        asr, first_tokens, rates, first_bytes, turns = [], [], [], [], []
        for _ in range(runs):
            start = time.perf_counter()
            await gateway.transcribe(audio)
            asr.append((time.perf_counter() - start) / seconds)

            start = time.perf_counter()
            first = None
            tokens = 0
            async for chunk in gateway.chat_stream(
                [{"role": "user", "content": QUESTION}], max_tokens=128, sampling=GREEDY
            ):
                if chunk.delta and first is None:
                    first = time.perf_counter()
                if chunk.finish_reason:
                    tokens = chunk.completion_tokens
            end = time.perf_counter()
            assert first is not None, "the LLM sent no text"
            first_tokens.append(first - start)
            rates.append((tokens - 1) / max(end - first, 1e-9))

            start = time.perf_counter()
            await gateway.synthesize(SENTENCES[0], model=tts_model)
            first_bytes.append(time.perf_counter() - start)

            turns.append(await _turn(gateway, audio, tts_model))
        return Figures(
            label=label,
            machine=f"{platform.node()} ({platform.processor() or platform.machine()})",
            asr_rtf=statistics.median(asr),
            llm_first_token_s=statistics.median(first_tokens),
            llm_tokens_per_s=statistics.median(rates),
            tts_first_byte_s=statistics.median(first_bytes),
            voice_turn_s=statistics.median(turns),
            transcript=transcript,
        )
    finally:
        await gateway.close()


async def _turn(gateway: TritonGateway, audio: np.ndarray, tts_model: str) -> float:
    start = time.perf_counter()
    heard = (await gateway.transcribe(audio)).text
    reply = ""
    stream = gateway.chat_stream(
        [{"role": "user", "content": heard or QUESTION}], max_tokens=64, sampling=GREEDY
    )
    try:
        async for chunk in stream:
            reply += chunk.delta
            if len(split_sentences(reply)) > 1 or chunk.finish_reason:
                break
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
    first_sentence = (split_sentences(reply) or [reply or "Hello."])[0]
    await gateway.synthesize(first_sentence, model=tts_model)
    return time.perf_counter() - start


def measure(url: str, *, label: str, runs: int = 5, tts_model: str = "tts_piper") -> Figures:
    return asyncio.run(_measure(url, label, runs, tts_model))


ROWS = (
    ("ASR real-time factor", "asr_rtf", "{:.3f}", False),
    ("LLM first token, s", "llm_first_token_s", "{:.3f}", False),
    ("LLM decode, tokens/s", "llm_tokens_per_s", "{:.1f}", True),
    ("TTS first byte, s", "tts_first_byte_s", "{:.3f}", False),
    ("voice turn (server), s", "voice_turn_s", "{:.3f}", False),
)


def rows(figures: Figures, baseline: Figures | None) -> list[list[str]]:
    """Each figure, and (with a baseline) how many times better it is than the baseline's."""
    out = []
    for title, name, fmt, higher_is_better in ROWS:
        value = getattr(figures, name)
        row = [title, fmt.format(value)]
        if baseline is not None:
            base = getattr(baseline, name)
            row.append(fmt.format(base))
            ratio = value / base if higher_is_better else base / value
            row.append(f"{ratio:.2f}x")
        out.append(row)
    return out


def markdown(figures: Figures, baseline: Figures | None) -> str:
    head = ["figure (median)", figures.label]
    if baseline is not None:
        head += [f"{baseline.label} (baseline)", "better by"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows(figures, baseline)]
    return "\n".join(lines) + f"\n\nMachine: {figures.machine}."
