"""``june bench perf <model>``: Triton's perf_analyzer against the running server.

Uses the ``perf_analyzer`` binary shipped in the ``tritonclient==2.50.0`` wheel (installed
into the venv's ``bin/``). It needs ``libcudart.so.12`` (from ``nvidia-cuda-runtime-cu12``)
and Debian's ``libb64-0d`` even on CPU. Input data is real: sentences for ``embed``. Each
concurrency level is one perf_analyzer run; the CSVs are merged under
``benchmarks/results/`` and a table of throughput and latency is printed.
"""

from __future__ import annotations

import csv
import ctypes.util
import importlib.util
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

log = logging.getLogger("june.bench")
RESULTS = Path(__file__).resolve().parent / "results"

perf_app = typer.Typer(
    help="Benchmarks: perf_analyzer and same-run baselines.", no_args_is_help=True
)

SENTENCES = [
    "What time does the pharmacy on Main Street open on Sundays?",
    "Remind me to call my sister after the meeting.",
    "The quarterly report shows revenue grew by twelve percent.",
    "How do I reset the router if the lights keep blinking orange?",
    "Our team offsite is planned for the second week of March in Lisbon.",
    "Please summarise the attached contract in three sentences.",
    "Is it going to rain tomorrow afternoon?",
    "The recipe needs two cups of flour, one egg and a pinch of salt.",
]


class PerfError(RuntimeError):
    pass


# june bench load's fault drills (benchmarks/load.py; named here so --help needs no import)
DRILL_NAMES = ("kill-llm-stub", "kill-asr-stub", "kill-triton", "restart-db", "drop-clients")


def _embed_data() -> dict:
    return {"data": [{"TEXT": {"content": [s], "shape": [1]}} for s in SENTENCES]}


def _asr_data() -> dict:
    """Four real spoken sentences (Piper voice), 16 kHz float32."""
    from benchmarks.speech import PIPER_SENTENCES, piper_wav, to_16k

    clips = [to_16k(piper_wav(text)) for text in PIPER_SENTENCES[:4]]
    return {
        "data": [
            {"AUDIO": {"content": [round(float(x), 6) for x in clip], "shape": [len(clip)]}}
            for clip in clips
        ]
    }


def _llm_data() -> dict:
    """Real chat requests (decoupled model: perf_analyzer runs with --streaming)."""
    questions = [
        "What is the capital of France?",
        "Give me three tips for a good night's sleep.",
        "Summarise the plot of Romeo and Juliet in two sentences.",
        "What should I pack for a rainy weekend in Lisbon?",
    ]
    return {
        "data": [
            {
                "MESSAGES": {
                    "content": [json.dumps([{"role": "user", "content": q}])],
                    "shape": [1],
                },
                "MAX_TOKENS": {"content": [64], "shape": [1]},
            }
            for q in questions
        ]
    }


def _tts_data() -> dict:
    """Reply-sized sentences, as the orchestrator sends them (one sentence per request)."""
    from benchmarks.speech import TTS_SENTENCES

    return {"data": [{"TEXT": {"content": [s], "shape": [1]}} for s in TTS_SENTENCES[:6]]}


# Model name -> builder of perf_analyzer's --input-data JSON (real inputs, not random bytes).
INPUT_DATA: dict[str, Callable[[], dict]] = {
    "embed": _embed_data,
    "asr": _asr_data,
    "llm": _llm_data,
    "tts": _tts_data,
    "tts_piper": _tts_data,
}
# Decoupled (streaming) models: perf_analyzer needs --streaming for them.
STREAMING = {"llm"}


def find_perf_analyzer() -> Path:
    candidate = Path(sys.executable).parent / "perf_analyzer"
    found = candidate if candidate.is_file() else shutil.which("perf_analyzer")
    if not found:
        raise PerfError("perf_analyzer not found: pip install tritonclient[grpc]==2.50.0")
    return Path(found)


def perf_environment() -> dict[str, str]:
    env = dict(os.environ)
    libs = []
    spec = importlib.util.find_spec("nvidia.cuda_runtime")
    if spec and spec.submodule_search_locations:
        libs.append(str(Path(next(iter(spec.submodule_search_locations))) / "lib"))
    if env.get("LD_LIBRARY_PATH"):
        libs.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(libs)
    return env


