"""The model doctor: notices a model that stopped answering and brings it back.

A python-backend model whose stub process dies (an OOM kill, a crash) stays "ready" in
Triton's eyes, but every request to it fails with "Stub process ... is not healthy"
until it is loaded again. The doctor learns of that two ways: the gateway tells it when
a call fails so (:meth:`ModelDoctor.suspect`), and it probes each pipeline with a tiny
real request whenever the pipeline has had no successful call for a probe interval.

To heal, it reloads the broken model through Triton's model-control API (Triton runs in
explicit mode; the model's version files are touched so Triton loads a new instance). If Triton itself has died and ``june serve`` owns the process, it restarts it.
Every recovery is logged and counted (``june_model_recoveries_total``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tritonclient.utils import InferenceServerException

from orchestrator import metrics
from orchestrator.chat import SYSTEM_PROMPT
from orchestrator.config import Settings
from orchestrator.triton.client import (
    BYPASS_ADMISSION,
    ModelUnhealthy,
    TritonGateway,
    TritonUnavailable,
)
from orchestrator.triton.launcher import TritonServer

log = logging.getLogger("june.doctor")

_STEP_MODEL = re.compile(r'model_name:\s*"([^"]+)"')
RETRY_DOWN_S = 2.0  # how soon a pipeline found down is probed again
# For this long after a reload, a call's report of a dead model is checked with a probe
# first: calls sent while the model was reloading can still reach the old, dead instance
# and fail after the reload (a dead stub takes Triton about 1 s to notice).
CONFIRM_AFTER_RELOAD_S = 10.0


def composing_models(repository: Path, pipeline: str) -> list[str]:
    """The models an ensemble runs (from its config.pbtxt), or the model itself."""
    try:
        config = (repository / pipeline / "config.pbtxt").read_text(encoding="utf-8")
    except OSError:
        return [pipeline]
    if 'platform: "ensemble"' not in config:
        return [pipeline]
    return list(dict.fromkeys(_STEP_MODEL.findall(config)))


# "Never" on the monotonic clock: its 0 is the machine's boot, which can be minutes ago.
NEVER = float("-inf")


@dataclass
class PipelineHealth:
    ok: bool = True
    checked_at: float = NEVER  # monotonic time of the last look
    detail: str = ""


class ModelDoctor:
    """Probes June's pipelines and heals them; :meth:`report` feeds ``/health``."""

    def __init__(
        self, gateway: TritonGateway, settings: Settings, *, server: TritonServer | None = None
    ) -> None:
        self.gateway = gateway
        self.settings = settings
        self.server = server
        self.repository = settings.model_repository
        self.interval = settings.health_probe_interval_s
        self.pipelines = (
            "vad",
            "asr",
            settings.embed_model,
            "llm",
            settings.tts_model,
            *([settings.tts_stream_model] if settings.tts_stream_model else []),
        )
        self.health = {p: PipelineHealth() for p in self.pipelines}
        # what each pipeline runs, read once from the repository's configs
        self.steps = {p: composing_models(self.repository, p) for p in self.pipelines}
        self._suspects: set[str] = set()
        # models to probe now (a stalled stream, no answer), with when the doubt came
        self._doubts: dict[str, float] = {}
        self._reloaded_at: dict[str, float] = {}  # model -> monotonic time of its last reload
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._healing = asyncio.Lock()

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="june-model-doctor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def suspect(self, model: str) -> None:
        """A call found ``model``'s backend dead: heal it now, not at the next probe."""
        self._suspects.add(model)
        self._wake.set()

    def doubt(self, model: str) -> None:
        """A call gave reason to look at ``model`` (it stalled, or Triton did not answer):
        probe it now, not at the next idle probe."""
        if model not in self._doubts:
            self._doubts[model] = time.monotonic()
            self._wake.set()

    # --- what /health shows --------------------------------------------------------------

    def report(self) -> dict[str, str]:
        """Each pipeline: "up", or "down: why". Stale or down entries are probed again in the
        background."""
        now = time.monotonic()
        if any(not h.ok or now - h.checked_at > 2 * self.interval for h in self.health.values()):
            self._wake.set()
        return {p: "up" if h.ok else f"down: {h.detail}" for p, h in self.health.items()}

    # --- the loop ------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            # a pipeline that is down is looked at again soon, whatever the idle interval
            down = any(not h.ok for h in self.health.values())
            wait = min(self.interval, RETRY_DOWN_S) if down else self.interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)
            self._wake.clear()
            try:
                await self.round()
            except asyncio.CancelledError:
                raise
            except Exception:  # the doctor must outlive anything it sees
                log.exception("model doctor round failed")

    async def round(self) -> None:
        """One look at everything: a dead server, suspected models, idle pipelines."""
        if self.server is not None and self.server.exited():
            await self._restart_server("tritonserver exited")
            return
        suspects, self._suspects = self._suspects, set()
        for model in suspects:
            pipeline = self._pipelines_with(model)[0]
            recent = time.monotonic() - self._reloaded_at.get(model, NEVER)
            if recent < CONFIRM_AFTER_RELOAD_S and pipeline in self.health:
                await self.probe(pipeline)  # reloads it only if the probe finds it dead
            else:
                await self.heal(model, why="its backend process died")
        # a doubt is answered by any response of that model since (a busy model, not a dead one)
        doubts, self._doubts = self._doubts, {}
        doubted = {
            pipeline
            for model, since in doubts.items()
            if (pipeline := self._pipelines_with(model)[0]) in self.health
            and self.gateway.last_ok.get(pipeline, NEVER) < since
        }
        now = time.monotonic()
        for pipeline in self.pipelines:
            last_ok = self.gateway.last_ok.get(pipeline, NEVER)
            if now - last_ok < self.interval and pipeline not in suspects | doubted:
                self._mark(pipeline, True, "")
                continue
            await self.probe(pipeline)

    async def probe(self, pipeline: str) -> bool:
        """A tiny real request; a dead backend found this way is healed at once."""
        deadline = time.monotonic() + min(30.0, max(5.0, 2 * self.interval))
        try:
            # its own task, so the admission bypass cannot leak into the caller's context
            await asyncio.create_task(self._ask(pipeline, deadline))
        except ModelUnhealthy as exc:
            self._mark(pipeline, False, str(exc))
            broken = exc.broken or pipeline
            await self.heal(broken, why="its backend process died")
            return False
        except TritonUnavailable as exc:
            self._mark(pipeline, False, str(exc))
            return False
        except Exception as exc:  # any other failure: down, and said why
            self._mark(pipeline, False, f"{type(exc).__name__}: {exc}")
            return False
        self._mark(pipeline, True, "")
        return True

    def _mark(self, pipeline: str, ok: bool, detail: str) -> None:
        if pipeline in self.health:
            self.health[pipeline] = PipelineHealth(ok, time.monotonic(), detail)
            metrics.PIPELINE_UP.labels(pipeline=pipeline).set(1 if ok else 0)

    async def _ask(self, pipeline: str, deadline: float) -> None:
        BYPASS_ADMISSION.set(True)  # this task only: see BYPASS_ADMISSION
        if pipeline == "vad":
            await self.gateway.speech_segments(np.zeros(8000, np.float32), deadline=deadline)
        elif pipeline == "asr":
            # digital silence: both stubs answer, and the model skips Whisper's graphs
            await self.gateway.transcribe(np.zeros(8000, np.float32), deadline=deadline)
        elif pipeline == "llm":
            # with the turns' system prompt, which the LLM keeps pre-filled: a probe with
            # another would have it pre-fill that one for the next turn instead
            probe = [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": "Hi"},
            ]
            async for _ in self.gateway.chat_stream(probe, max_tokens=1, deadline=deadline):
                pass
        elif pipeline == self.settings.tts_stream_model:  # decoupled: called as a stream
            async for _ in self.gateway.synthesize_stream("Hi.", model=pipeline, deadline=deadline):
                pass
        elif pipeline.startswith("tts"):
            await self.gateway.synthesize("Hi.", model=pipeline, deadline=deadline)
        else:
            await self.gateway.embed(["ping"], model=pipeline, deadline=deadline)

    # --- healing -------------------------------------------------------------------------

    def _pipelines_with(self, model: str) -> list[str]:
        return [p for p in self.pipelines if model in self.steps[p]] or [model]

    async def heal(self, model: str, *, why: str) -> None:
        """Reload ``model`` (or, if it is a pipeline, its python models); restart Triton if
        that fails and June owns it."""
        async with self._healing:
            targets = [model] if model not in self.pipelines else self._python_models(model)
            log.warning("model %s: %s; reloading %s", model, why, ", ".join(targets))
            pipelines = self._pipelines_with(model)
            # requests already inside the dead instance would wait for their deadline
            for pipeline in pipelines:
                self.gateway.fail_inflight(pipeline, why)
            try:
                for target in targets:
                    self._touch(target)
                    await self.gateway.load_model(target)
            except (InferenceServerException, TritonUnavailable, OSError) as exc:
                log.error("reloading %s failed: %s", model, exc)
                if self.server is not None:
                    await self._restart_server(f"reloading {model} failed")
                return
            metrics.MODEL_RECOVERIES.labels(model=model, action="reload").inc()
            log.warning("model %s reloaded", model)
            # Calls that found the old instance dead before now (the probe's own, most often)
            # are answered by this reload: healing them again would reload the new instance
            # and fail the requests it has just taken.
            self._suspects.difference_update({model, *targets})
            self._reloaded_at.update(dict.fromkeys({model, *targets}, time.monotonic()))
            for pipeline in pipelines:
                await self.probe(pipeline)

    def _python_models(self, pipeline: str) -> list[str]:
        out = []
        for name in self.steps[pipeline]:
            config = self.repository / name / "config.pbtxt"
            with contextlib.suppress(OSError):
                if 'backend: "python"' in config.read_text(encoding="utf-8"):
                    out.append(name)
        return out or [pipeline]

    def _touch(self, model: str) -> None:
        """Triton loads a new instance only when a model's version files changed (a newer
        config.pbtxt alone is applied in place, leaving the dead instance): mark them."""
        for version in (self.repository / model).iterdir():
            if version.is_dir() and version.name.isdigit():
                with contextlib.suppress(OSError):
                    for path in (version, *version.iterdir()):
                        os.utime(path, follow_symlinks=False)

    async def _restart_server(self, why: str) -> None:
        assert self.server is not None
        log.error("%s: restarting tritonserver", why)
        for pipeline in self.pipelines:
            self.gateway.fail_inflight(pipeline, why)
        server = self.server
        await asyncio.to_thread(server.stop, 10.0)
        await asyncio.to_thread(server.start, timeout_s=self.settings.triton_start_timeout_s)
        metrics.MODEL_RECOVERIES.labels(model="*", action="restart").inc()
        log.warning("tritonserver restarted (pid %s)", server.pid)
        for pipeline in self.pipelines:
            await self.probe(pipeline)
