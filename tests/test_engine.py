"""The engine in-process against the emulator over loopback: life cycle, failures, pacing."""

from __future__ import annotations

import hashlib
import json
from contextlib import aclosing
from pathlib import Path

import anyio
import pytest

from stableaudio_async import (
    AuthenticationError,
    ConfigError,
    DeadlineExceededError,
    Engine,
    InvalidBatchError,
    Job,
    JobStatus,
)
from stableaudio_async.emulator import EmulatedLimit, Emulator, Reading

from conftest import READINGS, TEST_KEY, capture_logs, fast_config, raised

pytestmark = pytest.mark.anyio


@pytest.fixture(params=READINGS)
def reading(request: pytest.FixtureRequest) -> Reading:
    """Every test here on :func:`emulator` runs under both of its readings."""
    return request.param  # type: ignore[no-any-return]


def jobs(n: int, **fields: object) -> list[Job]:
    return [Job(provider="pixazo", prompt=f"p{i}", seed=i, duration=1, **fields)  # type: ignore[arg-type]
            for i in range(n)]


async def test_results_stream_and_manifest(emulator: Emulator, settings, env, tmp_path: Path) -> None:
    """Each result names its job, request, checksum and timings; the manifest has one line each."""
    async with Engine(settings, out_dir=tmp_path, env=env) as engine:
        results = [r async for r in engine.run(jobs(12))]
    assert len(results) == 12 and all(r.ok for r in results)
    stats = emulator.stats["pixazo"]
    for r in results:
        assert r.request_id and r.request_id in stats.served
        assert r.sha256 == stats.served[r.request_id]
        assert r.path and Path(r.path).name == f"{r.id}.mp3"
        assert hashlib.sha256(Path(r.path).read_bytes()).hexdigest() == r.sha256
        assert r.attempts == 1
        assert r.timings.queued is not None and r.timings.downloading is not None
        assert r.timings.total >= r.timings.queued
        assert r.content_type == "audio/mpeg"
    lines = (tmp_path / "manifest.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["id"] for line in lines) == sorted(r.id for r in results)


async def test_failed_jobs_do_not_cancel_the_batch(emulator: Emulator, settings, env, tmp_path) -> None:
    """FAILED and ERROR jobs end failed with the provider's reason; the others complete."""
    batch = [*jobs(6), Job(provider="pixazo", prompt="x emulator:fail", duration=1),
             Job(provider="pixazo", prompt="y emulator:error", duration=1)]
    async with Engine(settings, out_dir=tmp_path, env=env) as engine:
        results = {r.id: r async for r in engine.run(batch)}
    failed = [r for r in results.values() if not r.ok]
    assert len(failed) == 2 and sum(r.ok for r in results.values()) == 6
    by_prompt = {r.id: r for r in failed}
    fail = by_prompt[batch[6].id]
    error = by_prompt[batch[7].id]
    assert fail.error_type == error.error_type == "JobFailedError"
    assert "Generation failed" in (fail.error or "")
    assert "system error" in (error.error or "")
    assert fail.request_id and fail.path is None
    assert not (tmp_path / f"{fail.id}.mp3").exists()


async def test_wrong_key_fails_jobs_with_authentication_error(emulator, settings, tmp_path) -> None:
    """A 401 ends the job failed, naming the status, without retrying."""
    async with Engine(settings, out_dir=tmp_path, env={"PIXAZO_API_KEY": "nope-nope"}) as engine:
        result = await raised(engine.generate(jobs(1)[0]), AuthenticationError)
    assert result.status is JobStatus.FAILED
    assert result.error_type == "AuthenticationError" and result.http_status == 401
    assert result.attempts == 1
    assert emulator.stats["pixazo"].accepted == 0


async def test_insufficient_balance(tmp_path: Path, env) -> None:
    """After the balance runs out, submissions fail with 402 and are not retried."""
    async with Emulator(fast_config(balance={"pixazo": 3})) as emu:
        settings = emu.client_settings().model_copy()
        async with Engine(settings, out_dir=tmp_path, env=env) as engine:
            results = [r async for r in engine.run(jobs(6))]
        stats = emu.stats["pixazo"]
    assert sum(r.ok for r in results) == 3
    refused = [r for r in results if not r.ok]
    failed = [r for r in refused if r.status == "failed"]
    assert failed and {(r.error_type, r.http_status) for r in failed} == {
        ("InsufficientBalanceError", 402)}
    # Once a 402 is seen the provider is stopped: the rest are held back, never sent.
    held = [r for r in refused if r.status == "pending"]
    assert len(failed) + len(held) == 3
    assert stats.accepted == 3 and stats.submits == 3 + len(failed)


async def test_429_is_retried_after_the_servers_pause(tmp_path: Path, env) -> None:
    """Against a provider stricter than configured, 429s are honoured and every job completes once."""
    strict = fast_config(limits={"pixazo": EmulatedLimit(requests=5, period=20.0, counts="all")})
    async with Emulator(strict) as emu:
        settings = emu.client_settings()
        # Misconfigure the client at four times the real limit.
        provider = settings.providers["pixazo"]
        loose = provider.model_copy(update={"rate_limit": provider.rate_limit.model_copy(
            update={"requests": 20}), "retry": provider.retry.model_copy(update={"attempts": 50})})
        settings = settings.model_copy(update={"providers": {"pixazo": loose}})
        async with Engine(settings, out_dir=tmp_path, env=env) as engine:
            results = [r async for r in engine.run(jobs(15))]
        stats = emu.stats["pixazo"]
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    assert stats.rate_limited > 0
    assert stats.accepted == 15 and stats.duplicate_submissions == 0


async def test_sync_mode_inline_audio(emulator: Emulator, reading: Reading, settings, env,
                                      tmp_path) -> None:
    """A sync_mode job's data-URI audio goes through the same atomic writer, whether it comes
    in the submit's reply (strict) or in a status body (loose)."""
    job = Job(provider="pixazo", prompt="inline", duration=2, output_format="wav",
              options={"sync_mode": True})
    async with Engine(settings, out_dir=tmp_path, env=env) as engine:
        result = await engine.generate(job)
    assert result.ok, result.error
    stats = emulator.stats["pixazo"]
    assert stats.downloads == 0
    assert stats.polls == (0 if reading == "strict" else stats.polls) and stats.submits == 1
    if reading == "loose":
        assert stats.polls >= 1
    assert result.sha256 == stats.served[result.request_id]
    assert (tmp_path / f"{job.id}.wav").read_bytes()[:4] == b"RIFF"


async def test_deadline_ends_a_job_that_never_finishes(tmp_path: Path, env) -> None:
    """A job still running at its deadline fails with DeadlineExceededError."""
    async with Emulator(fast_config(generation_time=10_000)) as emu:
        settings = emu.client_settings(poll_timeout=30)
        async with Engine(settings, out_dir=tmp_path, env=env) as engine:
            result = await raised(engine.generate(jobs(1)[0]), DeadlineExceededError)
    assert result.error_type == "DeadlineExceededError"
    assert result.request_id is not None
    assert not list(tmp_path.glob("*.mp3"))


async def test_missing_key_raises_before_any_request(emulator: Emulator, settings, tmp_path) -> None:
    """A missing key is a ConfigError naming the variable, and nothing is sent."""
    async with Engine(settings, out_dir=tmp_path, env={}) as engine:
        with pytest.raises(ConfigError, match="PIXAZO_API_KEY"):
            async for _ in engine.run(jobs(3)):
                pass
    assert "pixazo" not in emulator.stats


async def test_invalid_batch_sends_nothing(emulator: Emulator, settings, env, tmp_path) -> None:
    """One out-of-range job refuses the whole batch, naming its id and field."""
    batch = [*jobs(3), Job(id="too-long", provider="pixazo", prompt="x", duration=121)]
    async with Engine(settings, out_dir=tmp_path, env=env) as engine:
        with pytest.raises(InvalidBatchError) as info:
            async for _ in engine.run(batch):
                pass
    (issue,) = info.value.issues
    assert issue.job_id == "too-long" and issue.field == "duration"
    assert "pixazo" not in emulator.stats


async def test_leaving_the_loop_early_cancels_the_rest(tmp_path: Path, env) -> None:
    """Breaking out of run() stops the batch's remaining jobs; the engine still exits cleanly."""
    async with Emulator(fast_config(generation_time=200)) as emu:
        settings = emu.client_settings()
        async with Engine(settings, out_dir=tmp_path, env=env) as engine:
            quick = Job(provider="pixazo", prompt="quick", duration=1, options={"sync_mode": True})
            async with aclosing(engine.run([quick, *jobs(5)])) as results:
                first = await anext(results)
            accepted = emu.stats["pixazo"].accepted
            await anyio.sleep(0.2)
            assert emu.stats["pixazo"].polls <= accepted * 20
            polls = emu.stats["pixazo"].polls
            await anyio.sleep(0.3)
            # No job is still polling once the batch was cancelled.
            assert emu.stats["pixazo"].polls == polls
    assert first.ok


async def test_progress_and_log_context(emulator: Emulator, settings, env, tmp_path) -> None:
    """Progress counts end at completed; every job event carries job id, provider and request id."""
    with capture_logs() as logs:
        async with Engine(settings, out_dir=tmp_path, env=env) as engine:
            results = [r async for r in engine.run(jobs(4))]
            progress = engine.progress()["pixazo"]
    assert progress.completed == 4
    assert progress.waiting == progress.queued == progress.running == progress.downloading == 0
    assert progress.requests >= 8  # submits plus polls, all through the limiter
    completed = [e for e in logs if e["event"] == "job.completed"]
    assert {e["job_id"] for e in completed} == {r.id for r in results}
    assert all(e["provider"] == "pixazo" and e["request_id"] for e in completed)
    assert all(TEST_KEY not in repr(e) for e in logs)


async def test_engine_requires_async_with(settings) -> None:
    """Using an engine outside `async with` is a clear error."""
    engine = Engine(settings)
    with pytest.raises(RuntimeError, match="async with"):
        await engine.generate(jobs(1)[0])
