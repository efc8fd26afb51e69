"""The embedder's encoder on ONNX Runtime, batching ragged requests efficiently.

Rows from every request in Triton's batch are sorted by token length and run in
micro-batches, each padded only to its own longest row. Padding is wasted compute:
one long text no longer makes every short text in the batch pay for its length.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnx_graph import cpu_session_options


class RaggedBatchEncoder:
    """Runs many requests of different sequence lengths as few, tightly padded ORT calls."""

    def __init__(
        self, onnx_file: Path, *, intra_op_threads: int = 0, micro_batch_rows: int = 32
    ) -> None:
        self.session = ort.InferenceSession(
            str(onnx_file),
            sess_options=cpu_session_options(intra_op_threads),
            providers=["CPUExecutionProvider"],
        )
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_name = self.session.get_outputs()[0].name
        self.dim = int(self.session.get_outputs()[0].shape[-1])
        self.micro_batch_rows = max(1, micro_batch_rows)

    def run(self, batches: list[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
        """``[(input_ids, attention_mask), ...]`` per request -> one embedding array each."""
        rows: list[np.ndarray] = []
        for ids, mask in batches:
            lengths = mask.sum(axis=1) if mask.size else np.zeros(len(ids), dtype=np.int64)
            rows.extend(ids[r, : max(int(lengths[r]), 1)] for r in range(ids.shape[0]))
        out = np.zeros((len(rows), self.dim), dtype=np.float32)
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
        for start in range(0, len(order), self.micro_batch_rows):
            chosen = order[start : start + self.micro_batch_rows]
            longest = max(len(rows[i]) for i in chosen)
            ids = np.zeros((len(chosen), longest), dtype=np.int64)
            mask = np.zeros((len(chosen), longest), dtype=np.int64)
            for k, i in enumerate(chosen):
                ids[k, : len(rows[i])] = rows[i]
                mask[k, : len(rows[i])] = 1
            feeds = dict(zip(self.input_names, (ids, mask), strict=True))
            out[chosen] = self.session.run([self.output_name], feeds)[0]
        sizes = [ids.shape[0] for ids, _ in batches]
        return np.split(out, np.cumsum(sizes)[:-1])
