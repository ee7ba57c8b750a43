"""WaveSpeed end to end in-process: the engine against the emulator's envelope contract over loopback."""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from stableaudio_async import Engine, Job, JobStatus
from stableaudio_async.config import Settings
from stableaudio_async.emulator import EmulatedLimit, Emulator, Reading
from stableaudio_async.emulator.audio import render_audio
from stableaudio_async.models import JobResult

from conftest import READINGS, TEST_KEY, HandClock, HeldClock, fast_config

pytestmark = pytest.mark.anyio


@pytest.fixture(params=READINGS)
def reading(request: pytest.FixtureRequest) -> Reading:
    """Every test here on :func:`emulator` runs under both of its readings."""
    return request.param  # type: ignore[no-any-return]

ENV = {"WAVESPEED_API_KEY": TEST_KEY}
MUSIC = "/api/v3/stability-ai/stable-audio-3/music"
A2A = "/api/v3/stability-ai/stable-audio-3/audio-to-audio"
INPAINTING = "/api/v3/stability-ai/stable-audio-3/audio-inpainting"
UPLOAD = "/api/v3/media/upload/binary"
AUTH = {"Authorization": f"Bearer {TEST_KEY}"}


def wavespeed(prompt: str, **fields: Any) -> Job:
    return Job.model_validate({"provider": "wavespeed", "prompt": prompt, "duration": 2,
                               **fields})


def tuned(settings: Settings, **changes: Any) -> Settings:
    """``settings`` with WaveSpeed's entry changed."""
    current = settings.providers["wavespeed"]
    provider = type(current).model_validate({**current.model_dump(), **changes})
    return settings.model_copy(update={"providers": {**settings.providers, "wavespeed": provider}})


async def run_all(emu: Emulator, jobs: list[Job], out: Path, *, env: dict[str, str] = ENV,
                  **changes: Any) -> dict[str, JobResult]:
    settings = tuned(emu.client_settings(), **changes) if changes else emu.client_settings()
    async with Engine(settings, out_dir=out, env=env) as engine:
        return {r.id: r async for r in engine.run(jobs)}


def uploads(emu: Emulator) -> int:
    """Requests that were neither submits nor polls: the uploads (and stray routes)."""
    stats = emu.stats["wavespeed"]
    return stats.requests - stats.submits - stats.polls


async def test_jobs_complete_byte_identical_with_their_price(emulator: Emulator, tmp_path) -> None:
    """Jobs on each text route land on disk exactly as served, priced per route in dollars."""
    jobs = [wavespeed(f"theme {i}", seed=i + 1, output_format="wav" if i % 2 else "mp3")
            for i in range(4)]
    jobs += [wavespeed("foley", model="stable-audio-3/text-to-audio", steps=10),
             wavespeed("groove", model="stable-audio-3/music", guidance_scale=3)]
    results = await run_all(emulator, jobs, tmp_path)
    stats = emulator.stats["wavespeed"]
    assert all(r.ok for r in results.values()), [r.error for r in results.values()]
    for job in jobs:
        r = results[job.id]
        assert r.request_id and r.sha256 == stats.served[r.request_id]
        assert r.path and hashlib.sha256(Path(r.path).read_bytes()).hexdigest() == r.sha256
        assert r.attempts == 1 and r.cost_unit == "usd"
        route = "text-to-audio" if job.model == "stable-audio-3/text-to-audio" else "music"
        assert r.cost == {"music": 0.0217, "text-to-audio": 0.0206}[route]
        assert emulator.jobs[r.request_id].model == f"stable-audio-3-{route}"
    assert emulator.jobs[results[jobs[4].id].request_id].params["num_inference_steps"] == 10
    assert stats.accepted == 6 and stats.duplicate_submissions == 0
    assert stats.rate_limited == 0 and not stats.errors


