"""The engine as an asyncio application uses it: typed errors, single flight, cancel-safety,
handles, per-call options — end to end over loopback HTTP against the emulator."""

from __future__ import annotations

import json
from contextlib import aclosing
from pathlib import Path

import anyio
import pytest

from stableaudio_async import (
    AuthenticationError,
    DeadlineExceededError,
    Engine,
    InsufficientBalanceError,
    InvalidJobError,
    Job,
    JobEvent,
    JobPendingError,
    JobResult,
    JobStatus,
    UnknownJobError,
)
from stableaudio_async.emulator import Emulator

from conftest import TEST_KEY, HandClock, fast_config, raised, when

pytestmark = pytest.mark.anyio

ENV = {"PIXAZO_API_KEY": TEST_KEY, "STABILITY_API_KEY": TEST_KEY, "FAL_KEY": TEST_KEY}


def pixazo(prompt: str, **fields: object) -> Job:
    return Job.model_validate({"provider": "pixazo", "prompt": prompt, "duration": 1, **fields})


def stability(prompt: str, **fields: object) -> Job:
    return Job.model_validate({"provider": "stability", "prompt": prompt, "duration": 2,
                               **fields})


def fal(prompt: str, **fields: object) -> Job:
    return Job.model_validate({"provider": "fal", "prompt": prompt, "duration": 1, **fields})


