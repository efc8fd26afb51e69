"""A Piper (VITS) voice on ONNX Runtime: phoneme ids of each sentence -> audio.

The voice comes as two graphs cut where its HiFi-GAN decoder begins (see
``exporters/piper.py``): ``front`` turns a sentence's phoneme ids into latent frames, one
per ``HOP`` samples, and ``decoder`` turns frames into audio. The decoder is convolutional:
decoded in chunks, each with ``CONTEXT`` frames of its neighbours on either side, the audio
equals the whole sentence decoded at once (to about 1e-6). So a sentence can go out as
``first_frames`` of audio (about 0.3 s) as soon as those are decoded, then the rest.

Loudness: Piper divides each sentence by its own peak, which a streamed sentence does not
know yet. Every sentence here, whole or streamed, is multiplied by the voice's one gain
(measured at export) and passed through a soft limiter, so sentences keep their relative
loudness and never clip. Pure logic: unit-tested without a server.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnx_graph import cpu_session_options

HOP = 256  # audio samples per latent frame
CONTEXT = 16  # frames of neighbours each decoded chunk sees on either side
KNEE = 0.9  # the limiter leaves samples below this alone


def limit(audio: np.ndarray, knee: float = KNEE) -> np.ndarray:
    """A soft limiter, sample by sample: the identity up to ``knee``, then a tanh curve that
    meets full scale only at infinity. Stateless, so chunk by chunk equals all at once."""
    out = audio.astype(np.float32, copy=True)
    over = np.abs(out) > knee
    if over.any():
        excess = (np.abs(out[over]) - knee) / (1.0 - knee)
        out[over] = np.sign(out[over]) * (knee + (1.0 - knee) * np.tanh(excess))
    return out


class VitsVoice:
    def __init__(
        self,
        front: Path,
        decoder: Path,
        *,
        gain: float,
        intra_op_threads: int = 0,
    ) -> None:
        if not gain > 0:
            raise ValueError(f"gain must be positive, got {gain}")
        options = cpu_session_options(intra_op_threads)
        cpu = ["CPUExecutionProvider"]
        self.front = ort.InferenceSession(str(front), sess_options=options, providers=cpu)
        self.decoder = ort.InferenceSession(str(decoder), sess_options=options, providers=cpu)
        self.multi_speaker = "sid" in {i.name for i in self.front.get_inputs()}
        self.latent_name = self.decoder.get_inputs()[0].name
        self.gain = gain

    def __call__(
        self, ids: np.ndarray, lengths: np.ndarray, scales: np.ndarray, speaker: int
    ) -> np.ndarray:
        """Every sentence, decoded whole, joined."""
        pieces = list(self.stream(ids, lengths, scales, speaker, first_frames=None))
        return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)

    def stream(
        self,
        ids: np.ndarray,
        lengths: np.ndarray,
        scales: np.ndarray,
        speaker: int,
        *,
        first_frames: int | None,
    ) -> Iterator[np.ndarray]:
        """The audio, sentence by sentence. With ``first_frames``, the first sentence's first
        ``first_frames`` frames come as a piece of their own before the rest is decoded."""
        if int(lengths.sum()) != ids.size or (lengths <= 0).any():
            raise ValueError("SENTENCE_LENGTHS do not add up to PHONEME_IDS")
        speaker_feed = (
            {"sid": np.array([max(speaker, 0)], dtype=np.int64)} if self.multi_speaker else {}
        )
        start = 0
        for n, length in enumerate(lengths.tolist()):
            row = ids[start : start + length][None]
            start += length
            latent = self.front.run(
                None,
                {
                    "input": row,
                    "input_lengths": np.array([length], dtype=np.int64),
                    "scales": scales.astype(np.float32),
                }
                | speaker_feed,
            )[0]
            frames = latent.shape[-1]
            cut = first_frames if n == 0 and first_frames else frames
            for begin, end in ((0, min(cut, frames)), (min(cut, frames), frames)):
                if end > begin:
                    yield self._decode(latent, begin, end, speaker_feed)

    def _decode(
        self, latent: np.ndarray, begin: int, end: int, speaker_feed: dict[str, np.ndarray]
    ) -> np.ndarray:
        """Audio of frames [begin, end), decoded with ``CONTEXT`` frames either side."""
        left = max(0, begin - CONTEXT)
        right = min(latent.shape[-1], end + CONTEXT)
        feeds = {self.latent_name: np.ascontiguousarray(latent[..., left:right])} | speaker_feed
        audio = self.decoder.run(None, feeds)[0].reshape(-1)
        audio = audio[(begin - left) * HOP : (end - left) * HOP]
        return limit(audio * self.gain)
