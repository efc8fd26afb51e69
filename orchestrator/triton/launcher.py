"""Launch the real ``tritonserver`` that ships in the nvidia-pytriton wheel, on CPU.

Everything is found at run time: the server binary and its shared libraries inside the
installed wheel, the Python backend and the stub built for the running interpreter, and
this interpreter's own ``libpython``, which must come first on ``LD_LIBRARY_PATH`` so the
stub runs the same Python as the venv. The venv's ``bin/`` goes first on ``PATH``, which is
how the stub finds the venv's packages (it ignores ``PYTHONPATH``).
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import logging
import os
import re
import signal
import subprocess
import sys
import sysconfig
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import httpx

from orchestrator.cli_errors import CommandError

log = logging.getLogger("june.triton")

_LOAD_FAILURE = re.compile(r"failed to load '([^']+)'.*?: (.*)$")
_PR_SET_PDEATHSIG = 1


# Logged as errors by tritonserver on every CPU-only host, and harmless there.
_CPU_HOST_NOISE = (
    "CudaDriverHelper has not been initialized",
    "CUDA driver version is insufficient",
)


def _level_of(line: str) -> int:
    """Map a tritonserver log line (``I1124 ...``, ``W...``, ``E...``) to a logging level."""
    if any(noise in line for noise in _CPU_HOST_NOISE):
        return logging.DEBUG
    head = line[:1]
    if head == "E" and line[1:2].isdigit():
        return logging.ERROR
    if head == "W" and line[1:2].isdigit():
        return logging.WARNING
    if head == "I" and line[1:2].isdigit():
        interesting = ("successfully loaded", "Started", "failed")
        return logging.INFO if any(k in line for k in interesting) else logging.DEBUG
    return logging.INFO  # our python models' own log lines, and tables at start


class TritonError(CommandError):
    """Triton could not be started or stopped; the message is one line saying why."""


@dataclass(frozen=True)
class TritonInstall:
    """Where the pieces of the wheel's Triton live on this machine."""

    server: Path
    python_backend: Path  # folder with libtriton_python.so + triton_python_backend_utils.py
    stub: Path  # triton_python_backend_stub for this interpreter's version
    library_dirs: tuple[Path, ...]

    @classmethod
    def discover(cls) -> TritonInstall:
        spec = importlib.util.find_spec("pytriton")
        if spec is None or not spec.submodule_search_locations:
            raise TritonError(
                "nvidia-pytriton is not installed: pip install nvidia-pytriton==0.7.0"
            )
        root = Path(next(iter(spec.submodule_search_locations))) / "tritonserver"
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        install = cls(
            server=root / "bin" / "tritonserver",
            python_backend=root / "backends" / "python",
            stub=root / "python_backend_stubs" / version / "triton_python_backend_stub",
            library_dirs=tuple(
                p
                for p in (
                    Path(sysconfig.get_config_var("LIBDIR") or ""),
                    root.parent.parent / "nvidia_pytriton.libs",
                    root / "lib",
                )
                if p.is_dir()
            ),
        )
        for path in (install.server, install.python_backend / "libtriton_python.so", install.stub):
            if not path.exists():
                raise TritonError(f"incomplete Triton install: {path} not found")
        return install

    def backend_directory(self, runtime_dir: Path) -> Path:
        """A ``--backend-directory`` whose ``python/`` holds the backend and our stub."""
        python_dir = runtime_dir / "backends" / "python"
        python_dir.mkdir(parents=True, exist_ok=True)
        links = {
            "libtriton_python.so": self.python_backend / "libtriton_python.so",
            "triton_python_backend_utils.py": self.python_backend
            / "triton_python_backend_utils.py",
            "triton_python_backend_stub": self.stub,
        }
        for name, target in links.items():
            link = python_dir / name
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(target)
        return runtime_dir / "backends"

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        venv_bin = str(Path(sys.executable).parent)
        env["PATH"] = os.pathsep.join([venv_bin, env.get("PATH", "")])
        libs = [str(p) for p in self.library_dirs]
        if env.get("LD_LIBRARY_PATH"):
            libs.append(env["LD_LIBRARY_PATH"])
        env["LD_LIBRARY_PATH"] = os.pathsep.join(libs)
        env.pop("PYTHONPATH", None)
        return env


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Ask the kernel to SIGTERM tritonserver if the process that started it dies."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


