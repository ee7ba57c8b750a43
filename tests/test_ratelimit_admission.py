"""The limiter's admission gate: windows are kept by real send times, not planned ones."""

from __future__ import annotations

import random

import anyio
import pytest

from stableaudio_async.ratelimit import RateLimiter, slot

pytestmark = pytest.mark.anyio


def max_in_window(times: list[float], window: float) -> int:
    times = sorted(times)
    return max(sum(1 for u in times if t <= u < t + window) for t in times)


@pytest.mark.parametrize("seed", range(3))
async def test_late_sends_never_bunch_with_punctual_ones(seed: int) -> None:
    """Requests that reach the wire late (lag after their grant) still keep every window at N."""
    rng = random.Random(seed)
    sent_at: list[float] = []

    class Recording(RateLimiter):
        # The send times the limiter itself counted (reading the clock again afterwards
        # would add the test's own scheduling delay to them).
        def _stamp(self, when: float) -> None:
            sent_at.append(when)
            super()._stamp(when)

    limiter = Recording(3, 0.1)

    async def one(lag: float) -> None:
        async with limiter.request() as sent:
            await anyio.sleep(lag)  # event-loop lag or connection set-up before the write
            sent()

    async with anyio.create_task_group() as tg:
        for _ in range(15):
            tg.start_soon(one, rng.choice([0.0, 0.0, rng.uniform(0.0, 0.08)]))
    assert len(sent_at) == 15
    # Planned slots alone would allow late sends to bunch with punctual ones; sends may not.
    assert max_in_window(sent_at, limiter.window - 1e-6) <= 3


async def test_unsent_grant_holds_its_place_until_stamped() -> None:
    """A granted request not yet on the wire counts against the window until it is sent."""
    limiter = RateLimiter(1, 0.1)
    order: list[tuple[str, float]] = []
    release = anyio.Event()

    async def holder() -> None:
        async with limiter.request() as sent:
            await release.wait()
            sent()
            order.append(("holder sent", anyio.current_time()))

    async def other() -> None:
        await limiter.acquire()
        order.append(("other sent", anyio.current_time()))

    async with anyio.create_task_group() as tg:
        tg.start_soon(holder)
        await anyio.sleep(0.01)
        tg.start_soon(other)
        # Its planned slot (t=0.1) passes, but the holder could still hit the wire any moment.
        await anyio.sleep(0.2)
        assert order == []
        release.set()
    (first, at_first), (second, at_second) = order
    assert (first, second) == ("holder sent", "other sent")
    assert at_second - at_first >= limiter.window - 1e-6


async def test_unstamped_request_is_stamped_when_its_block_ends() -> None:
    """Leaving the block without calling sent() stamps the request then (never lost)."""
    limiter = RateLimiter(1, 0.05)
    async with limiter.request():
        pass
    assert limiter.statistics().recent_rate == pytest.approx(1 / limiter.window)


async def test_slot_without_limiter_is_immediate() -> None:
    """With no limiter, slot() yields a no-op at once."""
    with anyio.fail_after(1):
        async with slot(None) as sent:
            sent()