async def test_failed_jobs_end_failed_not_polled_forever(emulator: Emulator, reading: Reading,
                                                         tmp_path) -> None:
    """A "failed" prediction ends the job failed with WaveSpeed's reason, answered with HTTP 200
    (strict) or HTTP 500 holding the failed prediction (loose): read once, never polled on."""
    fail, error, fine = (wavespeed("x emulator:fail"), wavespeed("y emulator:error"),
                         wavespeed("fine"))
    results = await run_all(emulator, [fail, error, fine], tmp_path)
    assert results[fine.id].ok
    for job, words in ((fail, "Generation failed"), (error, "Internal server error")):
        r = results[job.id]
        assert r.status is JobStatus.FAILED and r.error_type == "JobFailedError"
        # JobFailedError, not DeadlineExceededError: it ended on the failed status, not by
        # polling on until the deadline.
        assert words in (r.error or "") and r.request_id and r.path is None
    assert not list(tmp_path.glob(f"{fail.id}.*"))
    stats = emulator.stats["wavespeed"]
    # Loose: one 500 per failed job, so neither was asked again once it had failed.
    assert stats.errors == ({} if reading == "strict" else {500: 2})


async def test_wrong_key_fails_with_authentication_error(emulator: Emulator, tmp_path) -> None:
    """A 401 envelope ends the job with AuthenticationError at once, the key never echoed."""
    results = await run_all(emulator, [wavespeed("locked out")], tmp_path,
                            env={"WAVESPEED_API_KEY": "ws-wrong-key"})
    (result,) = results.values()
    assert (result.error_type, result.http_status, result.attempts) == (
        "AuthenticationError", 401, 1)
    assert "Unauthorized" in (result.error or "") and "ws-wrong-key" not in (result.error or "")
    assert emulator.stats["wavespeed"].accepted == 0


async def test_local_file_is_uploaded_once_for_audio_to_audio_and_inpainting(
        emulator: Emulator, tmp_path) -> None:
    """A local WAV is uploaded once, sent by its download_url, and both tasks complete."""
    source = tmp_path / "source.wav"
    source.write_bytes(render_audio("source", 1, 4.0, "wav"))
    jobs = [wavespeed("remix", task="audio-to-audio", audio=str(source), strength=0.5),
            wavespeed("remix again", task="audio-to-audio", audio=str(source)),
            wavespeed("patch", task="inpaint", audio=str(source), mask_start=1, mask_end=2)]
    results = await run_all(emulator, jobs, tmp_path / "out")
    assert all(r.ok for r in results.values()), [r.error for r in results.values()]
    assert uploads(emulator) == 1
    sent = {job.id: emulator.jobs[results[job.id].request_id].params for job in jobs}
    urls = {params["audio"] for params in sent.values()}
    assert len(urls) == 1
    url = urls.pop()
    assert "/wavespeed-media/" in url
    assert sent[jobs[0].id]["init_noise_level"] == 0.5
    assert sent[jobs[1].id]["init_noise_level"] == 0.9  # WaveSpeed's default
    assert (sent[jobs[2].id]["mask_start_seconds"], sent[jobs[2].id]["mask_end_seconds"]) == (1, 2)
    assert results[jobs[0].id].cost == 0.024 and results[jobs[2].id].cost is None
    async with aiohttp.ClientSession() as http, http.get(url) as r:
        assert r.status == 200 and await r.read() == source.read_bytes()


async def test_sync_mode_and_base64_output(emulator: Emulator, tmp_path) -> None:
    """enable_sync_mode needs no poll; enable_base64_output needs no download; both match."""
    synced = wavespeed("held", options={"enable_sync_mode": True})
    inline = wavespeed("inline", output_format="wav", options={"enable_base64_output": True})
    results = await run_all(emulator, [synced, inline], tmp_path)
    stats = emulator.stats["wavespeed"]
    assert all(r.ok for r in results.values()), [r.error for r in results.values()]
    for r in results.values():
        assert r.request_id and r.sha256 == stats.served[r.request_id]
    assert stats.downloads == 1  # the synced job's CDN file only
    assert (tmp_path / f"{inline.id}.wav").read_bytes()[:4] == b"RIFF"


