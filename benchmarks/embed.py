"""Embedding throughput: the Triton ``embed`` ensemble against in-process baselines.

Measured in one run on one machine, on the same texts:

- baseline: sentence-transformers (PyTorch) in process, batches of 32;
- ONNX Runtime in process, batches of 32 (the same graph Triton serves, without Triton);
- Triton ``embed`` over gRPC, client batches of 32 (what the orchestrator sends on ingest);

Batches are length-sorted everywhere, as sentence-transformers and the orchestrator do.
- Triton ``embed`` over gRPC, one text per request from 4 concurrent clients (the
  dynamic batcher's job).

Each system runs ``repeats`` times after one warm-up pass; the table gives the median
texts/s and its ratio to the baseline. Run with ``june bench embed`` (it starts its own
Triton on loopback, on the built repository).
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger("june.bench.embed")

SUBJECTS = ["The pharmacy", "Our team", "The quarterly report", "My sister", "The router"]
VERBS = ["opens", "closes", "changes", "moves", "arrives"]
TAILS = [
    "at nine on Sundays.",
    "after the meeting with the new supplier from Lisbon.",
    "when the blue lights keep blinking and nobody knows why, which happens every week.",
    "next Tuesday.",
]


def make_texts(n: int) -> list[str]:
    combos = [f"{s} {v} {t}" for s in SUBJECTS for v in VERBS for t in TAILS]
    return [f"{combos[i % len(combos)]} ({i})" for i in range(n)]


@dataclass(frozen=True)
class Result:
    system: str
    texts_per_s: float
    runs: list[float]


def measure(name: str, run: Callable[[list[str]], None], texts: list[str], repeats: int) -> Result:
    run(texts[:32])  # warm-up
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(texts)
        rates.append(len(texts) / (time.perf_counter() - start))
    log.info("%s: median %.1f texts/s", name, statistics.median(rates))
    return Result(name, statistics.median(rates), rates)


def batched(texts: list[str], size: int = 32) -> list[list[str]]:
    """Length-sorted batches, as sentence-transformers and the orchestrator make them."""
    ordered = sorted(texts, key=len)
    return [ordered[i : i + size] for i in range(0, len(ordered), size)]


def run_benchmark(
    repository: Path, runtime_dir: Path, *, n_texts: int = 256, repeats: int = 5, threads: int = 2
) -> list[Result]:
    import onnxruntime as ort
    import torch
    import tritonclient.grpc as grpcclient
    from sentence_transformers import SentenceTransformer
    from tokenizers import Tokenizer

    from exporters.embedder import resolve_source
    from orchestrator.triton.launcher import TritonServer

    torch.set_num_threads(threads)
    texts = make_texts(n_texts)
    results: list[Result] = []

    st = SentenceTransformer(str(resolve_source(None)), device="cpu")
    results.append(
        measure(
            "sentence-transformers, in process (baseline)",
            lambda ts: st.encode(ts, batch_size=32, normalize_embeddings=True),
            texts,
            repeats,
        )
    )

    version_dir = repository / "embed_encoder" / "1"
    tok = Tokenizer.from_file(str(repository / "embed_tokenizer" / "1" / "tokenizer.json"))
    tok.enable_padding()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(version_dir / "model.onnx"), sess_options=options)

    def ort_run(ts: list[str]) -> None:
        for batch in batched(ts):
            enc = tok.encode_batch(batch)
            session.run(
                None,
                {
                    "input_ids": np.array([e.ids for e in enc], dtype=np.int64),
                    "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
                },
            )

    results.append(measure("ONNX Runtime, in process", ort_run, texts, repeats))

    server = TritonServer(
        repository, runtime_dir=runtime_dir, http_port=28000, grpc_port=28001, metrics_port=28002
    )
    with server:
        clients = [grpcclient.InferenceServerClient(server.grpc_url) for _ in range(4)]

        def infer(client: grpcclient.InferenceServerClient, batch: list[str]) -> None:
            data = np.array([[t.encode()] for t in batch], dtype=np.object_)
            tensor = grpcclient.InferInput("TEXT", list(data.shape), "BYTES")
            tensor.set_data_from_numpy(data)
            client.infer("embed", [tensor])

        def triton_batched(ts: list[str]) -> None:
            for batch in batched(ts):
                infer(clients[0], batch)

        def triton_concurrent(ts: list[str]) -> None:
            def worker(k: int) -> None:
                for t in ts[k::4]:
                    infer(clients[k], [t])

            with ThreadPoolExecutor(4) as pool:
                list(pool.map(worker, range(4)))

        results.append(measure("Triton embed, gRPC, batch 32", triton_batched, texts, repeats))
        results.append(
            measure(
                "Triton embed, gRPC, 1 text/request x 4 clients", triton_concurrent, texts, repeats
            )
        )
        for c in clients:
            c.close()
    return results


def markdown_table(results: list[Result]) -> str:
    base = results[0].texts_per_s
    lines = [
        "| system | median texts/s | vs baseline |",
        "|---|---:|---:|",
    ]
    for r in results:
        lines.append(f"| {r.system} | {r.texts_per_s:.1f} | {r.texts_per_s / base:.2f}x |")
    return "\n".join(lines)