def check_runtime_libraries() -> None:
    if ctypes.util.find_library("b64") is None:
        raise PerfError("perf_analyzer needs Debian's libb64-0d: apt-get install libb64-0d")


def perf_command(
    binary: Path,
    *,
    model: str,
    url: str,
    concurrency: int,
    input_data: Path,
    csv_path: Path,
    measurement_ms: int,
    streaming: bool = False,
) -> list[str]:
    cmd = [
        str(binary),
        "-m", model,
        "-u", url,
        "-i", "grpc",
        "--concurrency-range", f"{concurrency}:{concurrency}",
        "--input-data", str(input_data),
        "--measurement-interval", str(measurement_ms),
        "--max-trials", "10" if streaming else "6",
        # Streamed LLM requests vary in length; a tighter bound never settles on 2 cores.
        "--stability-percentage", "60" if streaming else "25",
        "-f", str(csv_path),
    ]  # fmt: skip
    if streaming:
        cmd.append("--streaming")
    return cmd


def parse_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def run_perf(
    model: str,
    *,
    url: str,
    concurrency: list[int],
    measurement_ms: int = 3000,
    results_dir: Path = RESULTS,
    timeout_s: float = 300.0,
) -> tuple[Path, list[dict[str, str]]]:
    """Run perf_analyzer once per concurrency level; returns the merged CSV and its rows."""
    if model not in INPUT_DATA:
        raise PerfError(f"no input data for model {model!r}; known: {', '.join(INPUT_DATA)}")
    if not concurrency or any(c < 1 or c > 64 for c in concurrency):
        raise PerfError("concurrency levels must be between 1 and 64")
    binary = find_perf_analyzer()
    check_runtime_libraries()
    results_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    work = results_dir / f".perf-{model}-{stamp}"
    work.mkdir()
    data = work / "input.json"
    data.write_text(json.dumps(INPUT_DATA[model]()))
    rows: list[dict[str, str]] = []
    try:
        for level in concurrency:
            csv_path = work / f"c{level}.csv"
            cmd = perf_command(
                binary, model=model, url=url, concurrency=level, input_data=data,
                csv_path=csv_path, measurement_ms=measurement_ms, streaming=model in STREAMING,
            )  # fmt: skip
            log.info("perf_analyzer %s at concurrency %d", model, level)
            proc = subprocess.run(
                cmd, env=perf_environment(), capture_output=True, text=True, timeout=timeout_s
            )
            if proc.returncode != 0 or not csv_path.is_file():
                lines = (proc.stderr or proc.stdout).strip().splitlines()
                reason = lines[-1] if lines else f"exit code {proc.returncode}"
                raise PerfError(f"perf_analyzer failed at concurrency {level}: {reason}")
            rows.extend(parse_csv(csv_path))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out = results_dir / f"perf_{model}_{stamp}.csv"
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        writer.writeheader()
        writer.writerows(rows)
    return out, rows


def summary_table(model: str, rows: list[dict[str, str]]) -> Table:
    table = Table(title=f"perf_analyzer: {model} (gRPC, loopback)")
    columns = {
        "p50 ms": "p50 latency",
        "p90 ms": "p90 latency",
        "p99 ms": "p99 latency",
        "queue ms": "Server Queue",
        "compute ms": "Server Compute Infer",
    }
    table.add_column("concurrency", justify="right")
    table.add_column("infer/s", justify="right")
    for title in columns:
        table.add_column(title, justify="right")
    for row in rows:
        micros = [float(row.get(key) or 0) / 1000 for key in columns.values()]
        table.add_row(
            row["Concurrency"],
            f"{float(row['Inferences/Second']):.1f}",
            *(f"{m:.2f}" for m in micros),
        )
    return table


def show(title: str, columns: list[str], rows: list[list[str]], markdown: str) -> None:
    """A benchmark's table on the terminal, then the same results as markdown for the README."""
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    Console().print(table)
    typer.echo(markdown)


