"""``june export tts``: FastPitch + HiFi-GAN ``.nemo`` checkpoints -> ONNX (CPU) or TensorRT.

NeMo cannot share June's environment (it needs numpy 2; Triton's Python backend needs
numpy < 2), so the NeMo work runs in its own virtual environment (``make nemo-env``)
through :mod:`exporters.nemo_tts_worker`. This module finds that environment, caches the
results keyed by the checkpoints' digest and the exporter version, and holds the GPU
step: ``trtexec`` builds a TensorRT plan from each ONNX graph where TensorRT is
installed, and fails with one line naming the missing tool elsewhere.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from exporters.common import (
    ExportError,
    ExportInfo,
    cached_export,
    progress,
    sha256_file,
)

log = logging.getLogger(__name__)

TARGET = "tts"
EXPORTER_VERSION = "1"
NEMO_VERSION = "3.0.0"
NEMO_REQUIREMENTS = (
    "torch==2.13.0",
    f"nemo_toolkit[tts,asr]=={NEMO_VERSION}",
    "onnxruntime",
    "onnx",
)
WORKER = Path(__file__).resolve().with_name("nemo_tts_worker.py")
PARITY_TOLERANCE = 1e-4
TRT_IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3"


def nemo_env_dir(cache_dir: Path) -> Path:
    return cache_dir / "venvs" / f"nemo-{NEMO_VERSION}"


def nemo_python(cache_dir: Path) -> Path:
    """The NeMo environment's interpreter: ``JUNE_NEMO_PYTHON``, else the cached venv."""
    configured = os.environ.get("JUNE_NEMO_PYTHON")
    python = Path(configured) if configured else nemo_env_dir(cache_dir) / "bin" / "python"
    if not python.is_file():
        raise ExportError(
            f"the NeMo export environment is missing ({python}): run `make nemo-env` "
            "or set JUNE_NEMO_PYTHON to a Python with nemo_toolkit[tts] and onnxruntime"
        )
    return python


def run_worker(cache_dir: Path, *args: str, timeout_s: float = 1800) -> dict:
    """Run one worker command in the NeMo environment; its JSON result, or ExportError."""
    cmd = [str(nemo_python(cache_dir)), str(WORKER), *args]
    log.debug("running %s", " ".join(cmd))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise ExportError(f"NeMo worker '{args[0]}' took longer than {timeout_s:.0f} s") from exc
    for line in proc.stdout.splitlines():
        if line.startswith("JUNE_RESULT ") and proc.returncode == 0:
            return json.loads(line.removeprefix("JUNE_RESULT "))
    lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
    reason = lines[-1].strip() if lines else f"exit code {proc.returncode}"
    raise ExportError(f"NeMo worker '{args[0]}' failed: {reason}")


def _checkpoint(path: str | Path, role: str) -> Path:
    resolved = Path(path).expanduser().resolve()
    if resolved.suffix != ".nemo" or not resolved.is_file():
        raise ExportError(f"{role} checkpoint {resolved} is not a .nemo file")
    return resolved


def export_tts(
    acoustic: str | Path,
    vocoder: str | Path,
    *,
    cache_dir: Path,
    force: bool = False,
) -> Path:
    """FastPitch + HiFi-GAN -> ``fastpitch.onnx``, ``hifigan.onnx``, ``tts.json`` (cached).

    The export is accepted only if ONNX Runtime matches PyTorch within 1e-4 on sample texts.
    """
    fastpitch = _checkpoint(acoustic, "acoustic (FastPitch)")
    hifigan = _checkpoint(vocoder, "vocoder (HiFi-GAN)")
    digest = hashlib.sha256(
        f"fastpitch:{sha256_file(fastpitch)} hifigan:{sha256_file(hifigan)}".encode()
    ).hexdigest()

    def build(out: Path) -> None:
        with progress() as bar:
            task = bar.add_task("FastPitch + HiFi-GAN -> ONNX (NeMo)", total=1)
            meta = run_worker(
                cache_dir,
                "export",
                "--acoustic",
                str(fastpitch),
                "--vocoder",
                str(hifigan),
                "--out",
                str(out),
            )
            bar.advance(task)
        worst = max(meta["parity"].values())
        if worst > PARITY_TOLERANCE:
            raise ExportError(
                f"ONNX differs from PyTorch by {worst:.2e} (tolerance {PARITY_TOLERANCE:g})"
            )
        names = ("fastpitch.onnx", "hifigan.onnx", "tts.json")
        ExportInfo(
            target=TARGET,
            exporter_version=EXPORTER_VERSION,
            source=f"{fastpitch.name}+{hifigan.name}",
            source_digest=digest,
            options={},
            artifacts={n: sha256_file(out / n) for n in names},
            extra={k: v for k, v in meta.items() if k != "tokenizer"},
        ).write(out)

    return cached_export(
        cache_dir=cache_dir,
        target=TARGET,
        exporter_version=EXPORTER_VERSION,
        source_digest=digest,
        options={},
        build=build,
        force=force,
    )


