"""The emulator's hooks for benchmarks, over loopback: job timelines, its own process cost,
generation-time jitter, a bounded set of audio renders, and the poll settings it hands out."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from stableaudio_async import Engine, Job
from stableaudio_async.audiocheck import check_audio
from stableaudio_async.config import RateLimit, load_settings
from stableaudio_async.emulator import Emulator

from conftest import TEST_KEY, HandClock, fast_config

pytestmark = pytest.mark.anyio

PIXAZO_SUBMIT = ("/stable-audio-3-small-music-text-to-audio/v1/"
                 "stable-audio-3-small-music-text-to-audio-request")
PIXAZO_HEADERS = {"Ocp-Apim-Subscription-Key": TEST_KEY}
AIML_ROUTE = "/v2/generate/audio"
AIML_HEADERS = {"Authorization": f"Bearer {TEST_KEY}"}
TIMING_KEYS = {"provider", "request_id", "accepted_at", "done_after", "polls", "seen_after"}


async def submit_pixazo(http: aiohttp.ClientSession, emu: Emulator, prompt: str) -> dict[str, Any]:
    async with http.post(emu.url + PIXAZO_SUBMIT, headers=PIXAZO_HEADERS,
                         json={"prompt": prompt, "duration": 1, "output_format": "wav"}) as r:
        assert r.status == 202, await r.text()
        return await r.json()


async def get_json(http: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None
                   ) -> Any:
    async with http.get(url, headers=headers) as r:
        assert r.status == 200, await r.text()
        return await r.json()


async def timings(http: aiohttp.ClientSession, emu: Emulator) -> dict[str, dict[str, Any]]:
    """``GET /_emulator/jobs``, by request id."""
    listed = await get_json(http, emu.url + "/_emulator/jobs")
    assert isinstance(listed, list)
    return {entry["request_id"]: entry for entry in listed}


async def submit_aiml(http: aiohttp.ClientSession, emu: Emulator, prompt: str) -> str:
    async with http.post(emu.url + AIML_ROUTE, headers=AIML_HEADERS, json={
            "model": "stable-audio", "prompt": prompt, "seconds_total": 2}) as r:
        assert r.status == 200, await r.text()
        return str((await r.json())["id"])


def aiml_status_url(emu: Emulator, generation_id: str) -> str:
    return f"{emu.url}{AIML_ROUTE}?generation_id={quote(generation_id, safe='')}"


# ---- GET /_emulator/jobs and per-job poll counts -------------------------------------------


async def test_jobs_route_gives_each_jobs_timeline(still: Emulator, clock: HandClock) -> None:
    """/_emulator/jobs lists every accepted job; seen_after is None until a poll finds it done."""
    emulator = still
    scale = emulator.config.time_scale
    want_done_after = (emulator.config.queue_time + emulator.config.generation_time) * scale
    async with aiohttp.ClientSession() as http:
        first = await submit_pixazo(http, emulator, "first")
        second = await submit_pixazo(http, emulator, "second")
        listed = await timings(http, emulator)
        assert set(listed) == {first["request_id"], second["request_id"]}
        entry = listed[first["request_id"]]
        assert set(entry) == TIMING_KEYS
        assert entry["provider"] == "pixazo"
        assert entry["accepted_at"] == emulator.jobs[first["request_id"]].created
        assert entry["accepted_at"] <= listed[second["request_id"]]["accepted_at"] <= emulator.now()
        assert entry["done_after"] == pytest.approx(want_done_after)
        assert (entry["polls"], entry["seen_after"]) == (0, None)

        # A poll before it is done is counted but sees nothing done.
        body = await get_json(http, first["polling_url"], PIXAZO_HEADERS)
        assert body["status"] == "QUEUED"
        entry = (await timings(http, emulator))[first["request_id"]]
        assert (entry["polls"], entry["seen_after"]) == (1, None)

        clock.move_to(entry["accepted_at"] + want_done_after + 0.02)
        body = await get_json(http, first["polling_url"], PIXAZO_HEADERS)
        assert body["status"] == "COMPLETED"
        entry = (await timings(http, emulator))[first["request_id"]]
        assert entry["polls"] == 2
        seen = entry["seen_after"]
        assert isinstance(seen, float) and entry["done_after"] <= seen
        assert seen == pytest.approx(want_done_after + 0.02)  # when that poll came

        # Later polls count, but the first sighting stays.
        clock.move_to(clock.time + 0.5)
        await get_json(http, first["polling_url"], PIXAZO_HEADERS)
        listed = await timings(http, emulator)
        assert (listed[first["request_id"]]["polls"], listed[first["request_id"]]["seen_after"]) \
            == (3, seen)
        # The other job was never polled.
        assert (listed[second["request_id"]]["polls"],
                listed[second["request_id"]]["seen_after"]) == (0, None)


async def test_pixazo_polls_count_per_job_not_refused_ones(emulator: Emulator) -> None:
    """Each Pixazo status request for a job adds one to its polls; a refused one (401) does not."""
    async with aiohttp.ClientSession() as http:
        job = await submit_pixazo(http, emulator, "counted")
        for _ in range(3):
            await get_json(http, job["polling_url"], PIXAZO_HEADERS)
        async with http.get(job["polling_url"],
                            headers={"Ocp-Apim-Subscription-Key": "wrong"}) as r:
            assert r.status == 401
    emulated = emulator.jobs[job["request_id"]]
    assert emulated.polls == 3
    assert emulator.stats["pixazo"].polls == 4  # the provider's counter includes the refusal


async def test_aimlapi_polls_count_per_job(still: Emulator, clock: HandClock) -> None:
    """AI/ML API's status route counts per job and stamps the first sighting of done."""
    emulator = still
    async with aiohttp.ClientSession() as http:
        ids = [await submit_aiml(http, emulator, f"aiml {i}") for i in range(2)]
        for _ in range(2):
            body = await get_json(http, aiml_status_url(emulator, ids[0]), AIML_HEADERS)
            assert body["status"] == "queued"
        job = emulator.jobs[ids[0]]
        assert (job.polls, job.seen_done_at) == (2, None)
        clock.move_to(job.done_at + 0.01)
        body = await get_json(http, aiml_status_url(emulator, ids[0]), AIML_HEADERS)
        assert body["status"] == "completed"
    assert job.polls == 3
    assert job.seen_done_at is not None and job.seen_done_at >= job.done_at
    assert job.seen_done_at == clock.time  # stamped by the poll that found it done
    assert (emulator.jobs[ids[1]].polls, emulator.jobs[ids[1]].seen_done_at) == (0, None)


