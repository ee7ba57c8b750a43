"""The per-provider limiter: at most N requests in any window of T seconds, and pauses on demand.

Every caller reserves the earliest slot the limits allow and sleeps once until it, in FIFO
order, so nothing busy-waits. Two rules decide the slot:

- a sliding log, the hard guarantee: the (N+1)-th reservation is always at least one window
  after the first, from the very first request on;
- a GCRA pacer that spreads requests at N per window after an initial ``burst``. Its long-run
  rate is the same, but a provider that counts requests when it gets round to them sees an
  even stream instead of N-request bursts, whose queueing delay would otherwise push the tail
  of one burst into the next window.

The clock and the sleep function are injectable, so tests drive the limiter on a fake clock.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio

__all__ = ["RateLimiter", "RateLimiterStatistics"]


@dataclass(frozen=True, slots=True)
class RateLimiterStatistics:
    """A snapshot of a limiter's state."""

    requests: int
    window: float
    granted: int
    waiting: int
    paused_for: float
    recent_rate: float


class RateLimiter:
    """Grants at most ``requests`` slots in any ``period * (1 + margin)`` seconds.

    ``margin`` widens the window to absorb the difference between when we send a request and
    when the provider counts it. ``burst`` is how many requests may go at once before the
    pacing sets in (default ``requests``: the sliding window alone).
    """

    def __init__(
        self,
        requests: int,
        period: float,
        *,
        margin: float = 0.0,
        burst: int | None = None,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        burst = requests if burst is None else burst
        if requests < 1 or not 0 < period < math.inf or not 0 <= margin < math.inf \
                or not 1 <= burst <= requests:
            raise ValueError("need requests >= 1, period > 0, margin >= 0, 1 <= burst <= requests")
        self.requests = requests
        self.burst = burst
        self.window = period * (1.0 + margin)
        self._interval = self.window / requests
        self._tolerance = (burst - 1) * self._interval
        # GCRA's theoretical arrival time.
        self._tat = float("-inf")
        # The latest reservation: its serial, the slot it pushed out of the log, the prior TAT.
        self._serial = 0
        self._undo: tuple[int, float | None, float] | None = None
        # Grant times within the last window, for the rate shown in progress displays.
        self._recent: deque[float] = deque()
        self._clock = clock or anyio.current_time
        self._sleep = sleep or anyio.sleep
        # The times of the last `requests` reservations, oldest first (never decreasing).
        self._slots: deque[float] = deque(maxlen=requests)
        self._paused_until = float("-inf")
        self._granted = 0
        self._waiting = 0

    def reserve(self, now: float) -> float:
        """Reserve and return the earliest time a request may be sent, given it is ``now``."""
        slot = max(now, self._paused_until)
        if self.burst < self.requests:
            slot = max(slot, self._tat - self._tolerance)
        if self._slots:
            slot = max(slot, self._slots[-1])
            if len(self._slots) == self.requests:
                slot = max(slot, self._slots[0] + self.window)
        # What this reservation displaces, so that a cancelled waiter can undo it exactly.
        evicted = self._slots[0] if len(self._slots) == self.requests else None
        self._serial += 1
        self._undo = (self._serial, evicted, self._tat)
        self._slots.append(slot)
        if self.burst < self.requests:
            self._tat = max(self._tat, slot) + self._interval
        return slot

    def _release(self, serial: int, slot: float) -> None:
        """Undo reservation ``serial`` if it is the latest one and still in the future."""
        if self._undo is None or self._undo[0] != serial or slot <= self._clock():
            return
        _, evicted, tat = self._undo
        self._undo = None
        self._slots.pop()
        if evicted is not None:
            self._slots.appendleft(evicted)
        self._tat = tat

    async def acquire(self) -> None:
        """Wait until a request may be sent, then count it as sent."""
        self._waiting += 1
        try:
            while True:
                now = self._clock()
                slot = self.reserve(now)
                serial = self._serial
                if slot > now:
                    try:
                        await self._sleep(slot - now)
                    except BaseException:
                        # Only the newest reservation can be handed back; an older one stays
                        # reserved (and unused), which is safe.
                        self._release(serial, slot)
                        raise
                # A pause announced while we slept (a 429 elsewhere) also holds us back.
                if self._paused_until <= slot:
                    break
        finally:
            self._waiting -= 1
        self._granted += 1
        self._recent.append(self._clock())
        self._trim(self._recent[-1])

    def _trim(self, now: float) -> None:
        while self._recent and self._recent[0] <= now - self.window:
            self._recent.popleft()

    def pause(self, seconds: float) -> None:
        """Hold every request back for ``seconds`` from now (a Retry-After, a lockout)."""
        self._paused_until = max(self._paused_until, self._clock() + max(seconds, 0.0))

    def statistics(self) -> RateLimiterStatistics:
        """Counts so far, and the rate granted over the last window."""
        now = self._clock()
        self._trim(now)
        recent = len(self._recent)
        return RateLimiterStatistics(
            requests=self.requests,
            window=self.window,
            granted=self._granted,
            waiting=self._waiting,
            paused_for=max(0.0, self._paused_until - now),
            recent_rate=recent / self.window,
        )
