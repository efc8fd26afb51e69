"""LLM speed: Triton ``llm`` (ONNX Runtime GenAI, int4 and fp32) against llama.cpp and transformers.

Same machine, same run, same weights (SmolLM2-135M-Instruct: the GGUF for llama.cpp, the
same GGUF dequantised for the others), the same chat prompt of about 200 tokens, greedy,
128 new tokens. Reported per system (median of ``repeats`` runs after a warm-up):

- time to first token (TTFT), from sending the request to the first token;
- decode tokens/s, over the tokens after the first;
- peak RSS of the process(es) holding the model (Triton: server + Python-backend stubs).

llama.cpp (via llama-cpp-python, 2 threads) is the named baseline. In-process systems run
in their own subprocess so their peak RSS is their own. Run with ``june bench llm``.
"""

from __future__ import annotations

import json
import logging
import resource
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

log = logging.getLogger("june.bench.llm")

NEW_TOKENS = 128
CONTEXT = (
    "June is a voice assistant. It answers questions about the user's documents, keeps track "
    "of the conversation, and replies with speech. The user has uploaded notes about a trip to "
    "Lisbon: the flight leaves on Tuesday at seven in the morning, the hotel is near the river, "
    "and there is a dinner reservation on Wednesday at eight in a small restaurant in Alfama. "
    "The user also keeps a list of things to pack: a rain jacket, walking shoes, a power adapter "
    "and a book about the history of Portugal. They want to visit the tile museum, take the old "
    "tram up the hill, and see the tower at Belem before they fly home on Saturday afternoon. "
    "Their budget is modest, so they prefer public transport and small family restaurants, and "
    "they would like one quiet morning to read by the water. A friend recommended a bakery near "
    "the monastery that sells custard tarts, and a viewpoint where the sunset over the bridge "
    "is best seen on a clear evening. They do not speak Portuguese, but they know a few words. "
)
MESSAGES = [
    {"role": "system", "content": "You are June, a helpful assistant. " + CONTEXT},
    {"role": "user", "content": "Write a detailed day-by-day plan for the trip, with times."},
]


@dataclass(frozen=True)
class LlmResult:
    system: str
    ttft_s: float
    decode_tps: float
    peak_rss_mb: float
    prompt_tokens: int


def _timings(arrivals: list[float]) -> tuple[float, float]:
    ttft = arrivals[0]
    decode = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0]) if len(arrivals) > 1 else 0.0
    return ttft, decode