@pytest.mark.parametrize(("provider", "env_var", "fields"), [
    ("replicate", "REPLICATE_API_TOKEN", {"duration": 1}),
    ("fal", "FAL_KEY", {"duration": 1, "output_format": "wav"}),
    ("wavespeed", "WAVESPEED_API_KEY", {"duration": 1}),
])
async def test_engine_polls_are_observed_on_other_providers(
        provider: str, env_var: str, fields: dict[str, Any], tmp_path: Path) -> None:
    """Replicate's, fal's and WaveSpeed's status routes count the engine's polls per job too."""
    async with Emulator(fast_config()) as emu:
        settings = emu.client_settings()
        if provider == "replicate":  # its poll window is per real minute unless scaled
            other = emu.config.poll_limits["replicate"]
            settings = settings.model_copy(update={"providers": {
                **settings.providers, "replicate": settings.providers["replicate"].model_copy(
                    update={"poll_rate_limit": RateLimit(
                        requests=other.requests, period=other.period * emu.config.time_scale,
                        counts="all")})}})
        job = Job.model_validate({"provider": provider, "prompt": f"{provider} tune", **fields})
        async with Engine(settings, out_dir=tmp_path, env={env_var: TEST_KEY}) as engine:
            result = await engine.generate(job)
        assert result.ok, result.error
        emulated = emu.jobs[result.request_id or ""]
        stats = emu.stats[provider]
    assert emulated.polls >= 1
    assert emulated.seen_done_at is not None and emulated.seen_done_at >= emulated.done_at
    # fal fetches the result at its own URL once done; that counts as a poll but not a status.
    assert stats.polls == emulated.polls + (1 if provider == "fal" else 0)


