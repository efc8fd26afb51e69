"""ONNX Runtime on the CPU for June's Python-backend models: the session options they all
use, and an exported graph run as is (FastPitch or HiFi-GAN)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort


def cpu_session_options(intra_op_threads: int = 0) -> ort.SessionOptions:
    """Options for a model that runs in bursts beside others on the same cores.

    ONNX Runtime's worker threads spin for a while after each run, waiting for more work:
    about 40 ms of a core after every run, measured here. Each model is its own Triton stub
    process, and the voice turn runs them one after the other, so the spinning of the model
    that just finished took a core from the one that came next: the embedder's from the
    LLM's prefill (which runs nicer, so it got little of that core). Threads stop spinning
    when a run returns (``session.force_spinning_stop``); within a run they still spin
    between operators. ``intra_op_threads`` 0: every core.
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if intra_op_threads > 0:
        options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.force_spinning_stop", "1")
    return options


class OnnxGraph:
    def __init__(self, onnx_file: Path, *, intra_op_threads: int = 0) -> None:
        self.session = ort.InferenceSession(
            str(onnx_file),
            sess_options=cpu_session_options(intra_op_threads),
            providers=["CPUExecutionProvider"],
        )
        self.inputs = {i.name for i in self.session.get_inputs()}

    def __call__(self, outputs: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(outputs, {k: v for k, v in feeds.items() if k in self.inputs})