@perf_app.command("embed")
def embed_cmd(
    texts: Annotated[int, typer.Option(help="Texts per pass.")] = 256,
    repeats: Annotated[int, typer.Option(help="Timed passes per system (median reported).")] = 5,
    threads: Annotated[int, typer.Option(help="CPU threads for the in-process baselines.")] = 2,
) -> None:
    """Triton embed vs sentence-transformers and ONNX Runtime in process (same run)."""
    from benchmarks.embed import markdown_table, run_benchmark
    from orchestrator.config import get_settings

    settings = get_settings()
    if not settings.model_repository.is_dir():
        log.error("no model repository at %s: run `june repo build`", settings.model_repository)
        raise typer.Exit(1)
    results = run_benchmark(
        settings.model_repository,
        settings.data_dir / "bench-triton",
        n_texts=texts,
        repeats=repeats,
        threads=threads,
    )
    show(
        "embedding throughput (same run, same machine)",
        ["system", "median texts/s", "vs baseline", "runs"],
        [
            [
                r.system,
                f"{r.texts_per_s:.1f}",
                f"{r.texts_per_s / results[0].texts_per_s:.2f}x",
                " ".join(f"{x:.0f}" for x in r.runs),
            ]
            for r in results
        ],
        markdown_table(results),
    )


@perf_app.command("asr")
def asr_cmd(
    model: Annotated[str, typer.Option(help="Whisper source (default: JUNE_ASR_MODEL).")] = "",
    repeats: Annotated[int, typer.Option(help="Timed passes per system (median reported).")] = 3,
    threads: Annotated[int, typer.Option(help="CPU threads for the in-process systems.")] = 2,
) -> None:
    """Triton asr (full vs adaptive window, fp32/int8) vs faster-whisper int8: RTF, WER."""
    from benchmarks.asr import HEADERS, markdown_table, rows, run_benchmark
    from orchestrator.config import get_settings

    settings = get_settings()
    results = run_benchmark(
        model or settings.asr_model,
        settings.cache_dir,
        settings.data_dir / "bench-asr",
        repeats=repeats,
        threads=threads,
    )
    show(
        "ASR by clip length: RTF (lower is faster) and WER, same clips, same run",
        HEADERS,
        rows(results),
        markdown_table(results),
    )


@perf_app.command("llm")
def llm_cmd(
    repeats: Annotated[int, typer.Option(help="Timed runs per system (median reported).")] = 3,
    threads: Annotated[int, typer.Option(help="CPU threads for llama.cpp and transformers.")] = 2,
) -> None:
    """Triton llm (int4, fp32) vs llama.cpp and transformers: TTFT, decode tokens/s, peak RSS."""
    from benchmarks.llm import markdown_table, run_benchmark
    from orchestrator.config import get_settings

    settings = get_settings()
    results = run_benchmark(
        settings.cache_dir, settings.data_dir / "bench-llm", repeats=repeats, threads=threads
    )
    show(
        "LLM: SmolLM2-135M-Instruct, the same chat prompt, 128 new tokens, greedy",
        ["system", "prompt tokens", "TTFT s", "decode tok/s", "vs baseline", "peak RSS MB"],
        [
            [
                r.system,
                str(r.prompt_tokens),
                f"{r.ttft_s:.3f}",
                f"{r.decode_tps:.1f}",
                f"{r.decode_tps / results[0].decode_tps:.2f}x",
                f"{r.peak_rss_mb:.0f}",
            ]
            for r in results
        ],
        markdown_table(results),
    )


@perf_app.command("tts")
def tts_cmd(
    repeats: Annotated[int, typer.Option(help="Timed passes per system (median reported).")] = 3,
) -> None:
    """Triton tts_piper vs piper-tts standalone, and the FastPitch ensemble: RTF, first audio."""
    from benchmarks.tts import markdown_table, run_benchmark
    from orchestrator.config import get_settings

    settings = get_settings()
    results = run_benchmark(settings.cache_dir, settings.data_dir / "bench-tts", repeats=repeats)
    show(
        "TTS: the same 20 sentences; first audio of a three-sentence reply (same run)",
        ["system", "median RTF", "time vs baseline", "first audio s", "runs"],
        [
            [
                r.system,
                f"{r.rtf:.3f}",
                f"{r.rtf / results[0].rtf:.2f}x",
                f"{r.first_audio_s:.3f}",
                " ".join(f"{x:.3f}" for x in r.runs),
            ]
            for r in results
        ],
        markdown_table(results),
    )