def random_checkpoints(size: str, *, cache_dir: Path, seed: int = 0) -> tuple[Path, Path]:
    """FastPitch + HiFi-GAN ``.nemo`` files of the real architecture with random weights.

    No English FastPitch/HiFi-GAN weights install offline; tests (``tiny``) and the speed
    benchmark (``real``: the published sizes) use these. Cached by worker version.
    """
    key = sha256_file(WORKER)[:12]
    folder = cache_dir / "sources" / f"nemo-random-{size}-{seed}-{key}"
    fastpitch, hifigan = folder / "fastpitch.nemo", folder / "hifigan.nemo"
    if not (fastpitch.is_file() and hifigan.is_file()):
        staging = folder.with_name(folder.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        run_worker(cache_dir, "random", "--size", size, "--seed", str(seed), "--out", str(staging))
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)
    return fastpitch, hifigan


def check_parity(
    acoustic: Path, vocoder: Path, export_dir: Path, texts: list[str], *, cache_dir: Path
) -> dict:
    """ONNX vs PyTorch on ``texts`` (max abs differences) and NeMo's token ids for them."""
    return run_worker(
        cache_dir,
        "check",
        "--acoustic",
        str(acoustic),
        "--vocoder",
        str(vocoder),
        "--out",
        str(export_dir),
        "--texts",
        json.dumps(texts),
    )


# --- GPU: TensorRT plans -----------------------------------------------------------------


@dataclass(frozen=True)
class PlanSpec:
    """Shape ranges for one TensorRT plan (min / opt / max of each dynamic input)."""

    onnx: str
    plan: str
    shapes: dict[str, tuple[str, str, str]]


def plan_specs(n_mels: int, *, max_tokens: int = 512, max_frames: int = 2048) -> list[PlanSpec]:
    """FastPitch: text/pitch/pace [1, T]; HiFi-GAN: spec [1, n_mels, F]."""
    tokens = ("1x1", f"1x{max_tokens // 4}", f"1x{max_tokens}")
    return [
        PlanSpec(
            "fastpitch.onnx",
            "fastpitch.plan",
            {name: tokens for name in ("text", "pitch", "pace")},
        ),
        PlanSpec(
            "hifigan.onnx",
            "hifigan.plan",
            {
                "spec": (
                    f"1x{n_mels}x1",
                    f"1x{n_mels}x{max_frames // 4}",
                    f"1x{n_mels}x{max_frames}",
                )
            },
        ),
    ]


def trtexec_command(
    trtexec: str, export_dir: Path, out: Path, spec: PlanSpec, *, fp16: bool
) -> list[str]:
    cmd = [trtexec, f"--onnx={export_dir / spec.onnx}", f"--saveEngine={out / spec.plan}"]
    for flag, index in (("--minShapes", 0), ("--optShapes", 1), ("--maxShapes", 2)):
        cmd.append(f"{flag}=" + ",".join(f"{n}:{s[index]}" for n, s in spec.shapes.items()))
    if fp16:
        cmd.append("--fp16")
    return cmd


def build_tensorrt_plans(export_dir: Path, out: Path, *, fp16: bool = True) -> list[Path]:
    """Build ``fastpitch.plan`` and ``hifigan.plan`` with ``trtexec`` (NGC Triton image)."""
    trtexec = shutil.which("trtexec")
    if trtexec is None:
        raise ExportError(
            f"trtexec not found: the gpu target needs TensorRT (run it in {TRT_IMAGE})"
        )
    meta = json.loads((export_dir / "tts.json").read_text(encoding="utf-8"))
    out.mkdir(parents=True, exist_ok=True)
    plans = []
    for spec in plan_specs(int(meta["n_mels"])):
        cmd = trtexec_command(trtexec, export_dir, out, spec, fp16=fp16)
        log.info("building %s", spec.plan)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise ExportError(f"trtexec failed on {spec.onnx}: {tail[0]}")
        plans.append(out / spec.plan)
    shutil.copy2(export_dir / "tts.json", out / "tts.json")
    return plans


def install_nemo_env(cache_dir: Path) -> Path:
    """Create the NeMo environment (``make nemo-env`` calls this); returns its python."""
    env = nemo_env_dir(cache_dir)
    python = env / "bin" / "python"
    if python.is_file():
        return python
    staging = env.with_name(env.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(staging)], check=True)
    pip = [str(staging / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, *NEMO_REQUIREMENTS], check=True)
    staging.rename(env)
    return python
