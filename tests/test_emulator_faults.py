"""Injected faults: each one, per provider, answers exactly as documented, and reproducibly."""

from __future__ import annotations

import hashlib
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from pydantic import ValidationError

from stableaudio_async.cli import _emulator_config, build_parser
from stableaudio_async.emulator import Emulator, EmulatorConfig, FaultRates
from stableaudio_async.emulator.faults import (
    MAX_SLOW_PAUSE,
    SLOW_CHUNKS,
    RangeNotSatisfiable,
    parse_range,
)

from conftest import TEST_KEY, fast_config

pytestmark = pytest.mark.anyio

PIXAZO_SUBMIT = ("/stable-audio-3-small-music-text-to-audio/v1/"
                 "stable-audio-3-small-music-text-to-audio-request")
PIXAZO = {"Ocp-Apim-Subscription-Key": TEST_KEY}
BEARER = {"Authorization": f"Bearer {TEST_KEY}"}
FAL = {"Authorization": f"Key {TEST_KEY}"}
REPLICATE_CREATE = "/v1/models/stability-ai/stable-audio-2.5/predictions"


def emulator(faults: dict[str, FaultRates] | None = None, *, seed: int = 0,
             **by_provider: FaultRates) -> Emulator:
    """A time-scaled emulator whose jobs finish at once, with ``faults`` per provider."""
    return Emulator(fast_config(queue_time=0.0, generation_time=0.0,
                                faults={**(faults or {}), **by_provider}, fault_seed=seed))


async def pixazo_job(emu: Emulator, http: aiohttp.ClientSession, prompt: str = "p"
                     ) -> tuple[str, dict[str, Any]]:
    """Submit a one-second Pixazo job; its request id and its (finished) status body."""
    async with http.post(emu.url + PIXAZO_SUBMIT, headers=PIXAZO,
                         json={"prompt": prompt, "duration": 1, "output_format": "wav"}) as r:
        assert r.status == 202
        request_id = (await r.json())["request_id"]
    return request_id, await pixazo_status(emu, http, request_id)


async def pixazo_status(emu: Emulator, http: aiohttp.ClientSession, request_id: str
                        ) -> dict[str, Any]:
    async with http.get(f"{emu.url}/v2/requests/status/{request_id}", headers=PIXAZO) as r:
        assert r.status == 200
        body: dict[str, Any] = await r.json()
    return body


async def pixazo_file(emu: Emulator, http: aiohttp.ClientSession) -> tuple[str, str]:
    """A finished Pixazo job's CDN URL and the sha256 of its audio."""
    request_id, body = await pixazo_job(emu, http)
    url = body["output"]["media_url"][0]
    data, _ = emu.render(emu.jobs[request_id])
    return url, hashlib.sha256(data).hexdigest()


async def replicate_file(emu: Emulator, http: aiohttp.ClientSession) -> tuple[str, str]:
    """A finished Replicate prediction's delivery URL and the sha256 of its audio."""
    async with http.post(emu.url + REPLICATE_CREATE, headers=BEARER,
                         json={"input": {"prompt": "p", "duration": 1}}) as r:
        assert r.status == 201
        prediction = await r.json()
    assert prediction["status"] == "succeeded"
    data, _ = emu.render(emu.jobs[prediction["id"]])
    return prediction["output"], hashlib.sha256(data).hexdigest()


async def read_partial(response: aiohttp.ClientResponse) -> tuple[bytes, BaseException | None]:
    """The bytes a reply delivered before it broke off, and how it broke off (None: whole)."""
    received = bytearray()
    try:
        async for chunk in response.content.iter_any():
            received += chunk
    except aiohttp.ClientError as exc:
        return bytes(received), exc
    return bytes(received), None


async def test_no_faults_leave_downloads_as_they_were() -> None:
    """Without faults a CDN URL is unsigned and the download a plain 200 with no range headers."""
    async with emulator() as emu, aiohttp.ClientSession() as http:
        url, digest = await pixazo_file(emu, http)
        assert urlsplit(url).query == ""
        async with http.get(url) as r:
            assert r.status == 200
            assert hashlib.sha256(await r.read()).hexdigest() == digest
            assert "Content-Range" not in r.headers and "Accept-Ranges" not in r.headers
        assert emu.stats["pixazo"].injected == {}


