"""Tests for the per-provider sliding-window limiter, driven on a fake clock."""

from __future__ import annotations

import bisect
import contextvars
import heapq
import itertools
import math
import random
from collections.abc import Sequence

import anyio
import pytest

from stableaudio_async.ratelimit import RateLimiter

# Rounding allowance for grant times read off the fake clock (see max_in_window).
SLACK = 1e-9

# Which acquirer is calling the fake sleep (set inside each acquirer task).
_caller: contextvars.ContextVar[str | None] = contextvars.ContextVar("caller", default=None)


def max_in_window(slots: Sequence[float], window: float, slack: float = 0.0) -> int:
    """The most slots any half-open window ``[s, s + window - slack)`` starting at a slot holds.

    ``slack`` absorbs the rounding of a fake clock that wakes sleepers at ``now + (slot - now)``
    rather than exactly at ``slot``; reservations themselves are checked with no slack.
    """
    ordered = sorted(slots)
    return max(
        (
            bisect.bisect_left(ordered, s + window - slack) - bisect.bisect_left(ordered, s)
            for s in ordered
        ),
        default=0,
    )


def assert_fifo(slots: Sequence[float]) -> None:
    """Slots are handed out in arrival order: never decreasing."""
    for earlier, later in itertools.pairwise(slots):
        assert later >= earlier, f"slot {later} granted after later-arriving {earlier}"


class VirtualTime:
    """A fake clock and a sleep that parks its caller until the test moves the clock.

    Every sleep is recorded with the name of the acquirer that made it, so tests can count
    wake-ups. Timers fire in deadline order, one at a time, and the woken task runs until
    it blocks again before the next fires, so concurrent sleepers see a consistent clock.
    """

    def __init__(self, start: float = 0.0) -> None:
        self.now = start
        self.sleeps: list[tuple[str | None, float]] = []
        self._timers: list[tuple[float, int, anyio.Event]] = []
        self._seq = itertools.count()

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append((_caller.get(), seconds))
        event = anyio.Event()
        heapq.heappush(self._timers, (self.now + seconds, next(self._seq), event))
        await event.wait()

    def sleeps_by(self, name: str) -> list[float]:
        return [seconds for caller, seconds in self.sleeps if caller == name]

    async def advance_to(self, when: float) -> None:
        """Fire every timer due by ``when``, then leave the clock at ``when``."""
        await anyio.wait_all_tasks_blocked()
        while self._timers and self._timers[0][0] <= when:
            deadline, _, event = heapq.heappop(self._timers)
            self.now = max(self.now, deadline)
            event.set()
            await anyio.wait_all_tasks_blocked()
        if when != math.inf:
            self.now = max(self.now, when)

    async def run_all(self) -> None:
        """Fire timers until none is left; the clock stops at the last one."""
        await self.advance_to(math.inf)


def make_limiter(
    requests: int, period: float, vt: VirtualTime, margin: float = 0.0
) -> RateLimiter:
    return RateLimiter(requests, period, margin=margin, clock=vt.clock, sleep=vt.sleep)


async def acquirer(
    limiter: RateLimiter, vt: VirtualTime, name: str, grants: dict[str, float]
) -> None:
    _caller.set(name)
    await limiter.acquire()
    grants[name] = vt.now


# --- pure reservation ---------------------------------------------------------------------

LIMITS = [
    pytest.param(1, 1.0, 0.0, id="1-per-1s"),
    pytest.param(10, 1.0, 0.02, id="10-per-1s-margin"),
    pytest.param(150, 10.0, 0.02, id="stability-150-per-10s"),
    pytest.param(7, 0.3, 0.1, id="7-per-0.3s"),
]


@pytest.mark.parametrize(("requests", "period", "margin"), LIMITS)
def test_burst_never_exceeds_limit_in_any_window(
    requests: int, period: float, margin: float
) -> None:
    """A burst of 1000 at t=0 never puts more than N slots in any window of period*(1+margin)."""
    limiter = RateLimiter(requests, period, margin=margin)
    slots = [limiter.reserve(0.0) for _ in range(1000)]
    window = period * (1 + margin)
    assert limiter.window == pytest.approx(window)
    assert_fifo(slots)
    assert max_in_window(slots, limiter.window) == requests


