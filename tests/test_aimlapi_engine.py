"""AI/ML API end to end in-process: the emulator's contract over loopback, and the engine driving it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import anyio
import pytest

from stableaudio_async import Engine, InvalidBatchError, Job, JobResult, JobStatus
from stableaudio_async.emulator import EmulatedLimit, Emulator

from conftest import TEST_KEY, HandClock, HeldClock, capture_logs, fast_config, when

pytestmark = pytest.mark.anyio

ROUTE = "/v2/generate/audio"
HEADERS = {"Authorization": f"Bearer {TEST_KEY}"}
ENV = {"AIMLAPI_API_KEY": TEST_KEY}
ERROR_KEYS = {"message", "path", "requestId", "statusCode", "timestamp"}


def aiml(prompt: str, **fields: Any) -> Job:
    return Job.model_validate({"provider": "aimlapi", "prompt": prompt, "duration": 2,
                               "output_format": "wav", **fields})


def status_url(emu: Emulator, generation_id: str) -> str:
    return f"{emu.url}{ROUTE}?generation_id={quote(generation_id, safe='')}"


async def status_of(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with http.get(url, headers=HEADERS) as r:
        assert r.status == 200
        return dict(await r.json())


async def run_all(settings: Any, jobs: list[Job], out: Path, env: dict[str, str] = ENV
                  ) -> dict[str, Any]:
    async with Engine(settings, out_dir=out, env=env) as engine:
        return {r.id: r async for r in engine.run(jobs)}


# ---- the emulator's contract -------------------------------------------------------------


async def test_emulator_life_cycle_with_a_colon_id(still: Emulator, clock: HandClock) -> None:
    """Submit gives "<uuid>:stable-audio" queued; the encoded id polls to a completed WAV."""
    emulator = still
    async with aiohttp.ClientSession() as http:
        async with http.post(emulator.url + ROUTE, headers=HEADERS, json={
                "model": "stable-audio", "prompt": "p", "seconds_total": 3, "steps": 50}) as r:
            assert r.status == 200
            submitted = await r.json()
        assert set(submitted) == {"id", "status"} and submitted["status"] == "queued"
        assert submitted["id"].endswith(":stable-audio")
        url = status_url(emulator, submitted["id"])
        job = emulator.jobs[submitted["id"]]
        queued = await status_of(http, url)
        assert queued["status"] == "queued" and queued["audio_file"] is None
        clock.move_past(job.queued_until)
        generating = await status_of(http, url)
        assert generating["status"] == "generating"
        assert generating["audio_file"] is None and generating["error"] is None
        clock.move_past(job.done_at)
        done = await status_of(http, url)
        assert done["status"] == "completed"
        assert done["id"] == submitted["id"] and done["error"] is None
        audio_file = done["audio_file"]
        assert set(audio_file) == {"url", "content_type", "file_name", "file_size"}
        assert audio_file["content_type"] == "audio/wav"
        assert emulator.stats["aimlapi"].served == {}  # described, not yet served
        async with http.get(audio_file["url"]) as r:
            assert r.status == 200
            data = await r.read()
    assert data[:4] == b"RIFF" and len(data) == audio_file["file_size"]
    stats = emulator.stats["aimlapi"]
    assert stats.served[submitted["id"]] == hashlib.sha256(data).hexdigest()
    assert stats.submits == stats.accepted == 1 and stats.requests == 1 + stats.polls


@pytest.mark.parametrize(("body", "needle"), [
    ({"prompt": "x"}, "model"),
    ({"model": "stable-audio-2.5", "prompt": "x"}, "model"),
    ({"model": "stable-audio"}, "prompt"),
    ({"model": "stable-audio", "prompt": "x", "seconds_total": 48}, "seconds_total"),
    ({"model": "stable-audio", "prompt": "x", "seconds_total": 2.5}, "seconds_total"),
    ({"model": "stable-audio", "prompt": "x", "seconds_start": 0}, "seconds_start"),
    ({"model": "stable-audio", "prompt": "x", "steps": 1001}, "steps"),
    ({"model": "stable-audio", "prompt": "x", "steps": True}, "steps"),
    ([1, 2], "JSON object"),
    ('{"model": "stable-audio", "prompt": "x", "steps": Infinity}', "steps"),
    ("{not json", "JSON"),
])
async def test_emulator_bad_requests_answer_400(emulator: Emulator, body: Any, needle: str) -> None:
    """Out-of-contract bodies get 400 in AI/ML API's error shape, naming the field."""
    data = body if isinstance(body, str) else json.dumps(body)
    async with aiohttp.ClientSession() as http, \
            http.post(emulator.url + ROUTE, headers={**HEADERS, "Content-Type": "application/json"},
                      data=data) as r:
        assert r.status == 400
        reply = await r.json()
    assert set(reply) == ERROR_KEYS and needle in reply["message"]
    assert (reply["statusCode"], reply["path"]) == (400, ROUTE)
    stats = emulator.stats["aimlapi"]
    assert stats.accepted == 0 and stats.errors[400] == 1