@pytest.mark.parametrize(("provider", "path", "headers"), [
    ("pixazo", PIXAZO_SUBMIT, PIXAZO),
    ("stability", "/v2beta/audio/stable-audio-2/text-to-audio", BEARER),
    ("fal", "/fal-ai/stable-audio-25/text-to-audio", FAL),
])
async def test_submit_503_comes_before_the_job_is_accepted(provider: str, path: str,
                                                            headers: dict[str, str]) -> None:
    """A submit gets 503 with the injected-fault body; nothing is accepted, all is counted."""
    async with emulator({provider: FaultRates(submit_503=1.0)}) as emu, \
            aiohttp.ClientSession() as http:
        async with http.post(emu.url + path, headers=headers, json={"prompt": "p"}) as r:
            assert r.status == 503
            assert (await r.json())["error"] == "injected fault"
        stats = emu.stats[provider]
        assert emu.jobs == {}
        assert (stats.requests, stats.submits, stats.accepted) == (1, 1, 0)
        assert stats.errors == {503: 1} and stats.injected == {"submit_503": 1}


async def test_poll_5xx_leaves_the_job_alone() -> None:
    """Pixazo status polls and fal result fetches get 500 or 503; the jobs finish regardless."""
    faults = {"pixazo": FaultRates(poll_5xx=1.0), "fal": FaultRates(poll_5xx=1.0)}
    async with emulator(faults) as emu, aiohttp.ClientSession() as http:
        async with http.post(emu.url + PIXAZO_SUBMIT, headers=PIXAZO,
                             json={"prompt": "p", "duration": 1}) as r:
            pixazo_id = (await r.json())["request_id"]
        async with http.post(emu.url + "/fal-ai/stable-audio-25/text-to-audio", headers=FAL,
                             json={"prompt": "p", "seconds_total": 1}) as r:
            response_url = (await r.json())["response_url"]
        statuses = []
        for _ in range(4):
            async with http.get(f"{emu.url}/v2/requests/status/{pixazo_id}",
                                headers=PIXAZO) as r:
                statuses.append(r.status)
                assert (await r.json())["error"] == "injected fault"
            async with http.get(response_url, headers=FAL) as r:
                statuses.append(r.status)
        assert set(statuses) <= {500, 503}
        for provider in ("pixazo", "fal"):
            stats = emu.stats[provider]
            assert stats.polls == 4 and stats.injected == {"poll_5xx": 4}
            assert sum(stats.errors.values()) == 4 and set(stats.errors) <= {500, 503}
        assert all(job.outcome == "COMPLETED" and emu.phase(job) == "DONE"
                   for job in emu.jobs.values())


@pytest.mark.parametrize("retry_after", [True, False])
async def test_a_burst_refuses_burst_length_requests(retry_after: bool) -> None:
    """Each burst is burst_length 429s, with Retry-After only if asked; never rate_limited."""
    rates = FaultRates(burst_429=1.0, burst_length=3, burst_retry_after=retry_after)
    async with emulator(pixazo=rates) as emu, aiohttp.ClientSession() as http:
        for _ in range(6):
            async with http.get(f"{emu.url}/v2/requests/status/x", headers=PIXAZO) as r:
                assert r.status == 429
                assert r.headers.get("Retry-After") == ("0.010" if retry_after else None)
        stats = emu.stats["pixazo"]
        assert stats.injected == {"burst_429": 2} and stats.injected_429 == 6
        assert stats.rate_limited == 0 and stats.errors == {429: 6}


async def test_bursts_come_whole_between_ordinary_replies() -> None:
    """With a fixed seed, 429s arrive in runs of burst_length among ordinary 404s."""
    rates = FaultRates(burst_429=0.15, burst_length=4)
    async with emulator(seed=3, pixazo=rates) as emu, aiohttp.ClientSession() as http:
        statuses = []
        for _ in range(40):
            async with http.get(f"{emu.url}/v2/requests/status/x", headers=PIXAZO) as r:
                statuses.append(r.status)
        runs = "".join("x" if s == 429 else "." for s in statuses).split(".")
        whole = [len(run) for run in runs[:-1] if run]  # the last may be cut off at 40
        assert whole and all(n % 4 == 0 for n in whole)
        assert set(statuses) == {404, 429}
        assert emu.stats["pixazo"].injected_429 == statuses.count(429)
        assert emu.stats["pixazo"].rate_limited == 0


