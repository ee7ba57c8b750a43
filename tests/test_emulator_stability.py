"""The emulator speaks Stability AI's synchronous Stable Audio 2 contract: bodies, replies, errors, limits."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import time
import wave
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import anyio
import pytest
from aiohttp import web
from aiohttp.typedefs import Handler
from multidict import CIMultiDictProxy

from stableaudio_async.emulator import EmulatedJob, EmulatedLimit, Emulator, EmulatorConfig, stability
from stableaudio_async.emulator.audio import render_audio

from conftest import TEST_KEY, fast_config

pytestmark = pytest.mark.anyio

ROUTE = "/v2beta/audio/stable-audio-2/"
AUTH = {"authorization": f"Bearer {TEST_KEY}"}
WAV = render_audio("source", 1, 1.0, "wav")
MP3 = render_audio("source", 1, 1.0, "mp3")
# A prompt that passes validation and is then refused (403) before any generation: lets the
# table of accepted values run without rendering 190 s of audio.
PASSES = "emulator:moderation"


class Reply:
    """What came back: status, headers and the raw body."""

    def __init__(self, status: int, headers: CIMultiDictProxy[str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


async def post(emu: Emulator, task: str, fields: dict[str, str], *, audio: bytes | None = None,
               headers: dict[str, str] | None = None, skip_accept: bool = False) -> Reply:
    """POST ``fields`` (and an ``audio`` file part) as multipart/form-data to a Stability route."""
    form = aiohttp.FormData(default_to_multipart=True)
    for name, value in fields.items():
        form.add_field(name, value)
    if audio is not None:
        form.add_field("audio", audio, filename="input.wav", content_type="audio/wav")
    async with aiohttp.ClientSession() as http, http.post(
            emu.url + ROUTE + task, data=form, headers=AUTH if headers is None else headers,
            skip_auto_headers=["Accept"] if skip_accept else ()) as r:
        return Reply(r.status, r.headers, await r.read())


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    """A fast emulator with a short generation time and no Stability rate limit."""
    async with Emulator(fast_config(queue_time=0.0, generation_time=1.0, limits={})) as emulator:
        yield emulator


def assert_error(reply: Reply, status: int, name: str) -> list[str]:
    """The reply is Stability's error shape with this status and name; returns its errors."""
    assert reply.status == status, reply.body
    body = reply.json()
    assert set(body) == {"id", "name", "errors"}
    assert body["name"] == name
    assert len(body["id"]) == 32 and int(body["id"], 16) >= 0
    assert body["errors"] and all(isinstance(e, str) for e in body["errors"])
    return list(body["errors"])


# -- successful replies ----------------------------------------------------------------------


@pytest.mark.parametrize("skip_accept", [False, True])
async def test_audio_reply_is_the_wav_itself(emu: Emulator, skip_accept: bool) -> None:
    """accept audio/* (or none) answers 200 with the audio as body and its three headers."""
    headers = {**AUTH, "accept": "audio/*"}
    reply = await post(emu, "text-to-audio", {"prompt": "rain", "duration": "2", "seed": "42",
                                               "output_format": "wav", "model": "stable-audio-2.5"},
                       headers=headers if not skip_accept else AUTH, skip_accept=skip_accept)
    assert reply.status == 200
    assert reply.headers["content-type"] == "audio/wav"
    assert reply.headers["finish-reason"] == "SUCCESS"
    assert reply.headers["seed"] == "42"
    assert int(reply.headers["content-length"]) == len(reply.body)
    with wave.open(io.BytesIO(reply.body)) as w:
        assert abs(w.getnframes() / w.getframerate() - 2.0) < 0.05
    stats = emu.stats["stability"]
    request_id = reply.headers["x-request-id"]
    assert stats.served[request_id] == hashlib.sha256(reply.body).hexdigest()
    assert (stats.requests, stats.submits, stats.accepted, stats.downloads) == (1, 1, 1, 0)
    assert emu.jobs[request_id].params["steps"] == 8  # the 2.5 default