async def test_emulator_refuses_missing_or_wrong_keys(emulator: Emulator) -> None:
    """Without the bearer key, submits and polls alike get 401 in the error shape."""
    async with aiohttp.ClientSession() as http:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TEST_KEY}):
            async with http.post(emulator.url + ROUTE, headers=headers,
                                 json={"model": "stable-audio", "prompt": "x"}) as r:
                assert r.status == 401 and set(await r.json()) == ERROR_KEYS
            async with http.get(status_url(emulator, "a:stable-audio"), headers=headers) as r:
                assert r.status == 401
    stats = emulator.stats["aimlapi"]
    assert stats.accepted == 0 and stats.errors[401] == 6 and stats.requests == 6


async def test_emulator_unknown_or_missing_generation_id(emulator: Emulator) -> None:
    """An unknown generation_id is 404, a missing one 400, both in the error shape."""
    async with aiohttp.ClientSession() as http:
        async with http.get(status_url(emulator, "nope:stable-audio"), headers=HEADERS) as r:
            assert r.status == 404 and (await r.json())["statusCode"] == 404
        async with http.get(emulator.url + ROUTE, headers=HEADERS) as r:
            assert r.status == 400 and "generation_id" in (await r.json())["message"]


async def test_emulator_rate_limit_is_429_without_retry_after() -> None:
    """Past the window every call is 429 in the error shape, with no Retry-After header."""
    config = fast_config(limits={"aimlapi": EmulatedLimit(requests=2, period=100.0, counts="all")})
    # The clock stands still: the window cannot slide between the requests.
    async with Emulator(config, clock=HandClock()) as emu, aiohttp.ClientSession() as http:
        statuses = []
        for _ in range(3):
            async with http.post(emu.url + ROUTE, headers=HEADERS,
                                 json={"model": "stable-audio", "prompt": "x"}) as r:
                statuses.append(r.status)
        async with http.get(status_url(emu, "a:stable-audio"), headers=HEADERS) as r:
            assert r.status == 429  # polls count too
            assert "Retry-After" not in r.headers and set(await r.json()) == ERROR_KEYS
    assert statuses == [200, 200, 429]
    assert emu.stats["aimlapi"].rate_limited == 2 and emu.stats["aimlapi"].errors[429] == 2


async def test_emulator_failures_are_status_error_with_http_200(still: Emulator,
                                                                clock: HandClock) -> None:
    """Both failure markers end in status "error" with {name, message}; the CDN has nothing."""
    emulator = still
    async with aiohttp.ClientSession() as http:
        for marker in ("emulator:fail", "emulator:error"):
            async with http.post(emulator.url + ROUTE, headers=HEADERS,
                                 json={"model": "stable-audio", "prompt": f"x {marker}"}) as r:
                generation_id = (await r.json())["id"]
            clock.move_past(emulator.jobs[generation_id].done_at)
            body = await status_of(http, status_url(emulator, generation_id))
            assert body["status"] == "error" and body["audio_file"] is None
            assert set(body["error"]) == {"name", "message"} and body["error"]["message"]
            async with http.get(f"{emulator.url}/cdn/aimlapi/{generation_id}.wav") as r:
                assert r.status == 404


# ---- the engine against it -----------------------------------------------------------------