def manifest(out: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def nothing_running(engine: Engine) -> bool:
    return all(p.waiting == p.queued == p.running == p.downloading == 0
               for p in engine.progress().values())


# -- single flight -----------------------------------------------------------------------------


async def test_five_concurrent_generates_of_one_job_are_one_submission(tmp_path: Path) -> None:
    job = pixazo("one flight")
    async with Emulator(fast_config()) as emu, \
            Engine(emu.client_settings(), out_dir=tmp_path, env=ENV) as engine:
        results: list[JobResult] = []

        async def one() -> None:
            results.append(await engine.generate(job))

        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(one)
        stats = emu.stats["pixazo"]
    assert stats.submits == stats.accepted == 1
    assert len(results) == 5 and all(r == results[0] for r in results)
    assert results[0].status is JobStatus.COMPLETED
    lines = manifest(tmp_path)
    assert [line["id"] for line in lines] == [job.id]
    assert lines[0]["sha256"] == results[0].sha256 == stats.served[results[0].request_id or ""]


async def test_a_batch_and_a_generate_of_one_job_share_its_run(tmp_path: Path) -> None:
    jobs = [pixazo(f"shared {i}") for i in range(3)]
    async with Emulator(fast_config()) as emu, \
            Engine(emu.client_settings(), out_dir=tmp_path, env=ENV) as engine:
        alone: list[JobResult] = []

        async def one() -> None:
            alone.append(await engine.generate(jobs[1]))

        async with anyio.create_task_group() as tg:
            tg.start_soon(one)
            batch = [r async for r in engine.run(jobs)]
        stats = emu.stats["pixazo"]
    assert stats.accepted == 3 and stats.duplicate_submissions == 0
    assert alone == [r for r in batch if r.id == jobs[1].id]


async def test_another_job_under_a_running_id_is_refused(tmp_path: Path) -> None:
    clock = HandClock()
    async with Emulator(fast_config(), clock=clock) as emu, \
            Engine(emu.client_settings(), out_dir=tmp_path, env=ENV) as engine:
        await engine.submit(fal("first", id="same"))
        with pytest.raises(InvalidJobError, match="different job with this id"):
            await engine.generate(fal("second", id="same"))
        assert emu.stats["fal"].submits == 1


# -- typed errors ------------------------------------------------------------------------------


async def test_generate_raises_the_jobs_typed_error_with_its_context(tmp_path: Path) -> None:
    async with Emulator(fast_config()) as emu, \
            Engine(emu.client_settings(), out_dir=tmp_path,
                   env={"PIXAZO_API_KEY": "wrong-key-1234"}) as engine:
        with pytest.raises(AuthenticationError) as info:
            await engine.generate(pixazo("refused"))
    error = info.value
    assert (error.provider, error.job_id, error.status) == ("pixazo", pixazo("refused").id, 401)
    assert error.result is not None and error.result.status is JobStatus.FAILED
    assert "wrong-key-1234" not in str(error)
    # The result's own raise_for_status gives the same class, rebuilt from its fields too.
    with pytest.raises(AuthenticationError):
        error.result.raise_for_status()
    with pytest.raises(AuthenticationError):
        JobResult.model_validate_json(error.result.model_dump_json()).raise_for_status()


async def test_an_invalid_job_for_its_provider_is_an_invalid_job_error(tmp_path: Path) -> None:
    async with Emulator(fast_config()) as emu, \
            Engine(emu.client_settings(), out_dir=tmp_path, env=ENV) as engine:
        with pytest.raises(InvalidJobError) as info:
            await engine.generate(pixazo("too long", duration=10_000))
        assert isinstance(info.value, ValueError)
        assert "duration" in str(info.value) and "1 invalid job(s)" not in str(info.value)
        assert not emu.stats


async def test_a_provider_stopped_by_402_is_probed_after_its_cool_down(tmp_path: Path) -> None:
    """No credit stops the provider; later jobs are held back without a request. After the
    cool-down one job probes: with credit again it goes through and reopens the provider."""
    config = fast_config(balance={"pixazo": 1})
    async with Emulator(config) as emu:
        settings = emu.client_settings()
        pix = settings.providers["pixazo"]
        pix = pix.model_copy(update={"circuit": pix.circuit.model_copy(
            update={"auth_cooldown": 0.2})})
        settings = settings.model_copy(update={"providers": {**settings.providers, "pixazo": pix}})
        async with Engine(settings, out_dir=tmp_path, env=ENV) as engine:
            assert (await engine.generate(pixazo("paid"))).ok
            await raised(engine.generate(pixazo("no credit")), InsufficientBalanceError)
            held = await raised(engine.generate(pixazo("held")), InsufficientBalanceError)
            assert held.status is JobStatus.PENDING and held.pending_reason == "provider_stopped"
            assert emu.stats["pixazo"].submits == 2  # the held job sent nothing
            config.balance["pixazo"] = 10
            started = anyio.current_time()
            await anyio.sleep(0.2)  # the cool-down, measured on the engine's own clock
            assert anyio.current_time() - started >= 0.2
            assert (await engine.generate(pixazo("probe"))).ok
            assert (await engine.generate(pixazo("after"))).ok


async def test_resume_provider_reopens_a_stopped_provider_at_once(tmp_path: Path) -> None:
    config = fast_config(balance={"pixazo": 0})
    async with Emulator(config) as emu, \
            Engine(emu.client_settings(), out_dir=tmp_path, env=ENV) as engine:
        await raised(engine.generate(pixazo("no credit")), InsufficientBalanceError)
        await raised(engine.generate(pixazo("held")), InsufficientBalanceError)
        config.balance["pixazo"] = 10
        engine.resume_provider("pixazo")
        assert (await engine.generate(pixazo("held"))).ok
        assert emu.stats["pixazo"].accepted == 1


# -- cancel-safety -----------------------------------------------------------------------------

#: Four jobs of a queue-and-poll provider and four of the synchronous one: some 40 events.
BATCH = [pixazo(f"cancelled {i}", seed=i) for i in range(4)] \
    + [stability(f"cancelled {i}", seed=i) for i in range(4)]


@pytest.mark.parametrize("k", range(1, 31))
async def test_cancel_after_the_kth_event_then_resume_pays_once(tmp_path: Path, k: int) -> None:
    """Cancel the caller's scope at its k-th job event: nothing shows as running, and the
    resume finishes every job with zero duplicate submissions."""
    async with Emulator(fast_config()) as emu:
        settings = emu.client_settings()
        seen = 0
        async with Engine(settings, out_dir=tmp_path, env=ENV) as engine:
            with anyio.CancelScope() as scope:

                def count(event: JobEvent) -> None:
                    nonlocal seen
                    seen += 1
                    if seen == k:
                        scope.cancel()

                async with aclosing(engine.run(BATCH, on_event=count)) as results:
                    async for _ in results:
                        pass
            assert scope.cancelled_caught
            assert nothing_running(engine), engine.progress()
        async with Engine(settings, out_dir=tmp_path, env=ENV) as engine:
            resumed = [r async for r in engine.run(BATCH)]
        stats = emu.stats
    assert all(r.ok for r in resumed), [(r.id, r.error) for r in resumed if not r.ok]
    assert not any(r.possibly_duplicated for r in resumed)
    assert sum(s.duplicate_submissions for s in stats.values()) == 0
    assert sum(s.accepted for s in stats.values()) == len(BATCH)


async def test_a_cancelled_generate_waits_for_its_synchronous_submit(tmp_path: Path) -> None:
    """Cancelled while Stability holds the connection (the generation): the reply, billed, is
    awaited and kept; then the cancellation goes through."""
    async with Emulator(fast_config(generation_time=20)) as emu, \
            Engine(emu.client_settings(), out_dir=tmp_path, env=ENV) as engine:
        job = stability("held reply")
        with anyio.CancelScope() as scope:

            def cancel_once_running(event: JobEvent) -> None:
                if event.phase == "running":
                    scope.cancel()

            await engine.generate(job, on_event=cancel_once_running)
        assert scope.cancelled_caught
        assert nothing_running(engine)
        # Kept, not given up: the same engine, and a rerun, find it done.
        assert (await engine.generate(job)).status is JobStatus.SKIPPED
    assert emu.stats["stability"].accepted == 1
    assert [line["status"] for line in manifest(tmp_path)][:1] == ["completed"]


async def test_a_timeout_ends_the_job_pending_and_attach_finishes_it(tmp_path: Path) -> None:
    clock = HandClock()
    async with Emulator(fast_config(), clock=clock) as emu:
        settings = emu.client_settings()
        job = fal("timed out")
        async with Engine(settings, out_dir=tmp_path, env=ENV) as engine:
            with pytest.raises(DeadlineExceededError) as info:
                await engine.generate(job, timeout=0.2)
            pending = info.value.result
            assert pending.status is JobStatus.PENDING and pending.request_id in emu.jobs
            assert nothing_running(engine)
        clock.move_past(emu.jobs[pending.request_id].done_at)
        async with Engine(settings, out_dir=tmp_path, env=ENV) as engine:
            handle = await engine.attach(job.id)
            assert handle.request_id == pending.request_id
            done = await handle.result()
    assert done.status is JobStatus.COMPLETED and done.request_id == pending.request_id
    assert emu.stats["fal"].submits == 1


# -- handles -----------------------------------------------------------------------------------


async def test_submit_returns_a_durable_handle_and_its_events(tmp_path: Path) -> None:
    clock = HandClock()
    async with Emulator(fast_config(), clock=clock) as emu:
        settings = emu.client_settings()
        job = fal("handled")
        async with Engine(settings, out_dir=tmp_path, env=ENV) as engine:
            handle = await engine.submit(job)
            assert handle.request_id in emu.jobs and not handle.done
            assert handle.status() in ("submitted", "running")
            await when(lambda: emu.jobs[handle.request_id or ""].polls > 0)
            clock.move_past(emu.jobs[handle.request_id or ""].done_at)
            events = [event async for event in handle.events()]
            result = await handle.result()
            data = await result.read_bytes()
            # attach() in the same engine joins the same (finished or running) job.
            again = await engine.attach(job.id)
            assert again.done and again.status() == "completed"
            assert (await again.result()).status is JobStatus.SKIPPED
    phases = [e.phase for e in events]
    assert phases[:2] == ["submitting", "submitted"] and phases[-1] == "completed"
    assert events[1].request_id == handle.request_id
    assert events[-1].result == result and result.status is JobStatus.COMPLETED
    assert data == (tmp_path / f"{job.id}.wav").read_bytes() or data[:3] in (b"ID3", b"\xff\xfb")
    assert emu.stats["fal"].submits == 1


async def test_attach_of_a_failed_job_hands_back_its_error_and_sends_nothing(
        tmp_path: Path) -> None:
    job = pixazo("refused once")
    async with Emulator(fast_config()) as emu:
        async with Engine(emu.client_settings(), out_dir=tmp_path,
                          env={"PIXAZO_API_KEY": "wrong-key-1234"}) as engine:
            await raised(engine.generate(job), AuthenticationError)
        async with Engine(emu.client_settings(), out_dir=tmp_path, env=ENV) as engine:
            handle = await engine.attach(job.id)
            assert handle.done and handle.status() == "failed"
            failed = await raised(handle.result(), AuthenticationError)
        assert failed.http_status == 401 and emu.stats["pixazo"].submits == 1


async def test_attach_of_an_unknown_job_is_a_clear_error(tmp_path: Path) -> None:
    async with Emulator(fast_config()) as emu, \
            Engine(emu.client_settings(), out_dir=tmp_path, env=ENV) as engine:
        with pytest.raises(UnknownJobError, match="no job 'nope'"):
            await engine.attach("nope")


async def test_handle_cancel_without_remote_cancel_is_finished_by_a_rerun(tmp_path: Path) -> None:
    """Pixazo has no cancel: the job ends here pending with its id, and a rerun fetches it."""
    clock = HandClock()
    async with Emulator(fast_config(), clock=clock) as emu:
        settings = emu.client_settings()
        job = pixazo("uncancellable")
        async with Engine(settings, out_dir=tmp_path, env=ENV) as engine:
            handle = await engine.submit(job)
            await handle.cancel()
            with pytest.raises(JobPendingError) as info:
                await handle.result()
            assert info.value.result.pending_reason == "cancelled"
        clock.move_past(emu.jobs[handle.request_id or ""].done_at)
        async with Engine(settings, out_dir=tmp_path, env=ENV) as engine:
            assert (await engine.generate(job)).request_id == handle.request_id
    assert emu.stats["pixazo"].submits == 1


async def test_per_call_path_force_and_read_bytes(tmp_path: Path) -> None:
    job = pixazo("placed", output_format="wav")
    target = tmp_path / "elsewhere" / "mine.wav"
    target.parent.mkdir()
    async with Emulator(fast_config()) as emu, \
            Engine(emu.client_settings(), out_dir=tmp_path / "out", env=ENV) as engine:
        first = await engine.generate(job, path=target)
        assert first.path == str(target) and (await first.read_bytes())[:4] == b"RIFF"
        assert not list((tmp_path / "out").glob("*.wav"))
        assert (await engine.generate(job)).status is JobStatus.SKIPPED
        again = await engine.generate(job, force=True, path=target)
        assert again.status is JobStatus.COMPLETED
        assert emu.stats["pixazo"].accepted == 2


# -- event loops -------------------------------------------------------------------------------


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_under_trio_the_engine_says_it_needs_asyncio(tmp_path: Path) -> None:
    from stableaudio_async import load_settings

    with pytest.raises(RuntimeError, match="asyncio only"):
        async with Engine(load_settings(env={}), out_dir=tmp_path):
            pass