@perf_app.command("voice-turn")
def voice_turn_cmd(
    runs: Annotated[int, typer.Option(help="Turns per mode (median reported).")] = 10,
    asr_model: Annotated[
        str, typer.Option(help="whisper-base or whisper-tiny.en.")
    ] = "whisper-base",
    asr_precision: Annotated[
        str, typer.Option(help="fp32, int8 or int8-decoder (the adaptive mode's graphs).")
    ] = "int8-decoder",
    llm_threads: Annotated[
        int | None, typer.Option(help="LLM decoder threads (default: JUNE_LLM_THREADS).")
    ] = None,
    hand_built: Annotated[
        bool,
        typer.Option(help="Also run the hand-built baseline (needs `make install-bench`)."),
    ] = True,
) -> None:
    """A ~5 s spoken question to a spoken answer: June (full vs adaptive window) against a
    hand-built faster-whisper + llama.cpp + piper pipeline, first audio byte."""
    from benchmarks.voice_turn import BASELINE, FULL, markdown_tables, run_benchmark
    from orchestrator.config import get_settings

    if hand_built:
        try:
            import llama_cpp  # noqa: F401
        except ImportError:
            log.error("the hand-built baseline needs llama-cpp-python: make install-bench")
            raise typer.Exit(2) from None
    settings = get_settings()
    results = run_benchmark(
        settings.cache_dir,
        settings.data_dir / "bench-voice",
        runs=runs,
        asr_model=asr_model,
        asr_precision=asr_precision,
        llm_threads=settings.llm_threads if llm_threads is None else llm_threads,
        hand_built=hand_built,
    )
    by_mode = {r.mode: r for r in results}

    def ratio(r: object, mode: str) -> str:
        return f"{r.first / by_mode[mode].first:.2f}x" if mode in by_mode else "-"  # type: ignore[attr-defined]

    show(
        "Voice turn: the same spoken question and document, same machine, same run",
        ["mode", "first audio byte s", "vs hand-built", "vs full window", "last byte s"],
        [
            [
                r.mode,
                f"{r.first:.2f}",
                ratio(r, BASELINE),
                ratio(r, FULL),
                f"{r.last:.2f}" if r.last is not None else "-",
            ]
            for r in results
        ],
        markdown_tables(results),
    )


@perf_app.command("realtime")
def realtime_cmd(
    runs: Annotated[int, typer.Option(help="Turns per mode (median reported).")] = 10,
) -> None:
    """Live voice: end of speech to the first reply audio over /v1/realtime, against the
    upload turn (POST /v1/voice, streamed), same question, stack and run."""
    from benchmarks.realtime import LIVE, UPLOAD, markdown_tables, run_benchmark
    from orchestrator.config import get_settings

    settings = get_settings()
    upload, live = run_benchmark(settings, settings.data_dir / "bench-realtime", runs=runs)
    first = statistics.median(live.first_audio_s)
    show(
        "Live voice: end of speech to first reply audio, same question, stack and run",
        ["mode", "first audio byte s (median)", "vs upload turn"],
        [
            [UPLOAD, f"{upload.first:.2f}", "1.00x"],
            [LIVE, f"{first:.2f}", f"{first / upload.first:.2f}x"],
        ],
        markdown_tables(upload, live),
    )


@perf_app.command("perf")
def perf_cmd(
    model: Annotated[str, typer.Argument(help="Model or ensemble name, e.g. embed.")],
    concurrency: Annotated[str, typer.Option(help="Comma-separated concurrency levels.")] = "1,2,4",
    measurement_ms: Annotated[int, typer.Option(help="Measurement window per trial (ms).")] = 3000,
    url: Annotated[
        str | None, typer.Option(help="Triton gRPC address (default from settings).")
    ] = None,
) -> None:
    """Throughput and latency of MODEL at each concurrency level; CSV under benchmarks/results/."""
    from orchestrator.config import get_settings

    try:
        levels = [int(c) for c in concurrency.split(",") if c.strip()]
    except ValueError:
        log.error("--concurrency must be comma-separated integers, got %r", concurrency)
        raise typer.Exit(2) from None
    settings = get_settings()
    if model == "tts" and settings.tts_model != "tts":
        log.info("tts: measuring %s, the voice this stack speaks with", settings.tts_model)
        model = settings.tts_model
    try:
        out, rows = run_perf(
            model,
            url=url or settings.triton_grpc_url,
            concurrency=levels,
            measurement_ms=measurement_ms,
        )
    except (PerfError, subprocess.TimeoutExpired) as exc:
        log.error("%s", exc)
        raise typer.Exit(1) from exc
    Console().print(summary_table(model, rows))
    typer.echo(f"CSV: {out}")