async def test_jobs_complete_byte_identical(emulator: Emulator, tmp_path: Path) -> None:
    """Each job's file is what the emulator served, under the job's id, with its generation id."""
    jobs = [aiml(f"theme {i}", duration=1 + i, steps=20 + i) for i in range(5)]
    results = await run_all(emulator.client_settings(), jobs, tmp_path)
    stats = emulator.stats["aimlapi"]
    assert all(r.ok for r in results.values()), [r.error for r in results.values()]
    for job in jobs:
        r = results[job.id]
        assert r.request_id.endswith(":stable-audio")
        assert r.sha256 == stats.served[r.request_id]
        assert Path(r.path) == tmp_path / f"{job.id}.wav"
        assert hashlib.sha256(Path(r.path).read_bytes()).hexdigest() == r.sha256
        assert (r.content_type, r.cost, r.attempts) == ("audio/wav", None, 1)
        params = emulator.jobs[r.request_id].params
        assert (params["seconds_total"], params["steps"]) == (job.duration, job.steps)
    assert stats.accepted == 5 and stats.duplicate_submissions == 0 and stats.rate_limited == 0
    assert stats.requests == stats.submits + stats.polls


async def test_seconds_start_option_reaches_the_provider(emulator: Emulator, tmp_path) -> None:
    """options.seconds_start is sent as the body field; unset fields take the API's defaults."""
    job = Job(provider="aimlapi", prompt="intro", output_format="wav",
              options={"seconds_start": 5})
    (result,) = (await run_all(emulator.client_settings(), [job], tmp_path)).values()
    assert result.ok, result.error
    params = emulator.jobs[result.request_id].params
    assert params["seconds_start"] == 5 and params["duration"] == 30
    assert "steps" not in params and "seconds_total" not in params


async def test_failed_generations_end_failed_with_the_reason(emulator: Emulator, tmp_path) -> None:
    """Status "error" (HTTP 200) ends the job failed at once, carrying the provider's words."""
    ok, fail, error = aiml("fine"), aiml("x emulator:fail"), aiml("y emulator:error")
    results = await run_all(emulator.client_settings(), [ok, fail, error], tmp_path)
    assert results[ok.id].ok
    for job, words in ((fail, "GenerationError"), (error, "Internal system error")):
        r = results[job.id]
        assert (r.status, r.error_type, r.http_status) == (JobStatus.FAILED, "JobFailedError", None)
        assert words in (r.error or "") and r.request_id.endswith(":stable-audio")
        assert r.path is None and not (tmp_path / f"{job.id}.wav").exists()


async def test_wrong_key_fails_with_authentication_error(emulator: Emulator, tmp_path) -> None:
    """A 401 ends the jobs failed with AuthenticationError; nothing is accepted or retried."""
    with capture_logs() as logs:
        results = await run_all(emulator.client_settings(), [aiml("a"), aiml("b")], tmp_path,
                                env={"AIMLAPI_API_KEY": "wrong-key"})
    assert {(r.error_type, r.http_status) for r in results.values()} == {
        ("AuthenticationError", 401)}
    # With no generation id yet, the error names the error body's requestId instead.
    failures = [e for e in logs if e["event"] == "job.failed"]
    assert len(failures) == 2 and all("request=" in e["error"] for e in failures)
    assert all("wrong-key" not in repr(e) for e in logs)
    stats = emulator.stats["aimlapi"]
    assert stats.accepted == 0 and stats.submits <= 2


async def test_no_credits_is_insufficient_balance(tmp_path: Path) -> None:
    """The 403 "no credits" reply is InsufficientBalanceError and stops further submits."""
    async with Emulator(fast_config(balance={"aimlapi": 2})) as emu:
        settings = emu.client_settings()
        provider = settings.providers["aimlapi"].model_copy(update={"max_in_flight": 1})
        settings = settings.model_copy(update={"providers": {"aimlapi": provider}})
        results = await run_all(settings, [aiml(f"c{i}") for i in range(5)], tmp_path)
        stats = emu.stats["aimlapi"]
    assert sum(r.ok for r in results.values()) == 2
    refused = [r for r in results.values() if not r.ok]
    # The job the provider refused fails; the rest are held back, pending and resumable.
    assert {r.error_type for r in refused if r.status == "failed"} == {"InsufficientBalanceError"}
    assert all(r.status == "pending" and "stopped" in (r.error or "")
               for r in refused if r.status != "failed")
    assert stats.accepted == 2 and stats.submits == 3 and stats.errors[403] == 1


