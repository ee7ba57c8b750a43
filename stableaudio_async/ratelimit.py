"""The per-provider limiter: at most N requests in any window of T seconds, and pauses on demand.

A request passes two gates:

1. **Plan.** It reserves the earliest slot that a sliding log of planned slots and a GCRA
   pacer allow, in FIFO order, and sleeps once until then. The log caps every window at N
   from the very first request on; the pacer spreads requests evenly (N per window after an
   initial ``burst``), so a provider that counts requests as it gets round to them sees an
   even stream rather than N-request bursts whose queueing delay spills into the next window.
2. **Admit.** Waking up, it checks the log of *actual* send times: requests already on the
   wire in the last window, plus requests granted and not yet sent (which could hit the wire
   at any instant), must number fewer than N. Event-loop lag or connection set-up between a
   grant and the write can make a planned request leave late; this gate keeps such late
   requests from bunching up with punctual ones.

A window proven this way holds at most N by send time; ``margin`` widens it to absorb the
network between our send and the provider's count. The clock and the sleep function are
injectable, so tests drive the limiter on a fake clock.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio

__all__ = ["RateLimiter", "RateLimiterStatistics", "slot"]


@dataclass(frozen=True, slots=True)
class RateLimiterStatistics:
    """A snapshot of a limiter's state."""

    requests: int
    window: float
    granted: int
    waiting: int
    paused_for: float
    recent_rate: float
    #: The pace currently allowed, in requests per second (lower than the ceiling after 429s).
    allowed_rate: float
    #: Requests currently allowed per window: ``requests``, fewer after 429s.
    allowed: int = 0


