"""Triton launcher: discovery, and one clear line when it cannot start."""

from pathlib import Path

import pytest

from orchestrator.triton.launcher import TritonError, TritonInstall, TritonServer, _level_of
from tests.conftest import free_port


def test_discovers_the_wheel_install(tmp_path):
    install = TritonInstall.discover()
    assert install.server.name == "tritonserver" and install.server.is_file()
    backends = install.backend_directory(tmp_path)
    python_dir = backends / "python"
    assert (python_dir / "libtriton_python.so").resolve().is_file()
    assert (python_dir / "triton_python_backend_stub").resolve().is_file()
    env = install.environment()
    assert env["PATH"].split(":")[0].endswith("bin")
    assert "PYTHONPATH" not in env


def test_command_binds_loopback(tmp_path):
    server = TritonServer(tmp_path, runtime_dir=tmp_path)
    cmd = server.command(TritonInstall.discover())
    assert "--http-address=127.0.0.1" in cmd
    assert "--grpc-address=127.0.0.1" in cmd
    assert "--metrics-address=127.0.0.1" in cmd


def test_missing_repository_is_one_line(tmp_path):
    server = TritonServer(tmp_path / "nope", runtime_dir=tmp_path)
    with pytest.raises(TritonError, match="does not exist; build it with") as err:
        server.start()
    assert "\n" not in str(err.value)


def test_model_that_fails_to_load_is_named(tmp_path):
    repo = tmp_path / "repo"
    (repo / "broken" / "1").mkdir(parents=True)
    (repo / "broken" / "config.pbtxt").write_text(
        'name: "broken"\nbackend: "python"\nmax_batch_size: 0\n'
        'input [{ name: "X" data_type: TYPE_FP32 dims: [1] }]\n'
        'output [{ name: "Y" data_type: TYPE_FP32 dims: [1] }]\n'
    )
    (repo / "broken" / "1" / "model.py").write_text(
        "class TritonPythonModel:\n"
        "    def initialize(self, args):\n"
        "        raise RuntimeError('weights file is corrupt')\n"
    )
    server = TritonServer(
        repo,
        runtime_dir=tmp_path / "rt",
        http_port=free_port(),
        grpc_port=free_port(),
        metrics_port=free_port(),
    )
    with pytest.raises(TritonError, match="model 'broken' failed to load") as err:
        server.start(timeout_s=60)
    assert "weights file is corrupt" in str(err.value)
    assert "\n" not in str(err.value)
    assert server.pid is None or not Path(f"/proc/{server.pid}").exists()


def test_log_levels():
    import logging

    assert _level_of("E1124 12:00 x.cc] boom") == logging.ERROR
    assert _level_of("W1124 12:00 x.cc] hmm") == logging.WARNING
    assert _level_of("I1124 12:00 x.cc] successfully loaded 'embed'") == logging.INFO
    assert _level_of("I1124 12:00 x.cc] chatter") == logging.DEBUG
