"""Admission control without servers: stages shed load at once, work is weighed per key."""

import asyncio
import time
import uuid

import pytest

from orchestrator.admission import Overloaded, RateLimited, Stage, WorkLimiter, work_units


async def hold(stage: Stage, seconds: float) -> None:
    async with stage.slot():
        await asyncio.sleep(seconds)


async def test_a_full_queue_is_refused_at_once_with_retry_after():
    stage = Stage("llm", concurrency=1, queue=1, max_wait_s=30)
    running = asyncio.create_task(hold(stage, 0.5))
    waiting = asyncio.create_task(hold(stage, 0.01))
    await asyncio.sleep(0.05)
    assert (stage.active, stage.waiting) == (1, 1)
    start = time.monotonic()
    with pytest.raises(Overloaded) as refused:
        async with stage.slot():
            pass
    assert time.monotonic() - start < 0.05  # at once, not after a timeout
    assert refused.value.retry_after >= 1
    await asyncio.gather(running, waiting)  # the admitted ones still finish
    assert (stage.active, stage.waiting) == (0, 0)


async def test_a_wait_longer_than_the_deadline_is_refused_at_once():
    stage = Stage("asr", concurrency=1, queue=10, max_wait_s=30)
    stage.service_s = 5.0  # each request has recently held the slot for 5 s
    running = asyncio.create_task(hold(stage, 0.3))
    await asyncio.sleep(0.02)
    with pytest.raises(Overloaded, match="expected wait"):
        async with stage.slot(deadline=time.monotonic() + 2):
            pass
    await running


async def test_waiters_get_slots_in_turn_and_the_service_time_is_learned():
    stage = Stage("tts", concurrency=2, queue=8, max_wait_s=5)
    await asyncio.gather(*(hold(stage, 0.05) for _ in range(6)))
    assert stage.active == 0 and stage.waiting == 0
    assert 0.03 < stage.service_s < 0.5


async def test_a_cancelled_waiter_leaves_the_queue():
    stage = Stage("llm", concurrency=1, queue=4, max_wait_s=5)
    running = asyncio.create_task(hold(stage, 0.3))
    await asyncio.sleep(0.01)
    waiter = asyncio.create_task(hold(stage, 0.01))
    await asyncio.sleep(0.01)
    assert stage.waiting == 1
    waiter.cancel()  # the client left while queued
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert stage.waiting == 0
    await running
    assert stage.active == 0


async def test_work_is_weighed_and_a_big_request_leaves_the_key_in_debt(monkeypatch):
    now = [100.0]
    monkeypatch.setattr("orchestrator.buckets.time.monotonic", lambda: now[0])
    limiter = WorkLimiter(per_minute=60)  # one unit a second, bursts of 60
    key = uuid.uuid4()
    await limiter.charge(key, work_units(audio_seconds=90))  # one long recording goes through
    with pytest.raises(RateLimited) as limited:
        await limiter.charge(key, work_units(tokens=100))  # ... and the key then waits
    assert limited.value.retry_after >= 30
    await limiter.charge(uuid.uuid4(), 10)  # another key is not affected
    now[0] += 120
    await limiter.charge(key, 10)


def test_work_units():
    assert work_units(audio_seconds=3, tokens=20, characters=30) == pytest.approx(3 + 2 + 2)


async def test_slots_held_long_now_count_even_if_past_requests_were_quick():
    stage = Stage("turn", concurrency=1, queue=10, max_wait_s=1.0)
    stage.service_s = 0.01  # quick when idle ...
    running = asyncio.create_task(hold(stage, 1.6))
    await asyncio.sleep(1.2)  # ... but the request in the slot has held it for 1.2 s
    start = time.monotonic()
    with pytest.raises(Overloaded):
        async with stage.slot():
            pass
    assert time.monotonic() - start < 0.05
    await running


async def test_a_request_let_into_the_queue_is_served_not_refused_later():
    stage = Stage("llm", concurrency=1, queue=4, max_wait_s=0.2)
    running = asyncio.create_task(hold(stage, 0.5))  # longer than max_wait_s
    await asyncio.sleep(0.01)  # no history: the newcomer is let in
    start = time.monotonic()
    async with stage.slot(deadline=time.monotonic() + 5):
        waited = time.monotonic() - start
    assert 0.4 < waited < 1.0  # it waited for the slot past max_wait_s, within its deadline
    await running


