"""Shared fixtures: a real Triton server and a real PostgreSQL + pgvector, on loopback.

The model repository is built once per session from the exporter cache (keyed by the
weights' digest and the exporter version, so only the first run on a machine exports).
"""

from __future__ import annotations

import importlib.util
import io
import json
import random
import shutil
import socket
import sys
import wave
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from orchestrator.config import REPO_ROOT, Settings
from orchestrator.db.engine import EmbeddedPostgres
from orchestrator.db.migrate import upgrade
from orchestrator.triton.launcher import TritonServer
from tests.otlp_collector import Collector

_handed_out: set[int] = set()


def free_port() -> int:
    """A free loopback port below the kernel's ephemeral range.

    Ports from ``bind(0)`` are ephemeral: between our check and the server's bind, an
    outgoing client socket can take them. Servers under test get ports from 20000-31999.
    """
    while True:
        port = random.randrange(20000, 32000)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port


def load_backend_module(model: str, module: str) -> ModuleType:
    """Import a python-backend logic module from ``model_repository/`` without a server."""
    folder = REPO_ROOT / "model_repository"
    path = folder / "common" / f"{module}.py"
    if not path.exists():
        path = folder / model / "1" / f"{module}.py"
    name = f"june_backend_{model}_{module}"
    # At serve time the common modules sit beside model.py: make the same imports work.
    for folder_on_path in (folder / "common", folder / model / "1"):
        if str(folder_on_path) not in sys.path:
            sys.path.append(str(folder_on_path))
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    """The real export cache (shared across runs: that is what makes reruns fast)."""
    return Settings().cache_dir


@pytest.fixture(scope="session")
def embedder_export(cache_dir: Path) -> Path:
    from exporters.embedder import export_embedder

    return export_embedder(None, cache_dir=cache_dir)


@pytest.fixture(scope="session")
def whisper_export(cache_dir: Path) -> Path:
    """Whisper base, real weights from the offline package, exported fp32 (parity tests)."""
    from exporters.whisper import export_whisper

    return export_whisper("whisper-base", cache_dir=cache_dir, precision="fp32")


