"""Where status polls go: the learned completion-time schedule (pure) and the engine using it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import anyio
import anyio.lowlevel
import pytest

from stableaudio_async import Engine, Job
from stableaudio_async.config import PollPolicy, Settings
from stableaudio_async.emulator import EmulatedJob, EmulatedLimit, Emulator
from stableaudio_async.fetch import prior as _prior
from stableaudio_async.http import send
from stableaudio_async.models import Succeeded
from stableaudio_async.polling import CompletionTimes, poll_until_done
from stableaudio_async.providers import adapter_class

from conftest import TEST_KEY, fast_config

ENV = {"PIXAZO_API_KEY": TEST_KEY}


def record_midpoints(times: CompletionTimes, midpoints: list[float]) -> None:
    """Record one finished job per midpoint, found unfinished 1 s before and done 1 s after it."""
    for m in midpoints:
        times.record(m - 1.0, m + 1.0)


# ---- CompletionTimes: pure ------------------------------------------------------------------


def test_nothing_known_means_plain_backoff() -> None:
    """Without a prior or samples there are no targets and next_poll defers to backoff (None)."""
    times = CompletionTimes()
    assert times.targets() == []
    assert times.next_poll(0.0, polled=False) is None
    assert times.next_poll(3.0, polled=True) is None


def test_prior_alone_is_the_only_target() -> None:
    """A prior is the single target: the first poll waits for it, and past it backoff takes over."""
    times = CompletionTimes(42.0, min_gap=1.0)
    assert times.targets() == [42.0]
    assert times.next_poll(0.0, polled=False) == 42.0
    # Already polled at 5 s: the prior is further away than min_gap, so it stands.
    assert times.next_poll(5.0, polled=True) == 42.0
    assert times.next_poll(42.0, polled=True) is None
    assert times.next_poll(50.0, polled=True) is None


def test_prior_rules_until_min_samples_then_deciles_of_midpoints() -> None:
    """Below min_samples the prior stays; from then on targets are the sorted, unique deciles."""
    times = CompletionTimes(50.0, min_gap=0.5, min_samples=5)
    record_midpoints(times, [14.0, 10.0, 13.0, 11.0])
    assert times.targets() == [50.0]
    record_midpoints(times, [12.0])
    # Deciles of 10..14 (index round(q * 4)): 10, 11, 11, 12, 12, 12, 13, 13, 14, 14.
    assert times.targets() == [10.0, 11.0, 12.0, 13.0, 14.0]
    record_midpoints(times, [19.0, 15.0, 17.0, 16.0, 18.0])
    # Deciles of 10..19 (index round(q * 9), 4.5 rounding to 4): 11, 12, …, 19 — 10 drops out.
    assert times.targets() == [11.0, 12.0, 13.0, 14.0, 15.0, 16.0, 17.0, 18.0, 19.0]
    assert times.next_poll(0.0, polled=False) == 11.0


def test_midpoint_is_between_last_unfinished_and_first_done() -> None:
    """Each record contributes (not_done_at + done_at) / 2, not either end."""
    times = CompletionTimes(min_samples=5)
    for _ in range(5):
        times.record(8.0, 12.0)
    assert times.targets() == [10.0]
    times = CompletionTimes(min_samples=5)
    for _ in range(5):
        times.record(0.0, 6.0)  # first poll found it done: anywhere in (0, 6]
    assert times.targets() == [3.0]


def test_next_poll_keeps_min_gap_after_a_poll() -> None:
    """Once polled, the next poll is the next target or elapsed + min_gap, whichever is later."""
    times = CompletionTimes(min_gap=2.5, min_samples=5)
    record_midpoints(times, [float(m) for m in range(10, 20)])  # targets 11..19
    # Far from the next target: it rules.
    assert times.next_poll(5.0, polled=True) == 11.0
    # Not yet polled: no gap to keep, the next target itself.
    assert times.next_poll(12.0, polled=False) == 13.0
    # Polled at 12: target 13 is too close, so 12 + 2.5.
    assert times.next_poll(12.0, polled=True) == 14.5
    # Polled between targets: the strictly later target when far enough.
    wide = CompletionTimes(min_gap=0.5, min_samples=5)
    record_midpoints(wide, [float(m) for m in range(10, 20)])
    assert wide.next_poll(12.0, polled=True) == 13.0
    assert wide.next_poll(12.75, polled=True) == 13.25
    # Past the last target: back to backoff.
    assert times.next_poll(19.0, polled=True) is None
    assert times.next_poll(18.0, polled=True) == 20.5  # a target remains; the gap decides
    for step in range(0, 80):
        elapsed = step * 0.25
        after = times.next_poll(elapsed, polled=True)
        if elapsed >= 19.0:
            assert after is None
        else:
            assert after is not None and after >= elapsed + 2.5


def test_learn_false_ignores_records() -> None:
    """With learn=False records change nothing: the prior (or nothing) stays."""
    times = CompletionTimes(30.0, learn=False, min_samples=1)
    record_midpoints(times, [5.0, 6.0, 7.0, 8.0, 9.0, 10.0])
    assert times.targets() == [30.0]
    assert times.next_poll(0.0, polled=False) == 30.0
    bare = CompletionTimes(learn=False, min_samples=1)
    record_midpoints(bare, [5.0, 6.0, 7.0])
    assert bare.targets() == [] and bare.next_poll(0.0, polled=False) is None


def test_window_keeps_only_the_latest_samples() -> None:
    """Only the latest `window` observations count: older ones leave the targets."""
    times = CompletionTimes(window=5, min_samples=5)
    record_midpoints(times, [1.0, 2.0, 3.0, 4.0, 5.0])
    assert times.targets() == [1.0, 2.0, 3.0, 4.0, 5.0]
    record_midpoints(times, [100.0, 101.0])
    # 3, 4, 5, 100, 101: the two oldest are gone.
    assert times.targets() == [3.0, 4.0, 5.0, 100.0, 101.0]
    record_midpoints(times, [102.0, 103.0, 104.0])
    assert times.targets() == [100.0, 101.0, 102.0, 103.0, 104.0]
    assert times.next_poll(0.0, polled=False) == 100.0


# ---- poll_until_done with times=, over HTTP against the emulator, on one fake clock ----------

#: Real seconds per emulated second.
SCALE = 0.01
#: Emulated seconds from acceptance to done (no queue, no jitter): 0.5 clock seconds.
GENERATION = 50.0


class FakeClock:
    """One clock for the emulator and the poll loop: it moves only when the loop sleeps, so
    every poll lands exactly where the schedule puts it, however slow the machine is."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.0)
        await anyio.lowlevel.checkpoint()