@perf_app.command("load")
def load_cmd(
    text: Annotated[int, typer.Option(help="Concurrent text-turn clients.")] = 32,
    voice: Annotated[int, typer.Option(help="Concurrent voice-turn clients.")] = 16,
    transcribe: Annotated[int, typer.Option(help="Concurrent transcribe clients.")] = 0,
    keys: Annotated[int, typer.Option(help="API keys (users) the clients share.")] = 4,
    seconds: Annotated[float, typer.Option(help="How long the load runs (at most 600).")] = 60,
    drill: Annotated[
        list[str] | None,
        typer.Option(help="Fault drills mid-load: " + ", ".join(DRILL_NAMES) + " (repeatable)."),
    ] = None,
    url: Annotated[
        list[str] | None,
        typer.Option(
            help="The running June (default: this machine's june serve); repeat it for "
            "replicas on one database: clients spread over them, and text turns are retried "
            "on the next one."
        ),
    ] = None,
) -> None:
    """Many users at once against a running June (loopback only), with fault drills."""
    import asyncio

    from benchmarks.load import LoadError, run_load, save, summary
    from orchestrator.auth import create_key
    from orchestrator.config import get_settings
    from orchestrator.db.session import database_session

    settings = get_settings()
    drills = drill or []
    unknown = [d for d in drills if d not in DRILL_NAMES]
    if unknown:
        log.error("unknown drill %s: choose from %s", unknown[0], ", ".join(DRILL_NAMES))
        raise typer.Exit(2)
    run_id = time.strftime("%H%M%S")
    users = [f"load-{run_id}-{i}" for i in range(max(1, keys))]
    with database_session(settings) as session:
        secrets = [create_key(session, user_id=u, name="june bench load").key for u in users]
        database_url = session.get_bind().url.render_as_string(hide_password=False)
    try:
        report = asyncio.run(
            run_load(
                url or [f"http://127.0.0.1:{settings.port}"],
                secrets,
                text=text,
                voice=voice,
                transcribe=transcribe,
                seconds=seconds,
                drills=drills,
                data_dir=settings.data_dir,
                repository=settings.model_repository,
                users=users,
                database_url=database_url,
            )
        )
    except LoadError as exc:
        log.error("%s", exc)
        raise typer.Exit(1) from exc
    rows, markdown = summary(report)
    show(
        f"Load: {text} text + {voice} voice + {transcribe} transcribe clients, "
        f"{len(users)} keys, {report.seconds:.0f} s",
        [
            "kind",
            "responses",
            "ok/s",
            "alone p50 s",
            "p50 s",
            "vs alone",
            "p95 s",
            "p99 s",
            "slowest shed s",
            "shed w/ Retry-After",
        ],
        rows,
        markdown,
    )
    typer.echo(f"raw results: {save(report, RESULTS)}")


@perf_app.command("figures")
def figures_cmd(
    url: Annotated[
        str | None, typer.Option(help="Triton gRPC address (default from settings).")
    ] = None,
    label: Annotated[str, typer.Option(help="What this repository is (cpu, gpu).")] = "cpu",
    runs: Annotated[int, typer.Option(help="Runs per figure (median reported).")] = 5,
    save: Annotated[Path | None, typer.Option(help="Write the figures here (JSON).")] = None,
    baseline: Annotated[
        Path | None, typer.Option(help="Figures saved from the baseline in the same run.")
    ] = None,
) -> None:
    """ASR real-time factor, LLM first token and tokens/s, TTS first byte and the voice
    turn's server time from a running Triton; with --baseline, against it."""
    from benchmarks.figures import Figures, markdown, measure, rows
    from orchestrator.config import get_settings

    figures = measure(url or get_settings().triton_grpc_url, label=label, runs=runs)
    base = Figures.load(baseline) if baseline is not None else None
    if save is not None:
        figures.save(save)
    columns = ["figure (median)", label] + (
        [f"{base.label} (baseline)", "better by"] if base else []
    )
    show(
        f"Serving figures: {label}" + (f" against {base.label}, same run" if base else ""),
        columns,
        rows(figures, base),
        markdown(figures, base),
    )
