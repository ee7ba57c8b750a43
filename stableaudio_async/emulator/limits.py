"""The emulator's rate limits: per-key sliding windows, lockouts, and the arrival stamp they judge by.

These windows are the ground truth the engine must never exceed: a request past one is
answered 429 by its provider module, and a provider with a lockout configured
(``EmulatorConfig.lockouts``) then refuses every request of that key until it ends.
"""

from __future__ import annotations

import bisect
import contextvars
from collections import deque

from aiohttp import web
from aiohttp.typedefs import Handler

from stableaudio_async.emulator.state import EmulatorState

__all__ = ["RateLimits"]

#: When the request being handled reached the emulator (see :meth:`RateLimits.stamp_arrival`).
_arrival: contextvars.ContextVar[float] = contextvars.ContextVar("arrival")


class _Window:
    """The emulator's own sliding window: the ground truth the engine must never exceed."""

    def __init__(self, requests: int, period: float) -> None:
        self.requests = requests
        self.period = period
        self.times: deque[float] = deque()

    def admit(self, now: float) -> float | None:
        """Count a request at ``now``; return None, or the seconds until one would be allowed."""
        while self.times and self.times[0] <= now - self.period:
            self.times.popleft()
        if len(self.times) >= self.requests:
            return self.times[0] + self.period - now
        # Arrival stamps reach here in about their order; one that overtook another goes
        # back into place, so the oldest is always first.
        index = len(self.times)
        while index and self.times[index - 1] > now:
            index -= 1
        self.times.insert(index, now)
        return None


class RateLimits:
    """One emulator's windows and lockouts, per provider and key, on its clock."""

    def __init__(self, state: EmulatorState) -> None:
        self._state = state
        self._windows: dict[tuple[str, str], _Window] = {}
        #: Real (monotonic) time each locked-out (provider, key) is let in again.
        self._locked_until: dict[tuple[str, str], float] = {}

    @web.middleware
    async def stamp_arrival(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """The app's first middleware: note when the request arrived, for :meth:`admit`."""
        # First thing, before faults, auth or any parsing: the time the rate limit judges a
        # request by should be as close to its arrival as this process can tell.
        _arrival.set(self._state.now())
        return await handler(request)

    def lock_out(self, provider: str, seconds: float | None = None, *,
                 key: str | None = None) -> float:
        """Lock ``key`` (default: the emulator's own) out of ``provider`` now, as an overflow of
        its window would: every request of that key 429s until the lockout ends. ``seconds``
        are real ones, by default the provider's configured lockout, scaled. Returns the
        (:meth:`EmulatorState.now`) time the key is let in again. Counted in
        ``ProviderStats.lockouts``.
        """
        config = self._state.config
        if seconds is None:
            lockout = config.lockouts.get(provider)
            if lockout is None:
                raise ValueError(f"{provider} has no lockout configured: give seconds")
            seconds = lockout * config.time_scale
        until = self._state.now() + seconds
        self._locked_until[(provider, key or config.api_key)] = until
        self._state.provider_stats(provider).lockouts += 1
        return until

    def admit(self, provider: str, key: str, *, submit: bool) -> float | None:
        """Count a request against the provider's window; the wait in real seconds if refused.

        A provider with a lockout configured locks the key out when its window overflows:
        until the lockout ends every request of that key is refused (and not counted), even
        those the window would have room for, and whether or not they are submits.
        """
        config = self._state.config
        limit = config.limits.get(provider) or config.poll_limits.get(provider)
        if limit is None:
            return None
        now = _arrival.get(None) or self._state.now()
        stats = self._state.provider_stats(provider)
        locked_until = self._locked_until.get((provider, key))
        if locked_until is not None:
            if now < locked_until:
                stats.rate_limited += 1
                return locked_until - now
            del self._locked_until[(provider, key)]
        if limit.counts == "submits" and not submit:
            limit = config.poll_limits.get(provider)
            if limit is None:
                return None
        name = provider if limit is config.limits.get(provider) else f"{provider}:other"
        window = self._windows.get((name, key))
        if window is None:
            window = self._windows[(name, key)] = _Window(
                limit.requests, limit.period * config.time_scale)
        wait = window.admit(now)
        if wait is None:
            bisect.insort(stats.counted_at, now)  # in arrival order, as it is judged
            return None
        stats.rate_limited += 1
        lockout = config.lockouts.get(provider)
        if lockout is not None:
            stats.lockouts += 1
            wait = lockout * config.time_scale
            self._locked_until[(provider, key)] = now + wait
        return wait
