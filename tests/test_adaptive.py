"""Adaptive pacing (AIMD on 429) and the circuit breaker, on a fake clock."""

from __future__ import annotations

import bisect
import functools

import pytest
import structlog

from stableaudio_async import runtime
from stableaudio_async.config import CircuitPolicy, ProviderSettings, RateLimit
from stableaudio_async.errors import ProviderUnavailableError, RateLimitedError
from stableaudio_async.ratelimit import RateLimiter
from stableaudio_async.runtime import ProviderRuntime as _Provider


def max_in_window(slots: list[float], window: float) -> int:
    return max(bisect.bisect_left(slots, t + window) - i for i, t in enumerate(slots))


def test_throttle_halves_and_recover_adds_one_per_window() -> None:
    """A 429 halves the allowed pace; a window's worth of successes wins one request back."""
    limiter = RateLimiter(16, 1.0, clock=lambda: 0.0)
    limiter.throttle()
    assert limiter.allowed == 8
    limiter.throttle()
    limiter.throttle()
    limiter.throttle()
    limiter.throttle()
    assert limiter.allowed == 1  # never below one request per window
    for _ in range(1):
        limiter.recover()
    assert limiter.allowed == 2
    for _ in range(2):
        limiter.recover()
    assert limiter.allowed == 3
    for _ in range(1000):
        limiter.recover()
    assert limiter.allowed == 16  # back to the ceiling, not beyond


@pytest.mark.parametrize("throttles", [1, 2, 3])
def test_throttled_limiter_keeps_the_lower_pace(throttles: int) -> None:
    """After k 429s no window holds more than N / 2**k reservations."""
    limiter = RateLimiter(16, 1.0, clock=lambda: 0.0)
    for _ in range(throttles):
        limiter.throttle()
    slots = [limiter.reserve(0.0) for _ in range(100)]
    assert max_in_window(slots, limiter.window - 1e-9) <= 16 // 2**throttles
    assert limiter.statistics().allowed_rate == pytest.approx((16 // 2**throttles) / 1.0)


def provider(**circuit: float) -> _Provider:
    settings = ProviderSettings(base_url="http://x", api_key_env="K",
                                rate_limit=RateLimit(requests=100, period=1.0),
                                circuit=CircuitPolicy(**circuit))
    return _Provider("pixazo", settings, "key")


@pytest.mark.anyio
async def test_circuit_opens_after_a_run_of_failures_and_doubles(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Five 5xx in a row pause the provider; a failing probe doubles the pause; success resets.

    The provider builds its limiters as ever, but on a clock that stands still, so each pause
    reads back exactly as long as the circuit made it.
    """
    monkeypatch.setattr(runtime, "RateLimiter", functools.partial(RateLimiter, clock=lambda: 0.0))
    p = provider(failures=5, cooldown=2.0, max_cooldown=5.0)
    log = structlog.get_logger()
    error = ProviderUnavailableError("HTTP 503", provider="pixazo", status=503)
    for _ in range(4):
        p.record_outcome(error, log)
    assert p.limiter.statistics().paused_for == 0
    p.record_outcome(error, log)
    assert p.limiter.statistics().paused_for == 2.0
    for _ in range(5):
        p.record_outcome(error, log)
    assert p.limiter.statistics().paused_for == 4.0
    for _ in range(5):
        p.record_outcome(error, log)
    assert p.limiter.statistics().paused_for == 5.0  # capped
    p.record_outcome(None, log)
    assert p.failures == 0 and p.cooldown == 2.0


@pytest.mark.anyio
async def test_a_429_slows_the_provider_down_and_success_speeds_it_up() -> None:
    """record_outcome turns 429s into throttling and successes into recovery."""
    p = provider()
    log = structlog.get_logger()
    p.record_outcome(RateLimitedError("HTTP 429", provider="pixazo", status=429), log)
    assert p.limiter.allowed == 50
    for _ in range(50):
        p.record_outcome(None, log)
    assert p.limiter.allowed == 51


@pytest.mark.anyio
async def test_progress_reports_slowed_pacing_only_after_a_429() -> None:
    """The allowed pace equals the configured one until a 429 (the window's margin aside)."""
    p = provider()
    progress = p.progress()
    assert progress.rate_limit is not None
    assert progress.allowed_rate == pytest.approx(progress.rate_limit)
    p.record_outcome(RateLimitedError("HTTP 429", provider="pixazo", status=429),
                     structlog.get_logger())
    slowed = p.progress()
    assert slowed.allowed_rate == pytest.approx(progress.rate_limit / 2)
