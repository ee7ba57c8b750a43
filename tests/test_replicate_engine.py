"""Replicate end to end in-process: the emulator's contract over HTTP, and the engine driving it."""

from __future__ import annotations

import hashlib
import time
from contextlib import aclosing
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest

from stableaudio_async import DeadlineExceededError, Engine, Job, JobResult, JobStatus
from stableaudio_async.config import RateLimit, RetryPolicy, Settings
from stableaudio_async.emulator import EmulatedJob, EmulatedLimit, Emulator
from stableaudio_async.emulator import replicate as replicate_emulator
from stableaudio_async.journal import Journal
from stableaudio_async.providers.replicate import ReplicateAdapter

from conftest import TEST_KEY, capture_logs, fast_config, raised

pytestmark = pytest.mark.anyio

ENV = {"REPLICATE_API_TOKEN": TEST_KEY}
CREATE = "/v1/models/stability-ai/stable-audio-2.5/predictions"
AUTH = {"Authorization": f"Bearer {TEST_KEY}"}


class Clock:
    """The emulator's clock, driven by the test: frozen at ``at`` until moved, or following real time.

    Everything the emulator times (phases, windows, retention) reads it, so a test moves it to
    force an outcome whatever the machine's speed. Within one synchronous stretch of a handler
    it cannot change: the emulator runs on the test's own event loop.
    """

    def __init__(self, at: float = 1000.0) -> None:
        self.at = at
        #: The real (monotonic) time it started following real time, or None while frozen.
        self.since: float | None = None

    def __call__(self) -> float:
        return self.at if self.since is None else self.at + (time.monotonic() - self.since)

    def advance(self, seconds: float) -> None:
        """Jump ``seconds`` (real ones: emulated × time_scale) ahead, frozen there."""
        self.at = self() + seconds
        self.since = None

    def follow(self) -> None:
        """Run on from where it stands at the speed of real time."""
        self.at = self()
        self.since = time.monotonic()

    def freeze(self) -> None:
        self.at = self()
        self.since = None


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