async def test_process_route_reports_its_own_cost(emulator: Emulator) -> None:
    """/_emulator/process gives the emulator process's CPU seconds and peak RSS."""
    async with aiohttp.ClientSession() as http:
        before = await get_json(http, emulator.url + "/_emulator/process")
        sum(i * i for i in range(200_000))  # some CPU for the counter to move by
        after = await get_json(http, emulator.url + "/_emulator/process")
    for usage in (before, after):
        assert set(usage) == {"cpu_seconds", "max_rss_kb"}
        assert isinstance(usage["cpu_seconds"], float) and usage["cpu_seconds"] >= 0
        assert isinstance(usage["max_rss_kb"], int) and usage["max_rss_kb"] > 0
    assert after["cpu_seconds"] >= before["cpu_seconds"]
    assert after["max_rss_kb"] >= before["max_rss_kb"]


# ---- generation_jitter -----------------------------------------------------------------------


async def done_afters(n: int, **config: Any) -> list[float]:
    """``done_after`` of ``n`` Pixazo jobs submitted one after another to a fresh emulator."""
    async with Emulator(fast_config(**config)) as emu, aiohttp.ClientSession() as http:
        ids = [(await submit_pixazo(http, emu, f"jitter {i}"))["request_id"] for i in range(n)]
        listed = await timings(http, emu)
    return [listed[request_id]["done_after"] for request_id in ids]


async def test_generation_jitter_spreads_done_times_within_bounds() -> None:
    """With jitter 0.5 each job's generation time is drawn within ±50 %; queue time is not."""
    cfg = fast_config()
    scale, queue, generation = cfg.time_scale, cfg.queue_time, cfg.generation_time
    values = await done_afters(10, generation_jitter=0.5)
    assert len({round(v, 9) for v in values}) == len(values), values
    low, high = (queue + 0.5 * generation) * scale, (queue + 1.5 * generation) * scale
    assert all(low - 1e-9 <= v <= high + 1e-9 for v in values), (low, values, high)
    # The coarser bound: (queue + generation) × scale × [0.5, 1.5].
    total = (queue + generation) * scale
    assert all(0.5 * total <= v <= 1.5 * total for v in values)
    # Not all on one side: a uniform draw around the nominal time.
    nominal = (queue + generation) * scale
    assert min(values) < nominal < max(values)


async def test_no_jitter_means_equal_done_times() -> None:
    """With generation_jitter 0 (the default) every job takes exactly queue + generation."""
    cfg = fast_config()
    values = await done_afters(6)
    want = (cfg.queue_time + cfg.generation_time) * cfg.time_scale
    assert values == [pytest.approx(want, abs=1e-9)] * 6


async def test_jitter_is_seeded_by_fault_seed() -> None:
    """The same fault_seed draws the same generation times; another seed draws others."""
    first = await done_afters(6, generation_jitter=0.4, fault_seed=7)
    again = await done_afters(6, generation_jitter=0.4, fault_seed=7)
    other = await done_afters(6, generation_jitter=0.4, fault_seed=8)
    assert again == pytest.approx(first, abs=1e-9)
    assert other != pytest.approx(first, abs=1e-9)


# ---- audio_variants --------------------------------------------------------------------------