def schedule_emulator(clock: FakeClock | None = None, **overrides: Any) -> Emulator:
    """A Pixazo emulator whose jobs take exactly GENERATION emulated seconds, with a limit so
    high it never binds."""
    values: dict[str, Any] = {
        "queue_time": 0.0,
        "generation_time": GENERATION,
        "generation_jitter": 0.0,
        "limits": {"pixazo": EmulatedLimit(requests=100_000, period=10.0, counts="all")},
    }
    values.update(overrides)
    if clock is None:
        return Emulator(fast_config(**values))
    return Emulator(fast_config(**values), clock=clock)


def with_poll(emu: Emulator, **poll: Any) -> Settings:
    """The emulator's client settings with Pixazo's poll policy exactly ``poll`` (real seconds)."""
    settings = emu.client_settings(min_margin=0.0)
    pixazo = settings.providers["pixazo"]
    policy = PollPolicy(timeout=30.0, jitter=0.0, **poll)
    return settings.model_copy(update={"providers": {
        **settings.providers, "pixazo": pixazo.model_copy(update={"poll": policy})}})


def pixazo_jobs(tag: str, n: int) -> list[Job]:
    return [Job(provider="pixazo", prompt=f"{tag} {i}", seed=i, duration=1) for i in range(n)]


def detection_delay(job: EmulatedJob) -> float:
    assert job.seen_done_at is not None
    return job.seen_done_at - job.done_at


async def follow(emu: Emulator, settings: Settings, clock: FakeClock, job: Job,
                 times: CompletionTimes) -> EmulatedJob:
    """Submit ``job`` to the emulator and poll it to the end on ``clock``, as the engine does."""
    provider = settings.providers["pixazo"]
    adapter = adapter_class("pixazo")(provider, TEST_KEY)
    async with aiohttp.ClientSession() as session:
        handle = adapter.parse_submit(await send(session, adapter.submit_request(job),
                                                 provider="pixazo", total_timeout=10))
        statuses = [status async for status in poll_until_done(
            session, adapter, handle, policy=provider.poll, deadline=clock() + 30,
            limiter=None, request_timeout=10, rand=lambda: 0.0, times=times, clock=clock,
            sleep=clock.sleep)]
    assert isinstance(statuses[-1], Succeeded)
    return emu.jobs[handle.request_id or ""]


@pytest.mark.anyio
async def test_learned_schedule_polls_less_and_detects_sooner() -> None:
    """After one cold job the schedule polls where it finished: one poll each, found at once."""
    clock = FakeClock()
    near = 0.04
    async with schedule_emulator(clock) as emu:
        settings = with_poll(emu, initial=0.02, max=1.0, factor=1.5, near_interval=near)
        times = CompletionTimes(None, min_gap=near)
        cold, *learned = [await follow(emu, settings, clock, job, times)
                          for job in pixazo_jobs("run", 6)]
    # Cold: 0.02, 0.05, 0.095, 0.1625, 0.26375, 0.415625, 0.6434375 s → 7 polls for a 0.5 s job,
    # learned as the midpoint of the last two.
    assert cold.polls == 7
    assert detection_delay(cold) == pytest.approx(0.6434375 - 0.5)
    midpoint = (0.415625 + 0.6434375) / 2
    assert times.targets() == [pytest.approx(midpoint)]
    # Each later job is polled once, at the learned time, which is past its finish: found done
    # by the first poll, which also keeps the learned time from drifting below the real one.
    for job in learned:
        assert job.polls == 1
        assert detection_delay(job) == pytest.approx(midpoint - 0.5)
    assert times.targets() == [pytest.approx(midpoint)]