@pytest.fixture(scope="session")
def smollm_hf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2-135M-Instruct (real weights, the offline GGUF) as a Hugging Face folder."""
    from exporters.llm import import_gguf, resolve_source

    gguf, kind = resolve_source("smollm2-135m-instruct")
    assert kind == "gguf"
    return import_gguf(gguf, tmp_path_factory.mktemp("smollm") / "hf")


def engine_config(dtype: str, **build: object) -> str:
    """The config.json trtllm-build writes beside an engine (the fields June reads)."""
    return json.dumps({"pretrained_config": {"dtype": dtype}, "build_config": build})


@pytest.fixture(scope="session")
def trtllm_builds(
    tmp_path_factory: pytest.TempPathFactory, whisper_export: Path, smollm_hf: Path
) -> dict[str, Path]:
    """The folders `june export whisper|llm --target gpu` write, with real serving files and
    trtllm-build's config.json, but no engine plans: those need a GPU and TensorRT-LLM."""
    from exporters.llm import write_serving_files
    from exporters.whisper import SERVING_FILES

    root = tmp_path_factory.mktemp("trtllm")
    whisper = root / "whisper"
    for name in SERVING_FILES:
        (whisper / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(whisper_export / name, whisper / name)
    for part, build in (
        ("encoder", {"max_batch_size": 8}),
        (
            "decoder",
            {
                "max_batch_size": 8,
                "max_beam_width": 1,
                "max_seq_len": 448,
                "gather_generation_logits": True,
            },
        ),
    ):
        (whisper / "engines" / part).mkdir(parents=True)
        (whisper / "engines" / part / "config.json").write_text(engine_config("float16", **build))
    llm = write_serving_files(smollm_hf, root / "llm")
    (llm / "engine").mkdir()
    (llm / "engine" / "config.json").write_text(engine_config("float16", max_batch_size=16))
    return {"whisper": whisper, "llm": llm}


@pytest.fixture(scope="session")
def fastpitch_checkpoints(cache_dir: Path) -> tuple[Path, Path]:
    """FastPitch + HiFi-GAN .nemo files, real architecture, random weights (tiny sizes)."""
    from exporters.tts import random_checkpoints

    return random_checkpoints("tiny", cache_dir=cache_dir)


@pytest.fixture(scope="session")
def fastpitch_export(cache_dir: Path, fastpitch_checkpoints: tuple[Path, Path]) -> Path:
    from exporters.tts import export_tts

    acoustic, vocoder = fastpitch_checkpoints
    return export_tts(acoustic, vocoder, cache_dir=cache_dir)


@pytest.fixture(scope="session")
def model_repo(
    tmp_path_factory: pytest.TempPathFactory,
    cache_dir: Path,
    embedder_export: Path,
    whisper_export: Path,
    fastpitch_checkpoints: tuple[Path, Path],
    fastpitch_export: Path,
) -> Path:
    """Every model: the embedded defaults, plus the FastPitch ensemble (random weights)."""
    from exporters.repository import FASTPITCH_MODELS, MODELS, build_repository

    defaults = Settings.model_fields
    acoustic, vocoder = fastpitch_checkpoints
    out = tmp_path_factory.mktemp("repo") / "model_repository"
    return build_repository(
        profile="cpu",
        out=out,
        cache_dir=cache_dir,
        sources={"tts": str(acoustic)},
        options={
            "tts": {"vocoder": str(vocoder)},
            "whisper": {"precision": defaults["asr_precision"].default},
        },
        models=MODELS + FASTPITCH_MODELS,
    )


def wav_bytes(samples: np.ndarray, rate: int = 16000) -> bytes:
    """Mono 16-bit WAV of float samples in [-1, 1] (the header says ``rate``, true or not)."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return buf.getvalue()


def make_triton(repo: Path, runtime_dir: Path, extra_args: Sequence[str] = ()) -> TritonServer:
    return TritonServer(
        repo,
        runtime_dir=runtime_dir,
        http_port=free_port(),
        grpc_port=free_port(),
        metrics_port=free_port(),
        extra_args=extra_args,
    )


@pytest.fixture(scope="session")
def otlp() -> Iterator[Collector]:
    """Where the shared Triton sends its spans, while a test turns its tracing on."""
    with Collector() as collector:
        yield collector


@pytest.fixture(scope="session")
def triton(
    model_repo: Path, tmp_path_factory: pytest.TempPathFactory, otlp: Collector
) -> Iterator[TritonServer]:
    # OpenTelemetry trace mode, at level OFF: nothing is traced until a test sets a level
    # (POST /v2/trace/setting), so the other tests run as the default server would.
    tracing_off = [
        "--trace-config=mode=opentelemetry",
        "--trace-config=level=OFF",
        f"--trace-config=opentelemetry,url={otlp.url}",
        "--trace-config=opentelemetry,resource=service.name=triton",
        "--trace-config=opentelemetry,bsp_schedule_delay=200",
    ]
    server = make_triton(model_repo, tmp_path_factory.mktemp("triton"), tracing_off)
    server.start(timeout_s=180)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with EmbeddedPostgres(tmp_path_factory.mktemp("pg") / "pgdata") as pg:
        upgrade(pg.url)
        yield pg.url


def settings_for(triton: TritonServer, database_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": database_url,
        "triton_host": triton.host,
        "triton_grpc_port": triton.grpc_port,
        "triton_http_port": triton.http_port,
        "triton_request_timeout_s": 10,
        # no idle probes: they would add inferences to the statistics tests read (the
        # self-healing tests set a short interval themselves)
        "health_probe_interval_s": 3600,
        # the repository this Triton serves: the orchestrator reads its manifest (model
        # versions of each turn) and the LLM tokenizer (prompt budget) from it
        "model_repository": triton.repository,
    }
    return Settings(**{**values, **overrides})


@pytest.fixture(scope="session")
def settings(triton: TritonServer, database_url: str) -> Settings:
    return settings_for(
        triton,
        database_url,
        max_request_bytes=8 * 1024 * 1024,
        max_audio_bytes=4 * 1024 * 1024,
        max_audio_seconds=120,
        rate_limit_per_minute=100_000,  # the whole suite shares one key
        rate_limit_work_per_minute=1_000_000,
    )


def make_key(database_url: str, user: str, *, admin: bool = False) -> str:
    """A real API key for ``user``, made the way ``june keys create`` makes one."""
    from sqlalchemy.orm import Session

    from orchestrator.auth import create_key
    from orchestrator.db.engine import make_sync_engine

    engine = make_sync_engine(database_url)
    try:
        with Session(engine) as session:
            return create_key(session, user_id=user, name="tests", is_admin=admin).key
    finally:
        engine.dispose()


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


@pytest.fixture(scope="session")
def api_key(database_url: str) -> str:
    """The default test user's key (an admin, so tests may store shared documents)."""
    return make_key(database_url, "tester", admin=True)


@pytest.fixture(scope="session")
def client(settings: Settings, api_key: str) -> Iterator:
    """The orchestrator app, called with the default test user's key."""
    from fastapi.testclient import TestClient

    from orchestrator.api.app import create_app

    with TestClient(create_app(settings), headers=bearer(api_key)) as c:
        yield c