async def test_mp3_is_the_default_format(emu: Emulator) -> None:
    """Without output_format the audio is MP3, served as audio/mpeg."""
    reply = await post(emu, "text-to-audio", {"prompt": "rain", "duration": "1"})
    assert reply.status == 200 and reply.headers["content-type"] == "audio/mpeg"
    assert reply.body[:3] == b"ID3" or (reply.body[0] == 0xFF and reply.body[1] & 0xE0 == 0xE0)
    job = emu.jobs[reply.headers["x-request-id"]]
    assert job.model == "stable-audio-2"  # the real API's default model
    assert (job.params["steps"], job.params["cfg_scale"]) == (50, 7.0)


async def test_json_reply_carries_base64_audio(emu: Emulator) -> None:
    """accept application/json answers {audio, seed, finish_reason} and an x-request-id header."""
    reply = await post(emu, "text-to-audio", {"prompt": "rain", "duration": "1", "seed": "7",
                                               "output_format": "wav"},
                       headers={**AUTH, "accept": "application/json"})
    assert reply.status == 200 and reply.headers["content-type"].startswith("application/json")
    body = reply.json()
    assert set(body) == {"audio", "seed", "finish_reason"}
    assert body["seed"] == 7 and body["finish_reason"] == "SUCCESS"
    audio = base64.b64decode(body["audio"])
    assert audio[:4] == b"RIFF"
    assert emu.stats["stability"].served[reply.headers["x-request-id"]] == (
        hashlib.sha256(audio).hexdigest())


async def test_seed_zero_or_absent_is_drawn_and_returned(emu: Emulator) -> None:
    """Seed 0 or none gets a random seed, returned; sending it back reproduces the audio."""
    drawn = []
    for fields in ({"prompt": "p", "duration": "1"}, {"prompt": "p", "duration": "1", "seed": "0"}):
        reply = await post(emu, "text-to-audio", fields)
        seed = int(reply.headers["seed"])
        assert 1 <= seed <= 4_294_967_294
        drawn.append((seed, reply.body))
    seed, body = drawn[0]
    again = await post(emu, "text-to-audio", {"prompt": "p", "duration": "1", "seed": str(seed)})
    assert again.headers["seed"] == str(seed) and again.body == body


async def test_held_request_takes_the_generation_time() -> None:
    """The reply comes only after the scaled queue and generation time have passed."""
    config = fast_config(queue_time=5.0, generation_time=20.0)  # 0.25 s real
    async with Emulator(config) as emu:
        started = time.monotonic()
        reply = await post(emu, "text-to-audio", {"prompt": "p", "duration": "1"})
        elapsed = time.monotonic() - started
    assert reply.status == 200
    assert elapsed >= 0.25


async def until(condition: Callable[[], bool]) -> None:
    """Wait, yielding to the event loop, until ``condition()`` holds.

    The deadline only turns a hang into a failure: the outcome never depends on it.
    """
    with anyio.fail_after(30):
        while not condition():
            await anyio.sleep(0.001)


