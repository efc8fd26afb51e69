"""No server outlives ``june serve``, even after a ``kill -9``.

``june serve`` records the servers it starts in its data directory (tritonserver's pid
file; Postgres keeps its own ``postmaster.pid``). Two things use those records:

- :func:`stop_stale_servers` runs before anything starts, and stops servers a previous
  ``june serve`` of this data directory left behind;
- a small reaper process, started by :func:`start_reaper` in a session of its own (so
  Ctrl-C does not reach it), waits for ``june serve`` to die by any means and then stops
  them. A signal cannot be caught after SIGKILL, so this has to be another process.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger("june.reaper")

TRITON_PIDFILE = Path("triton") / "tritonserver.pid"
PGDATA = Path("pgdata")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _wait_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _alive(pid) or not _cmdline(pid):
            return True
        time.sleep(0.1)
    return not _alive(pid)


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def stop_triton(data_dir: Path, grace_s: float = 5.0) -> bool:
    """Stop the tritonserver (and its model stubs) recorded in ``data_dir``."""
    pidfile = data_dir / TRITON_PIDFILE
    pid = _read_pid(pidfile)
    if pid is None or not _alive(pid) or "tritonserver" not in _cmdline(pid):
        pidfile.unlink(missing_ok=True)
        return False
    log.warning("stopping tritonserver left running (pid %d)", pid)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    if not _wait_gone(pid, grace_s):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        _wait_gone(pid, 5.0)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)  # stubs left in the group
    pidfile.unlink(missing_ok=True)
    return True


def stop_postgres(pgdata: Path, grace_s: float = 10.0) -> bool:
    """Stop the embedded Postgres running on ``pgdata`` (fast shutdown)."""
    pid = _read_pid(pgdata / "postmaster.pid")
    if pid is None or not _alive(pid) or "postgres" not in _cmdline(pid):
        return False
    log.warning("stopping PostgreSQL left running (pid %d)", pid)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGINT)  # fast shutdown: clients cut, data kept
    if not _wait_gone(pid, grace_s):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGQUIT)  # immediate shutdown; recovers at next start
        _wait_gone(pid, 5.0)
    return True


def pg_users(pgdata: Path) -> list[int]:
    """Live processes in pgserver's list of the server's users (``.handle_pids.json``);
    dead ones are dropped from the list: while a killed ``june serve`` is listed there,
    the next one would never stop Postgres at exit, thinking another process used it."""
    path = pgdata / ".handle_pids.json"
    try:
        pids = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    alive = [pid for pid in pids if isinstance(pid, int) and _alive(pid)]
    if alive != pids:
        path.write_text(json.dumps(alive))
    return alive


def stop_stale_servers(data_dir: Path) -> None:
    """Before starting: servers a dead ``june serve`` of this data directory left."""
    stop_triton(data_dir)
    stop_postgres(data_dir / PGDATA)
    pg_users(data_dir / PGDATA)


def start_reaper(data_dir: Path) -> subprocess.Popen[bytes]:
    """A process that stops this data directory's servers when the caller dies."""
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator.reaper", str(os.getpid()), str(data_dir)],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
    )


def _watch(parent: int, data_dir: Path) -> None:  # pragma: no cover - runs in the reaper
    while _alive(parent) and os.getppid() == parent:
        time.sleep(0.5)
    stop_triton(data_dir)
    stop_postgres(data_dir / PGDATA)
    pg_users(data_dir / PGDATA)


if __name__ == "__main__":  # pragma: no cover
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _watch(int(sys.argv[1]), Path(sys.argv[2]))
