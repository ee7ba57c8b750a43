"""Replicate end to end in-process: the emulator's contract over HTTP, and the engine driving it."""

from __future__ import annotations

import hashlib
from contextlib import aclosing
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from structlog.testing import capture_logs

from stableaudio_async import Engine, Job, JobResult, JobStatus
from stableaudio_async.config import RateLimit, RetryPolicy, Settings
from stableaudio_async.emulator import EmulatedJob, EmulatedLimit, Emulator
from stableaudio_async.emulator import replicate as replicate_emulator

from conftest import TEST_KEY, fast_config

pytestmark = pytest.mark.anyio

ENV = {"REPLICATE_API_TOKEN": TEST_KEY}
CREATE = "/v1/models/stability-ai/stable-audio-2.5/predictions"
AUTH = {"Authorization": f"Bearer {TEST_KEY}"}


def replicate(prompt: str, **fields: Any) -> Job:
    fields.setdefault("duration", 2)
    return Job(provider="replicate", prompt=prompt, **fields)


def client_settings(emu: Emulator, *, poll_timeout: float = 600.0, **changes: Any) -> Settings:
    """The emulator's client settings for Replicate, with ``changes`` to its provider settings.

    ``Emulator.client_settings`` scales ``rate_limit`` but leaves ``poll_rate_limit`` at the
    real minute; it is scaled here the same way so the client paces polls as it would for real.
    """
    settings = emu.client_settings(poll_timeout=poll_timeout)
    other = emu.config.poll_limits["replicate"]
    poll_limit = RateLimit(requests=other.requests, period=other.period * emu.config.time_scale,
                           counts="all")
    provider = settings.providers["replicate"].model_copy(
        update={"poll_rate_limit": poll_limit, **changes})
    return settings.model_copy(update={"providers": {**settings.providers, "replicate": provider}})


async def run_all(emu: Emulator, jobs: list[Job], out: Path, *, env: dict[str, str] = ENV,
                  **changes: Any) -> dict[str, JobResult]:
    async with Engine(client_settings(emu, **changes), out_dir=out, env=env) as engine:
        return {r.id: r async for r in engine.run(jobs)}


def emulated(emu: Emulator, prompt: str) -> EmulatedJob:
    (job,) = [j for j in emu.jobs.values() if j.provider == "replicate" and j.prompt == prompt]
    return job