async def test_client_giving_up_during_the_hold_gets_nothing_rendered(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A client that disconnects while held leaves an accepted job, no served audio, a working server.

    The hold is gated: after its (scaled) generation time it also waits until the test has seen
    the server notice the disconnect, so the handler's check after the hold always finds the
    client gone, whatever the machine's speed.
    """
    emu = Emulator(fast_config(queue_time=0.0, generation_time=10.0))
    held: list[web.Request] = []
    answered: list[int] = []

    @web.middleware
    async def watch(request: web.Request, handler: Handler) -> web.StreamResponse:
        held.append(request)
        response = await handler(request)
        answered.append(response.status)
        return response

    emu.app.middlewares.append(watch)
    released = anyio.Event()
    hold = emu.wait_until_done

    async def gated_hold(job: EmulatedJob) -> None:
        await hold(job)
        await released.wait()

    monkeypatch.setattr(emu, "wait_until_done", gated_hold)
    async with emu:
        stats = emu.provider_stats("stability")

        async def give_up_while_held() -> None:
            form = aiohttp.FormData({"prompt": "p", "duration": "1"}, default_to_multipart=True)
            async with aiohttp.ClientSession() as http:
                await http.post(emu.url + ROUTE + T2A, headers=AUTH, data=form)
            raise AssertionError("answered while held")  # pragma: no cover

        async with anyio.create_task_group() as tg:
            tg.start_soon(give_up_while_held)
            await until(lambda: stats.accepted == 1)  # the job is accepted: the request is held
            tg.cancel_scope.cancel()  # the client gives up, closing its connection
        request = held[0]
        await until(lambda: request.transport is None or request.transport.is_closing())
        assert answered == []  # still held
        released.set()
        await until(lambda: bool(answered))  # the handler has returned
        assert answered == [499]
        assert stats.accepted == 1 and stats.served == {}
        assert (await post(emu, T2A, {"prompt": "q", "duration": "1"})).status == 200
        assert answered == [499, 200] and len(stats.served) == 1


async def test_repeated_bodies_are_counted_as_duplicates(emu: Emulator) -> None:
    """The same fields and audio sent twice count as a duplicate submission."""
    for _ in range(2):
        await post(emu, "audio-to-audio", {"prompt": "p", "duration": "1"}, audio=WAV)
    await post(emu, "audio-to-audio", {"prompt": "p", "duration": "1"}, audio=MP3)
    assert emu.stats["stability"].duplicate_submissions == 1


# -- audio-carrying routes -------------------------------------------------------------------


@pytest.mark.parametrize("audio", [WAV, MP3, b"ID3" + bytes(100), b"\xff\xfb" + bytes(100)],
                         ids=["wav", "mp3", "id3", "frame-sync"])
@pytest.mark.parametrize("task", ["audio-to-audio", "inpaint"])
async def test_audio_routes_take_wav_or_mp3(emu: Emulator, task: str, audio: bytes) -> None:
    """audio-to-audio and inpaint accept an mp3 or wav file part (judged by magic bytes)."""
    reply = await post(emu, task, {"prompt": "p", "duration": "1"}, audio=audio)
    assert reply.status == 200, reply.body
    job = emu.jobs[reply.headers["x-request-id"]]
    if task == "inpaint":
        assert job.model == "stable-audio-2.5"
        assert (job.params["mask_start"], job.params["mask_end"]) == (30, 190)
        assert "cfg_scale" not in job.params
    else:
        assert job.params["strength"] == 1


@pytest.mark.parametrize("task", ["audio-to-audio", "inpaint"])
async def test_audio_routes_refuse_non_audio_or_missing_files(emu: Emulator, task: str) -> None:
    """A file that is neither WAV nor MP3, or none at all, is a 400 naming audio."""
    not_audio = await post(emu, task, {"prompt": "p"}, audio=b"%PDF-1.4 definitely not audio")
    assert assert_error(not_audio, 400, "bad_request") == ["audio: must be an mp3 or wav file"]
    missing = await post(emu, task, {"prompt": "p"})
    assert assert_error(missing, 400, "bad_request") == ["audio: is required"]
    assert emu.stats["stability"].accepted == 0


# -- validation ------------------------------------------------------------------------------

T2A, A2A, INPAINT = "text-to-audio", "audio-to-audio", "inpaint"
V2, V25 = {"model": "stable-audio-2"}, {"model": "stable-audio-2.5"}


@pytest.mark.parametrize(("task", "fields", "fields_named"), [
    (T2A, {}, ["prompt"]),
    (T2A, {"prompt": "   "}, ["prompt"]),
    (T2A, {"prompt": "x" * 10_001}, ["prompt"]),
    (T2A, {"prompt": "p", "duration": "0"}, ["duration"]),
    (T2A, {"prompt": "p", "duration": "190.5"}, ["duration"]),
    (T2A, {"prompt": "p", "duration": "nan"}, ["duration"]),
    (T2A, {"prompt": "p", "duration": "ten"}, ["duration"]),
    (T2A, {"prompt": "p", "seed": "-1"}, ["seed"]),
    (T2A, {"prompt": "p", "seed": "4294967295"}, ["seed"]),
    (T2A, {"prompt": "p", "seed": "1.5"}, ["seed"]),
    (T2A, {"prompt": "p", "model": "stable-audio-3"}, ["model"]),
    (T2A, {"prompt": "p", "steps": "29", **V2}, ["steps"]),
    (T2A, {"prompt": "p", "steps": "101", **V2}, ["steps"]),
    (T2A, {"prompt": "p", "steps": "29"}, ["steps"]),  # the default model is stable-audio-2
    (T2A, {"prompt": "p", "steps": "3", **V25}, ["steps"]),
    (T2A, {"prompt": "p", "steps": "50", **V25}, ["steps"]),
    (T2A, {"prompt": "p", "steps": "50.0", **V2}, ["steps"]),
    (T2A, {"prompt": "p", "cfg_scale": "0.9"}, ["cfg_scale"]),
    (T2A, {"prompt": "p", "cfg_scale": "25.1"}, ["cfg_scale"]),
    (T2A, {"prompt": "p", "output_format": "flac"}, ["output_format"]),
    (A2A, {"prompt": "p", "strength": "1.01"}, ["strength"]),
    (A2A, {"prompt": "p", "strength": "-0.1", **V2}, ["strength"]),
    (A2A, {"prompt": "p", "strength": "0", **V25}, ["strength"]),
    (INPAINT, {"prompt": "p", "model": "stable-audio-2.5"}, ["model"]),
    (INPAINT, {"prompt": "p", "cfg_scale": "1"}, ["cfg_scale"]),
    (INPAINT, {"prompt": "p", "steps": "50"}, ["steps"]),
    (INPAINT, {"prompt": "p", "mask_start": "-1"}, ["mask_start"]),
    (INPAINT, {"prompt": "p", "mask_end": "191"}, ["mask_end"]),
    (INPAINT, {"prompt": "p", "mask_start": "40", "mask_end": "40"}, ["mask_end"]),
    (INPAINT, {"prompt": "p", "mask_start": "100", "mask_end": "60"}, ["mask_end"]),
    (T2A, {"duration": "0", "seed": "-1", "output_format": "ogg"},
     ["prompt", "duration", "seed", "output_format"]),
])
async def test_bad_fields_answer_400_listing_every_problem(
        emu: Emulator, task: str, fields: dict[str, str], fields_named: list[str]) -> None:
    """Out-of-contract fields get 400 bad_request with one '<field>: <reason>' per problem."""
    audio = WAV if task != T2A else None
    errors = assert_error(await post(emu, task, fields, audio=audio), 400, "bad_request")
    assert [e.split(":")[0] for e in errors] == fields_named
    assert emu.stats["stability"].accepted == 0


@pytest.mark.parametrize(("task", "fields"), [
    (T2A, {"prompt": PASSES + "x" * (10_000 - len(PASSES))}),
    (T2A, {"duration": "1", "seed": "4294967294", "cfg_scale": "1"}),
    (T2A, {"duration": "190", "seed": "1", "cfg_scale": "25", "output_format": "wav"}),
    (T2A, {"duration": "1.5", "steps": "30", **V2}),
    (T2A, {"steps": "100", **V2}),
    (T2A, {"steps": "4", **V25}),
    (T2A, {"steps": "8", **V25}),
    (A2A, {"strength": "0", **V2}),
    (A2A, {"strength": "0.01", **V25}),
    (A2A, {"strength": "1", **V25}),
    (INPAINT, {"mask_start": "0", "mask_end": "190", "steps": "4"}),
    (INPAINT, {"mask_start": "189.5", "mask_end": "190"}),
])
async def test_boundary_values_pass_validation(emu: Emulator, task: str, fields: dict[str, str]
                                               ) -> None:
    """Values at the edges of every range pass validation (and reach the moderation trigger)."""
    fields = {"prompt": PASSES, **fields}
    audio = WAV if task != T2A else None
    assert_error(await post(emu, task, fields, audio=audio), 403, "content_moderation")


async def test_long_client_headers_are_refused(emu: Emulator) -> None:
    """stability-client-* headers longer than 256 characters are a 400 naming the header."""
    headers = {**AUTH, "stability-client-id": "c" * 257, "stability-client-version": "1.0"}
    errors = assert_error(await post(emu, T2A, {"prompt": "p"}, headers=headers), 400, "bad_request")
    assert errors == ["stability-client-id: must be at most 256 characters"]


async def test_body_must_be_multipart(emu: Emulator) -> None:
    """JSON, urlencoded and malformed multipart bodies are 400 bad_request."""
    url = emu.url + ROUTE + T2A
    async with aiohttp.ClientSession() as http:
        async with http.post(url, headers=AUTH, json={"prompt": "p"}) as r:
            reply = Reply(r.status, r.headers, await r.read())
        assert "content-type" in assert_error(reply, 400, "bad_request")[0]
        async with http.post(url, headers=AUTH, data={"prompt": "p"}) as r:
            reply = Reply(r.status, r.headers, await r.read())
        assert "multipart/form-data" in assert_error(reply, 400, "bad_request")[0]
        async with http.post(url, data=b"no boundary here", headers={
                **AUTH, "content-type": "multipart/form-data; boundary=xyz"}) as r:
            reply = Reply(r.status, r.headers, await r.read())
        assert assert_error(reply, 400, "bad_request") == ["body: malformed multipart/form-data"]
    assert emu.stats["stability"].errors[400] == 3


async def test_request_over_the_size_limit_is_413(emu: Emulator, monkeypatch: pytest.MonkeyPatch
                                                  ) -> None:
    """A body over the limit is 413 payload_too_large, whether its length is declared or streamed."""
    assert stability.MAX_REQUEST_BYTES == 50_000_000
    monkeypatch.setattr(stability, "MAX_REQUEST_BYTES", 20_000)
    big = WAV[:40_000]
    reply = await post(emu, A2A, {"prompt": "p"}, audio=big)
    assert_error(reply, 413, "payload_too_large")

    writer = aiohttp.MultipartWriter("form-data")
    writer.append("p").set_content_disposition("form-data", name="prompt")
    writer.append(big, {"content-type": "audio/wav"}).set_content_disposition(
        "form-data", name="audio", filename="big.wav")
    buffer = io.BytesIO()

    class Sink:
        async def write(self, data: bytes) -> None:
            buffer.write(data)

    await writer.write(Sink())  # type: ignore[arg-type]

    async def chunks() -> AsyncIterator[bytes]:
        data = buffer.getvalue()
        for start in range(0, len(data), 4096):
            yield data[start:start + 4096]

    async with aiohttp.ClientSession() as http, http.post(
            emu.url + ROUTE + A2A, data=chunks(),
            headers={**AUTH, "content-type": writer.content_type}) as r:
        assert "content-length" not in r.request_info.headers
        reply = Reply(r.status, r.headers, await r.read())
    assert_error(reply, 413, "payload_too_large")
    assert emu.stats["stability"].errors[413] == 2


# -- auth and fault triggers -----------------------------------------------------------------


@pytest.mark.parametrize("headers", [
    {}, {"authorization": "Bearer wrong"}, {"authorization": TEST_KEY},
    {"authorization": f"Basic {TEST_KEY}"},
], ids=["none", "wrong-key", "no-scheme", "basic"])
async def test_missing_or_wrong_key_is_401(emu: Emulator, headers: dict[str, str]) -> None:
    """Without `authorization: Bearer <key>` every route answers 401 unauthorized."""
    assert_error(await post(emu, T2A, {"prompt": "p"}, headers=headers), 401, "unauthorized")
    assert emu.stats["stability"].accepted == 0


async def test_prompt_triggers(emu: Emulator) -> None:
    """moderation → 403, unprocessable → 422, error → 500 always, flaky → 500 once; none charged."""
    cases = [("emulator:moderation", 403, "content_moderation"),
             ("emulator:unprocessable", 422, "invalid_language"),
             ("emulator:error", 500, "internal_error"),
             ("emulator:error", 500, "internal_error")]
    for marker, status, name in cases:
        assert_error(await post(emu, T2A, {"prompt": f"a {marker}", "duration": "1"}), status, name)
    flaky = {"prompt": "b emulator:flaky", "duration": "1"}
    assert_error(await post(emu, T2A, flaky), 500, "internal_error")
    other = await post(emu, T2A, {**flaky, "seed": "5"})  # another body: fails once too
    assert_error(other, 500, "internal_error")
    assert (await post(emu, T2A, flaky)).status == 200
    assert (await post(emu, T2A, flaky)).status == 200
    stats = emu.stats["stability"]
    assert stats.accepted == 2
    assert stats.errors == {403: 1, 422: 1, 500: 4}


async def test_failed_generation_is_500_after_the_hold() -> None:
    """emulator:fail is accepted, held for the generation time, then answered 500 internal_error."""
    async with Emulator(fast_config(queue_time=0.0, generation_time=10.0)) as emu:
        started = time.monotonic()
        reply = await post(emu, T2A, {"prompt": "emulator:fail", "duration": "1"})
        assert time.monotonic() - started >= 0.1
        assert_error(reply, 500, "internal_error")
        assert emu.stats["stability"].accepted == 1


# -- rate limit and lockout ------------------------------------------------------------------


async def test_default_limit_is_150_per_10s_with_a_60s_lockout() -> None:
    """The default config carries Stability's published limit and lockout."""
    config = EmulatorConfig()
    assert config.limits["stability"] == EmulatedLimit(requests=150, period=10.0, counts="submits")
    assert config.lockouts == {"stability": 60.0}


async def test_the_151st_request_is_refused_with_the_default_limit() -> None:
    """At real time scale, 150 requests pass the window (even invalid ones count) and the 151st 429s.

    The emulator's clock stands still, so all 152 fall within one 10 s window however long
    the machine takes to send them.
    """
    config = EmulatorConfig(api_key=TEST_KEY)
    async with Emulator(config, clock=lambda: 1000.0) as emu, aiohttp.ClientSession() as http:
        url = emu.url + ROUTE + T2A
        statuses = []
        form = aiohttp.FormData({"duration": "1"}, default_to_multipart=True)
        for _ in range(152):
            async with http.post(url, headers=AUTH, data=form) as r:
                statuses.append(r.status)
                assert "Retry-After" not in r.headers
        async with http.get(emu.url + "/_emulator/stats") as r:
            summary = (await r.json())["stability"]
    assert statuses == [400] * 150 + [429, 429]
    assert summary["rate_limited"] == 2 and summary["lockouts"] == 1
    assert summary["errors"] == {"400": 150, "429": 2}


async def test_window_overflow_locks_the_key_out() -> None:
    """N accepted, then 429 and a lockout that refuses even a request the window has room for.

    On a hand-moved emulator clock: the five requests arrive at one instant, and the clock is
    then moved past the window (the lockout holds) and past the lockout (let in again).
    """
    now = [1000.0]
    config = fast_config(queue_time=0.0, generation_time=0.0,
                         limits={"stability": EmulatedLimit(requests=4, period=20.0)},
                         lockouts={"stability": 60.0})  # 0.2 s window, 0.6 s lockout
    async with Emulator(config, clock=lambda: now[0]) as emu:
        fields = {"prompt": "p", "duration": "1", "output_format": "wav"}
        statuses = [(await post(emu, T2A, fields)).status for _ in range(4)]
        overflow = await post(emu, T2A, fields)
        assert statuses == [200] * 4
        errors = assert_error(overflow, 429, "rate_limit_exceeded")
        assert "4 requests" in errors[0] and "60 seconds" in errors[0]
        assert "Retry-After" not in overflow.headers
        stats = emu.stats["stability"]
        assert (stats.accepted, stats.lockouts, len(stats.counted_at)) == (4, 1, 4)

        now[0] += 0.3  # the window has emptied; the lockout holds
        assert_error(await post(emu, T2A, fields), 429, "rate_limit_exceeded")
        assert (stats.lockouts, stats.rate_limited, len(stats.counted_at)) == (1, 2, 4)

        now[0] += 0.35  # 0.65 s after the overflow: the lockout is over
        assert (await post(emu, T2A, fields)).status == 200
        assert (stats.accepted, stats.lockouts, stats.rate_limited) == (5, 1, 2)


async def test_lockout_is_generic_and_refuses_non_submits() -> None:
    """Any provider with a lockout configured locks its key out, polls included.

    On a frozen emulator clock, so the 0.1 s (scaled) lockout cannot run out mid-test.
    """
    config = fast_config(limits={"pixazo": EmulatedLimit(requests=1, period=100.0)},
                         lockouts={"pixazo": 10.0})
    emu = Emulator(config, clock=lambda: 1000.0)
    assert emu.admit("pixazo", "k", submit=False) is None  # polls do not count...
    assert emu.admit("pixazo", "k", submit=True) is None
    wait = emu.admit("pixazo", "k", submit=True)
    assert wait == pytest.approx(0.1)
    assert emu.admit("pixazo", "k", submit=False) == pytest.approx(0.1)  # ...but are locked out
    assert emu.admit("pixazo", "other", submit=True) is None  # per key
    assert emu.stats["pixazo"].lockouts == 1 and emu.stats["pixazo"].rate_limited == 2