async def test_the_doctors_probe_is_never_queued_behind_stuck_requests(tmp_path):
    """All of a dead model's slots are held by requests stuck in it: the probe that finds
    the death must still reach the model, and only the probe may skip admission."""
    from orchestrator.admission import Admission
    from orchestrator.config import Settings
    from orchestrator.triton.client import TritonGateway
    from orchestrator.triton.doctor import ModelDoctor

    settings = Settings(_env_file=None, model_repository=tmp_path, llm_concurrency=1,
                        queue_depth=0)  # fmt: skip
    admission = Admission(settings)
    gateway = TritonGateway("127.0.0.1:1", admission=admission)
    seen: list[bool] = []

    async def chat_stream(messages, **kwargs):
        async with gateway._slot("llm", None):
            seen.append(True)
            yield None

    gateway.chat_stream = chat_stream  # type: ignore[method-assign]
    stuck = asyncio.create_task(hold(admission.stages["llm"], 0.5))  # the only slot, held
    await asyncio.sleep(0.01)
    with pytest.raises(Overloaded):  # an ordinary call is refused at once ...
        async for _ in chat_stream([]):
            pass
    doctor = ModelDoctor(gateway, settings)
    assert await doctor.probe("llm")  # ... the probe gets through
    assert seen == [True]
    with pytest.raises(Overloaded):  # and the bypass did not leak into this task
        async for _ in chat_stream([]):
            pass
    await stuck
    await gateway.close()


async def test_a_pipeline_that_never_answered_is_probed_on_a_fresh_boot(tmp_path, monkeypatch):
    """The monotonic clock starts near zero at boot: a pipeline with no success yet must be
    probed even when less than a probe interval has passed since boot, not reported up."""
    from orchestrator.config import Settings
    from orchestrator.triton.client import TritonGateway, TritonUnavailable
    from orchestrator.triton.doctor import ModelDoctor

    monkeypatch.setattr("orchestrator.triton.doctor.time.monotonic", lambda: 60.0)
    settings = Settings(_env_file=None, model_repository=tmp_path, health_probe_interval_s=3600)
    gateway = TritonGateway("127.0.0.1:1")
    asked = []

    async def embed(texts, **kwargs):
        asked.append(texts)
        raise TritonUnavailable("Triton at 127.0.0.1:1 is unreachable")

    gateway.embed = embed  # type: ignore[method-assign]
    doctor = ModelDoctor(gateway, settings)
    doctor.pipelines = ("embed",)
    doctor.health = {"embed": doctor.health["embed"]}
    try:
        await doctor.round()
        assert asked, "the doctor took a pipeline that never answered for up"
        assert doctor.report()["embed"].startswith("down")
    finally:
        await gateway.close()


async def test_a_pipeline_never_checked_is_stale_on_a_fresh_boot(tmp_path, monkeypatch):
    """/health wakes the doctor for a pipeline never looked at, even an hour after boot."""
    from orchestrator.config import Settings
    from orchestrator.triton.client import TritonGateway
    from orchestrator.triton.doctor import ModelDoctor

    monkeypatch.setattr("orchestrator.triton.doctor.time.monotonic", lambda: 3600.0)
    settings = Settings(_env_file=None, model_repository=tmp_path, health_probe_interval_s=3600)
    gateway = TritonGateway("127.0.0.1:1")
    try:
        doctor = ModelDoctor(gateway, settings)
        assert not doctor._wake.is_set()
        doctor.report()
        assert doctor._wake.is_set()
    finally:
        await gateway.close()


async def test_a_pipeline_found_down_is_probed_again_soon(tmp_path):
    """With a long idle interval, a pipeline found down must still come back up in /health
    once its model answers again (Triton restarted), without real traffic."""
    from orchestrator.config import Settings
    from orchestrator.triton.client import TritonGateway, TritonUnavailable
    from orchestrator.triton.doctor import ModelDoctor

    settings = Settings(_env_file=None, model_repository=tmp_path, health_probe_interval_s=3600)
    gateway = TritonGateway("127.0.0.1:1")
    answering = False

    async def embed(texts, **kwargs):
        if not answering:
            raise TritonUnavailable("Triton at 127.0.0.1:1 is unreachable")

    gateway.embed = embed  # type: ignore[method-assign]
    doctor = ModelDoctor(gateway, settings)
    doctor.pipelines = ("embed",)
    doctor.health = {"embed": doctor.health["embed"]}
    doctor.start()
    try:
        doctor.report()  # wakes the doctor: never checked
        await asyncio.sleep(0.2)
        assert doctor.report()["embed"].startswith("down")
        answering = True  # the model is back
        deadline = time.monotonic() + 5
        while doctor.report()["embed"] != "up":
            assert time.monotonic() < deadline, doctor.report()
            await asyncio.sleep(0.1)
    finally:
        await doctor.stop()
        await gateway.close()


def llm_doctor(tmp_path):
    """A doctor looking after one pipeline, ``llm`` (a python model), with no idle probes;
    its gateway's calls are the test's to replace."""
    from orchestrator.config import Settings
    from orchestrator.triton.client import TritonGateway
    from orchestrator.triton.doctor import ModelDoctor

    (tmp_path / "llm" / "1").mkdir(parents=True)
    (tmp_path / "llm" / "config.pbtxt").write_text('backend: "python"\n')
    settings = Settings(_env_file=None, model_repository=tmp_path, health_probe_interval_s=3600)
    gateway = TritonGateway("127.0.0.1:1")
    doctor = ModelDoctor(gateway, settings)
    doctor.pipelines = ("llm",)
    doctor.health = {"llm": doctor.health["llm"]}
    return gateway, doctor