async def test_audio_variants_bound_the_distinct_files(tmp_path: Path) -> None:
    """With audio_variants=2, many jobs download valid audio in at most two distinct renders,
    each exactly what the emulator recorded as served."""
    jobs = [Job(provider="pixazo", prompt=f"variant prompt {i}", seed=i, duration=1)
            for i in range(10)]
    async with Emulator(fast_config(audio_variants=2)) as emu:
        async with Engine(emu.client_settings(), out_dir=tmp_path,
                          env={"PIXAZO_API_KEY": TEST_KEY}) as engine:
            results = [r async for r in engine.run(jobs)]
        served = dict(emu.stats["pixazo"].served)
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    digests = set()
    for r in results:
        path = Path(r.path or "")
        assert check_audio(path, expected_format="mp3", expected_duration=1.0) is None
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert served[r.request_id or ""] == digest == r.sha256
        digests.add(digest)
    # Ten prompts over two variants: both are used (deterministic in prompt and seed).
    assert len(digests) == 2
    assert len(served) == 10


async def test_without_audio_variants_every_job_sounds_different(tmp_path: Path) -> None:
    """The default (audio_variants=None) renders each prompt and seed on its own."""
    jobs = [Job(provider="pixazo", prompt=f"variant prompt {i}", seed=i, duration=1)
            for i in range(4)]
    async with Emulator(fast_config()) as emu, Engine(
            emu.client_settings(), out_dir=tmp_path, env={"PIXAZO_API_KEY": TEST_KEY}) as engine:
        results = [r async for r in engine.run(jobs)]
    assert all(r.ok for r in results)
    assert len({r.sha256 for r in results}) == 4


async def test_aimlapi_file_size_matches_the_variant_downloaded() -> None:
    """AI/ML API's file_size (computed through emu.audio) equals the bytes the CDN then serves."""
    clock = HandClock()
    async with Emulator(fast_config(audio_variants=2), clock=clock) as emu, \
            aiohttp.ClientSession() as http:
        ids = [await submit_aiml(http, emu, f"sized {i}") for i in range(3)]
        clock.move_to(max(emu.jobs[i].done_at for i in ids) + 0.01)
        for generation_id in ids:
            body = await get_json(http, aiml_status_url(emu, generation_id), AIML_HEADERS)
            assert body["status"] == "completed"
            audio_file = body["audio_file"]
            # Described, not served: only the download records a checksum.
            assert generation_id not in emu.stats["aimlapi"].served
            async with http.get(audio_file["url"]) as r:
                assert r.status == 200
                data = await r.read()
            assert data[:4] == b"RIFF"
            assert audio_file["file_size"] == len(data)
            assert emu.stats["aimlapi"].served[generation_id] == hashlib.sha256(data).hexdigest()


# ---- client_settings -------------------------------------------------------------------------


async def test_client_settings_scale_expected_and_near_interval(emulator: Emulator) -> None:
    """client_settings scales poll.expected and poll.near_interval by time_scale and keeps learn."""
    scale = emulator.config.time_scale
    base = load_settings(env={}, overrides={"providers": {
        "pixazo": {"poll": {"expected": 40.0, "near_interval": 2.0, "learn": False}}}})
    settings = emulator.client_settings(base)
    pixazo = settings.providers["pixazo"].poll
    assert pixazo.expected == pytest.approx(40.0 * scale)
    assert pixazo.near_interval == pytest.approx(2.0 * scale)
    assert pixazo.learn is False
    assert pixazo.initial == pytest.approx(base.providers["pixazo"].poll.initial * scale)
    # The defaults: AI/ML API documents an expected time; fal none, which stays None.
    defaults = emulator.client_settings()
    aiml = defaults.providers["aimlapi"].poll
    assert aiml.expected == pytest.approx(load_settings(env={}).providers["aimlapi"].poll.expected
                                          * scale)
    assert aiml.near_interval == pytest.approx(1.0 * scale) and aiml.learn is True
    assert defaults.providers["fal"].poll.expected is None
