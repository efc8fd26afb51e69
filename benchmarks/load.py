"""``june bench load``: many users at once against a running June, with fault drills.

Loopback only and bounded: it refuses any other address, runs for at most ten minutes,
and stops by itself. It drives concurrent text, voice and transcribe clients from several
keys, probes ``/health`` twice a second, samples the memory (RSS) of every June process,
and can break things mid-load: kill Triton, kill one model's backend process, restart
the database, or drop streaming clients. At the end it checks the turns stored against
the answers the clients received: nothing lost, nothing stored twice.

The baseline, measured first in the same run, is each kind of request from one client
alone: the table shows how much slower the same request is under the load.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import statistics
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import httpx
import numpy as np
import psutil

from orchestrator.cli_errors import CommandError

log = logging.getLogger("june.bench.load")

MAX_SECONDS = 600
MAX_CLIENTS = 64
QUESTIONS = [
    "What time does the support desk open?",
    "Where do visitors park?",
    "What does the cafeteria serve on Thursdays?",
    "Who changes the printer toner?",
]


class LoadError(CommandError):
    """The load run cannot start; the message says why in one line."""


@dataclass
class Outcome:
    kind: str
    status: int
    seconds: float
    started: float
    key: int
    request_id: str = ""
    turn_id: str = ""
    retry_after: str | None = None
    error: str = ""  # no HTTP answer at all: what the client saw


@dataclass
class LoadReport:
    baseline: dict[str, float]
    outcomes: list[Outcome]
    health: list[tuple[float, int, float]]  # (t, status, seconds)
    memory: dict[str, list[tuple[float, float]]]  # process group -> (t, MiB)
    drills: list[dict[str, object]] = field(default_factory=list)
    lost: int = 0
    duplicated: int = 0
    seconds: float = 0.0


def check_loopback(url: str) -> None:
    host = urlparse(url).hostname or ""
    if host not in ("127.0.0.1", "localhost", "::1") and not host.startswith("127."):
        raise LoadError(f"june bench load sends traffic to loopback only, not to {host!r}")


def question_audio() -> list[bytes]:
    from benchmarks.speech import piper_wav

    return [piper_wav(q) for q in QUESTIONS]


async def one_request(
    client: httpx.AsyncClient,
    kind: str,
    key: int,
    headers: dict,
    audio: list[bytes],
    i: int,
    request_id: str | None = None,
) -> Outcome:
    request_id = request_id or f"load-{uuid.uuid4()}"
    start = time.monotonic()
    try:
        if kind in ("text", "retry"):
            r = await client.post(
                "/v1/chat",
                headers=headers,
                json={"text": QUESTIONS[i % len(QUESTIONS)], "request_id": request_id},
            )
        elif kind == "voice":
            r = await client.post(
                "/v1/voice",
                headers=headers,
                files={"file": ("q.wav", audio[i % len(audio)])},
                data={"request_id": request_id},
            )
        else:
            r = await client.post(
                "/v1/transcribe", headers=headers, files={"file": ("q.wav", audio[i % len(audio)])}
            )
        status = r.status_code
        turn_id = r.json().get("turn_id", "") if status == 200 and kind != "transcribe" else ""
        if kind == "retry" and status == 200 and not r.json().get("replayed"):
            turn_id = "not-a-replay"  # a retry answered as a new turn: reconcile counts it
        retry = r.headers.get("retry-after")
    except httpx.HTTPError:
        status, turn_id, retry = 0, "", None  # no answer at all: counted as a failure
    return Outcome(kind, status, time.monotonic() - start, start, key, request_id, turn_id, retry)


async def dropped_stream(client: httpx.AsyncClient, headers: dict, audio: bytes) -> Outcome:
    """A streamed voice turn whose client leaves after the transcript arrives."""
    request_id = f"drop-{uuid.uuid4()}"
    start = time.monotonic()
    try:
        async with client.stream(
            "POST",
            "/v1/voice",
            headers=headers,
            files={"file": ("q.wav", audio)},
            data={"request_id": request_id, "stream": "true"},
        ) as r:
            async for _ in r.aiter_lines():
                break  # hang up
        status = -1  # left on purpose: the turn may or may not be stored, never twice
    except httpx.HTTPError:
        status = 0
    return Outcome("dropped", status, time.monotonic() - start, start, 0, request_id)


def june_processes(data_dir: Path, repository: Path) -> dict[str, list[psutil.Process]]:
    groups: dict[str, list[psutil.Process]] = defaultdict(list)
    for proc in psutil.process_iter(["cmdline", "name"]):
        try:
            cmd = " ".join(proc.info["cmdline"] or [])
        except psutil.Error:
            continue
        if "triton_python_backend_stub" in cmd and (str(repository) in cmd or str(data_dir) in cmd):
            groups["model stubs"].append(proc)
        elif "tritonserver" in cmd and str(data_dir) in cmd:
            groups["tritonserver"].append(proc)
        elif "postgres" in (proc.info["name"] or "") and str(data_dir) in cmd:
            groups["postgres"].append(proc)
        elif "june" in cmd and " serve" in cmd:
            groups["june serve"].append(proc)
    return groups


def rss_mib(procs: list[psutil.Process]) -> float:
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            continue
    return total / 2**20


def find_stub(data_dir: Path, repository: Path, model: str) -> psutil.Process | None:
    for proc in june_processes(data_dir, repository).get("model stubs", []):
        try:
            if any(part.startswith(f"{model}_0_0") for part in proc.cmdline()):
                return proc
        except psutil.Error:
            continue
    return None


def postgres_restart(data_dir: Path) -> None:
    """Restart the embedded Postgres in place (pg_ctl, as pgserver's own system user)."""
    import os

    from pgserver._commands import pg_ctl

    user = "pgserver" if os.geteuid() == 0 else None  # pg_ctl refuses to run as root
    pg_ctl(["restart", "-m", "fast", "-w", "-t", "60"], pgdata=data_dir / "pgdata", user=user)


def break_something(drill: str, data_dir: Path, repository: Path) -> str:
    """Do the drill's damage; what was done, in words."""
    if drill in ("kill-llm-stub", "kill-asr-stub"):
        model = "llm" if drill == "kill-llm-stub" else "asr_whisper"
        stub = find_stub(data_dir, repository, model)
        if stub is None:
            raise LoadError(f"no backend process of {model} found")
        stub.send_signal(signal.SIGKILL)
        return f"kill -9 of the {model} backend (pid {stub.pid})"
    if drill == "kill-triton":
        servers = june_processes(data_dir, repository).get("tritonserver", [])
        if not servers:
            raise LoadError("no tritonserver found under the data dir")
        servers[0].send_signal(signal.SIGKILL)
        return f"kill -9 of tritonserver (pid {servers[0].pid})"
    if drill == "restart-db":
        postgres_restart(data_dir)
        return "PostgreSQL restarted (fast)"
    return "streaming clients hang up mid-turn"


async def run_load(
    urls: list[str],
    keys: list[str],
    *,
    text: int,
    voice: int,
    transcribe: int,
    seconds: float,
    drills: list[str],
    data_dir: Path,
    repository: Path,
    users: list[str],
    database_url: str,
) -> LoadReport:
    for url in urls:
        check_loopback(url)
    seconds = min(seconds, MAX_SECONDS)
    if text + voice + transcribe > MAX_CLIENTS:
        raise LoadError(f"at most {MAX_CLIENTS} concurrent clients")
    audio = question_audio()
    limits = httpx.Limits(max_connections=MAX_CLIENTS + 8)
    async with contextlib.AsyncExitStack() as stack:
        replicas = [
            await stack.enter_async_context(
                httpx.AsyncClient(base_url=url, timeout=180, limits=limits)
            )
            for url in urls
        ]
        client = replicas[0]
        headers = [{"authorization": f"Bearer {k}"} for k in keys]
        baseline = {}
        for kind in ("text", "voice", "transcribe"):
            runs = [await one_request(client, kind, 0, headers[0], audio, i) for i in range(3)]
            ok = [r.seconds for r in runs if r.status == 200]
            baseline[kind] = statistics.median(ok) if ok else float("nan")
        report = LoadReport(baseline=baseline, outcomes=[], health=[], memory=defaultdict(list))
        stop_at = time.monotonic() + seconds
        start = time.monotonic()

        async def worker(kind: str, n: int) -> None:
            """One client: back to back, waiting as told when refused (as clients should).

            With several replicas the clients spread over them, and every fifth text turn
            is sent again to the next replica with the same request id, as a client whose
            answer was lost would retry: it must come back as a replay, not a new turn."""
            i = n
            mine = replicas[n % len(replicas)]
            while time.monotonic() < stop_at:
                key = i % len(keys)
                outcome = await one_request(mine, kind, key, headers[key], audio, i)
                report.outcomes.append(outcome)
                if outcome.status in (429, 503) and outcome.retry_after:
                    await asyncio.sleep(min(float(outcome.retry_after), 5.0))
                elif len(replicas) > 1 and kind == "text" and i % 5 == 0:
                    other = replicas[(n + 1) % len(replicas)]
                    again = await one_request(
                        other, "retry", key, headers[key], audio, i, outcome.request_id
                    )
                    report.outcomes.append(again)
                i += 1

        async def health() -> None:
            while time.monotonic() < stop_at:
                for replica in replicas:
                    t = time.monotonic()
                    try:
                        status = (await replica.get("/health", timeout=5)).status_code
                    except httpx.HTTPError:
                        status = 0
                    report.health.append((t - start, status, time.monotonic() - t))
                await asyncio.sleep(0.5)

        async def memory() -> None:
            while time.monotonic() < stop_at:
                groups = await asyncio.to_thread(june_processes, data_dir, repository)
                for name, procs in groups.items():
                    value = await asyncio.to_thread(rss_mib, procs)
                    report.memory[name].append((time.monotonic() - start, value))
                await asyncio.sleep(2)

        async def drill_runner() -> None:
            for n, drill in enumerate(drills):
                await asyncio.sleep(max(0.0, start + seconds * (n + 1) / (len(drills) + 1)
                                        - time.monotonic()))  # fmt: skip
                at = time.monotonic()
                if drill == "drop-clients":
                    drops = await asyncio.gather(
                        *(
                            dropped_stream(client, headers[0], audio[i % len(audio)])
                            for i in range(4)
                        )
                    )
                    report.outcomes.extend(drops)
                    done = "4 streaming clients hung up after their transcript"
                else:
                    done = await asyncio.to_thread(break_something, drill, data_dir, repository)
                kind = "voice" if drill == "kill-asr-stub" else "text"
                recovered = None
                while time.monotonic() < stop_at + 60:
                    probe = await one_request(client, kind, 0, headers[0], audio, 0)
                    report.outcomes.append(probe)
                    if probe.status == 200:
                        recovered = time.monotonic() - at
                        break
                    await asyncio.sleep(1)
                report.drills.append({"drill": drill, "done": done, "recovered_s": recovered})

        tasks = [worker("text", i) for i in range(text)]
        tasks += [worker("voice", i) for i in range(voice)]
        tasks += [worker("transcribe", i) for i in range(transcribe)]
        await asyncio.gather(*tasks, health(), memory(), drill_runner())
        report.seconds = time.monotonic() - start
    report.lost, report.duplicated = reconcile(report.outcomes, database_url, users)
    return report


def reconcile(outcomes: list[Outcome], database_url: str, users: list[str]) -> tuple[int, int]:
    """(answered turns not stored, request ids stored more than once or as two turns)."""
    from sqlalchemy import create_engine, text

    from orchestrator.db.engine import sqlalchemy_url

    engine = create_engine(sqlalchemy_url(database_url))
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT request_id, id FROM turns WHERE user_id = ANY(:users)"),
                {"users": users},
            ).all()
    finally:
        engine.dispose()
    stored: dict[str, list[str]] = defaultdict(list)
    for request_id, turn_id in rows:
        stored[request_id].append(str(turn_id))
    answered = [o for o in outcomes if o.status == 200 and o.kind in ("text", "voice", "retry")]
    lost = sum(1 for o in answered if o.turn_id not in stored.get(o.request_id, []))
    duplicated = sum(1 for ids in stored.values() if len(ids) > 1)
    return lost, duplicated


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def summary(report: LoadReport) -> tuple[list[list[str]], str]:
    """Rows for the terminal table, and the same as markdown for the README."""
    rows = []
    for kind in ("text", "voice", "transcribe", "retry"):
        mine = [o for o in report.outcomes if o.kind == kind]
        if not mine:
            continue
        ok = [o.seconds for o in mine if o.status == 200]
        shed = [o for o in mine if o.status in (429, 503)]
        statuses = Counter(o.status for o in mine)
        p50 = percentile(ok, 50)
        rows.append(
            [
                kind,
                " ".join(f"{s}:{n}" for s, n in sorted(statuses.items())),
                f"{len(ok) / report.seconds:.2f}",
                f"{report.baseline.get(kind, float('nan')):.2f}",
                f"{p50:.2f}",
                f"{p50 / report.baseline.get(kind, float('nan')):.1f}x",
                f"{percentile(ok, 95):.2f}",
                f"{percentile(ok, 99):.2f}",
                f"{max((o.seconds for o in shed), default=0):.2f}",
                f"{sum(1 for o in shed if o.retry_after)}/{len(shed)}",
            ]
        )
    columns = ["kind", "responses", "ok/s", "alone p50 s (baseline)", "p50 s", "vs alone",
               "p95 s", "p99 s", "slowest shed s", "shed with Retry-After"]  # fmt: skip
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    health = Counter(s for _, s, _ in report.health)
    lines.append("")
    lines.append(
        f"/health: {dict(health)}, slowest {max((h[2] for h in report.health), default=0):.2f} s. "
        f"Turns answered 200 but not stored: {report.lost}; stored twice: {report.duplicated}."
    )
    per_key = Counter(o.key for o in report.outcomes if o.status == 200 and o.kind != "retry")
    minutes = report.seconds / 60 if report.seconds else float("nan")
    lines.append(
        "Accepted per key: "
        + ", ".join(f"key {k}: {n / minutes:.1f}/min" for k, n in sorted(per_key.items()))
        + f"; refused with 429: {sum(1 for o in report.outcomes if o.status == 429)}."
    )
    for name, series in sorted(report.memory.items()):
        values = [v for _, v in series]
        if values:
            lines.append(
                f"RSS {name}: start {values[0]:.0f} MiB, end {values[-1]:.0f} MiB, "
                f"max {max(values):.0f} MiB"
            )
    for drill in report.drills:
        rec = drill["recovered_s"]
        lines.append(
            f"Drill {drill['drill']}: {drill['done']}; answering again after "
            + (f"{rec:.1f} s" if isinstance(rec, float) else "no recovery in time")
        )
    return rows, "\n".join(lines)


def save(report: LoadReport, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"load-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(
        json.dumps(
            {
                "baseline": report.baseline,
                "seconds": report.seconds,
                "outcomes": [vars(o) for o in report.outcomes],
                "health": report.health,
                "memory": report.memory,
                "drills": report.drills,
                "lost": report.lost,
                "duplicated": report.duplicated,
            },
            indent=1,
        )
    )
    return out
