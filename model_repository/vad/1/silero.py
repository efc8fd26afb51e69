"""Silero VAD on ONNX Runtime: speech probabilities per 32 ms frame, then speech segments.

The model is Silero VAD v5 (the ``silero-vad`` package's ``silero_vad.onnx``): a small
recurrent network stepped over 512-sample frames at 16 kHz, each fed with the 64 samples
before it as context and the recurrent state of the step before. All clips of a batch
step together (shorter ones are padded; their tail is ignored).

Segments follow Silero's own rule, with hysteresis: speech starts at a frame whose
probability reaches ``threshold``, and ends once it has stayed under ``threshold - 0.15``
for ``min_silence_s``; segments shorter than ``min_speech_s`` are dropped; each is padded
by ``pad_s`` on both sides (so a trimmed clip keeps its first and last phonemes).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnx_graph import cpu_session_options

SAMPLE_RATE = 16000
FRAME = 512
CONTEXT = 64
FRAME_S = FRAME / SAMPLE_RATE
RECURRENT = 2 * 128
STATE_SIZE = RECURRENT + CONTEXT  # a stream's state: recurrent state, then context


class SileroVad:
    def __init__(self, model: Path, *, threads: int = 1) -> None:
        options = cpu_session_options(max(1, threads))
        self.session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        names = {i.name for i in self.session.get_inputs()}
        if names != {"input", "state", "sr"}:
            raise ValueError(f"{model} is not a Silero VAD v5 graph (inputs {sorted(names)})")

    def probabilities(self, clips: list[np.ndarray]) -> list[np.ndarray]:
        """16 kHz mono float32 clips -> each clip's speech probability per frame."""
        probs, _ = self.step(clips, np.zeros((len(clips), STATE_SIZE), np.float32))
        return probs

    def step(
        self, clips: list[np.ndarray], states: np.ndarray
    ) -> tuple[list[np.ndarray], np.ndarray]:
        """Carry each stream on from its ``states`` row through the whole frames of its clip.

        A state row is the recurrent state (2 x 128) then the last 64 samples heard, so a
        stream sent in pieces of whole frames gets the probabilities it would get whole.
        A zero row starts a stream. Returns the probabilities and the rows after the clips
        (a clip shorter than a frame leaves its row as it was).
        """
        counts = [len(c) // FRAME for c in clips]
        steps = max(counts, default=0)
        states = np.asarray(states, np.float32).reshape(len(clips), STATE_SIZE)
        if steps == 0:
            return [np.zeros(0, np.float32) for _ in clips], states.copy()
        batch = np.zeros((len(clips), CONTEXT + steps * FRAME), np.float32)
        batch[:, :CONTEXT] = states[:, RECURRENT:]
        for row, clip in enumerate(clips):
            batch[row, CONTEXT : CONTEXT + counts[row] * FRAME] = clip[: counts[row] * FRAME]
        state = np.ascontiguousarray(
            states[:, :RECURRENT].reshape(len(clips), 2, 128).swapaxes(0, 1)
        )
        rate = np.array(SAMPLE_RATE, dtype=np.int64)
        probs = np.zeros((len(clips), steps), np.float32)
        out_states = states.copy()
        for step in range(steps):
            window = batch[:, step * FRAME : step * FRAME + CONTEXT + FRAME]
            out, state = self.session.run(None, {"input": window, "state": state, "sr": rate})
            probs[:, step] = out[:, 0]
            for row in np.flatnonzero(np.array(counts) == step + 1):  # this clip ends here
                out_states[row, :RECURRENT] = state[:, row].reshape(-1)
                end = CONTEXT + (step + 1) * FRAME
                out_states[row, RECURRENT:] = batch[row, end - CONTEXT : end]
        return [probs[row, : counts[row]] for row in range(len(clips))], out_states


def speech_segments(
    probs: np.ndarray,
    *,
    threshold: float = 0.5,
    min_speech_s: float = 0.25,
    min_silence_s: float = 0.1,
    pad_s: float = 0.1,
    duration_s: float | None = None,
) -> list[tuple[float, float]]:
    """Frame probabilities -> ``[(start_s, end_s), ...]``, padded, merged where they touch."""
    off = threshold - 0.15
    quiet_frames = max(1, round(min_silence_s / FRAME_S))
    raw: list[tuple[int, int]] = []
    start: int | None = None
    quiet = 0
    for i, p in enumerate(probs):
        if start is None:
            if p >= threshold:
                start, quiet = i, 0
        elif p < off:
            quiet += 1
            if quiet >= quiet_frames:
                raw.append((start, i - quiet + 1))
                start = None
        else:
            quiet = 0
    if start is not None:
        raw.append((start, len(probs)))
    end_s = duration_s if duration_s is not None else len(probs) * FRAME_S
    segments: list[tuple[float, float]] = []
    for a, b in raw:
        if (b - a) * FRAME_S < min_speech_s:
            continue
        lo, hi = max(0.0, a * FRAME_S - pad_s), min(end_s, b * FRAME_S + pad_s)
        if segments and lo <= segments[-1][1]:
            segments[-1] = (segments[-1][0], hi)
        else:
            segments.append((lo, hi))
    return segments
