"""Stability end to end in-process: held connections streamed to disk, error paths, the lockout."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from stableaudio_async import (
    DownloadError,
    Engine,
    InvalidBatchError,
    Job,
    JobStatus,
    ProviderUnavailableError,
    load_settings,
)
from stableaudio_async.config import RetryPolicy
from stableaudio_async.emulator import Emulator
from stableaudio_async.emulator.audio import render_audio

from conftest import TEST_KEY, fast_config, raised

pytestmark = pytest.mark.anyio

ENV = {"STABILITY_API_KEY": TEST_KEY, "PIXAZO_API_KEY": TEST_KEY}


def stability(prompt: str, **fields: object) -> Job:
    return Job.model_validate({"provider": "stability", "prompt": prompt, "duration": 2,
                               **fields})


async def run_all(emu: Emulator, jobs: list[Job], out: Path, **settings_changes: object):
    settings = emu.client_settings()
    if settings_changes:
        current = settings.providers["stability"]
        provider = type(current).model_validate({**current.model_dump(), **settings_changes})
        settings = settings.model_copy(
            update={"providers": {**settings.providers, "stability": provider}})
    async with Engine(settings, out_dir=out, env=ENV) as engine:
        return {r.id: r async for r in engine.run(jobs)}


async def test_audio_reply_is_streamed_to_disk_with_its_headers(emulator: Emulator, tmp_path) -> None:
    """Each file matches what was served; seed, finish reason, request id and credits are kept."""
    jobs = [stability(f"theme {i}", seed=i + 1, output_format="wav" if i % 2 else "mp3",
                      model="stable-audio-2" if i % 3 == 0 else None) for i in range(8)]
    results = await run_all(emulator, jobs, tmp_path)
    stats = emulator.stats["stability"]
    assert all(r.ok for r in results.values()), [r.error for r in results.values()]
    for job in jobs:
        r = results[job.id]
        assert r.request_id and r.sha256 == stats.served[r.request_id]
        assert hashlib.sha256(Path(r.path).read_bytes()).hexdigest() == r.sha256
        assert r.seed == job.seed and r.finish_reason == "SUCCESS"
        assert r.cost == 20.0 and r.cost_unit == "credits"
        assert r.attempts == 1
        assert r.content_type == ("audio/wav" if job.output_format == "wav" else "audio/mpeg")
    manifest = [json.loads(line) for line in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    assert {m["finish_reason"] for m in manifest} == {"SUCCESS"}
    assert all(m["seed"] and m["request_id"] and m["cost"] == 20.0 for m in manifest)
    assert stats.accepted == 8 and stats.rate_limited == 0


async def test_json_reply_form(emulator: Emulator, tmp_path) -> None:
    """accept: application/json gives base64 audio that lands byte-identical on disk."""
    job = stability("json please", options={"accept": "application/json"}, output_format="wav")
    (result,) = (await run_all(emulator, [job], tmp_path)).values()
    assert result.ok, result.error
    assert result.sha256 == emulator.stats["stability"].served[result.request_id]
    assert result.seed is not None and result.finish_reason == "SUCCESS"


async def test_local_file_is_uploaded_for_audio_to_audio_and_inpaint(emulator, tmp_path) -> None:
    """A local WAV is sent as the multipart audio part for audio-to-audio and inpaint."""
    source = tmp_path / "source.wav"
    source.write_bytes(render_audio("source", 1, 8.0, "wav"))
    jobs = [stability("remix", task="audio-to-audio", audio=str(source), strength=0.5),
            stability("patch", task="inpaint", audio=str(source), mask_start=1, mask_end=2)]
    results = await run_all(emulator, jobs, tmp_path / "out")
    assert all(r.ok for r in results.values()), [r.error for r in results.values()]


@pytest.mark.parametrize(("marker", "error_type", "status"), [
    ("emulator:moderation", "ContentRejectedError", 403),
    ("emulator:unprocessable", "InvalidRequestError", 422),
])
async def test_refusals_fail_without_retry_or_charge(emulator, tmp_path, marker, error_type,
                                                     status) -> None:
    """403 content_moderation and 422 end the job failed at once, costing nothing."""
    (result,) = (await run_all(emulator, [stability(f"x {marker}")], tmp_path)).values()
    assert result.status is JobStatus.FAILED
    assert (result.error_type, result.http_status) == (error_type, status)
    assert result.attempts == 1 and result.cost == 0.0
    assert not list(tmp_path.glob("*.mp3"))


async def test_an_input_that_is_not_audio_is_refused_before_anything_is_sent(
        emulator, tmp_path) -> None:
    """A local "mp3" that holds text is refused at validation, naming the field, and reaches
    no provider. (Stability's own 400 texts are rows of tests/test_provider_contract.py.)"""
    fake = tmp_path / "not-audio.mp3"
    fake.write_bytes(b"this is not audio" * 100)
    job = stability("remix", task="audio-to-audio", audio=str(fake))
    with pytest.raises(InvalidBatchError) as refused:
        await run_all(emulator, [job], tmp_path / "out")
    assert "is not mp3 audio" in str(refused.value) and "'audio'" in str(refused.value)
    assert not emulator.stats


async def test_server_errors_are_retried_because_failures_are_free(emulator, tmp_path) -> None:
    """A 500 (a failed, unbilled generation) is retried; a persistent one ends failed."""
    flaky, broken = stability("a emulator:flaky"), stability("b emulator:error")
    results = await run_all(emulator, [flaky, broken], tmp_path, retry={
        "attempts": 3, "initial": 0.01, "max": 0.02, "factor": 2.0})
    assert results[flaky.id].ok and results[flaky.id].attempts == 2
    assert results[broken.id].error_type == "ProviderUnavailableError"
    assert results[broken.id].attempts == 3 and results[broken.id].cost == 0.0


async def test_wrong_key_stops_the_provider_and_others_carry_on(emulator, tmp_path) -> None:
    """A 401 stops Stability submissions at once; Pixazo jobs in the same batch complete."""
    jobs = [stability(f"s{i}") for i in range(5)]
    jobs += [Job(provider="pixazo", prompt=f"p{i}", duration=1) for i in range(3)]
    settings = emulator.client_settings()
    provider = settings.providers["stability"].model_copy(update={"max_in_flight": 1})
    settings = settings.model_copy(
        update={"providers": {**settings.providers, "stability": provider}})
    env = {**ENV, "STABILITY_API_KEY": "sk-wrong"}
    async with Engine(settings, out_dir=tmp_path, env=env) as engine:
        results = [r async for r in engine.run(jobs)]
    by_provider = {p: [r for r in results if r.provider == p] for p in ("stability", "pixazo")}
    assert all(r.ok for r in by_provider["pixazo"])
    assert [r.error_type for r in by_provider["stability"] if r.status == "failed"] == [
        "AuthenticationError"]
    assert emulator.stats["stability"].submits == 1
    # The others were never sent: pending, and resumable once the key is fixed.
    held = [r for r in by_provider["stability"] if r.status == "pending"]
    assert len(held) == 4 and all("stopped by AuthenticationError" in r.error for r in held)


async def test_a_429_pauses_the_provider_for_the_lockout_then_recovers(tmp_path) -> None:
    """A lockout met mid-batch pauses every submit for the lockout, then all jobs finish once."""
    # The lockout is forced through the emulator's control, not hoped for from a loose limit.
    config = fast_config(lockouts={"stability": 30.0}, queue_time=0.0, generation_time=1.0)
    async with Emulator(config) as emu:
        settings = emu.client_settings()
        stab = settings.providers["stability"]
        assert stab.rate_limit is not None and stab.rate_limit.lockout == pytest.approx(0.3)
        patient = stab.model_copy(update={
            "max_in_flight": 4, "retry": stab.retry.model_copy(update={"attempts": 20})})
        settings = settings.model_copy(
            update={"providers": {**settings.providers, "stability": patient}})
        until = emu.lock_out("stability")
        async with Engine(settings, out_dir=tmp_path, env=ENV) as engine:
            results = [r async for r in engine.run([stability(f"l{i}") for i in range(12)])]
        stats = emu.stats["stability"]
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    assert stats.lockouts == 1 and stats.rate_limited >= 1
    assert stats.accepted == 12 and stats.duplicate_submissions == 0
    # After the first 429 nothing new is sent until the lockout is over: only the requests
    # already on their way (at most max_in_flight) can meet it, and nothing is accepted early.
    assert stats.rate_limited <= 4
    assert min(stats.accepted_at) >= until
    assert sum(r.attempts for r in results) == 12 + stats.rate_limited


async def test_the_lockout_control_answers_every_request_429_until_it_ends() -> None:
    """``POST /_emulator/lockout`` locks the key out on the emulator's clock; bad bodies are 400."""
    now = [100.0]
    async with Emulator(fast_config(), clock=lambda: now[0]) as emu, \
            aiohttp.ClientSession() as http:
        async with http.post(f"{emu.url}/_emulator/lockout",
                             json={"provider": "stability", "seconds": 5}) as reply:
            assert reply.status == 200
            assert await reply.json() == {"provider": "stability", "seconds": 5.0}
        for body in ({}, {"provider": "stability", "seconds": -1},
                     {"provider": "stability", "seconds": "5"}, {"provider": "pixazo"}):
            async with http.post(f"{emu.url}/_emulator/lockout", json=body) as reply:
                assert reply.status == 400, body
        url = f"{emu.url}/v2beta/audio/stable-audio-2/text-to-audio"
        form = aiohttp.FormData(default_to_multipart=True)
        form.add_field("prompt", "locked")
        headers = {"authorization": f"Bearer {TEST_KEY}", "accept": "audio/*"}
        async with http.post(url, data=form, headers=headers) as reply:
            assert reply.status == 429
            assert (await reply.json())["name"] == "rate_limit_exceeded"
        now[0] += 5.0
        form = aiohttp.FormData(default_to_multipart=True)
        form.add_field("prompt", "let in")
        form.add_field("duration", "1")
        async with http.post(url, data=form, headers=headers) as reply:
            assert reply.status == 200, await reply.text()
        stats = emu.stats["stability"]
    assert stats.lockouts == 1 and stats.rate_limited == 1 and stats.accepted == 1


async def test_connection_refused_is_retried_as_never_sent(tmp_path) -> None:
    """A connection that never opened is provably unsent, so it is retried, then fails."""
    async with Emulator(fast_config()) as emu:
        settings = emu.client_settings()
    # The emulator is gone: its port now refuses connections.
    stab = settings.providers["stability"].model_copy(update={"retry": RetryPolicy(
        attempts=3, initial=0.01, max=0.02)})
    settings = settings.model_copy(update={"providers": {"stability": stab}})
    async with Engine(settings, out_dir=tmp_path, env=ENV) as engine:
        result = await raised(engine.generate(stability("nobody home")),
                              ProviderUnavailableError)
    assert result.error_type == "ProviderUnavailableError"
    assert result.attempts == 3 and "cannot connect" in (result.error or "")


@pytest.mark.parametrize("content_type", ["audio/mpeg", "application/json"])
async def test_reply_cut_off_mid_audio_is_not_resent(tmp_path, content_type: str) -> None:
    """A body cut short after the generation ran is never resent (it is billed)."""
    sent: list[int] = []

    async def cut_off(request: web.Request) -> web.StreamResponse:
        sent.append(1)
        await request.read()
        response = web.StreamResponse(headers={
            "content-type": content_type, "finish-reason": "SUCCESS", "seed": "7",
            "x-request-id": "req-cut"})
        response.content_length = 1_000_000
        await response.prepare(request)
        await response.write(b"\xff\xfb" + b"\0" * 50_000 if content_type == "audio/mpeg"
                             else b'{"audio": "' + b"A" * 50_000)
        assert request.transport is not None
        request.transport.close()
        return response

    app = web.Application()
    app.router.add_post("/v2beta/audio/stable-audio-2/text-to-audio", cut_off)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        settings = load_settings(env={"STABLEAUDIO_STABILITY_BASE_URL":
                                      f"http://127.0.0.1:{runner.addresses[0][1]}"})
        async with Engine(settings, out_dir=tmp_path, env=ENV) as engine:
            result = await raised(engine.generate(stability("expensive")), DownloadError)
    finally:
        await runner.cleanup()
    assert result.status is JobStatus.FAILED
    assert sent == [1] and result.attempts == 1
    assert result.request_id == "req-cut"
    # Billed although lost: the cost is recorded, and the error says why it was not resent.
    assert result.error_type == "DownloadError" and result.cost is not None and result.cost > 0
    assert "broke off after the generation finished" in (result.error or "")
    assert not [p for p in tmp_path.iterdir()  # no partial file, under any name
                if not p.name.startswith(("manifest.jsonl", "journal.sqlite3",
                                          ".stableaudio.lock"))]