@pytest.mark.anyio
async def test_learned_times_follow_a_provider_that_slows_down() -> None:
    """Jobs that take longer than learned are found by backing off from near_interval, and the
    new, longer times replace the old ones as they come in."""
    clock = FakeClock()
    near = 0.04
    async with schedule_emulator(clock) as emu:
        settings = with_poll(emu, initial=0.02, max=1.0, factor=1.5, near_interval=near)
        times = CompletionTimes(None, min_gap=near, window=2)
        await follow(emu, settings, clock, pixazo_jobs("fast", 1)[0], times)
        fast_target = times.targets()[-1]
        emu.config = emu.config.model_copy(update={"generation_time": 2 * GENERATION})
        slow = [await follow(emu, settings, clock, job, times) for job in pixazo_jobs("slow", 3)]
    # The first slow job: the learned target, then near_interval × 1.5ⁿ until found past 1.0 s.
    assert slow[0].polls > 1
    assert 0 <= detection_delay(slow[0]) <= 1.0
    # Two slow jobs later the window holds only slow times, around the new 1.0 s: the last
    # job is found within near_interval of its finish, in at most two polls.
    polls = [j.polls for j in slow]
    assert polls == sorted(polls, reverse=True) and polls[0] > polls[-1], polls
    assert all(abs(t - 1.0) <= near for t in times.targets()) and fast_target < 0.7
    assert slow[-1].polls <= 2 and 0 <= detection_delay(slow[-1]) <= near


@pytest.mark.anyio
async def test_expected_alone_places_the_first_poll() -> None:
    """With expected set and learn=False, the first poll waits exactly `expected`: one poll, done."""
    clock = FakeClock()
    generation = GENERATION * SCALE  # 0.5 s
    expected = generation + 0.08
    async with schedule_emulator(clock) as emu:
        # Without `expected` this would be 7 polls (see the test above).
        settings = with_poll(emu, initial=0.02, max=1.0, factor=1.5, near_interval=0.04,
                             expected=expected, learn=False)
        times = CompletionTimes(expected, min_gap=0.04, learn=False)
        jobs = [await follow(emu, settings, clock, job, times) for job in pixazo_jobs("b", 6)]
    # Nothing learned: the prior is still the only target, for the last job too.
    assert times.targets() == [pytest.approx(expected)]
    for job in jobs:
        assert job.polls == 1, job.polls
        assert job.seen_done_at is not None
        assert job.seen_done_at - job.created == pytest.approx(expected)


@pytest.mark.anyio
async def test_the_engine_learns_each_providers_completion_times(tmp_path: Path) -> None:
    """Through the engine, finished jobs teach the provider's schedule (or not, with learn off)."""
    async with schedule_emulator(generation_time=5.0) as emu:
        for learn in (True, False):
            settings = with_poll(emu, initial=0.02, max=0.2, factor=1.5, near_interval=0.02,
                                 learn=learn)
            async with Engine(settings, out_dir=tmp_path / str(learn), env=ENV) as engine:
                results = [r async for r in engine.run(pixazo_jobs(f"learn {learn}", 4))]
                times = engine._providers["pixazo"].completion_times
            assert all(r.ok for r in results), [r.error for r in results]
            assert bool(times.targets()) is learn


def test_a_jobs_own_prior_stands_in_until_something_is_learned() -> None:
    """targets(prior) uses the job's prior over the provider's until a job has finished."""
    times = CompletionTimes(50.0, min_gap=1.0)
    assert times.targets() == [50.0]
    assert times.targets(8.0) == [8.0] and times.next_poll(0.0, False, 8.0) == 8.0
    times.record(9.0, 11.0)
    assert times.targets(8.0) == times.targets() == [10.0]
    bare = CompletionTimes()
    assert bare.targets(4.0) == [4.0] and bare.targets() == []


def test_the_prior_scales_with_the_audio_asked_for() -> None:
    """expected_per_second × duration for a job that states it; None (provider's) otherwise."""
    policy = PollPolicy(expected=50.0, expected_per_second=5 / 3)
    assert _prior(policy, Job(provider="aimlapi", prompt="p", duration=6)) == pytest.approx(10.0)
    assert _prior(policy, Job(provider="aimlapi", prompt="p", duration=47)) == pytest.approx(78.33,
                                                                                            abs=0.01)
    assert _prior(policy, Job(provider="aimlapi", prompt="p")) is None
    assert _prior(PollPolicy(expected=50.0), Job(provider="aimlapi", prompt="p", duration=6)) is None