@pytest.mark.parametrize(("requests", "period", "margin"), LIMITS)
def test_burst_first_n_immediate_then_one_window_later(
    requests: int, period: float, margin: float
) -> None:
    """The first N of a burst go at once (no start-up delay); the (N+1)-th exactly one window on."""
    limiter = RateLimiter(requests, period, margin=margin)
    slots = [limiter.reserve(0.0) for _ in range(requests + 1)]
    assert slots[:requests] == [0.0] * requests
    assert slots[requests] == limiter.window


@pytest.mark.parametrize(("requests", "period", "margin"), LIMITS)
def test_burst_throughput_is_n_per_window(requests: int, period: float, margin: float) -> None:
    """A long burst is served at the full rate: request k goes at floor(k/N) windows."""
    limiter = RateLimiter(requests, period, margin=margin)
    total = 10 * requests
    slots = [limiter.reserve(0.0) for _ in range(total)]
    for k, slot in enumerate(slots):
        assert slot == pytest.approx((k // requests) * limiter.window), k
    # 10 x N requests all go within 10 windows.
    assert slots[-1] < 10 * limiter.window


def test_burst_arriving_later_starts_immediately() -> None:
    """A first burst at t=100 is granted at 100, not held back by anything before it."""
    limiter = RateLimiter(3, 1.0)
    slots = [limiter.reserve(100.0) for _ in range(4)]
    assert slots == [100.0, 100.0, 100.0, 101.0]


@pytest.mark.parametrize("seed", range(200))
def test_random_arrivals_respect_window_and_fifo(seed: int) -> None:
    """Random arrivals (bursts and gaps) get FIFO slots, never early, never over N per window."""
    rng = random.Random(seed)
    requests = rng.randint(1, 20)
    period = rng.uniform(0.05, 10.0)
    margin = rng.choice([0.0, 0.02, 0.1, 0.5])
    limiter = RateLimiter(requests, period, margin=margin)
    window = limiter.window
    mean_gap = window / requests * rng.uniform(0.2, 3.0)
    t = rng.uniform(0.0, 1000.0)
    arrivals = []
    for _ in range(rng.randint(50, 400)):
        if rng.random() < 0.3:
            t += rng.expovariate(1.0 / mean_gap)
        arrivals.append(t)
    slots = [limiter.reserve(a) for a in arrivals]

    assert_fifo(slots)
    assert all(s >= a for s, a in zip(slots, arrivals, strict=True))
    assert max_in_window(slots, window) <= requests
    # The first N never wait, whatever the pattern.
    assert slots[:requests] == arrivals[:requests]
    # Never delayed more than needed: a late slot is forced by FIFO or by a full window.
    for i, (slot, arrival) in enumerate(zip(slots, arrivals, strict=True)):
        if slot > arrival:
            forced_by_fifo = i > 0 and slot == slots[i - 1]
            forced_by_window = i >= requests and slot == slots[i - requests] + window
            assert forced_by_fifo or forced_by_window, (i, slot, arrival)


@pytest.mark.parametrize("seed", range(50))
def test_arrivals_within_the_limit_are_never_delayed(seed: int) -> None:
    """Arrivals that already keep N per window (including exactly at the boundary) go at once."""
    rng = random.Random(seed)
    requests = rng.randint(1, 15)
    limiter = RateLimiter(requests, rng.uniform(0.1, 5.0), margin=rng.choice([0.0, 0.02]))
    window = limiter.window
    arrivals: list[float] = []
    for i in range(300):
        earliest = arrivals[-1] if arrivals else 0.0
        if i >= requests:
            # Sometimes exactly one window after the N-th previous: half-open, so allowed.
            boundary = arrivals[i - requests] + window
            earliest = max(earliest, boundary if rng.random() < 0.5 else boundary + rng.random())
        arrivals.append(earliest + (rng.random() * window / requests if rng.random() < 0.3 else 0))
    slots = [limiter.reserve(a) for a in arrivals]
    assert slots == arrivals


def test_evenly_spaced_slower_than_limit_never_delayed() -> None:
    """Requests every 0.25 s against 3 per 0.5 s are each granted at their arrival time."""
    limiter = RateLimiter(3, 0.5)
    arrivals = [i * 0.25 for i in range(100)]
    assert [limiter.reserve(a) for a in arrivals] == arrivals


def test_reserve_after_idle_period_is_immediate() -> None:
    """After a burst drains and the limiter sits idle, a new burst again gets N at once."""
    limiter = RateLimiter(4, 1.0)
    for _ in range(12):
        limiter.reserve(0.0)  # slots at 0, 1, 2
    later = [limiter.reserve(50.0) for _ in range(5)]
    assert later == [50.0, 50.0, 50.0, 50.0, 51.0]


@pytest.mark.parametrize(
    ("requests", "period", "margin"),
    [
        pytest.param(0, 1.0, 0.0, id="zero-requests"),
        pytest.param(-1, 1.0, 0.0, id="negative-requests"),
        pytest.param(1, 0.0, 0.0, id="zero-period"),
        pytest.param(1, -1.0, 0.0, id="negative-period"),
        pytest.param(1, 1.0, -0.01, id="negative-margin"),
    ],
)
def test_constructor_rejects_bad_limits(requests: int, period: float, margin: float) -> None:
    """requests < 1, period <= 0 and margin < 0 are refused with ValueError."""
    with pytest.raises(ValueError):
        RateLimiter(requests, period, margin=margin)


def test_constructor_accepts_smallest_valid_limit() -> None:
    """requests=1 with a tiny positive period is a valid limiter."""
    limiter = RateLimiter(1, 1e-9)
    assert limiter.requests == 1
    assert limiter.window == 1e-9


def test_pause_pushes_reservations_back() -> None:
    """After pause(s), reserve() never returns a slot before now + s."""
    clock = [10.0]
    limiter = RateLimiter(5, 1.0, clock=lambda: clock[0])
    limiter.pause(3.0)
    assert limiter.reserve(10.5) == 13.0
    assert limiter.reserve(20.0) == 20.0


# --- async acquire on a virtual clock -----------------------------------------------------


@pytest.mark.anyio
async def test_concurrent_acquirers_respect_limit_and_sleep_once() -> None:
    """3N concurrent acquirers: <= N grants per window, FIFO, one sleep each, full throughput."""
    n, period, margin = 5, 1.0, 0.1
    vt = VirtualTime()
    limiter = make_limiter(n, period, vt, margin)
    grants: dict[str, float] = {}
    names = [f"a{i:02d}" for i in range(3 * n)]
    async with anyio.create_task_group() as tg:
        for name in names:
            tg.start_soon(acquirer, limiter, vt, name, grants)
        await vt.run_all()

    times = [grants[name] for name in names]
    assert max_in_window(times, limiter.window, SLACK) <= n
    assert_fifo(times)
    assert times == pytest.approx([0.0] * n + [limiter.window] * n + [2 * limiter.window] * n)
    # No polling: the first N never sleep, every other acquirer sleeps exactly once.
    assert len(vt.sleeps) == 2 * n
    for name in names:
        assert len(vt.sleeps_by(name)) <= 1, name
    assert all(seconds > 0 for _, seconds in vt.sleeps)


@pytest.mark.anyio
@pytest.mark.parametrize("seed", range(10))
async def test_staggered_acquirers_respect_limit(seed: int) -> None:
    """Acquirers arriving at random virtual times never exceed N grants in any window."""
    rng = random.Random(seed)
    n = rng.randint(1, 6)
    vt = VirtualTime()
    limiter = make_limiter(n, 1.0, vt, margin=0.02)
    grants: dict[str, float] = {}
    async with anyio.create_task_group() as tg:
        t = 0.0
        for i in range(40):
            t += rng.choice([0.0, 0.0, rng.uniform(0.0, 0.6)])
            await vt.advance_to(t)
            tg.start_soon(acquirer, limiter, vt, f"s{i}", grants)
        await vt.run_all()
    times = [grants[f"s{i}"] for i in range(40)]
    assert max_in_window(times, limiter.window, SLACK) <= n
    assert_fifo(times)
    assert all(len(vt.sleeps_by(f"s{i}")) <= 1 for i in range(40))


@pytest.mark.anyio
async def test_pause_holds_back_later_acquires() -> None:
    """pause(s) makes the next acquire wait until now + s, even with window capacity left."""
    vt = VirtualTime(start=2.0)
    limiter = make_limiter(10, 1.0, vt)
    await limiter.acquire()
    limiter.pause(5.0)
    assert limiter.statistics().paused_for == pytest.approx(5.0)
    grants: dict[str, float] = {}
    async with anyio.create_task_group() as tg:
        tg.start_soon(acquirer, limiter, vt, "late", grants)
        await vt.run_all()
    assert grants["late"] == pytest.approx(7.0)
    assert limiter.statistics().paused_for == 0.0


@pytest.mark.anyio
async def test_pause_during_sleep_holds_back_sleeping_waiter() -> None:
    """A pause announced while a waiter sleeps pushes its grant past the pause's end."""
    vt = VirtualTime()
    limiter = make_limiter(1, 1.0, vt)
    grants: dict[str, float] = {}
    async with anyio.create_task_group() as tg:
        tg.start_soon(acquirer, limiter, vt, "first", grants)
        tg.start_soon(acquirer, limiter, vt, "second", grants)  # reserved for t=1
        await vt.advance_to(0.5)
        limiter.pause(3.0)  # until t=3.5
        await vt.run_all()
    assert grants["first"] == 0.0
    assert grants["second"] >= 3.5
    assert grants["second"] == pytest.approx(3.5)


def test_negative_pause_is_ignored() -> None:
    """pause() with a negative duration does not pause and does not shorten an earlier pause."""
    clock = [0.0]
    limiter = RateLimiter(1, 1.0, clock=lambda: clock[0])
    limiter.pause(-5.0)
    assert limiter.statistics().paused_for == 0.0
    limiter.pause(2.0)
    limiter.pause(-1.0)
    limiter.pause(1.0)
    assert limiter.statistics().paused_for == 2.0


@pytest.mark.anyio
async def test_statistics_count_granted_and_waiting() -> None:
    """statistics() reports granted and waiting acquirers before, during and after a burst."""
    vt = VirtualTime()
    limiter = make_limiter(2, 1.0, vt)
    stats = limiter.statistics()
    assert (stats.requests, stats.window, stats.granted, stats.waiting) == (2, 1.0, 0, 0)
    grants: dict[str, float] = {}
    async with anyio.create_task_group() as tg:
        for i in range(5):
            tg.start_soon(acquirer, limiter, vt, f"w{i}", grants)
        await vt.advance_to(0.0)
        assert (limiter.statistics().granted, limiter.statistics().waiting) == (2, 3)
        await vt.advance_to(1.0)
        assert (limiter.statistics().granted, limiter.statistics().waiting) == (4, 1)
        await vt.run_all()
    stats = limiter.statistics()
    assert (stats.granted, stats.waiting) == (5, 0)
    assert vt.now == 2.0
    # One grant (at t=2) in the window (1, 2].
    assert stats.recent_rate == pytest.approx(1 / 1.0)


@pytest.mark.anyio
async def test_recent_rate_counts_grants_while_others_queue() -> None:
    """recent_rate reflects the N grants of the last window even while more acquirers queue."""
    vt = VirtualTime()
    limiter = make_limiter(2, 1.0, vt)
    grants: dict[str, float] = {}
    async with anyio.create_task_group() as tg:
        for i in range(4):
            tg.start_soon(acquirer, limiter, vt, f"q{i}", grants)
        await vt.advance_to(0.0)
        during = limiter.statistics()
        await vt.run_all()
    assert during.granted == 2
    assert during.recent_rate == pytest.approx(2 / 1.0)


# --- cancellation -------------------------------------------------------------------------


@pytest.mark.anyio
async def test_cancelled_waiter_does_not_break_later_grants() -> None:
    """A waiter cancelled mid-queue leaves the queue behind it working and the counts right."""
    vt = VirtualTime()
    limiter = make_limiter(1, 1.0, vt)
    grants: dict[str, float] = {}
    cancelled = anyio.CancelScope()

    async def doomed() -> None:
        _caller.set("doomed")
        with cancelled:
            await limiter.acquire()
            grants["doomed"] = vt.now

    async with anyio.create_task_group() as tg:
        tg.start_soon(acquirer, limiter, vt, "first", grants)  # t=0
        tg.start_soon(doomed)  # reserved t=1
        tg.start_soon(acquirer, limiter, vt, "third", grants)  # reserved t=2
        await vt.advance_to(0.5)
        assert limiter.statistics().waiting == 2
        cancelled.cancel()
        await vt.run_all()
        assert limiter.statistics().waiting == 0
        tg.start_soon(acquirer, limiter, vt, "fourth", grants)
        await vt.run_all()

    assert "doomed" not in grants
    assert grants["first"] == 0.0
    assert grants["third"] == pytest.approx(2.0)
    assert grants["fourth"] == pytest.approx(3.0)
    stats = limiter.statistics()
    assert (stats.granted, stats.waiting) == (3, 0)
    assert max_in_window(list(grants.values()), limiter.window, SLACK) <= 1


@pytest.mark.anyio
async def test_cancelled_waiter_at_full_window_does_not_free_extra_capacity() -> None:
    """Cancelling the (N+1)-th waiter does not let a newcomer in before the window has passed."""
    vt = VirtualTime()
    limiter = make_limiter(2, 1.0, vt)
    grants: dict[str, float] = {}
    cancelled = anyio.CancelScope()

    async def doomed() -> None:
        with cancelled:
            await limiter.acquire()

    async with anyio.create_task_group() as tg:
        tg.start_soon(acquirer, limiter, vt, "a", grants)  # t=0
        tg.start_soon(acquirer, limiter, vt, "b", grants)  # t=0
        tg.start_soon(doomed)  # reserved t=1
        await vt.advance_to(0.5)
        cancelled.cancel()
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(acquirer, limiter, vt, "c", grants)
        await vt.run_all()

    # a and b went at t=0, so c may not go before t=1.
    assert grants["c"] >= 1.0
    assert max_in_window(list(grants.values()), limiter.window, SLACK) <= 2


@pytest.mark.anyio
async def test_sleep_failure_propagates_and_limiter_keeps_working() -> None:
    """An exception from the sleep reaches the caller, and later acquires still succeed."""
    clock = [0.0]
    calls: list[float] = []

    async def failing_sleep(seconds: float) -> None:
        calls.append(seconds)
        raise RuntimeError("sleep interrupted")

    limiter = RateLimiter(1, 1.0, clock=lambda: clock[0], sleep=failing_sleep)
    await limiter.acquire()
    with pytest.raises(RuntimeError, match="sleep interrupted"):
        await limiter.acquire()
    assert calls == [1.0]
    assert limiter.statistics().waiting == 0
    clock[0] = 1.0
    await limiter.acquire()  # due now: no sleep needed
    assert calls == [1.0]
    assert limiter.statistics().granted == 2


@pytest.mark.anyio
async def test_real_clock_cancelled_waiter_then_later_acquire_succeeds() -> None:
    """On the real anyio clock, a timed-out acquire does not wedge the limiter.

    The window (0.5 s) is far longer than anything between the first grant and the second
    acquire (no await in between), so the second acquire is always still waiting when its
    timeout cancels it. The later acquire is judged by what it asked to sleep, not by wall
    time: at most the rest of the first request's window, where a leaked reservation would
    have made it wait a window more, and it is granted no earlier than the window allows.
    """
    period = 0.5
    sleeps: list[float] = []

    async def recording_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        await anyio.sleep(seconds)

    limiter = RateLimiter(1, period, sleep=recording_sleep)
    before_first = anyio.current_time()
    await limiter.acquire()
    assert sleeps == []  # the first went at once
    with anyio.move_on_after(0.01) as scope:
        await limiter.acquire()
    assert scope.cancelled_caught
    assert len(sleeps) == 1 and 0 < sleeps[0] <= period  # it was waiting for the window
    assert limiter.statistics().waiting == 0
    with anyio.fail_after(30):  # a hang guard only
        await limiter.acquire()
    assert anyio.current_time() - before_first >= period - 1e-6
    assert all(0 < seconds <= period for seconds in sleeps[1:])
    assert limiter.statistics().granted == 2