async def poll(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    """One GET of a prediction: 200 and its body."""
    async with http.get(url, headers=AUTH) as r:
        assert r.status == 200
        return await r.json()  # type: ignore[no-any-return]


# ---- the emulator's contract, over raw HTTP ---------------------------------------------------


async def test_create_poll_download_life_cycle() -> None:
    """201 starting with urls.get/cancel, then processing → succeeded with a downloadable output URL."""
    clock = Clock()
    # Queued 2 emulated seconds, then 5 generating; the clock moves only when the test moves it.
    async with Emulator(fast_config(), clock=clock) as emulator, aiohttp.ClientSession() as http:
        status, _, created = await create(http, emulator, {"input": {"prompt": "p", "duration": 3}})
        assert status == 201
        assert created["status"] == "starting" and created["output"] is None
        assert len(created["id"]) == 26 and created["id"].isalnum()
        get = f"{emulator.url}/v1/predictions/{created['id']}"
        assert created["urls"] == {"get": get, "cancel": get + "/cancel"}
        assert created["input"] == {"prompt": "p", "duration": 3}
        job = emulated(emulator, "p")
        scale = emulator.config.time_scale
        queued = await poll(http, get)
        assert (queued["status"], queued["started_at"]) == ("starting", None)
        clock.at = job.queued_until + 1 * scale  # one emulated second into generation
        processing = await poll(http, get)
        assert processing["status"] == "processing"
        assert processing["started_at"] and processing["completed_at"] is None
        assert processing["output"] is None and processing["metrics"] == {}
        clock.at = job.done_at
        done = await poll(http, get)
        assert done["status"] == "succeeded"
        assert done["data_removed"] is False and done["error"] is None
        assert done["completed_at"] is not None
        assert done["metrics"] == {"predict_time": pytest.approx(5.0), "total_time": pytest.approx(7.0)}
        async with http.get(done["output"]) as r:
            assert (r.status, r.content_type) == (200, "audio/mpeg")
            data = await r.read()
    stats = emulator.stats["replicate"]
    assert stats.served[created["id"]] == hashlib.sha256(data).hexdigest()
    assert (stats.submits, stats.accepted, stats.downloads) == (1, 1, 1)
    assert stats.requests == stats.submits + stats.polls


async def test_prefer_wait_holds_until_done_or_the_wait_runs_out() -> None:
    """Prefer: wait=N answers 201 once the prediction is final or N emulated seconds have passed."""
    # The hold waits in real time (N × time_scale) on the emulator's real-time clock, so only
    # lower bounds on its length hold at any speed. 40 emulated seconds per second of audio:
    # 1 s takes 40 (0.4 s real), 190 s takes 7600 (76 s real) — a reply to that one that is not
    # final shows the hold ended with its wait, not with the prediction, however slow the machine.
    config = fast_config(queue_time=0, generation_time=0, generation_time_per_second=40)
    async with Emulator(config) as emu, aiohttp.ClientSession() as http:
        started = anyio.current_time()
        status, _, short = await create(http, emu, {"input": {"prompt": "a", "duration": 190}},
                                        headers={**AUTH, "Prefer": "wait=5"})
        held = anyio.current_time() - started
        # Not final: the hold ran out first. The reply says "starting" (what replicate 1.0.7's
        # run() keeps polling on), with no output and no completion; a GET says "processing".
        assert status == 201 and short["status"] == "starting"
        assert short["output"] is None and short["completed_at"] is None
        assert (await poll(http, short["urls"]["get"]))["status"] == "processing"
        assert held >= 0.05  # at least the 5 emulated seconds asked for
        started = anyio.current_time()
        status, _, full = await create(http, emu, {"input": {"prompt": "b", "duration": 1}},
                                       headers={**AUTH, "Prefer": "wait"})
        held = anyio.current_time() - started
        assert (status, full["status"]) == (201, "succeeded")
        assert full["output"].endswith(f"/{full['id']}/output.mp3")
        assert full["metrics"]["predict_time"] == pytest.approx(40.0)
        assert held >= 0.38  # held for all 40 emulated seconds
        for bad in ("wait=0", "wait=61", "wait=1.5"):
            status, _, body = await create(http, emu, {"input": {"prompt": "c"}},
                                           headers={**AUTH, "Prefer": bad})
            assert status == 400 and "1 to 60" in body["detail"]
        assert emu.stats["replicate"].accepted == 2


async def test_cancel_ends_the_prediction_and_wakes_a_held_create() -> None:
    """POST …/cancel marks it canceled (counted once); a final prediction is returned unchanged."""
    # A hold lasts wait × time_scale real seconds: on a real-time scale wait=60 is a full minute,
    # so the cancel reaches the create while it is held however slow the machine, and a reply
    # before that minute is up is one the cancel woke (a hold left to run out would take it all).
    async with Emulator(fast_config(time_scale=1.0, generation_time=10_000)) as emu, \
            aiohttp.ClientSession() as http:
        async with anyio.create_task_group() as tg:
            held: dict[str, Any] = {}

            async def hold() -> None:
                started = anyio.current_time()
                held["reply"] = await create(http, emu, {"input": {"prompt": "held"}},
                                             headers={**AUTH, "Prefer": "wait=60"})
                held["seconds"] = anyio.current_time() - started

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
        assert held["seconds"] < 60  # woken by the cancel, not by the wait running out
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


async def test_outputs_are_removed_an_hour_after_creation() -> None:
    """After the retention the prediction says data_removed, loses input and output, and the file 404s."""
    clock = Clock()
    async with Emulator(fast_config(queue_time=0, generation_time=1), clock=clock) as emu, \
            aiohttp.ClientSession() as http:
        _, _, created = await create(http, emu, {"input": {"prompt": "brief", "duration": 1}})
        job = emulated(emu, "brief")
        scale = emu.config.time_scale
        clock.at = job.created + 3599 * scale  # done long since, a second short of the hour
        done = await poll(http, created["urls"]["get"])
        assert (done["status"], done["data_removed"]) == ("succeeded", False)
        assert done["input"] == {"prompt": "brief", "duration": 1}
        async with http.get(done["output"]) as r:
            assert r.status == 200
        clock.at = job.created + 3600 * scale  # the hour is up
        gone = await poll(http, created["urls"]["get"])
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
    # Every request lands at a time the test sets (real seconds; emulated = real / 0.01), never
    # on a boundary: each wait and its rounding are exact whatever the machine's speed.
    clock = Clock(1000.0)
    async with Emulator(strict, clock=clock) as emu, aiohttp.ClientSession() as http:
        status, _, first = await create(http, emu, {"input": {"prompt": "a"}})
        assert status == 201
        clock.at = 1000.001  # 0.1 emulated seconds on: 29.9 of the create window's 30 to go
        status, headers, throttled = await create(http, emu, {"input": {"prompt": "b"}})
        assert status == 429
        assert throttled["detail"] == "Request was throttled. Your rate limit resets in ~30s."
        assert headers["Retry-After"] == "0.299"  # the 29.9 emulated seconds, scaled

        async def get() -> tuple[int, str | None, Any]:
            async with http.get(first["urls"]["get"], headers=AUTH) as r:
                return r.status, r.headers.get("Retry-After"), await r.json()

        # The create window is full, yet other calls have their own: two pass, the third 429s.
        assert (await get())[0] == 200
        clock.at = 1000.002
        assert (await get())[0] == 200
        clock.at = 1000.003  # 44.8 emulated seconds until the first GET leaves its window
        status, retry_after, body = await get()
        assert (status, retry_after) == (429, "0.448")
        assert body["detail"] == "Request was throttled. Your rate limit resets in ~45s."
        # 30.5 emulated seconds after the first create: its window has room again, the other
        # still has 14.6 seconds to go — neither window is the other.
        clock.at = 1000.305
        assert (await create(http, emu, {"input": {"prompt": "c"}}))[0] == 201
        status, retry_after, body = await get()
        assert (status, retry_after) == (429, "0.146")
        assert body["detail"] == "Request was throttled. Your rate limit resets in ~15s."
        stats = emu.stats["replicate"]
        assert stats.rate_limited == 3 and stats.errors[429] == 3 and stats.accepted == 2


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


async def test_a_held_create_that_finishes_needs_no_poll(tmp_path: Path) -> None:
    """options.wait long enough returns the output in the 201: no poll; a short one polls on."""
    clock = Clock()
    clock.follow()
    async with Emulator(fast_config(), clock=clock) as emu:
        stats = emu.provider_stats("replicate")
        # On real time: wait=60 may hold 0.6 s, the job takes 7 emulated seconds (0.07 s), and
        # a hold cut to the job's end on the same clock never ends before it: the 201 is final
        # at any speed.
        held = replicate("held", options={"wait": 60})
        results = await run_all(emu, [held], tmp_path)
        assert results[held.id].ok and stats.polls == 0
        assert results[held.id].sha256 == stats.served[results[held.id].request_id or ""]
        # Frozen: wait=1 holds 0.01 s real while the prediction stays where it began, so the
        # 201 is not final and the engine must poll; only once it has does the job finish.
        clock.freeze()
        short = replicate("short", options={"wait": 1})

        async def finish_after_a_poll() -> None:
            while stats.polls == 0:
                await anyio.sleep(0.005)
            clock.at = emulated(emu, "short").done_at

        async with anyio.create_task_group() as tg:
            tg.start_soon(finish_after_a_poll)
            results = await run_all(emu, [short], tmp_path)
            tg.cancel_scope.cancel()
    assert results[short.id].ok and stats.polls > 0
    assert results[short.id].sha256 == stats.served[results[short.id].request_id or ""]


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
    # Frozen until the first 429, so the 12 submits meet one full window whatever the machine's
    # speed; then moved on a quarter second (25 emulated: past the window's 20) whenever a
    # request was refused or a job is unfinished. Every request lands on one of those instants
    # and every window holds only its own instant's requests, so every 429's Retry-After is
    # the window's whole period, "0.200", exactly.
    clock = Clock()
    async with Emulator(strict, clock=clock) as emu:
        stats = emu.provider_stats("replicate")
        settings = client_settings(emu)
        limit = settings.providers["replicate"].rate_limit
        assert limit is not None
        # Ten times the real limit; a retry without Retry-After would wait 15–30 s.
        loose = limit.model_copy(update={"requests": 40, "burst": 40})

        async def drive() -> None:
            while stats.rate_limited == 0:
                await anyio.sleep(0.005)
            refused = 0
            while True:
                await anyio.sleep(0.005)
                if stats.rate_limited > refused or any(
                        emu.phase(job) != "DONE" for job in emu.jobs.values()):
                    refused = stats.rate_limited
                    clock.advance(0.25)

        with capture_logs() as logs:
            async with anyio.create_task_group() as tg:
                tg.start_soon(drive)
                results = await run_all(emu, [replicate(f"r{i}", duration=1) for i in range(12)],
                                        tmp_path, rate_limit=loose,
                                        retry=RetryPolicy(attempts=20, initial=30.0, max=30.0))
                tg.cancel_scope.cancel()
    assert all(r.ok for r in results.values()), [r.error for r in results.values() if not r.ok]
    assert stats.accepted == 12 and stats.duplicate_submissions == 0
    assert stats.rate_limited >= 8  # the first 12 submits: 4 in, 8 refused
    pauses = [e["seconds"] for e in logs if e["event"] == "provider.paused"]
    assert pauses and set(pauses) == {0.2}
    # Every resubmission waited the Retry-After, never the 15–30 s backoff.
    waits = [e["wait"] for e in logs if e["event"] == "submit.retry_scheduled"]
    assert len(waits) == stats.rate_limited and set(waits) == {0.2}


async def test_a_job_past_its_deadline_is_cancelled_remotely(tmp_path: Path) -> None:
    """A prediction still running at the job's deadline is cancelled on Replicate's side."""
    # A frozen clock: the prediction is processing for good, however long the deadline takes.
    async with Emulator(fast_config(queue_time=0), clock=Clock()) as emu:
        settings = client_settings(emu, poll_timeout=30)
        async with Engine(settings, out_dir=tmp_path, env=ENV) as engine:
            result = await raised(engine.generate(replicate("endless")), DeadlineExceededError)
        job = emulated(emu, "endless")
        stats = emu.stats["replicate"]
    assert (result.error_type, result.request_id) == ("DeadlineExceededError", job.request_id)
    assert job.cancelled_at is not None and stats.cancelled == 1
    assert not list(tmp_path.glob("*.mp3"))


async def test_leaving_run_early_keeps_the_running_predictions_for_a_rerun(tmp_path: Path) -> None:
    """Breaking out of run() after the first result ends the other jobs here, not remotely:
    their ids are in the journal, and a rerun finishes them without creating any again."""
    # 1 s of audio takes 20 emulated seconds, 100 s takes 2000: one quick job, four slow.
    config = fast_config(generation_time=0.1, generation_time_per_second=20.0)
    # Frozen until all five are submitted, then moved to the quick one's end: the slow ones are
    # still running when it is done, whatever the machine's speed.
    clock = Clock()
    async with Emulator(config, clock=clock) as emu:
        quick = replicate("quick", duration=1)
        slow = [replicate(f"slow {i}", duration=100) for i in range(4)]

        async def finish_the_quick_one() -> None:
            while len(emu.jobs) < 5:
                await anyio.sleep(0.005)
            clock.at = emulated(emu, "quick").done_at

        # Leave the loop after its first result: aclosing closes the generator at once.
        async with anyio.create_task_group() as tg:
            tg.start_soon(finish_the_quick_one)
            async with Engine(client_settings(emu), out_dir=tmp_path, env=ENV) as engine, \
                    aclosing(engine.run([quick, *slow])) as results:
                first = await anext(results)
            tg.cancel_scope.cancel()
        progress = engine.progress()["replicate"]
        stats = emu.stats["replicate"]
        assert first.id == quick.id and first.ok
        assert all(emu.phase(emulated(emu, j.prompt)) == "PROCESSING" for j in slow)
        assert stats.cancelled == 0 and stats.submits == 5
        assert (progress.queued, progress.running, progress.pending) == (0, 0, 4)
        polls = stats.polls
        await anyio.sleep(0.1)
        assert stats.polls == polls  # nothing left polling
        clock.at = max(emulated(emu, j.prompt).done_at for j in slow)
        results = await run_all(emu, [quick, *slow], tmp_path)
    assert sorted(r.status for r in results.values()) == ["completed"] * 4 + ["skipped"]
    assert stats.submits == 5


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


# -- a lost submit, looked up ----------------------------------------------------------------


@pytest.mark.parametrize("created", [True, False], ids=["created", "not-created"])
async def test_resume_after_a_crash_mid_submit_looks_the_prediction_up(
        tmp_path: Path, created: bool) -> None:
    """The last run died with a create on the wire: its intent is journalled, no id. The rerun
    lists the key's predictions, and follows the one made from this job's input (no second
    create, no flag) or, when there is none, creates it (unflagged: the listing says the
    first never arrived)."""
    job = Job(provider="replicate", prompt="lost on the wire", duration=2, seed=7)
    async with Emulator(fast_config()) as emu:
        settings = emu.client_settings()
        # A prediction from the same input, made long before: not ours, never taken.
        stale = ReplicateAdapter(settings.providers["replicate"], TEST_KEY).submit_request(job)
        async with aiohttp.ClientSession() as http:
            async with http.post(stale.url, headers=AUTH, json=stale.json) as r:
                old = (await r.json())["id"]
            emu.jobs[old].created -= 3600 * emu.config.time_scale * 10
            async with Journal(tmp_path) as journal:
                await journal.intent(job)
            if created:
                async with http.post(stale.url, headers=AUTH, json=stale.json) as r:
                    assert r.status == 201
                    ours = (await r.json())["id"]
        async with Engine(settings, out_dir=tmp_path, env=ENV) as engine:
            with capture_logs() as logs:
                result = await engine.generate(job)
        stats = emu.stats["replicate"]
    assert result.ok and not result.possibly_duplicated, result.error
    made_here = 2 if created else 1  # the test's own creates: the old one, and maybe ours
    assert stats.submits - made_here == (0 if created else 1)
    if created:
        assert result.request_id == ours
    assert result.request_id != old
    assert [e["found"] for e in logs if e["event"] == "submit.lookup"] == [created]
