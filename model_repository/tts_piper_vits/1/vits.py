"""A Piper (VITS) voice on ONNX Runtime: phoneme ids of each sentence -> one waveform.

Each sentence runs on its own and is peak-normalised, as Piper does, then the sentences
are joined. Pure logic: unit-tested without a server.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnx_graph import cpu_session_options


class VitsVoice:
    def __init__(self, onnx_file: Path, *, intra_op_threads: int = 0) -> None:
        self.session = ort.InferenceSession(
            str(onnx_file),
            sess_options=cpu_session_options(intra_op_threads),
            providers=["CPUExecutionProvider"],
        )
        self.multi_speaker = "sid" in {i.name for i in self.session.get_inputs()}

    def __call__(
        self, ids: np.ndarray, lengths: np.ndarray, scales: np.ndarray, speaker: int
    ) -> np.ndarray:
        if int(lengths.sum()) != ids.size or (lengths <= 0).any():
            raise ValueError("SENTENCE_LENGTHS do not add up to PHONEME_IDS")
        pieces: list[np.ndarray] = []
        start = 0
        for length in lengths.tolist():
            row = ids[start : start + length][None]
            start += length
            feeds = {
                "input": row,
                "input_lengths": np.array([length], dtype=np.int64),
                "scales": scales.astype(np.float32),
            }
            if self.multi_speaker:
                feeds["sid"] = np.array([max(speaker, 0)], dtype=np.int64)
            audio = self.session.run(None, feeds)[0].reshape(-1)
            peak = float(np.abs(audio).max()) if audio.size else 0.0
            audio = audio / peak if peak > 1e-8 else np.zeros_like(audio)
            pieces.append(np.clip(audio, -1.0, 1.0).astype(np.float32))
        return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
