"""The per-provider limiter: at most N requests in any window of T seconds, and pauses on demand.

Every caller reserves the earliest slot the window allows and sleeps once until it, in FIFO
order, so nothing busy-waits and nothing bursts: the (N+1)-th reservation is always at least
one window after the first, from the very first request on. The clock and the sleep function
are injectable, so tests drive the limiter on a fake clock.
"""

from __future__ import annotations

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
    when the provider counts it.
    """

    def __init__(
        self,
        requests: int,
        period: float,
        *,
        margin: float = 0.0,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        if requests < 1 or period <= 0 or margin < 0:
            raise ValueError("need requests >= 1, period > 0 and margin >= 0")
        self.requests = requests
        self.window = period * (1.0 + margin)
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
        if self._slots:
            slot = max(slot, self._slots[-1])
            if len(self._slots) == self.requests:
                slot = max(slot, self._slots[0] + self.window)
        self._slots.append(slot)
        return slot

    def _release(self, slot: float) -> None:
        # A waiter cancelled before its turn gives its slot back if nobody queued behind it.
        if self._slots and self._slots[-1] == slot and slot > self._clock():
            self._slots.pop()

    async def acquire(self) -> None:
        """Wait until a request may be sent, then count it as sent."""
        self._waiting += 1
        try:
            while True:
                now = self._clock()
                slot = self.reserve(now)
                if slot > now:
                    try:
                        await self._sleep(slot - now)
                    except BaseException:
                        self._release(slot)
                        raise
                # A pause announced while we slept (a 429 elsewhere) also holds us back.
                if self._paused_until <= slot:
                    break
        finally:
            self._waiting -= 1
        self._granted += 1

    def pause(self, seconds: float) -> None:
        """Hold every request back for ``seconds`` from now (a Retry-After, a lockout)."""
        self._paused_until = max(self._paused_until, self._clock() + max(seconds, 0.0))

    def statistics(self) -> RateLimiterStatistics:
        """Counts so far, and the rate granted over the last window."""
        now = self._clock()
        recent = sum(1 for t in self._slots if now - self.window < t <= now)
        return RateLimiterStatistics(
            requests=self.requests,
            window=self.window,
            granted=self._granted,
            waiting=self._waiting,
            paused_for=max(0.0, self._paused_until - now),
            recent_rate=recent / self.window,
        )
