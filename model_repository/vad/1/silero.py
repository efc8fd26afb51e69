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

SAMPLE_RATE = 16000
FRAME = 512
CONTEXT = 64
FRAME_S = FRAME / SAMPLE_RATE


class SileroVad:
    def __init__(self, model: Path, *, threads: int = 1) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, threads)
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        names = {i.name for i in self.session.get_inputs()}
        if names != {"input", "state", "sr"}:
            raise ValueError(f"{model} is not a Silero VAD v5 graph (inputs {sorted(names)})")

    def probabilities(self, clips: list[np.ndarray]) -> list[np.ndarray]:
        """16 kHz mono float32 clips -> each clip's speech probability per frame."""
        counts = [len(c) // FRAME for c in clips]
        steps = max(counts, default=0)
        if steps == 0:
            return [np.zeros(0, np.float32) for _ in clips]
        batch = np.zeros((len(clips), CONTEXT + steps * FRAME), np.float32)
        for row, clip in enumerate(clips):
            batch[row, CONTEXT : CONTEXT + counts[row] * FRAME] = clip[: counts[row] * FRAME]
        state = np.zeros((2, len(clips), 128), np.float32)
        rate = np.array(SAMPLE_RATE, dtype=np.int64)
        probs = np.zeros((len(clips), steps), np.float32)
        for step in range(steps):
            window = batch[:, step * FRAME : step * FRAME + CONTEXT + FRAME]
            out, state = self.session.run(None, {"input": window, "state": state, "sr": rate})
            probs[:, step] = out[:, 0]
        return [probs[row, : counts[row]] for row in range(len(clips))]


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
