"""The ``june`` CLI: errors are one line with a non-zero exit code; perf_analyzer runs."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

JUNE = str(Path(sys.executable).parent / "june")


def run(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "JUNE_LOG_LEVEL": "WARNING", "COLUMNS": "200", **(env or {})}
    return subprocess.run(
        [JUNE, *args], capture_output=True, text=True, timeout=timeout, env=full_env
    )


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]


def test_export_bad_source_is_one_line(tmp_path):
    proc = run("export", "embedder", "--source", str(tmp_path / "missing"))
    assert proc.returncode == 1
    lines = error_lines(proc)
    assert len(lines) == 1 and "not a Hugging Face model folder" in lines[0]


def test_repo_build_bad_profile(tmp_path):
    proc = run("repo", "build", "--profile", "tpu", "--out", str(tmp_path / "r"))
    assert proc.returncode == 2
    assert "unknown profile 'tpu'" in proc.stdout + proc.stderr


def test_triton_missing_repository_is_one_line(tmp_path):
    proc = run(
        "triton",
        env={"JUNE_MODEL_REPOSITORY": str(tmp_path / "none"), "JUNE_DATA_DIR": str(tmp_path)},
    )
    assert proc.returncode == 1
    lines = error_lines(proc)
    assert len(lines) == 1 and "does not exist; build it with" in lines[0]


def test_gpu_repo_build_takes_the_engine_folders(
    tmp_path, embedder_export, cache_dir, trtllm_builds
):
    out = tmp_path / "repo"
    args = ("repo", "build", "--profile", "gpu", "--out", str(out), "--repository-path", "/models")
    proc = run(*args, env={"JUNE_CACHE_DIR": str(cache_dir)})
    assert proc.returncode == 1
    lines = error_lines(proc)
    assert len(lines) == 1 and "--target gpu --out DIR" in lines[0], lines
    assert not out.exists()

    engines = {
        "JUNE_ASR_ENGINE_DIR": str(trtllm_builds["whisper"]),
        "JUNE_LLM_ENGINE_DIR": str(trtllm_builds["llm"]),
    }
    proc = run(*args, env={"JUNE_CACHE_DIR": str(cache_dir), **engines})
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["profile"] == "gpu"
    assert (
        "/models/llm_tensorrt_llm/1/engine" in (out / "llm_tensorrt_llm/config.pbtxt").read_text()
    )


def test_bench_perf_embed(triton, tmp_path):
    proc = run(
        "bench",
        "perf",
        "embed",
        "--concurrency",
        "1,2,4",
        "--measurement-ms",
        "1500",
        "--url",
        triton.grpc_url,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "perf_analyzer: embed" in proc.stdout
    csv_path = Path(proc.stdout.strip().splitlines()[-1].removeprefix("CSV: "))
    rows = list(csv.DictReader(csv_path.open()))
    assert [r["Concurrency"] for r in rows] == ["1", "2", "4"]
    assert all(float(r["Inferences/Second"]) > 0 for r in rows)
    csv_path.unlink()


def test_bench_perf_unknown_model(triton):
    proc = run("bench", "perf", "nope", "--url", triton.grpc_url)
    assert proc.returncode == 1
    assert "no input data for model 'nope'" in proc.stdout + proc.stderr


def test_db_upgrade_on_external_url(database_url):
    proc = run("db", "upgrade", env={"DATABASE_URL": database_url})
    assert proc.returncode == 0, proc.stderr


def test_db_upgrade_without_pgvector_is_one_line(tmp_path):
    proc = run("db", "upgrade", env={"DATABASE_URL": "postgresql://nobody@/none?host=/nonexistent"})
    assert proc.returncode == 1
    lines = error_lines(proc)
    assert len(lines) == 1 and "cannot connect to the database" in lines[0]


def test_export_whisper_bad_source_is_one_line(tmp_path):
    proc = run("export", "whisper", "--source", str(tmp_path / "nope"))
    assert proc.returncode == 1
    lines = error_lines(proc)
    assert len(lines) == 1 and "does not exist" in lines[0]


def test_export_whisper_gpu_target_without_tensorrt_llm(tmp_path):
    checkpoint = tmp_path / "base.pt"
    checkpoint.write_bytes(b"x")
    proc = run(
        "export",
        "whisper",
        "--source",
        str(checkpoint),
        "--target",
        "gpu",
        "--out",
        str(tmp_path / "o"),
        "--allow-unlisted",
    )
    assert proc.returncode == 1
    lines = error_lines(proc)
    assert len(lines) == 1 and "TensorRT-LLM" in lines[0]


def test_export_llm_gpu_without_tensorrt_llm_is_one_line(tmp_path):
    proc = run("export", "llm", "--target", "gpu", "--out", str(tmp_path / "o"))
    assert proc.returncode == 1
    lines = error_lines(proc)
    assert len(lines) == 1 and "TensorRT-LLM" in lines[0]
    assert not (tmp_path / "o").exists()  # nothing done before the check


def test_export_llm_cpu_int4(cache_dir):
    proc = run("export", "llm", "--precision", "int4", env={"JUNE_CACHE_DIR": str(cache_dir)})
    assert proc.returncode == 0, proc.stderr
    assert (Path(proc.stdout.strip().splitlines()[-1]) / "genai_config.json").is_file()


def test_bots_without_their_token_are_one_line():
    for command, token in (("bot", "TELEGRAM_BOT_TOKEN"), ("discord", "DISCORD_BOT_TOKEN")):
        proc = run(command, env={token: ""})
        assert proc.returncode == 1
        lines = error_lines(proc)
        assert len(lines) == 1 and f"set {token}" in lines[0], lines