async def test_cdn_reset_breaks_the_download() -> None:
    """A download reset partway through ends in a client error naming the reset."""
    async with emulator(pixazo=FaultRates(cdn_reset=1.0)) as emu, \
            aiohttp.ClientSession() as http:
        url, _ = await pixazo_file(emu, http)
        async with http.get(url) as r:
            received, error = await read_partial(r)
        assert len(received) < int(r.headers["Content-Length"])
        assert isinstance(error, aiohttp.ClientError) and "reset" in str(error).lower()
        with pytest.raises(aiohttp.ClientError):  # and so does a plain read
            async with http.get(url) as r:
                await r.read()
        assert emu.stats["pixazo"].injected == {"cdn_reset": 2}


async def test_cdn_truncate_delivers_less_than_content_length() -> None:
    """A truncated download stops short of its Content-Length, and the client notices."""
    async with emulator(pixazo=FaultRates(cdn_truncate=1.0)) as emu, \
            aiohttp.ClientSession() as http:
        url, _ = await pixazo_file(emu, http)
        async with http.get(url) as r:
            assert r.status == 200
            promised = int(r.headers["Content-Length"])
            received, error = await read_partial(r)
        assert isinstance(error, aiohttp.ClientPayloadError)
        assert 0 < len(received) < promised
        assert emu.stats["pixazo"].injected == {"cdn_truncate": 1}


async def test_cdn_slow_still_delivers_the_whole_file() -> None:
    """A slow download arrives whole; its pauses are capped (MAX_SLOW_PAUSE each)."""
    assert SLOW_CHUNKS * MAX_SLOW_PAUSE <= 0.2  # at most 0.2 s late, whatever the file
    async with emulator(pixazo=FaultRates(cdn_slow=1.0)) as emu, \
            aiohttp.ClientSession() as http:
        url, digest = await pixazo_file(emu, http)
        async with http.get(url) as r:
            data = await r.read()
        assert hashlib.sha256(data).hexdigest() == digest
        assert int(r.headers["Content-Length"]) == len(data)
        assert emu.stats["pixazo"].injected == {"cdn_slow": 1}


@pytest.mark.parametrize("fetch", [pixazo_file, replicate_file])
async def test_a_client_resuming_with_range_gets_the_whole_file(fetch: Any) -> None:
    """After cdn_faults_per_file truncations a Range request completes the file (shared CDN
    and a provider's own delivery route)."""
    rates = FaultRates(cdn_truncate=1.0, cdn_faults_per_file=2)
    async with emulator(pixazo=rates, replicate=rates) as emu, aiohttp.ClientSession() as http:
        url, digest = await fetch(emu, http)
        data = b""
        statuses = []
        for _ in range(3):
            headers = {"Range": f"bytes={len(data)}-"} if data else {}
            async with http.get(url, headers=headers) as r:
                statuses.append(r.status)
                part, error = await read_partial(r)
            data += part
        assert statuses == [200, 206, 206] and error is None
        assert hashlib.sha256(data).hexdigest() == digest
        provider = "pixazo" if fetch is pixazo_file else "replicate"
        assert emu.stats[provider].injected == {"cdn_truncate": 2}


@pytest.mark.parametrize("fetch", [pixazo_file, replicate_file])
async def test_range_requests_get_206_with_the_right_bytes(fetch: Any) -> None:
    """bytes=N-, N-M and -K give 206 and Content-Range; past the end 416; garbage the whole."""
    async with emulator() as emu, aiohttp.ClientSession() as http:
        url, _ = await fetch(emu, http)
        async with http.get(url) as r:
            full = await r.read()
        size = len(full)
        for header, (start, end) in {"bytes=10-": (10, size), "bytes=0-9": (0, 10),
                                     "bytes=-5": (size - 5, size),
                                     f"bytes=100-{size + 50}": (100, size)}.items():
            async with http.get(url, headers={"Range": header}) as r:
                assert r.status == 206
                assert r.headers["Content-Range"] == f"bytes {start}-{end - 1}/{size}"
                assert await r.read() == full[start:end]
        async with http.get(url, headers={"Range": f"bytes={size}-"}) as r:
            assert r.status == 416 and r.headers["Content-Range"] == f"bytes */{size}"
        async with http.get(url, headers={"Range": "lines=1-2"}) as r:
            assert r.status == 200 and await r.read() == full


def test_parse_range_table() -> None:
    """Range parsing: single byte ranges only, clipped to the file; bad headers ignored."""
    cases: dict[str | None, tuple[int, int] | None] = {
        None: None, "": None, "bytes=-": None, "bytes=5-2": None, "bytes=0-1,4-5": None,
        "bytes=0-": (0, 100), "BYTES=10-19": (10, 20), "bytes=90-200": (90, 100),
        "bytes=-10": (90, 100), "bytes=-500": (0, 100),
    }
    for header, expected in cases.items():
        assert parse_range(header, 100) == expected, header
    for header in ("bytes=100-", "bytes=-0"):
        with pytest.raises(RangeNotSatisfiable):
            parse_range(header, 100)


