"""The embedder's encoder on ONNX Runtime, batching ragged requests into one run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort


class RaggedBatchEncoder:
    """Runs many requests of different sequence lengths as one padded ONNX Runtime call."""

    def __init__(self, onnx_file: Path, *, intra_op_threads: int = 0) -> None:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if intra_op_threads > 0:
            options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            str(onnx_file), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_name = self.session.get_outputs()[0].name

    def run(self, batches: list[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
        """``[(input_ids, attention_mask), ...]`` per request -> one embedding array each."""
        sizes = [ids.shape[0] for ids, _ in batches]
        total = sum(sizes)
        if total == 0:
            return [np.zeros((0, self.dim), np.float32) for _ in batches]
        longest = max(max(ids.shape[1] for ids, _ in batches), 1)
        ids = np.zeros((total, longest), dtype=np.int64)
        mask = np.zeros((total, longest), dtype=np.int64)
        row = 0
        for b_ids, b_mask in batches:
            n, length = b_ids.shape
            ids[row : row + n, :length] = b_ids
            mask[row : row + n, :length] = b_mask
            row += n
        out = self.session.run(
            [self.output_name], dict(zip(self.input_names, (ids, mask), strict=True))
        )[0]
        return np.split(out.astype(np.float32, copy=False), np.cumsum(sizes)[:-1])

    @property
    def dim(self) -> int:
        return int(self.session.get_outputs()[0].shape[-1])