class RateLimiter:
    """Grants at most ``requests`` requests in any window of ``period`` plus a margin.

    The margin, ``period * margin`` but at least ``min_margin`` seconds, absorbs the
    difference between when we send a request and when the provider counts it. ``burst`` is
    how many requests may go at once before the pacing sets in (default ``requests``: the
    sliding window alone).

    Use :meth:`request` around a send (``async with limiter.request() as sent: ...``, calling
    ``sent()`` when the request is on the wire), or :meth:`acquire` when the send follows at
    once.
    """

    def __init__(
        self,
        requests: int,
        period: float,
        *,
        margin: float = 0.0,
        min_margin: float = 0.0,
        burst: int | None = None,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        burst = requests if burst is None else burst
        if requests < 1 or not 0 < period < math.inf or not 0 <= margin < math.inf \
                or not 0 <= min_margin < math.inf or not 1 <= burst <= requests:
            raise ValueError("need requests >= 1, period > 0, margins >= 0, "
                             "1 <= burst <= requests")
        self.requests = requests
        self.burst = burst
        self.window = period + max(period * margin, min_margin)
        # Adaptive pacing: requests currently allowed per window, between 1 and `requests`,
        # and the successes counted towards the next increase.
        self._allowed = float(requests)
        self._successes = 0
        self._clock = clock or anyio.current_time
        self._sleep = sleep or anyio.sleep
        # Gate 1: the last `requests` planned slots (never decreasing) and GCRA's theoretical
        # arrival time; `_undo` lets a cancelled waiter take back the latest reservation.
        self._slots: deque[float] = deque(maxlen=requests)
        self._tat = float("-inf")
        self._serial = 0
        self._undo: tuple[int, float | None, float] | None = None
        # Gate 2: send times within the last window (sorted), and granted-but-unsent requests.
        self._sent: list[float] = []
        self._unsent = 0
        self._stamped = anyio.Event()
        self._paused_until = float("-inf")
        self._granted = 0
        self._waiting = 0

    # -- gate 1: planning ------------------------------------------------------------------

    def reserve(self, now: float) -> float:
        """Reserve and return the earliest planned time for a request, given it is ``now``."""
        slot = max(now, self._paused_until)
        allowed = self.allowed
        throttled = allowed < self.requests
        if self.burst < self.requests or throttled:
            interval = self.window / self._allowed
            tolerance = (min(self.burst, allowed) - 1) * interval
            slot = max(slot, self._tat - tolerance)
        evicted = None
        if self._slots:
            slot = max(slot, self._slots[-1])
            if len(self._slots) >= allowed:
                slot = max(slot, self._slots[-allowed] + self.window)
            if len(self._slots) == self.requests:
                evicted = self._slots[0]
        self._serial += 1
        self._undo = (self._serial, evicted, self._tat)
        self._slots.append(slot)
        if self.burst < self.requests or throttled:
            self._tat = max(self._tat, slot) + self.window / self._allowed
        return slot

    def _release(self, serial: int, slot: float) -> None:
        """Undo reservation ``serial`` if it is still the latest one and in the future."""
        if self._undo is None or self._undo[0] != serial or slot <= self._clock():
            return
        _, evicted, tat = self._undo
        self._undo = None
        self._slots.pop()
        if evicted is not None:
            self._slots.appendleft(evicted)
        self._tat = tat

    async def _planned_slot(self) -> None:
        now = self._clock()
        slot = self.reserve(now)
        serial = self._serial
        if slot > now:
            try:
                await self._sleep(slot - now)
            except BaseException:
                # Only the newest reservation can be handed back; an older one stays reserved
                # (and unused), which is safe.
                self._release(serial, slot)
                raise

    # -- gate 2: admission against real send times -------------------------------------------

    def _trim(self, now: float) -> None:
        # A nanosecond's tolerance: a slot planned at exactly `sent + window` must not find
        # `sent` still inside the window through floating-point rounding.
        cut = bisect.bisect_right(self._sent, now - self.window + 1e-9)
        if cut:
            del self._sent[:cut]

    async def _admit(self) -> None:
        while True:
            now = self._clock()
            if self._paused_until > now:
                await self._sleep(self._paused_until - now)
                continue
            self._trim(now)
            if len(self._sent) + self._unsent < self.allowed:
                return
            expiry = self._sent[0] + self.window - now if self._sent else math.inf
            if self._unsent:
                # One of the in-flight grants may be stamped before the oldest send expires.
                with anyio.move_on_after(expiry):
                    await self._stamped.wait()
            else:
                await self._sleep(expiry)

    def _stamp(self, when: float) -> None:
        bisect.insort(self._sent, when)
        self._stamped.set()
        self._stamped = anyio.Event()

    # -- the API ---------------------------------------------------------------------------

    @asynccontextmanager
    async def request(self) -> AsyncIterator[Callable[[], None]]:
        """Hold a slot for one request; call the yielded function once it is on the wire.

        Until then the request counts against every window as if it were being sent right
        now; if the function is never called, the request is stamped when the block ends.
        """
        self._waiting += 1
        try:
            await self._planned_slot()
            await self._admit()
        finally:
            self._waiting -= 1
        self._granted += 1
        self._unsent += 1
        stamped = False

        def sent() -> None:
            nonlocal stamped
            if not stamped:
                stamped = True
                self._unsent -= 1
                self._stamp(self._clock())

        try:
            yield sent
        finally:
            sent()

    async def acquire(self) -> None:
        """Wait until a request may be sent, and count it as sent now."""
        async with self.request() as sent:
            sent()

    @property
    def allowed(self) -> int:
        """Requests currently allowed per window (``requests`` unless throttled)."""
        return max(1, int(self._allowed))

    def throttle(self) -> None:
        """A 429 came anyway: halve the pace (multiplicative decrease)."""
        self._allowed = max(1.0, float(self.allowed // 2))
        self._successes = 0

    def recover(self) -> None:
        """A request went through: win back one request per window's worth of successes
        (additive increase), up to the configured ceiling."""
        if self._allowed >= self.requests:
            return
        self._successes += 1
        if self._successes >= self.allowed:
            self._successes = 0
            self._allowed = min(float(self.requests), self._allowed + 1)

    def pause(self, seconds: float) -> None:
        """Hold every request back for ``seconds`` from now (a Retry-After, a lockout)."""
        self._paused_until = max(self._paused_until, self._clock() + max(seconds, 0.0))

    def statistics(self) -> RateLimiterStatistics:
        """Counts so far, and the rate of sends over the last window."""
        now = self._clock()
        self._trim(now)
        recent = bisect.bisect_right(self._sent, now)
        return RateLimiterStatistics(
            requests=self.requests,
            window=self.window,
            granted=self._granted,
            waiting=self._waiting,
            paused_for=max(0.0, self._paused_until - now),
            recent_rate=recent / self.window,
            allowed_rate=self.allowed / self.window,
            allowed=self.allowed,
        )


def _no_op() -> None:
    pass


@asynccontextmanager
async def slot(limiter: RateLimiter | None) -> AsyncIterator[Callable[[], None]]:
    """``limiter.request()``, or an immediate slot when there is no limiter."""
    if limiter is None:
        yield _no_op
    else:
        async with limiter.request() as sent:
            yield sent