async def create(http: aiohttp.ClientSession, emu: Emulator, body: Any, *,
                 headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
    async with http.post(emu.url + CREATE, json=body,
                         headers=AUTH if headers is None else headers) as r:
        return r.status, dict(r.headers), await r.json()


async def poll_until(http: aiohttp.ClientSession, url: str, status: str) -> dict[str, Any]:
    for _ in range(300):
        async with http.get(url, headers=AUTH) as r:
            body = await r.json()
        if body["status"] == status:
            return body  # type: ignore[no-any-return]
        await anyio.sleep(0.01)
    raise AssertionError(f"never reached {status}: {body}")


# ---- the emulator's contract, over raw HTTP ---------------------------------------------------


async def test_create_poll_download_life_cycle(emulator: Emulator) -> None:
    """201 starting with urls.get/cancel, then processing → succeeded with a downloadable output URL."""
    async with aiohttp.ClientSession() as http:
        status, _, created = await create(http, emulator, {"input": {"prompt": "p", "duration": 3}})
        assert status == 201
        assert created["status"] == "starting" and created["output"] is None
        assert len(created["id"]) == 26 and created["id"].isalnum()
        get = f"{emulator.url}/v1/predictions/{created['id']}"
        assert created["urls"] == {"get": get, "cancel": get + "/cancel"}
        assert created["input"] == {"prompt": "p", "duration": 3}
        processing = await poll_until(http, get, "processing")
        assert processing["started_at"] and processing["completed_at"] is None
        done = await poll_until(http, get, "succeeded")
        assert done["data_removed"] is False and done["error"] is None
        assert done["metrics"]["predict_time"] == pytest.approx(5.0, abs=0.5)
        async with http.get(done["output"]) as r:
            assert (r.status, r.content_type) == (200, "audio/mpeg")
            data = await r.read()
    stats = emulator.stats["replicate"]
    assert stats.served[created["id"]] == hashlib.sha256(data).hexdigest()
    assert (stats.submits, stats.accepted, stats.downloads) == (1, 1, 1)
    assert stats.requests == stats.submits + stats.polls


async def test_prefer_wait_holds_until_done_or_the_wait_runs_out() -> None:
    """Prefer: wait=N answers 201 once the prediction is final or N emulated seconds have passed."""
    async with Emulator(fast_config(queue_time=0, generation_time=40)) as emu, \
            aiohttp.ClientSession() as http:
        started = anyio.current_time()
        status, _, short = await create(http, emu, {"input": {"prompt": "a", "duration": 1}},
                                        headers={**AUTH, "Prefer": "wait=5"})
        held = anyio.current_time() - started
        assert (status, short["status"], short["output"]) == (201, "processing", None)
        assert 0.05 <= held < 0.3  # 5 of the 40 emulated seconds
        started = anyio.current_time()
        status, _, full = await create(http, emu, {"input": {"prompt": "b", "duration": 1}},
                                       headers={**AUTH, "Prefer": "wait"})
        assert (status, full["status"]) == (201, "succeeded")
        assert full["output"].endswith(f"/{full['id']}/output.mp3")
        assert anyio.current_time() - started >= 0.38  # held for all 40 emulated seconds
        for bad in ("wait=0", "wait=61", "wait=1.5"):
            status, _, body = await create(http, emu, {"input": {"prompt": "c"}},
                                           headers={**AUTH, "Prefer": bad})
            assert status == 400 and "1 to 60" in body["detail"]
        assert emu.stats["replicate"].accepted == 2


async def test_cancel_ends_the_prediction_and_wakes_a_held_create() -> None:
    """POST …/cancel marks it canceled (counted once); a final prediction is returned unchanged."""
    async with Emulator(fast_config(generation_time=10_000)) as emu, \
            aiohttp.ClientSession() as http:
        async with anyio.create_task_group() as tg:
            held: dict[str, Any] = {}

            async def hold() -> None:
                held["reply"] = await create(http, emu, {"input": {"prompt": "held"}},
                                             headers={**AUTH, "Prefer": "wait=60"})

            tg.start_soon(hold)
            while not emu.jobs:
                await anyio.sleep(0.005)
            job = emulated(emu, "held")
            async with http.post(f"{emu.url}/v1/predictions/{job.request_id}/cancel",
                                 headers=AUTH) as r:
                assert r.status == 200
                assert (await r.json())["status"] == "canceled"
        status, _, body = held["reply"]
        assert (status, body["status"], body["output"]) == (201, "canceled", None)
        assert job.cancelled_at is not None
        async with http.post(f"{emu.url}/v1/predictions/{job.request_id}/cancel",
                             headers=AUTH) as r:
            assert (r.status, (await r.json())["status"]) == (200, "canceled")
        assert emu.stats["replicate"].cancelled == 1
    async with Emulator(fast_config()) as emu, aiohttp.ClientSession() as http:
        _, _, done = await create(http, emu, {"input": {"prompt": "done", "duration": 1}},
                                  headers={**AUTH, "Prefer": "wait=60"})
        async with http.post(done["urls"]["cancel"], headers=AUTH) as r:
            assert (r.status, (await r.json())["status"]) == (200, "succeeded")
        assert emu.stats["replicate"].cancelled == 0
        assert emulated(emu, "done").cancelled_at is None


async def test_outputs_are_removed_an_hour_after_creation(monkeypatch: pytest.MonkeyPatch) -> None:
    """After the retention the prediction says data_removed, loses input and output, and the file 404s."""
    monkeypatch.setattr(replicate_emulator, "OUTPUT_RETENTION", 20.0)  # emulated seconds
    async with Emulator(fast_config(queue_time=0, generation_time=1)) as emu, \
            aiohttp.ClientSession() as http:
        _, _, done = await create(http, emu, {"input": {"prompt": "brief", "duration": 1}},
                                  headers={**AUTH, "Prefer": "wait=60"})
        async with http.get(done["output"]) as r:
            assert r.status == 200
        await anyio.sleep(0.25)
        async with http.get(done["urls"]["get"], headers=AUTH) as r:
            gone = await r.json()
        assert (gone["status"], gone["data_removed"]) == ("succeeded", True)
        assert gone["output"] is None and gone["input"] == {}
        async with http.get(done["output"]) as r:
            assert r.status == 404
        assert emu.stats["replicate"].downloads == 1


async def test_a_wrong_or_missing_token_is_401(emulator: Emulator) -> None:
    """401 in Replicate's shape for a wrong token, a missing one, or a non-bearer scheme."""
    async with aiohttp.ClientSession() as http:
        cases = [{"Authorization": "Bearer r8_wrong"}, {}, {"Authorization": f"Token {TEST_KEY}"}]
        bodies = [await create(http, emulator, {"input": {"prompt": "p"}}, headers=h)
                  for h in cases]
        async with http.get(f"{emulator.url}/v1/predictions/x",
                            headers={"Authorization": "Bearer r8_wrong"}) as r:
            polled = r.status, await r.json()
    assert bodies[0][0] == 401
    assert bodies[0][2] == {"title": "Unauthenticated", "detail": "Invalid token.", "status": 401}
    assert bodies[1][2]["detail"] == "Authentication credentials were not provided."
    assert bodies[2][2]["detail"] == "Invalid token."
    assert polled == (401, bodies[0][2])
    stats = emulator.stats["replicate"]
    assert stats.errors[401] == 4 and stats.requests == 4 and stats.accepted == 0


@pytest.mark.parametrize(("body", "field", "words"), [
    ({"input": {"prompt": "p", "duration": 191}}, "input.duration",
     "Must be less than or equal to 190"),
    ({"input": {"prompt": "p", "duration": 0}}, "input.duration",
     "Must be greater than or equal to 1"),
    ({"input": {"prompt": "p", "duration": 2.5}}, "input.duration",
     "Invalid type. Expected: integer, given: number"),
    ({"input": {"prompt": "p", "steps": 9}}, "input.steps", "Must be less than or equal to 8"),
    ({"input": {"prompt": "p", "cfg_scale": 0.5}}, "input.cfg_scale",
     "Must be greater than or equal to 1"),
    ({"input": {"prompt": "p", "seed": "7"}}, "input.seed",
     "Invalid type. Expected: integer, given: string"),
    ({"input": {"prompt": "p", "negative_prompt": "x"}}, "input",
     "Additional property negative_prompt is not allowed"),
    ({"input": {"duration": 5}}, "input", "prompt is required"),
    ({"input": "p"}, "input", "Invalid type. Expected: object, given: string"),
    ({"prompt": "p"}, "(root)", "Additional property prompt is not allowed"),
])
async def test_invalid_input_is_422_naming_the_field(emulator: Emulator, body: Any, field: str,
                                                      words: str) -> None:
    """Input outside the model's schema is refused 422 with detail and invalid_fields."""
    async with aiohttp.ClientSession() as http:
        status, _, reply = await create(http, emulator, body)
    assert (status, reply["status"], reply["title"]) == (422, 422, "Input validation failed")
    assert f"- {field}: {words}" in reply["detail"]
    assert {"field": field, "description": words} in [
        {k: f[k] for k in ("field", "description")} for f in reply["invalid_fields"]]
    assert emulator.stats["replicate"].accepted == 0


async def test_unknown_model_or_prediction_is_404(emulator: Emulator) -> None:
    """Another model's route and an unknown prediction id are 404 in Replicate's shape."""
    async with aiohttp.ClientSession() as http:
        async with http.post(emulator.url + "/v1/models/stability-ai/stable-audio-9/predictions",
                             json={"input": {"prompt": "p"}}, headers=AUTH) as r:
            assert r.status == 404 and "not found" in (await r.json())["detail"]
        for method, path in (("GET", "/v1/predictions/nope"),
                             ("POST", "/v1/predictions/nope/cancel")):
            async with http.request(method, emulator.url + path, headers=AUTH) as r:
                assert (r.status, await r.json()) == (
                    404, {"title": "Not found", "detail": "Not found.", "status": 404})


async def test_no_credit_is_402() -> None:
    """Once the balance is spent, a create answers 402 "Insufficient credit"."""
    async with Emulator(fast_config(balance={"replicate": 1})) as emu, \
            aiohttp.ClientSession() as http:
        assert (await create(http, emu, {"input": {"prompt": "a"}}))[0] == 201
        status, _, body = await create(http, emu, {"input": {"prompt": "b"}})
    assert (status, body["title"]) == (402, "Insufficient credit")
    assert "insufficient credit" in body["detail"]


async def test_429_has_retry_after_and_the_two_windows_are_separate() -> None:
    """Creates and other calls have separate windows; a 429 carries Retry-After and the reset time."""
    strict = fast_config(limits={"replicate": EmulatedLimit(requests=1, period=30.0)},
                         poll_limits={"replicate": EmulatedLimit(requests=2, period=45.0)})
    async with Emulator(strict) as emu, aiohttp.ClientSession() as http:
        _, _, first = await create(http, emu, {"input": {"prompt": "a"}})
        status, headers, throttled = await create(http, emu, {"input": {"prompt": "b"}})
        assert status == 429
        assert throttled["detail"] == "Request was throttled. Your rate limit resets in ~30s."
        assert 0.2 < float(headers["Retry-After"]) <= 0.3  # 30 emulated seconds, scaled
        statuses = []
        for _ in range(3):
            async with http.get(first["urls"]["get"], headers=AUTH) as r:
                statuses.append(r.status)
                if r.status == 429:
                    assert float(r.headers["Retry-After"]) <= 0.45
                    assert "~45s" in (await r.json())["detail"]
        assert statuses == [200, 200, 429]
        stats = emu.stats["replicate"]
        assert stats.rate_limited == 2 and stats.errors[429] == 2 and stats.accepted == 1


# ---- the engine against the emulator -------------------------------------------------------


async def test_jobs_complete_with_the_served_bytes(emulator: Emulator, tmp_path: Path) -> None:
    """A handful of jobs complete once each, their files byte-identical to what was served."""
    jobs = [replicate(f"cue {i}", seed=i + 1, duration=1 + i % 3, steps=4 + i % 5,
                      guidance_scale=1 + i) for i in range(6)]
    results = await run_all(emulator, jobs, tmp_path)
    stats = emulator.stats["replicate"]
    assert all(r.ok for r in results.values()), [r.error for r in results.values()]
    for job in jobs:
        r = results[job.id]
        assert r.request_id and r.sha256 == stats.served[r.request_id]
        assert hashlib.sha256(Path(r.path or "").read_bytes()).hexdigest() == r.sha256
        assert (r.content_type, r.cost, r.attempts) == ("audio/mpeg", None, 1)
        assert emulator.jobs[r.request_id].params["duration"] == job.duration
    assert stats.accepted == 6 and stats.duplicate_submissions == 0
    assert stats.rate_limited == 0 and stats.cancelled == 0 and stats.polls >= 6


async def test_a_held_create_that_finishes_needs_no_poll(emulator: Emulator, tmp_path: Path) -> None:
    """options.wait long enough returns the output in the 201: no poll; a short one polls on."""
    held = replicate("held", options={"wait": 60})
    results = await run_all(emulator, [held], tmp_path)
    stats = emulator.stats["replicate"]
    assert results[held.id].ok and stats.polls == 0
    assert results[held.id].sha256 == stats.served[results[held.id].request_id or ""]
    short = replicate("short", options={"wait": 1})
    results = await run_all(emulator, [short], tmp_path)
    assert results[short.id].ok and stats.polls > 0


async def test_marker_jobs_fail_with_replicates_reason(emulator: Emulator, tmp_path: Path) -> None:
    """emulator:fail and emulator:error end failed with the prediction's error; the rest complete."""
    fail, error, fine = (replicate("x emulator:fail"), replicate("y emulator:error"),
                         replicate("fine"))
    results = await run_all(emulator, [fail, error, fine], tmp_path)
    assert results[fine.id].ok
    for job, words in ((fail, "could not generate audio"), (error, "Prediction interrupted")):
        r = results[job.id]
        assert (r.status, r.error_type, r.cost) == (JobStatus.FAILED, "JobFailedError", None)
        assert words in (r.error or "") and r.request_id
    assert list(tmp_path.glob("*.mp3")) == [tmp_path / f"{fine.id}.mp3"]


async def test_a_wrong_key_fails_with_authentication_error(emulator: Emulator, tmp_path: Path) -> None:
    """A 401 fails the job with AuthenticationError and stops further submissions."""
    jobs = [replicate(f"k{i}") for i in range(3)]
    results = await run_all(emulator, jobs, tmp_path, env={"REPLICATE_API_TOKEN": "r8_wrong"},
                            max_in_flight=1)
    failed = [r for r in results.values() if r.status == "failed"]
    assert [(r.error_type, r.http_status) for r in failed] == [("AuthenticationError", 401)]
    assert {r.status for r in results.values()} == {"failed", "pending"}
    assert any("Invalid token." in (r.error or "") for r in results.values())
    assert all("r8_wrong" not in (r.error or "") for r in results.values())
    assert emulator.stats["replicate"].submits == 1


async def test_a_stricter_server_limit_is_honoured_through_retry_after(tmp_path: Path) -> None:
    """Against a limit stricter than the client's, the provider pauses for Retry-After; all complete once."""
    strict = fast_config(limits={"replicate": EmulatedLimit(requests=4, period=20.0)},
                         queue_time=0.0, generation_time=1.0)
    async with Emulator(strict) as emu:
        settings = client_settings(emu)
        limit = settings.providers["replicate"].rate_limit
        assert limit is not None
        # Ten times the real limit; a retry without Retry-After would wait 15–30 s.
        loose = limit.model_copy(update={"requests": 40, "burst": 40})
        with capture_logs() as logs, anyio.fail_after(8):
            results = await run_all(emu, [replicate(f"r{i}", duration=1) for i in range(12)],
                                    tmp_path, rate_limit=loose,
                                    retry=RetryPolicy(attempts=20, initial=30.0, max=30.0))
        stats = emu.stats["replicate"]
    assert all(r.ok for r in results.values()), [r.error for r in results.values() if not r.ok]
    assert stats.accepted == 12 and stats.duplicate_submissions == 0
    assert stats.rate_limited > 0
    pauses = [e["seconds"] for e in logs if e["event"] == "provider.paused"]
    assert pauses and all(0 < s <= 0.2 for s in pauses)


async def test_a_job_past_its_deadline_is_cancelled_remotely(tmp_path: Path) -> None:
    """A prediction still running at the job's deadline is cancelled on Replicate's side."""
    async with Emulator(fast_config(generation_time=10_000)) as emu:
        settings = client_settings(emu, poll_timeout=30)
        async with Engine(settings, out_dir=tmp_path, env=ENV) as engine:
            result = await engine.generate(replicate("endless"))
        job = emulated(emu, "endless")
        stats = emu.stats["replicate"]
    assert (result.error_type, result.request_id) == ("DeadlineExceededError", job.request_id)
    assert job.cancelled_at is not None and stats.cancelled == 1
    assert not list(tmp_path.glob("*.mp3"))


async def test_leaving_run_early_cancels_the_running_predictions(tmp_path: Path) -> None:
    """Breaking out of run() after the first result cancels every other prediction remotely."""
    # 1 s of audio takes 20 emulated seconds, 100 s takes 2000: one quick job, four slow.
    config = fast_config(generation_time=0.1, generation_time_per_second=20.0)
    async with Emulator(config) as emu:
        quick = replicate("quick", duration=1)
        slow = [replicate(f"slow {i}", duration=100) for i in range(4)]
        # Leave the loop after its first result: aclosing closes the generator at once.
        async with Engine(client_settings(emu), out_dir=tmp_path, env=ENV) as engine, \
                aclosing(engine.run([quick, *slow])) as results:
            first = await anext(results)
        stats = emu.stats["replicate"]
        assert first.id == quick.id and first.ok
        assert stats.cancelled == 4
        assert all(emulated(emu, j.prompt).cancelled_at is not None for j in slow)
        assert emulated(emu, "quick").cancelled_at is None
        polls = stats.polls
        await anyio.sleep(0.1)
        assert stats.polls == polls


async def test_an_output_deleted_before_download_fails_the_job(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A prediction whose output was already removed ends failed ("output deleted"), not downloaded."""
    monkeypatch.setattr(replicate_emulator, "OUTPUT_RETENTION", 3.0)  # before the 7 s it takes
    async with Emulator(fast_config()) as emu:
        results = await run_all(emu, [replicate("late")], tmp_path)
        stats = emu.stats["replicate"]
    (result,) = results.values()
    assert (result.status, result.error_type) == (JobStatus.FAILED, "JobFailedError")
    assert (result.error or "").startswith("output deleted")
    assert stats.downloads == 0