def _median(runs: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


# --- systems that run in a subprocess ------------------------------------------------------
def rendered_prompt(messages: list[dict[str, str]] | None = None) -> str:
    """The chat rendered by the checkpoint's own template, exactly as the server renders it."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    from exporters.llm import export_llm
    from orchestrator.config import get_settings

    export = export_llm(
        "smollm2-135m-instruct", cache_dir=get_settings().cache_dir, precision="int4"
    )
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    template = env.from_string((export / "chat_template.jinja").read_text())
    return template.render(messages=messages or MESSAGES, add_generation_prompt=True)


def run_llama_cpp(gguf: Path, repeats: int, threads: int) -> dict:
    from llama_cpp import Llama

    llm = Llama(model_path=str(gguf), n_ctx=2048, n_threads=threads, verbose=False)
    # The same prompt string as the server renders (llama-cpp-python's own chat handler for
    # this GGUF would drop the system message).
    prompt = llm.tokenize(rendered_prompt().encode(), add_bos=False, special=True)
    runs = []
    for i in range(repeats + 1):
        llm.reset()  # drop the cached prompt: every run pays its own prefill, as the others do
        arrivals, start = [], time.perf_counter()
        for chunk in llm.create_completion(
            prompt, max_tokens=NEW_TOKENS, temperature=0.0, stream=True
        ):
            if chunk["choices"][0]["text"]:
                arrivals.append(time.perf_counter() - start)
        if i:
            runs.append(_timings(arrivals))
    ttft, tps = _median(runs)
    return {"ttft_s": ttft, "decode_tps": tps, "prompt_tokens": len(prompt)}


def run_transformers(hf_dir: Path, repeats: int, threads: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, TextIteratorStreamer

    torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    ids = tokenizer.apply_chat_template(
        MESSAGES, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )["input_ids"]
    runs = []
    for i in range(repeats + 1):
        streamer = TextIteratorStreamer(tokenizer, skip_prompt=True)
        arrivals, start = [], time.perf_counter()
        worker = threading.Thread(
            target=model.generate,
            kwargs={
                "input_ids": ids,
                "max_new_tokens": NEW_TOKENS,
                "do_sample": False,
                "streamer": streamer,
                "pad_token_id": tokenizer.eos_token_id,
            },
        )
        worker.start()
        for piece in streamer:
            if piece:
                arrivals.append(time.perf_counter() - start)
        worker.join()
        if i:
            runs.append(_timings(arrivals))
    ttft, tps = _median(runs)
    return {"ttft_s": ttft, "decode_tps": tps, "prompt_tokens": int(ids.shape[1])}


def _subprocess(system: str, source: Path, repeats: int, threads: int) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.llm", system, str(source), str(repeats), str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"{system} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- Triton ---------------------------------------------------------------------------------
def _tree_rss(pid: int) -> float:
    try:
        root = psutil.Process(pid)
        return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])
    except psutil.Error:
        return 0.0


def run_triton(repo: Path, runtime_dir: Path, repeats: int) -> dict:
    from benchmarks.llm_client import stream_chat
    from orchestrator.triton.launcher import TritonServer

    server = TritonServer(
        repo, runtime_dir=runtime_dir, http_port=28200, grpc_port=28201, metrics_port=28202
    )
    server.start(timeout_s=180)
    peak, stop = [0.0], threading.Event()

    def sample() -> None:
        while not stop.wait(0.05):
            peak[0] = max(peak[0], _tree_rss(server.pid or 0))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        runs, prompt_tokens = [], 0
        for i in range(repeats + 1):
            out = stream_chat(server.grpc_url, MESSAGES, max_tokens=NEW_TOKENS)
            if out.error:
                raise RuntimeError(out.error)
            prompt_tokens = out.prompt_tokens
            if i:
                runs.append(_timings(out.arrivals))
    finally:
        stop.set()
        sampler.join()
        server.stop()
    ttft, tps = _median(runs)
    return {
        "ttft_s": ttft,
        "decode_tps": tps,
        "prompt_tokens": prompt_tokens,
        "peak_rss_mb": peak[0] / 2**20,
    }


def run_benchmark(
    cache_dir: Path, runtime_dir: Path, *, repeats: int = 3, threads: int = 2
) -> list[LlmResult]:
    from exporters.llm import import_gguf, resolve_source
    from exporters.repository import MODELS, build_repository

    llm_only = tuple(m for m in MODELS if m.name == "llm")
    gguf, _ = resolve_source("smollm2-135m-instruct")
    results = []
    stats = _subprocess("llama_cpp", gguf, repeats, threads)
    results.append(
        LlmResult(
            "llama.cpp Q4_1 GGUF (baseline)",
            stats["ttft_s"],
            stats["decode_tps"],
            stats["peak_rss_mb"],
            stats["prompt_tokens"],
        )
    )
    for precision in ("int4", "fp32"):
        repo = build_repository(
            profile="cpu", out=runtime_dir / f"repo-{precision}", cache_dir=cache_dir, models=llm_only,
            sources={"llm": "smollm2-135m-instruct"}, options={"llm": {"precision": precision}},
            overrides={"llm_threads": str(threads)},  # the same threads as the baseline
        )  # fmt: skip
        stats = run_triton(repo, runtime_dir / "triton", repeats)
        results.append(
            LlmResult(
                f"Triton llm, ONNX Runtime GenAI {precision}",
                stats["ttft_s"],
                stats["decode_tps"],
                stats["peak_rss_mb"],
                stats["prompt_tokens"],
            )
        )
    hf_dir = import_gguf(gguf, runtime_dir / "hf")
    stats = _subprocess("transformers", hf_dir, repeats, threads)
    results.append(
        LlmResult(
            "transformers fp32",
            stats["ttft_s"],
            stats["decode_tps"],
            stats["peak_rss_mb"],
            stats["prompt_tokens"],
        )
    )
    return results


def markdown_table(results: list[LlmResult]) -> str:
    base = results[0].decode_tps
    lines = [
        "| system | prompt tokens | TTFT (s) | decode tokens/s | vs baseline | peak RSS (MB) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.system} | {r.prompt_tokens} | {r.ttft_s:.3f} | {r.decode_tps:.1f} | "
            f"{r.decode_tps / base:.2f}x | {r.peak_rss_mb:.0f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":  # a system measured in its own process: print one JSON line
    system, source, repeats, threads = (
        sys.argv[1],
        Path(sys.argv[2]),
        int(sys.argv[3]),
        int(sys.argv[4]),
    )
    runner = {"llama_cpp": run_llama_cpp, "transformers": run_transformers}[system]
    stats = runner(source, repeats, threads)
    stats["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    sys.stdout.write(json.dumps(stats) + "\n")