async def test_expired_url_is_403_and_a_repoll_hands_out_a_fresh_one() -> None:
    """A CDN URL answers 403 after url_expiry (scaled); polling again gives a URL that works."""
    now = [1000.0]  # the emulator's clock, moved by hand: no race with the machine's speed
    emu = Emulator(fast_config(queue_time=0.0, generation_time=0.0,
                               faults={"pixazo": FaultRates(url_expiry=5.0)}),
                   clock=lambda: now[0])
    async with emu, aiohttp.ClientSession() as http:  # 5 emulated seconds: 0.05 s
        request_id, body = await pixazo_job(emu, http)
        url = body["output"]["media_url"][0]
        assert set(parse_qs(urlsplit(url).query)) == {"expires", "sig"}
        now[0] += 0.049
        async with http.get(url) as r:
            assert r.status == 200
        now[0] += 0.001
        async with http.get(url) as r:
            assert r.status == 403
        fresh = (await pixazo_status(emu, http, request_id))["output"]["media_url"][0]
        assert fresh != url
        async with http.get(fresh) as r:
            assert r.status == 200
        unsigned = fresh.partition("?")[0]
        tampered = fresh.replace("expires=", "expires=9")
        for bad in (unsigned, tampered):
            async with http.get(bad) as r:
                assert r.status == 403
        stats = emu.stats["pixazo"]
        assert stats.injected == {"url_expiry": 3} and stats.errors == {403: 3}
        assert stats.downloads == 2


async def test_a_stale_url_answers_403_once_per_file_whenever_it_is_used() -> None:
    """url_stale: a file's first request is refused as expired; the re-signed URL works."""
    async with emulator(pixazo=FaultRates(url_stale=1.0)) as emu, aiohttp.ClientSession() as http:
        request_id, body = await pixazo_job(emu, http)
        url = body["output"]["media_url"][0]
        assert set(parse_qs(urlsplit(url).query)) == {"expires", "sig"}
        async with http.get(url) as r:
            assert r.status == 403
        fresh = (await pixazo_status(emu, http, request_id))["output"]["media_url"][0]
        assert fresh != url
        for _ in range(2):  # never again for this file, through either URL
            for working in (fresh, url):
                async with http.get(working) as r:
                    assert r.status == 200
        async with http.get(fresh.partition("?")[0]) as r:
            assert r.status == 403  # still signed: an unsigned URL is refused
        stats = emu.stats["pixazo"]
    assert stats.injected == {"url_expiry": 2} and stats.downloads == 4


async def pixazo_outcome(emu: Emulator, http: aiohttp.ClientSession) -> str:
    return str((await pixazo_job(emu, http))[1]["status"])


async def aimlapi_outcome(emu: Emulator, http: aiohttp.ClientSession) -> str:
    async with http.post(emu.url + "/v2/generate/audio", headers=BEARER,
                         json={"model": "stable-audio", "prompt": "p", "seconds_total": 1}) as r:
        generation_id = (await r.json())["id"]
    async with http.get(emu.url + "/v2/generate/audio", headers=BEARER,
                        params={"generation_id": generation_id}) as r:
        return str((await r.json())["status"])


async def wavespeed_outcome(emu: Emulator, http: aiohttp.ClientSession) -> str:
    async with http.post(emu.url + "/api/v3/stability-ai/stable-audio-3/music", headers=BEARER,
                         json={"prompt": "p", "duration": 1}) as r:
        prediction_id = (await r.json())["data"]["id"]
    async with http.get(f"{emu.url}/api/v3/predictions/{prediction_id}/result",
                        headers=BEARER) as r:
        return str((await r.json())["data"]["status"])


async def replicate_outcome(emu: Emulator, http: aiohttp.ClientSession) -> str:
    async with http.post(emu.url + REPLICATE_CREATE, headers=BEARER,
                         json={"input": {"prompt": "p", "duration": 1}}) as r:
        return str((await r.json())["status"])