async def test_sync_mode_504_is_followed_by_polling(emulator: Emulator, tmp_path) -> None:
    """A sync-mode submit answered 504 with the prediction is polled to completion, once."""
    job = wavespeed("slow emulator:sync-timeout", options={"enable_sync_mode": True})
    (result,) = (await run_all(emulator, [job], tmp_path)).values()
    stats = emulator.stats["wavespeed"]
    assert result.ok, result.error
    assert result.sha256 == stats.served[result.request_id]
    assert stats.errors == {504: 1} and stats.accepted == 1 and stats.polls >= 1


async def test_insufficient_balance_stops_the_provider(tmp_path) -> None:
    """A 402 envelope fails the job with InsufficientBalanceError and stops further submits."""
    async with Emulator(fast_config(balance={"wavespeed": 2})) as emu:
        results = await run_all(emu, [wavespeed(f"b{i}") for i in range(5)], tmp_path,
                                max_in_flight=1)
        stats = emu.stats["wavespeed"]
    assert sum(r.ok for r in results.values()) == 2
    refused = [r for r in results.values() if not r.ok]
    # The job the provider refused fails; the rest are held back, pending and resumable.
    assert {r.error_type for r in refused if r.status == "failed"} == {"InsufficientBalanceError"}
    assert all(r.status == "pending" and "stopped" in (r.error or "")
               for r in refused if r.status != "failed")
    assert stats.errors == {402: 1} and stats.submits == 3


async def test_429_envelopes_are_retried_and_every_job_completes_once(tmp_path) -> None:
    """Against a limit stricter than configured, 429s are retried; no job is submitted twice."""
    strict = fast_config(limits={"wavespeed": EmulatedLimit(requests=5, period=20.0,
                                                             counts="all")})
    # The emulator's clock stands still until its first 429: its window cannot slide before
    # the engine's submits and polls overflow it, however slowly they come. Then time runs.
    emu = Emulator(strict, clock=HeldClock(
        lambda: "wavespeed" in emu.stats and emu.stats["wavespeed"].rate_limited > 0))
    async with emu:
        settings = emu.client_settings()
        limit = settings.providers["wavespeed"].rate_limit
        assert limit is not None
        results = await run_all(emu, [wavespeed(f"r{i}") for i in range(6)], tmp_path,
                                rate_limit={**limit.model_dump(), "requests": 20},
                                max_in_flight=3,
                                retry={"attempts": 50, "initial": 0.01, "max": 0.05})
        stats = emu.stats["wavespeed"]
    assert all(r.ok for r in results.values()), [r.error for r in results.values() if not r.ok]
    assert stats.rate_limited > 0 and stats.errors[429] == stats.rate_limited
    assert stats.accepted == 6 and stats.duplicate_submissions == 0


async def test_concurrency_cap_keeps_extra_jobs_created(tmp_path) -> None:
    """With concurrency 1, jobs run one after another: none starts before the previous ends."""
    config = fast_config(concurrency={"wavespeed": 1})
    async with Emulator(config) as emu:
        results = await run_all(emu, [wavespeed(f"c{i}") for i in range(3)], tmp_path,
                                max_in_flight=3)
        jobs = sorted((j for j in emu.jobs.values() if j.provider == "wavespeed"),
                      key=lambda j: j.created)
    assert all(r.ok for r in results.values())
    queue = config.queue_time * config.time_scale
    generation = config.generation_time * config.time_scale
    for earlier, later in itertools.pairwise(jobs):
        assert later.queued_until >= earlier.done_at
        # Held exactly that long, no longer: it starts when its own queue time is over or the
        # one before it ends, whichever is later (the later, unless it came late itself).
        assert later.queued_until == pytest.approx(max(later.created + queue, earlier.done_at),
                                                   abs=1e-9)
        assert later.done_at - later.queued_until == pytest.approx(generation, abs=1e-9)


