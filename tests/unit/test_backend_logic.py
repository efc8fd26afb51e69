"""The python-backend logic, run without a Triton server."""

import numpy as np
import pytest

from tests.conftest import load_backend_module

common = load_backend_module("embed_tokenizer", "june_backend")


def test_string_parameters_and_errors():
    cfg = {
        "name": "m",
        "parameters": {"a": {"string_value": "7"}, "b": {"string_value": "x"}},
    }
    assert common.string_parameters(cfg) == {"a": "7", "b": "x"}
    assert common.int_parameter(cfg, "a", 1) == 7
    assert common.int_parameter(cfg, "missing", 3) == 3
    with pytest.raises(ValueError, match="not an integer"):
        common.int_parameter(cfg, "b", 1)
    with pytest.raises(ValueError, match="'missing' is not set"):
        common.require_parameter(cfg, "missing")


def test_decode_texts_never_raises_on_bad_utf8():
    raw = np.array([[b"caf\xc3\xa9"], [b"\xff\xfebad"], ["str"]], dtype=object)
    assert common.decode_texts(raw) == ["café", "\ufffd\ufffdbad", "str"]


def test_tokenizer_pads_within_request_and_truncates(embedder_export):
    tok_mod = load_backend_module("embed_tokenizer", "text_tokenizer")
    tok = tok_mod.BatchTokenizer(embedder_export / "tokenizer.json", max_seq_length=16)
    ids, mask = tok.encode(["hi", "a much longer sentence " * 10])
    assert ids.shape == mask.shape == (2, 16)
    assert ids.dtype == np.int64
    assert mask[0].sum() == 3  # [CLS] hi [SEP]
    assert mask[1].sum() == 16  # truncated to the limit
    assert ids[0, 3:].tolist() == [0] * 13


def test_ragged_batch_equals_one_by_one(embedder_export):
    tok = load_backend_module("embed_tokenizer", "text_tokenizer").BatchTokenizer(
        embedder_export / "tokenizer.json", max_seq_length=256
    )
    enc = load_backend_module("embed_encoder", "onnx_encoder").RaggedBatchEncoder(
        embedder_export / "model.onnx", intra_op_threads=1, micro_batch_rows=2
    )
    requests = [
        tok.encode(["short"]),
        tok.encode(["a much longer one here, with many more tokens than the rest", "two"]),
        tok.encode(["mid length text", "x", "another mid length one"]),
    ]
    together = enc.run(requests)  # sorted by length, 3 micro-batches of <= 2 rows
    alone = [
        np.concatenate([enc.run([(i[r : r + 1], m[r : r + 1])])[0] for r in range(len(i))])
        for i, m in requests
    ]
    assert [t.shape for t in together] == [(1, 384), (2, 384), (3, 384)]
    for t, a in zip(together, alone, strict=True):
        np.testing.assert_allclose(t, a, atol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(t, axis=1), 1.0, atol=1e-5)


def test_run_nicer_lowers_every_thread_of_the_process():
    """In a child process: threads started before and after both end up at the nice asked."""
    import subprocess
    import sys
    import textwrap

    from orchestrator.config import REPO_ROOT

    script = textwrap.dedent(
        """
        import os, sys, threading, time
        sys.path.insert(0, sys.argv[1])
        from june_backend import run_nicer
        stop = threading.Event()
        threading.Thread(target=stop.wait).start()  # before
        print(run_nicer(7))
        threading.Thread(target=stop.wait).start()  # after
        time.sleep(0.1)
        nices = {int(open(f"/proc/self/task/{t}/stat").read().rsplit(")", 1)[1].split()[16])
                 for t in os.listdir("/proc/self/task")}
        print(sorted(nices), len(os.listdir("/proc/self/task")))
        stop.set()
        """
    )
    common = str(REPO_ROOT / "model_repository" / "common")
    out = subprocess.run(
        [sys.executable, "-c", script, common], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["7", "[7] 3"]


def _idle_cpu_ms_after_run(options: object, tmp_path) -> float:
    """CPU time this process spends in the 100 ms after a 2-thread session's run returns."""
    import time

    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    weights = np.random.default_rng(0).standard_normal((256, 256)).astype(np.float32)
    nodes, last = [], "x"
    for i in range(8):
        nodes.append(helper.make_node("MatMul", [last, "w"], [f"y{i}"]))
        last = f"y{i}"
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [512, 256])],
        [helper.make_tensor_value_info(last, TensorProto.FLOAT, [512, 256])],
        [helper.make_tensor("w", TensorProto.FLOAT, [256, 256], weights.reshape(-1) / 16)],
    )
    path = tmp_path / "chain.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    x = np.ones((512, 256), np.float32)
    idle = []
    for _ in range(5):
        session.run(None, {"x": x})
        started = time.process_time()
        time.sleep(0.1)
        idle.append((time.process_time() - started) * 1000)
    return float(np.median(idle))


def test_sessions_stop_spinning_when_a_run_returns(tmp_path):
    """Each model is its own process, run one after the other in a turn: a session whose
    threads kept spinning after its run would take a core from the next model's run."""
    import onnxruntime as ort

    graph = load_backend_module("tts_acoustic", "onnx_graph")
    ours = _idle_cpu_ms_after_run(graph.cpu_session_options(2), tmp_path)
    plain = ort.SessionOptions()
    plain.intra_op_num_threads = 2
    default = _idle_cpu_ms_after_run(plain, tmp_path)
    assert ours < 10, f"{ours:.1f} ms of CPU in the 100 ms after a run (default: {default:.1f})"