async def test_invalid_batch_sends_nothing(emulator: Emulator, tmp_path: Path) -> None:
    """Jobs beyond Stable Audio Open's contract are refused before any request, by id and field."""
    batch = [aiml("ok"), aiml("long", id="too-long", duration=48),
             aiml("start", id="bad-start", options={"seconds_start": 0}),
             Job(id="mp3", provider="aimlapi", prompt="x", output_format="mp3")]
    with pytest.raises(InvalidBatchError) as info:
        await run_all(emulator.client_settings(), batch, tmp_path)
    assert {(i.job_id, i.field) for i in info.value.issues} == {
        ("too-long", "duration"), ("bad-start", "options.seconds_start"),
        ("mp3", "output_format")}
    assert "aimlapi" not in emulator.stats


async def test_429s_are_retried_and_every_job_completes_once(tmp_path: Path) -> None:
    """Against a provider stricter than configured, 429s are retried and nothing is duplicated."""
    strict = fast_config(limits={"aimlapi": EmulatedLimit(requests=4, period=10.0, counts="all")})
    # The emulator's clock stands still until its first 429: its window cannot slide before
    # the engine's six submits overflow it, however slowly they come. Then time runs.
    emu = Emulator(strict, clock=HeldClock(
        lambda: "aimlapi" in emu.stats and emu.stats["aimlapi"].rate_limited > 0))
    async with emu:
        settings = emu.client_settings()
        provider = settings.providers["aimlapi"]
        assert provider.rate_limit is not None
        loose = provider.model_copy(update={
            "rate_limit": provider.rate_limit.model_copy(update={"requests": 40}),
            "retry": provider.retry.model_copy(update={"attempts": 50, "initial": 0.02,
                                                       "max": 0.1})})
        settings = settings.model_copy(update={"providers": {"aimlapi": loose}})
        results = await run_all(settings, [aiml(f"r{i}") for i in range(6)], tmp_path)
        stats = emu.stats["aimlapi"]
    assert all(r.ok for r in results.values()), [r.error for r in results.values() if not r.ok]
    assert stats.rate_limited > 0 and stats.errors[429] == stats.rate_limited
    assert stats.accepted == 6 and stats.duplicate_submissions == 0


async def leave_when(results: AsyncIterator[JobResult], condition: Callable[[], bool]) -> None:
    """Wait for the next result until ``condition()`` holds, then stop waiting: leave the loop."""
    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            await when(condition)
            tg.cancel_scope.cancel()

        tg.start_soon(watch)
        result = await anext(results)
        raise AssertionError(f"a job ended before the batch was left: {result}")


async def test_abandoned_jobs_stop_polling_without_a_cancel_request(tmp_path: Path) -> None:
    """With no cancel route, leaving the batch just stops polling; nothing else is sent."""
    jobs = [aiml(f"slow{i}") for i in range(3)]
    # Jobs that outlast any test: 10⁶ emulated seconds are 10⁴ real ones.
    async with Emulator(fast_config(generation_time=1e6)) as emu:
        async with Engine(emu.client_settings(), out_dir=tmp_path, env=ENV) as engine:
            async with aclosing(engine.run(jobs)) as results:
                # Leave once every job is accepted and being polled.
                await leave_when(results, lambda: len(emu.jobs) == len(jobs)
                                 and all(j.polls for j in emu.jobs.values()))
            # Every request the engine sends takes a slot of the provider's limiter first, so
            # its count is what the engine has sent or is sending: taken here, at once. A poll
            # already sent may yet reach the emulator, which is why its count is not the one.
            left = engine.progress()["aimlapi"].requests
            # Leaving cancelled the jobs' tasks; one already woken (anyio lets it take that
            # step) may still poll once: let every task run until all wait, then count again.
            await anyio.wait_all_tasks_blocked()
            settled = engine.progress()["aimlapi"].requests
            assert left <= settled <= left + len(jobs)
            await anyio.sleep(0.3)  # past the longest poll interval (0.2 s): none comes
            assert engine.progress()["aimlapi"].requests == settled
        stats = emu.stats["aimlapi"]
        assert engine.progress()["aimlapi"].requests == settled
        # The emulator got nothing the engine had not sent, and no cancel of any kind.
        assert stats.requests <= settled
        assert stats.accepted == 3 and stats.cancelled == 0
        assert stats.requests == stats.submits + stats.polls
    manifest = tmp_path / "manifest.jsonl"
    assert not manifest.exists() or not [json.loads(x) for x in manifest.read_text().splitlines()
                                         if json.loads(x)["status"] == "completed"]