# ---- the emulator's contract, by raw requests ------------------------------------------------


async def prediction(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    """The prediction (the envelope's ``data``) at ``url``."""
    async with http.get(url, headers=AUTH) as r:
        assert r.status == 200
        body = await r.json()
    assert (body["code"], body["message"]) == (200, "success")
    return dict(body["data"])


async def test_prediction_life_cycle_and_both_result_paths(still: Emulator,
                                                            clock: HandClock) -> None:
    """created → processing → completed in the envelope, on /result and on the newer path."""
    emulator = still
    async with aiohttp.ClientSession() as http:
        async with http.post(emulator.url + MUSIC, headers=AUTH,
                             json={"prompt": "p", "duration": 2}) as r:
            assert r.status == 200
            created = await r.json()
        assert (created["code"], created["message"]) == (200, "success")
        data = created["data"]
        assert data["status"] == "created" and data["model"] == "stability-ai/stable-audio-3/music"
        assert set(data) >= {"id", "model", "status", "outputs", "urls", "error",
                             "has_nsfw_contents", "timings", "created_at"}
        get = data["urls"]["get"]
        assert get == f"{emulator.url}/api/v3/predictions/{data['id']}/result"
        job = emulator.jobs[data["id"]]
        assert (await prediction(http, get))["status"] == "created"
        clock.move_past(job.queued_until)
        assert (await prediction(http, get))["status"] == "processing"
        clock.move_past(job.done_at)
        done = await prediction(http, get)
        assert done["status"] == "completed"
        assert done["timings"]["inference"] == 5000 and done["error"] == ""
        async with http.get(f"{emulator.url}/api/v3/predictions/{data['id']}",
                            headers=AUTH) as r:
            assert (await r.json())["data"]["outputs"] == done["outputs"]
        async with http.get(done["outputs"][0]) as r:
            assert r.status == 200 and r.content_type == "audio/mpeg" and await r.read()


async def test_failed_prediction_answers_http_200(still: Emulator, clock: HandClock) -> None:
    """A failed job's result is HTTP 200 with data.status "failed" and data.error set."""
    async with aiohttp.ClientSession() as http:
        async with http.post(still.url + MUSIC, headers=AUTH,
                             json={"prompt": "emulator:fail"}) as r:
            created = (await r.json())["data"]
        clock.move_past(still.jobs[created["id"]].done_at)
        data = await prediction(http, created["urls"]["get"])
    assert data["status"] == "failed" and data["error"] and data["outputs"] == []


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"},
                                     {"Authorization": TEST_KEY}],
                         ids=["missing", "wrong", "no-scheme"])
@pytest.mark.parametrize(("method", "path"), [("POST", MUSIC), ("GET", "/api/v3/predictions/x/result"),
                                              ("POST", UPLOAD)], ids=["submit", "poll", "upload"])
async def test_bad_key_is_a_401_envelope(emulator: Emulator, headers: dict[str, str],
                                         method: str, path: str) -> None:
    """A missing or wrong key gets 401 {"code": 401, "message": "Unauthorized", "data": null}."""
    async with aiohttp.ClientSession() as http, \
            http.request(method, emulator.url + path, headers=headers, json={"prompt": "x"}) as r:
        assert r.status == 401
        assert await r.json() == {"code": 401, "message": "Unauthorized", "data": None}
    assert emulator.stats["wavespeed"].errors == {401: 1}


