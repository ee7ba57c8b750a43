"""The emulator speaks Pixazo's documented contract: routes, headers, bodies, errors, limits."""

from __future__ import annotations

import base64
from typing import Any

import aiohttp
import pytest

from stableaudio_async.emulator import EmulatedLimit, Emulator

from conftest import TEST_KEY, HandClock, fast_config

pytestmark = pytest.mark.anyio

SUBMIT = "/stable-audio-3-small-music-text-to-audio/v1/stable-audio-3-small-music-text-to-audio-request"
A2A = "/stable-audio-3-small-music-audio-to-audio/v1/stable-audio-3-small-music-audio-to-audio-request"
HEADERS = {"Ocp-Apim-Subscription-Key": TEST_KEY, "Cache-Control": "no-cache"}


async def status_of(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with http.get(url, headers=HEADERS) as r:
        assert r.status == 200
        return dict(await r.json())


async def test_submit_poll_download_life_cycle(still: Emulator, clock: HandClock) -> None:
    """202 with request_id and polling_url, then QUEUED → PROCESSING → COMPLETED and a CDN file."""
    emulator = still
    async with aiohttp.ClientSession() as http:
        async with http.post(emulator.url + SUBMIT, headers=HEADERS,
                             json={"prompt": "p", "duration": 3, "output_format": "wav"}) as r:
            assert r.status == 202
            submitted = await r.json()
        assert submitted["status"] == "QUEUED"
        assert submitted["request_id"].startswith("stable-audio-3-small-music-text-to-audio_")
        assert submitted["polling_url"] == (
            f"{emulator.url}/v2/requests/status/{submitted['request_id']}")
        job = emulator.jobs[submitted["request_id"]]
        queued = await status_of(http, submitted["polling_url"])
        assert queued["status"] == "QUEUED" and queued["output"] is None
        clock.move_past(job.queued_until)
        processing = await status_of(http, submitted["polling_url"])
        assert processing["status"] == "PROCESSING"
        assert processing["output"] is None and processing["completed_at"] is None
        clock.move_past(job.done_at)
        done = await status_of(http, submitted["polling_url"])
        assert done["status"] == "COMPLETED"
        assert set(done) >= {"request_id", "status", "model_id", "error", "output",
                             "created_at", "updated_at", "completed_at"}
        assert done["output"]["media_type"] == "audio/wav"
        (url,) = done["output"]["media_url"]
        async with http.get(url) as r:
            assert r.status == 200
            assert r.headers["Content-Type"] == "audio/wav"
            data = await r.read()
        assert int(r.headers["Content-Length"]) == len(data)
        assert data[:4] == b"RIFF"


@pytest.mark.parametrize(("body", "needle"), [
    ({"duration": 5}, "prompt"),
    ({"prompt": "x", "duration": 121}, "duration"),
    ({"prompt": "x", "duration": 0.5}, "duration"),
    ({"prompt": "x", "num_inference_steps": 101}, "num_inference_steps"),
    ({"prompt": "x", "guidance_scale": 26}, "guidance_scale"),
    ({"prompt": "x", "output_format": "xyz"}, "output_format"),
    ({"prompt": "x", "bitrate": "loud"}, "bitrate"),
])
async def test_bad_requests_answer_400(emulator: Emulator, body: dict, needle: str) -> None:
    """Out-of-contract bodies get 400 with Pixazo's {error, message} shape naming the field."""
    async with aiohttp.ClientSession() as http, \
            http.post(emulator.url + SUBMIT, headers=HEADERS, json=body) as r:
        assert r.status == 400
        reply = await r.json()
    assert set(reply) == {"error", "message"} and needle in reply["message"]
    assert emulator.stats["pixazo"].accepted == 0


async def test_audio_to_audio_needs_audio_url(emulator: Emulator) -> None:
    """The audio-to-audio route refuses a body without audio_url and accepts one with it."""
    async with aiohttp.ClientSession() as http:
        async with http.post(emulator.url + A2A, headers=HEADERS, json={"prompt": "x"}) as r:
            assert r.status == 400
        async with http.post(emulator.url + A2A, headers=HEADERS,
                             json={"prompt": "x", "audio_url": "https://cdn.example/in.mp3",
                                   "init_noise_level": 0.5}) as r:
            assert r.status == 202


async def test_missing_or_wrong_key_is_401(emulator: Emulator) -> None:
    """The gateway refuses requests without the subscription key before anything else."""
    async with aiohttp.ClientSession() as http:
        for headers in ({}, {"Ocp-Apim-Subscription-Key": "wrong"}):
            async with http.post(emulator.url + SUBMIT, headers=headers, json={}) as r:
                assert r.status == 401
                assert "subscription key" in (await r.json())["message"]
    assert emulator.stats["pixazo"].accepted == 0


async def test_rate_limit_answers_429_with_retry_after() -> None:
    """Past N requests in the window the emulator answers 429 with Retry-After and counts it."""
    config = fast_config(limits={"pixazo": EmulatedLimit(requests=3, period=100.0)})
    # The clock stands still: the window cannot slide, and the wait is the whole of it.
    async with Emulator(config, clock=HandClock()) as emu, aiohttp.ClientSession() as http:
        statuses = []
        for i in range(5):
            async with http.post(emu.url + SUBMIT, headers=HEADERS, json={"prompt": f"{i}"}) as r:
                statuses.append(r.status)
                if r.status == 429:
                    retry_after = float(r.headers["Retry-After"])
        assert statuses == [202, 202, 202, 429, 429]
        assert retry_after == 1.0  # 100 emulated seconds at time scale 0.01
        assert emu.stats["pixazo"].rate_limited == 2
        # Polls do not count against a "submits" limit.
        async with http.get(f"{emu.url}/v2/requests/status/unknown", headers=HEADERS) as r:
            assert r.status == 404


async def test_failed_and_error_outcomes(still: Emulator, clock: HandClock) -> None:
    """Marker prompts end FAILED or ERROR with an error string and no output; the CDN has nothing."""
    emulator = still
    async with aiohttp.ClientSession() as http:
        for marker, status in (("emulator:fail", "FAILED"), ("emulator:error", "ERROR")):
            async with http.post(emulator.url + SUBMIT, headers=HEADERS,
                                 json={"prompt": f"x {marker}"}) as r:
                submitted = await r.json()
            clock.move_past(emulator.jobs[submitted["request_id"]].done_at)
            body = await status_of(http, submitted["polling_url"])
            assert body["status"] == status
            assert body["output"] is None and body["error"]
            async with http.get(f"{emulator.url}/cdn/pixazo/{submitted['request_id']}.mp3") as r:
                assert r.status == 404


async def test_insufficient_balance_is_402() -> None:
    """With the balance spent, submissions get 402 Insufficient Balance."""
    async with Emulator(fast_config(balance={"pixazo": 1})) as emu, \
            aiohttp.ClientSession() as http:
        codes = []
        for _ in range(2):
            async with http.post(emu.url + SUBMIT, headers=HEADERS, json={"prompt": "x"}) as r:
                codes.append(r.status)
                body = await r.json()
        assert codes == [202, 402] and body["error"] == "Insufficient Balance"


async def test_sync_mode_returns_a_data_uri(emulator: Emulator) -> None:
    """sync_mode holds the request until done and returns the audio as a base64 data URI."""
    async with aiohttp.ClientSession() as http, http.post(
            emulator.url + SUBMIT, headers=HEADERS,
            json={"prompt": "x", "duration": 1, "sync_mode": True}) as r:
        assert r.status == 200
        body = await r.json()
    assert body["status"] == "COMPLETED"
    (uri,) = body["output"]["media_url"]
    header, _, payload = uri.partition(",")
    assert header == "data:audio/mpeg;base64"
    assert len(base64.b64decode(payload)) > 1000


async def test_audio_is_deterministic_in_prompt_and_seed(emulator: Emulator) -> None:
    """The same prompt and seed give the same bytes; another seed gives others."""
    async with aiohttp.ClientSession() as http:
        digests = []
        for seed in (1, 1, 2):
            async with http.post(emulator.url + SUBMIT, headers=HEADERS, json={
                    "prompt": "same", "seed": seed, "duration": 1, "sync_mode": True}) as r:
                digests.append((await r.json())["output"]["media_url"][0])
    assert digests[0] == digests[1] != digests[2]
