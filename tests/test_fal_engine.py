"""fal end to end in-process: the emulator's queue contract, and the engine driving it over loopback."""

from __future__ import annotations

import base64
import hashlib
import itertools
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest

from stableaudio_async import Engine, Job, JobPendingError, JobResult, JobStatus
from stableaudio_async.config import Settings
from stableaudio_async.emulator import EmulatedLimit, Emulator, Reading
from stableaudio_async.emulator.audio import render_audio

from conftest import READINGS, TEST_KEY, HandClock, fast_config, when

pytestmark = pytest.mark.anyio


@pytest.fixture(params=READINGS)
def reading(request: pytest.FixtureRequest) -> Reading:
    """Every test here on :func:`emulator` runs under both of its readings."""
    return request.param  # type: ignore[no-any-return]

ENV = {"FAL_KEY": TEST_KEY}
HEADERS = {"Authorization": f"Key {TEST_KEY}"}
SA25 = "/fal-ai/stable-audio-25"


def fal(prompt: str, **fields: Any) -> Job:
    values: dict[str, Any] = {"provider": "fal", "prompt": prompt, "duration": 1,
                              "output_format": "wav"}
    return Job.model_validate(values | fields)


async def run_all(emu: Emulator, jobs: list[Job], out: Path, *, settings: Settings | None = None,
                  env: dict[str, str] = ENV) -> dict[str, JobResult]:
    async with Engine(settings or emu.client_settings(), out_dir=out, env=env) as engine:
        return {r.id: r async for r in engine.run(jobs)}


async def submit(http: aiohttp.ClientSession, emu: Emulator, route: str,
                 body: dict[str, Any]) -> dict[str, Any]:
    async with http.post(emu.url + route, headers=HEADERS, json=body) as r:
        assert r.status == 200, await r.text()
        return dict(await r.json())