@pytest.mark.parametrize(("path", "body", "needle"), [
    (MUSIC, {"duration": 5}, "prompt"),
    (MUSIC, {"prompt": "x", "duration": 121}, "duration"),
    (MUSIC, {"prompt": "x", "num_inference_steps": 101}, "num_inference_steps"),
    (MUSIC, {"prompt": "x", "num_inference_steps": 7.5}, "num_inference_steps"),
    (MUSIC, {"prompt": "x", "guidance_scale": -1}, "guidance_scale"),
    (MUSIC, {"prompt": "x", "output_format": "aiff"}, "output_format"),
    (MUSIC, {"prompt": "x", "audio": "https://example.com/a.mp3"}, "audio"),
    (A2A, {"prompt": "x"}, "audio"),
    (A2A, {"prompt": "x", "audio": "https://example.com/a.mp3", "init_noise_level": 1.5},
     "init_noise_level"),
    (INPAINTING, {"prompt": "x", "audio": "https://example.com/a.mp3"}, "mask_start_seconds"),
    (INPAINTING, {"prompt": "x", "audio": "https://example.com/a.mp3",
                  "mask_start_seconds": 3, "mask_end_seconds": 3}, "mask_end_seconds"),
])
async def test_bad_bodies_are_400_envelopes(emulator: Emulator, path: str, body: dict[str, Any],
                                            needle: str) -> None:
    """Out-of-contract bodies get a 400 envelope naming the field; nothing is accepted."""
    async with aiohttp.ClientSession() as http, \
            http.post(emulator.url + path, headers=AUTH, json=body) as r:
        assert r.status == 400
        reply = await r.json()
    assert reply["code"] == 400 and reply["data"] is None and needle in reply["message"]
    assert emulator.stats["wavespeed"].accepted == 0


async def test_upload_serves_the_bytes_and_a2a_checks_the_url(emulator: Emulator) -> None:
    """An upload's download_url serves the bytes back; an unknown media URL is refused."""
    payload = render_audio("in", 1, 1.0, "wav")
    form = aiohttp.FormData()
    form.add_field("file", payload, filename="in.wav", content_type="audio/wav")
    async with aiohttp.ClientSession() as http:
        async with http.post(emulator.url + UPLOAD, headers=AUTH, data=form) as r:
            assert r.status == 200
            uploaded = await r.json()
        url = uploaded["data"]["download_url"]
        assert url.startswith(emulator.url + "/wavespeed-media/") and url.endswith(".wav")
        async with http.get(url) as r:
            assert await r.read() == payload
        body = {"prompt": "x", "audio": url}
        async with http.post(emulator.url + A2A, headers=AUTH, json=body) as r:
            assert r.status == 200
        missing = {"prompt": "x", "audio": emulator.url + "/wavespeed-media/nothing.wav"}
        async with http.post(emulator.url + A2A, headers=AUTH, json=missing) as r:
            assert r.status == 400 and "audio" in (await r.json())["message"]
        async with http.post(emulator.url + UPLOAD, headers=AUTH, data=aiohttp.FormData(
                {"other": "x"}, default_to_multipart=True)) as r:
            assert r.status == 400 and "file" in (await r.json())["message"]


async def test_rate_limit_is_a_429_envelope_without_retry_after() -> None:
    """Past the per-minute window every request, polls included, gets a 429 envelope."""
    # The clock stands still: the window cannot slide between the requests.
    async with Emulator(fast_config(limits={"wavespeed": EmulatedLimit(
            requests=2, period=60.0, counts="all")}), clock=HandClock()) as emu, \
            aiohttp.ClientSession() as http:
        async with http.post(emu.url + MUSIC, headers=AUTH, json={"prompt": "x"}) as r:
            get = (await r.json())["data"]["urls"]["get"]
        async with http.get(get, headers=AUTH) as r:
            assert r.status == 200
        async with http.get(get, headers=AUTH) as r:
            assert r.status == 429 and "Retry-After" not in r.headers
            reply = await r.json()
    assert reply["code"] == 429 and reply["data"] is None
    assert emu.stats["wavespeed"].rate_limited == 1


async def test_unknown_route_is_a_404_envelope(emulator: Emulator) -> None:
    """A model id WaveSpeed does not serve gets a 404 in the envelope's shape."""
    async with aiohttp.ClientSession() as http, http.post(
            emulator.url + "/api/v3/stability-ai/stable-audio-3/audio-outpainting",
            headers=AUTH, json={"prompt": "x"}) as r:
        assert r.status == 404
        assert (await r.json())["code"] == 404