async def test_a_death_found_by_the_probe_is_healed_once(tmp_path):
    """The probe's failed call also reports the dead model to the doctor (as every call
    does), and calls sent during the reload can still fail on the old instance after it.
    One reload answers them: a second would reload the fresh instance and fail the requests
    it has just taken."""
    from orchestrator.triton.client import ModelUnhealthy

    gateway, doctor = llm_doctor(tmp_path)
    gateway.on_unhealthy = doctor.suspect
    dead = True
    loads: list[str] = []

    async def chat_stream(messages, **kwargs):
        if dead:  # what the gateway does with "Stub process 'llm_0_0' is not healthy."
            gateway.on_unhealthy("llm")
            raise ModelUnhealthy("Triton model 'llm' is restarting", "llm")
        yield "Hi"

    async def load_model(model, timeout_s=120.0):
        nonlocal dead
        loads.append(model)
        dead = False

    gateway.chat_stream = chat_stream  # type: ignore[method-assign]
    gateway.load_model = load_model  # type: ignore[method-assign]
    try:
        await doctor.round()  # the probe finds it dead, and it is reloaded
        await doctor.round()  # the suspicion it raised was answered by that reload
        assert loads == ["llm"]
        assert doctor.report() == {"llm": "up"}
        # a call sent during the reload reached the old instance and failed after it
        doctor.suspect("llm")
        await doctor.round()
        assert loads == ["llm"], "a healthy, just-reloaded model was reloaded again"
        dead = True  # a new death, reported by a user's call, is healed again
        with pytest.raises(ModelUnhealthy):
            async for _ in chat_stream([]):
                pass
        await doctor.round()
        assert loads == ["llm", "llm"]
    finally:
        await gateway.close()


async def test_a_stalled_stream_asks_the_doctor_to_look_and_keeps_waiting():
    """A backend that dies mid-stream never answers its streams: one that has sent nothing
    for ``stall_s`` asks for a look (once per wait) and still gets its late response; a
    prompt stream and the doctor's own probe ask for none."""
    from orchestrator.triton.client import BYPASS_ADMISSION, TritonGateway

    doubted: list[str] = []
    gateway = TritonGateway("127.0.0.1:1", on_doubt=doubted.append, stall_s=0.05)

    async def responses(delay: float):
        await asyncio.sleep(delay)
        yield "late"

    never = asyncio.get_running_loop().create_future()  # the breaker, not fired
    try:
        assert await gateway._next("llm", never, responses(0.15), 5.0) == "late"
        assert doubted == ["llm"]
        assert await gateway._next("llm", never, responses(0.0), 5.0) == "late"
        assert doubted == ["llm"]

        async def probe() -> str:
            BYPASS_ADMISSION.set(True)
            return await gateway._next("llm", never, responses(0.15), 5.0)

        assert await asyncio.create_task(probe()) == "late"
        assert doubted == ["llm"]
        with pytest.raises(TimeoutError):  # the deadline still holds across the stall
            await gateway._next("llm", never, responses(1.0), 0.1)

        cancelled = asyncio.Event()

        async def hanging():
            try:
                await asyncio.sleep(10)
                yield "never"
            except asyncio.CancelledError:
                cancelled.set()
                raise

        caller = asyncio.create_task(gateway._next("llm", never, hanging(), 5.0))
        await asyncio.sleep(0.01)  # inside the stall wait
        caller.cancel()  # the client left: the wait for the stream's response goes too
        with pytest.raises(asyncio.CancelledError):
            await caller
        await asyncio.wait_for(cancelled.wait(), 1.0)
    finally:
        never.cancel()
        await gateway.close()


async def test_a_doubted_model_is_probed_unless_it_answered_since(tmp_path):
    """A stalled stream's model is probed at once, and reloaded if found dead; a doubt
    that a response of the model answered since (a busy model, not a dead one) costs no
    probe."""
    from orchestrator.triton.client import ModelUnhealthy

    gateway, doctor = llm_doctor(tmp_path)
    probes: list[bool] = []
    loads: list[str] = []

    async def chat_stream(messages, **kwargs):
        probes.append(True)
        if not loads:
            raise ModelUnhealthy("Triton model 'llm' is restarting", "llm")
        yield "Hi"

    async def load_model(model, timeout_s=120.0):
        loads.append(model)

    gateway.chat_stream = chat_stream  # type: ignore[method-assign]
    gateway.load_model = load_model  # type: ignore[method-assign]
    try:
        gateway.last_ok["llm"] = time.monotonic()  # it answered a moment ago ...
        doctor.doubt("llm")  # ... then a stream stalled
        await doctor.round()
        assert loads == ["llm"] and doctor.report() == {"llm": "up"}
        probes.clear()
        doctor.doubt("llm")
        gateway.last_ok["llm"] = time.monotonic() + 1  # another stream's response came since
        await doctor.round()
        assert probes == [] and loads == ["llm"]
    finally:
        await gateway.close()