async def status_of(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    """A status body; 202 while the request is queued or running, 200 once COMPLETED."""
    async with http.get(url, headers=HEADERS) as r:
        body = dict(await r.json())
        assert r.status == (200 if body["status"] == "COMPLETED" else 202), (r.status, body)
        return body


# ---- the emulator's contract, raw ------------------------------------------------------------


async def test_queue_life_cycle_and_result(still: Emulator, clock: HandClock) -> None:
    """Receipt with URLs under the model id, IN_QUEUE → IN_PROGRESS → COMPLETED, audio on the CDN."""
    emulator = still
    async with aiohttp.ClientSession() as http:
        receipt = await submit(http, emulator, f"{SA25}/text-to-audio",
                               {"prompt": "p", "seconds_total": 2, "seed": 5})
        request_id = receipt["request_id"]
        assert str(uuid.UUID(request_id)) == request_id
        base = f"{emulator.url}{SA25}/requests/{request_id}"
        assert receipt == {"request_id": request_id, "status": "IN_QUEUE", "queue_position": 0,
                           "status_url": f"{base}/status", "response_url": base,
                           "cancel_url": f"{base}/cancel"}
        job = emulator.jobs[request_id]
        seen = [(await status_of(http, receipt["status_url"]))["status"]]
        clock.move_past(job.queued_until)
        seen.append((await status_of(http, receipt["status_url"]))["status"])
        clock.move_past(job.done_at)
        seen.append((await status_of(http, receipt["status_url"]))["status"])
        assert seen == ["IN_QUEUE", "IN_PROGRESS", "COMPLETED"]
        async with http.get(receipt["response_url"], headers=HEADERS) as r:
            result = await r.json()
        assert result["seed"] == 5
        audio = result["audio"]
        assert audio["content_type"] == "audio/wav" and audio["file_name"].endswith(".wav")
        async with http.get(audio["url"]) as r:
            data = await r.read()
        assert data[:4] == b"RIFF" and len(data) == audio["file_size"]
        assert hashlib.sha256(data).hexdigest() == emulator.stats["fal"].served[request_id]


async def test_missing_or_wrong_key_is_401_with_detail(emulator: Emulator) -> None:
    """Submit, status and cancel refuse a missing or wrong key with 401 and a `detail`."""
    async with aiohttp.ClientSession() as http:
        for headers in ({}, {"Authorization": "Key nope"}, {"Authorization": f"Bearer {TEST_KEY}"}):
            async with http.post(f"{emulator.url}{SA25}/text-to-audio", headers=headers,
                                 json={"prompt": "x"}) as r:
                assert r.status == 401 and "detail" in await r.json()
        async with http.put(f"{emulator.url}{SA25}/requests/x/cancel") as r:
            assert r.status == 401
    stats = emulator.stats["fal"]
    assert stats.accepted == 0 and stats.errors[401] == 4 and stats.requests == 4


@pytest.mark.parametrize(("route", "body", "field"), [
    ("text-to-audio", {"seconds_total": 5}, "prompt"),
    ("text-to-audio", {"prompt": "x", "seconds_total": 191}, "seconds_total"),
    ("text-to-audio", {"prompt": "x", "seconds_total": 2.5}, "seconds_total"),
    ("text-to-audio", {"prompt": "x", "num_inference_steps": 9}, "num_inference_steps"),
    ("text-to-audio", {"prompt": "x", "guidance_scale": 1.5}, "guidance_scale"),
    ("audio-to-audio", {"prompt": "x"}, "audio_url"),
    ("audio-to-audio", {"prompt": "x", "audio_url": "data:audio/wav;base64,@@"}, "audio_url"),
    ("audio-to-audio", {"prompt": "x", "audio_url": "https://e.com/a.wav", "strength": 0},
     "strength"),
    ("inpaint", {"prompt": "x", "audio_url": "https://e.com/a.wav", "mask_start": 9,
                 "mask_end": 3}, "mask_end"),
])
async def test_out_of_contract_bodies_get_422(emulator: Emulator, route: str,
                                              body: dict[str, Any], field: str) -> None:
    """Bodies outside the contract get 422 with a FastAPI-style detail list naming the field."""
    async with aiohttp.ClientSession() as http, \
            http.post(f"{emulator.url}{SA25}/{route}", headers=HEADERS, json=body) as r:
        assert r.status == 422
        detail = (await r.json())["detail"]
    assert ["body", field] in [d["loc"] for d in detail]
    assert emulator.stats["fal"].accepted == 0


async def test_cancel_endpoint(still: Emulator) -> None:
    """PUT cancel: 202 CANCELLATION_REQUESTED once, then ALREADY_COMPLETED; the result says cancelled."""
    # The clock stands still: the job is still queued when the first cancel comes, however late.
    emulator = still
    async with aiohttp.ClientSession() as http:
        receipt = await submit(http, emulator, f"{SA25}/text-to-audio", {"prompt": "x"})
        replies = []
        for url in (receipt["cancel_url"], receipt["cancel_url"],
                    f"{emulator.url}{SA25}/requests/{uuid.uuid4()}/cancel"):
            async with http.put(url, headers=HEADERS) as r:
                replies.append((r.status, (await r.json())["status"]))
        assert replies == [(202, "CANCELLATION_REQUESTED"), (400, "ALREADY_COMPLETED"),
                           (404, "NOT_FOUND")]
        assert (await status_of(http, receipt["status_url"]))["status"] == "COMPLETED"
        async with http.get(receipt["response_url"], headers=HEADERS) as r:
            assert r.status == 499 and r.headers["X-Fal-Error-Type"] == "client_cancelled"
    job = emulator.jobs[receipt["request_id"]]
    assert job.cancelled_at is not None and emulator.stats["fal"].cancelled == 1


async def test_concurrency_limit_queues_the_excess() -> None:
    """With fal's concurrency at 1, later jobs wait in the queue with a positive position."""
    # The clock stands still, so the first job is still queued when the others arrive.
    async with Emulator(fast_config(concurrency={"fal": 1}), clock=HandClock()) as emu, \
            aiohttp.ClientSession() as http:
        receipts = [await submit(http, emu, f"{SA25}/text-to-audio",
                                 {"prompt": f"q{i}", "seconds_total": 1}) for i in range(3)]
        assert [r["queue_position"] for r in receipts] == [0, 1, 2]
        jobs = sorted((emu.jobs[r["request_id"]] for r in receipts), key=lambda j: j.created)
        for earlier, later in itertools.pairwise(jobs):
            # One runner: each starts exactly when the one before it ends.
            assert later.queued_until >= earlier.done_at
            assert later.queued_until == pytest.approx(earlier.done_at, abs=1e-9)


async def test_a_configured_rate_limit_answers_429_in_fals_shape() -> None:
    """fal publishes no rate limit, but one configured for tests answers 429 with a detail."""
    # The clock stands still: the window cannot slide between the two submits.
    async with Emulator(fast_config(limits={"fal": EmulatedLimit(requests=1, period=100.0)}),
                        clock=HandClock()) as emu, aiohttp.ClientSession() as http:
        codes = []
        for _ in range(2):
            async with http.post(f"{emu.url}{SA25}/text-to-audio", headers=HEADERS,
                                 json={"prompt": "x", "seconds_total": 1}) as r:
                codes.append((r.status, (await r.json()).get("detail")))
        stats = emu.stats["fal"]
    assert codes[0][0] == 200 and codes[1] == (429, "Rate limit exceeded")
    assert (stats.rate_limited, stats.errors[429], stats.accepted) == (1, 1, 1)


async def test_stable_audio_open_answers_with_audio_file(still: Emulator,
                                                         clock: HandClock) -> None:
    """fal-ai/stable-audio is a bare route whose result holds `audio_file` (and no seed)."""
    emulator = still
    async with aiohttp.ClientSession() as http:
        receipt = await submit(http, emulator, "/fal-ai/stable-audio",
                               {"prompt": "drums", "seconds_total": 1, "steps": 100})
        assert receipt["status_url"].startswith(f"{emulator.url}/fal-ai/stable-audio/requests/")
        clock.move_past(emulator.jobs[receipt["request_id"]].done_at)
        assert (await status_of(http, receipt["status_url"]))["status"] == "COMPLETED"
        async with http.get(receipt["response_url"], headers=HEADERS) as r:
            result = await r.json()
    assert set(result) == {"audio_file"} and result["audio_file"]["content_type"] == "audio/wav"


# ---- the engine against it -------------------------------------------------------------------


async def test_jobs_complete_byte_identical(emulator: Emulator, tmp_path: Path) -> None:
    """Every job's file is exactly what the emulator served; seed, price and request id are kept."""
    jobs = [fal(f"theme {i}", seed=i + 1, steps=4 + i % 5, guidance_scale=1 + i)
            for i in range(6)]
    jobs.append(fal("open model", model="fal-ai/stable-audio", steps=50))
    jobs.append(fal("inline", seed=99, options={"sync_mode": True}))
    results = await run_all(emulator, jobs, tmp_path)
    stats = emulator.stats["fal"]
    assert all(r.ok for r in results.values()), [r.error for r in results.values()]
    for job in jobs:
        r = results[job.id]
        assert r.request_id and r.sha256 == stats.served[r.request_id]
        assert r.path and Path(r.path).name == f"{job.id}.wav"
        assert hashlib.sha256(Path(r.path).read_bytes()).hexdigest() == r.sha256
        assert r.content_type == "audio/wav" and r.attempts == 1
        if job.model == "fal-ai/stable-audio":
            assert (r.cost, r.seed) == (None, None)
        else:
            assert (r.cost, r.cost_unit, r.seed) == (0.20, "usd", job.seed)
    # The sync_mode job's audio came inline: one CDN download fewer than jobs.
    assert stats.downloads == len(jobs) - 1
    assert stats.accepted == stats.submits == len(jobs) and not stats.errors


async def test_local_file_goes_as_a_data_uri(emulator: Emulator, tmp_path: Path) -> None:
    """A local WAV reaches fal as a data URI of its exact bytes, for audio-to-audio and inpaint."""
    source = tmp_path / "source.wav"
    source.write_bytes(render_audio("source", 1, 3.0, "wav"))
    jobs = [fal("remix", task="audio-to-audio", audio=str(source), strength=0.5, duration=2),
            fal("patch", task="inpaint", audio=str(source), mask_start=1, mask_end=2)]
    results = await run_all(emulator, jobs, tmp_path / "out")
    assert all(r.ok for r in results.values()), [r.error for r in results.values()]
    expected = "data:audio/wav;base64," + base64.b64encode(source.read_bytes()).decode()
    for r in results.values():
        assert r.request_id is not None
        remote = emulator.jobs[r.request_id]
        assert remote.params["audio_url"] == expected
        assert r.sha256 == emulator.stats["fal"].served[r.request_id]
    remix = emulator.jobs[results[jobs[0].id].request_id or ""]
    assert remix.params["total_seconds"] == 2 and remix.params["strength"] == 0.5


async def test_failed_and_error_jobs_end_failed_with_fals_reason(emulator: Emulator,
                                                                 tmp_path: Path) -> None:
    """A failure at the response URL ends the job failed, with fal's detail, at no cost."""
    ok, fail, error = fal("fine"), fal("x emulator:fail"), fal("y emulator:error")
    results = await run_all(emulator, [ok, fail, error], tmp_path)
    assert results[ok.id].ok
    for job, words in ((fail, "Generation failed"), (error, "runner_server_error")):
        r = results[job.id]
        assert r.status is JobStatus.FAILED and r.error_type == "JobFailedError"
        assert words in (r.error or "") and r.cost == 0.0
        assert r.request_id and r.path is None
    # Each failure was read once: the engine did not keep polling a finished job.
    assert emulator.stats["fal"].errors == {422: 1, 500: 1}


async def test_wrong_key_fails_with_authentication_error(emulator: Emulator,
                                                         tmp_path: Path) -> None:
    """A wrong key ends the job with AuthenticationError (401) and nothing is accepted."""
    results = await run_all(emulator, [fal("x")], tmp_path, env={"FAL_KEY": "wrong-key"})
    (r,) = results.values()
    assert (r.error_type, r.http_status, r.attempts) == ("AuthenticationError", 401, 1)
    assert "wrong-key" not in (r.error or "")
    assert emulator.stats["fal"].accepted == 0


async def test_exhausted_balance_is_insufficient_balance(tmp_path: Path) -> None:
    """fal's 403 'Exhausted balance' stops the provider as InsufficientBalanceError."""
    async with Emulator(fast_config(balance={"fal": 1})) as emu:
        settings = emu.client_settings()
        one_at_a_time = settings.providers["fal"].model_copy(update={"max_in_flight": 1})
        settings = settings.model_copy(
            update={"providers": {**settings.providers, "fal": one_at_a_time}})
        results = await run_all(emu, [fal(f"b{i}") for i in range(3)], tmp_path,
                                settings=settings)
        stats = emu.stats["fal"]
    assert sum(r.ok for r in results.values()) == 1
    refused = [r for r in results.values() if not r.ok]
    # The job the provider refused fails; the rest are held back, pending and resumable.
    assert {r.error_type for r in refused if r.status == "failed"} == {"InsufficientBalanceError"}
    assert all(r.status == "pending" and "stopped" in (r.error or "")
               for r in refused if r.status != "failed")
    assert stats.errors[403] == 1 and stats.submits == 2


async def test_concurrency_limited_jobs_all_complete(tmp_path: Path) -> None:
    """Jobs beyond fal's concurrency wait in its queue and still complete, none refused."""
    async with Emulator(fast_config(concurrency={"fal": 2})) as emu:
        results = await run_all(emu, [fal(f"c{i}", seed=i) for i in range(6)], tmp_path)
        stats = emu.stats["fal"]
    assert all(r.ok for r in results.values())
    assert stats.accepted == 6 and not stats.errors


async def test_deadline_cancels_the_job_remotely(tmp_path: Path) -> None:
    """A job still running at its deadline fails and is cancelled on fal's side."""
    # The clock stands still: the job never finishes, however long the deadline takes to come.
    async with Emulator(fast_config(), clock=HandClock()) as emu:
        settings = emu.client_settings(poll_timeout=20)
        (r,) = (await run_all(emu, [fal("endless")], tmp_path, settings=settings)).values()
        stats = emu.stats["fal"]
        assert r.error_type == "DeadlineExceededError" and r.request_id
        assert emu.jobs[r.request_id].cancelled_at is not None
    assert stats.cancelled == 1
    assert not list(tmp_path.glob("*.wav"))


async def test_handle_cancel_cancels_on_fals_queue_and_nothing_is_polled_after(
        tmp_path: Path) -> None:
    """``handle.cancel()`` cancels the job on fal's queue (its cancel URL), ends it pending
    "cancelled" with its request id, and the engine sends nothing more for it."""
    # Generation time grows with duration: 190 s jobs are still running on the still clock.
    config = fast_config(generation_time=0, generation_time_per_second=5)
    async with Emulator(config, clock=HandClock()) as emu:
        slow = [fal(f"slow {i}", duration=190) for i in range(3)]
        async with Engine(emu.client_settings(), out_dir=tmp_path, env=ENV) as engine:
            handles = [await engine.submit(job) for job in slow]
            assert all(h.request_id in emu.jobs for h in handles)
            await when(lambda: all(j.polls for j in emu.jobs.values()))
            for handle in handles:
                await handle.cancel()
            assert all(h.done and h.status() == "held" for h in handles)
            settled = engine.progress()["fal"].requests
            await anyio.sleep(0.3)  # three times fal's longest poll interval (0.1 s)
            assert engine.progress()["fal"].requests == settled
            progress = engine.progress()["fal"]
            for handle in handles:
                with pytest.raises(JobPendingError) as info:
                    await handle.result()
                assert info.value.result.pending_reason == "cancelled"
                assert info.value.result.request_id == handle.request_id
        stats = emu.stats["fal"]
        assert stats.requests <= settled
    assert (progress.queued, progress.running, progress.pending) == (0, 0, 3)
    assert stats.accepted == 3 and stats.cancelled == 3
    assert all(j.cancelled_at is not None for j in emu.jobs.values())