@pytest.mark.parametrize(("provider", "outcome", "fault", "word"), [
    ("pixazo", pixazo_outcome, "job_failed", "FAILED"),
    ("pixazo", pixazo_outcome, "job_error", "ERROR"),
    ("aimlapi", aimlapi_outcome, "job_failed", "error"),
    ("wavespeed", wavespeed_outcome, "job_error", "failed"),
    ("replicate", replicate_outcome, "job_failed", "failed"),
])
async def test_injected_job_outcomes_use_the_providers_words(provider: str, outcome: Any,
                                                            fault: str, word: str) -> None:
    """job_failed / job_error end an accepted job as the prompt markers would."""
    async with emulator({provider: FaultRates.model_validate({fault: 1.0})}) as emu, \
            aiohttp.ClientSession() as http:
        assert await outcome(emu, http) == word
        stats = emu.stats[provider]
        assert stats.accepted == 1 and stats.injected == {fault: 1}


async def fault_trace(seed: int) -> tuple[list[int], list[str]]:
    """Poll statuses and job outcomes a run meets with half of everything failing."""
    rates = FaultRates(poll_5xx=0.5, job_failed=0.5)
    async with emulator(seed=seed, pixazo=rates) as emu, aiohttp.ClientSession() as http:
        outcomes: list[str] = []
        for _ in range(8):
            async with http.post(emu.url + PIXAZO_SUBMIT, headers=PIXAZO,
                                 json={"prompt": "same", "duration": 1}) as r:
                outcomes.append(emu.jobs[(await r.json())["request_id"]].outcome)
        statuses = []
        for _ in range(16):
            async with http.get(f"{emu.url}/v2/requests/status/x", headers=PIXAZO) as r:
                statuses.append(r.status)
    return statuses, outcomes


async def test_faults_are_deterministic_for_a_seed() -> None:
    """The same seed meets the same faults in the same places; another seed, others."""
    first, again, other = await fault_trace(11), await fault_trace(11), await fault_trace(12)
    assert first == again
    assert first != other
    statuses, outcomes = first
    assert {404, 500, 503} >= set(statuses) > {404}
    assert set(outcomes) == {"COMPLETED", "FAILED"}


def test_faults_load_from_toml() -> None:
    """A [faults.<provider>] table and fault_seed load into EmulatorConfig."""
    config = EmulatorConfig.model_validate(tomllib.loads(
        'fault_seed = 7\n[faults.pixazo]\nsubmit_503 = 0.1\nburst_429 = 0.05\n'
        'burst_length = 3\nurl_expiry = 30\n[faults.fal]\njob_error = 0.2\n'))
    assert config.fault_seed == 7
    assert config.faults == {
        "pixazo": FaultRates(submit_503=0.1, burst_429=0.05, burst_length=3, url_expiry=30.0),
        "fal": FaultRates(job_error=0.2)}


@pytest.mark.parametrize("toml", [
    "[faults.pixazzo]\nsubmit_503 = 0.1\n",
    "[faults.pixazo]\nsubmit_503 = 1.5\n",
    "[faults.pixazo]\nsubmit_530 = 0.1\n",
    "[faults.pixazo]\njob_failed = 0.6\njob_error = 0.6\n",
    "[faults.pixazo]\nurl_expiry = 0\n",
])
def test_bad_fault_tables_are_refused(toml: str) -> None:
    """Unknown providers or fields, rates outside 0..1 and impossible outcomes are errors."""
    with pytest.raises(ValidationError):
        EmulatorConfig.model_validate(tomllib.loads(toml))


def test_the_emulator_command_reads_fault_tables(tmp_path: Path) -> None:
    """``stableaudio-async emulator --config`` takes the faults as they are written."""
    path = tmp_path / "emulator.toml"
    path.write_text("time_scale = 0.5\n[faults.pixazo]\npoll_5xx = 0.25\n")
    config = _emulator_config(build_parser().parse_args(["emulator", "--config", str(path)]))
    assert config.faults == {"pixazo": FaultRates(poll_5xx=0.25)}


async def test_the_stats_endpoint_reports_injected_faults() -> None:
    """GET /_emulator/stats lists injected faults and 429s apart from rate-limit violations."""
    async with emulator(pixazo=FaultRates(burst_429=1.0, burst_length=2)) as emu, \
            aiohttp.ClientSession() as http:
        async with http.post(emu.url + PIXAZO_SUBMIT, headers=PIXAZO, json={"prompt": "p"}) as r:
            assert r.status == 429
        async with http.get(emu.url + "/_emulator/stats") as r:
            summary = (await r.json())["pixazo"]
    assert summary["injected"] == {"burst_429": 1} and summary["injected_429"] == 1
    assert summary["rate_limited"] == 0 and summary["errors"] == {"429": 1}
    assert summary["submits"] == 1 and summary["accepted"] == 0