class TritonServer:
    """One ``tritonserver`` process serving a model repository on loopback."""

    def __init__(
        self,
        repository: Path,
        *,
        runtime_dir: Path,
        host: str = "127.0.0.1",
        http_port: int = 8000,
        grpc_port: int = 8001,
        metrics_port: int = 8002,
        log_verbose: int = 0,
        install: TritonInstall | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.repository = Path(repository)
        self.runtime_dir = Path(runtime_dir)
        self.host = host
        self.http_port = http_port
        self.grpc_port = grpc_port
        self.metrics_port = metrics_port
        self.log_verbose = log_verbose
        self._install = install
        self.extra_args = list(extra_args)  # e.g. OpenTelemetry trace mode (tracing.py)
        self._proc: subprocess.Popen[str] | None = None
        self._log_thread: threading.Thread | None = None
        self._tail: deque[str] = deque(maxlen=200)

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def pidfile(self) -> Path:
        """Where the running server's pid is kept (the reaper reads it)."""
        return self.runtime_dir / "tritonserver.pid"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def command(self, install: TritonInstall) -> list[str]:
        return [
            str(install.server),
            f"--model-repository={self.repository.resolve()}",
            f"--backend-directory={install.backend_directory(self.runtime_dir)}",
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-address={self.host}",
            f"--metrics-port={self.metrics_port}",
            "--allow-metrics=true",
            "--allow-gpu-metrics=false",
            "--strict-readiness=true",
            # Explicit model control, every model loaded at start: June's model doctor
            # reloads a model whose backend process died, without restarting Triton.
            "--model-control-mode=explicit",
            "--load-model=*",
            "--exit-on-error=true",
            "--disable-auto-complete-config",
            f"--log-verbose={self.log_verbose}",
            *self.extra_args,
        ]

    def check_repository(self) -> None:
        if not self.repository.is_dir():
            raise TritonError(
                f"model repository {self.repository} does not exist; build it with "
                "`june repo build --profile cpu`"
            )
        if not any(p.joinpath("config.pbtxt").is_file() for p in self.repository.iterdir()):
            raise TritonError(
                f"model repository {self.repository} holds no model (no config.pbtxt)"
            )

    def start(self, *, wait: bool = True, timeout_s: float = 180.0) -> TritonServer:
        """Start the server; with ``wait``, return only once every model is ready."""
        if self._proc and self._proc.poll() is None:
            raise TritonError(f"tritonserver already running (pid {self._proc.pid})")
        self.check_repository()
        install = self._install or TritonInstall.discover()
        cmd = self.command(install)
        log.info("starting tritonserver on %s (http), %s (grpc)", self.http_url, self.grpc_url)
        log.debug("command: %s", " ".join(cmd))
        self._tail.clear()
        self._proc = subprocess.Popen(
            cmd,
            env=install.environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            bufsize=1,
            preexec_fn=_die_with_parent,
            start_new_session=True,  # Ctrl-C goes to us; we stop Triton in order
        )
        self.pidfile.parent.mkdir(parents=True, exist_ok=True)
        self.pidfile.write_text(f"{self._proc.pid}\n")
        self._log_thread = threading.Thread(target=self._forward_logs, daemon=True)
        self._log_thread.start()
        if wait:
            self.wait_ready(timeout_s)
        return self

    def _forward_logs(self) -> None:
        assert self._proc and self._proc.stdout
        for line in self._proc.stdout:
            line = line.rstrip()
            if not line:
                continue
            self._tail.append(line)
            log.log(_level_of(line), "%s", line)

    def failure_reason(self) -> str:
        """The most useful single line from the server's log after it failed."""
        for line in self._tail:
            match = _LOAD_FAILURE.search(line)
            if match:
                return f"model {match.group(1)!r} failed to load: {match.group(2).strip()}"
        for line in reversed(self._tail):
            if line.startswith("E") or "error" in line.lower():
                return line
        return self._tail[-1] if self._tail else "no output"

    def is_ready(self, timeout_s: float = 2.0) -> bool:
        try:
            r = httpx.get(f"{self.http_url}/v2/health/ready", timeout=timeout_s)
        except httpx.HTTPError:
            return False
        return r.status_code == 200

    def wait_ready(self, timeout_s: float = 180.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc is None:
                raise TritonError("tritonserver was not started")
            code = self._proc.poll()
            if code is not None:
                if self._log_thread:
                    self._log_thread.join(timeout=5)
                raise TritonError(f"tritonserver exited with code {code}: {self.failure_reason()}")
            if self.is_ready():
                log.info("tritonserver ready (pid %d)", self._proc.pid)
                return
            time.sleep(0.25)
        self.stop()
        raise TritonError(f"tritonserver not ready after {timeout_s:.0f}s: {self.failure_reason()}")

    def stop(self, timeout_s: float = 15.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout_s``) and its stubs."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        self.pidfile.unlink(missing_ok=True)
        if proc.poll() is not None:  # it died by itself: its stubs may not have
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            return
        log.info("stopping tritonserver (pid %d)", proc.pid)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("tritonserver did not stop in %.0fs; killing it", timeout_s)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        # Python-backend stubs live in the server's process group; make sure none linger.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        if self._log_thread:
            self._log_thread.join(timeout=5)

    def exited(self) -> bool:
        """True when a server this object started has died by itself."""
        return self._proc is not None and self._proc.poll() is not None

    def kill(self) -> None:
        """Kill the server abruptly (fault tests: what an OOM kill looks like)."""
        if self._proc is not None:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait(timeout=10)
            self._proc = None

    def __enter__(self) -> TritonServer:
        if self._proc is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
