"""What one emulator keeps, read by every part of it: its config and clock, its jobs and their
phases on that clock, and what reached each provider (:class:`ProviderStats`).

:class:`EmulatorState` is the base of ``Emulator``: the parts (rate limits, faults, CDN,
pipeline) are given the emulator typed as this, so that none of them imports the server.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import anyio

from stableaudio_async.emulator.config import EmulatorConfig

__all__ = ["ERROR_MARKER", "FAIL_MARKER", "SHORT_MARKER", "EmulatedJob", "EmulatorState",
           "Phase", "ProviderStats", "retry_after_header"]

#: A prompt holding one of these makes the emulated job end that way (for tests and CI users).
FAIL_MARKER = "emulator:fail"
ERROR_MARKER = "emulator:error"
#: A prompt holding this gets audio half as long as asked for (a provider cutting corners).
SHORT_MARKER = "emulator:short"

Phase = Literal["QUEUED", "PROCESSING", "DONE"]


@dataclass
class ProviderStats:
    """What reached one provider of the emulator."""

    requests: int = 0
    submits: int = 0
    accepted: int = 0
    polls: int = 0
    downloads: int = 0
    #: Every request answered 429, whether by the window or during a lockout.
    rate_limited: int = 0
    cancelled: int = 0
    #: Lockouts started (window overflows on a provider with a lockout configured).
    lockouts: int = 0
    errors: Counter[int] = field(default_factory=Counter)
    #: How often each distinct submit body was accepted: >1 is a duplicate submission.
    bodies: Counter[str] = field(default_factory=Counter, repr=False)
    #: Real (monotonic) times of accepted submissions.
    accepted_at: list[float] = field(default_factory=list, repr=False)
    #: Real (monotonic) times of every request counted against the rate limit.
    counted_at: list[float] = field(default_factory=list, repr=False)
    #: sha256 of the audio served for each request id.
    served: dict[str, str] = field(default_factory=dict, repr=False)
    #: Injected faults by name (see :class:`FaultRates`): replies for the request and download
    #: faults and ``url_expiry``, jobs for ``job_failed`` / ``job_error``, bursts started for
    #: ``burst_429``. An injected API reply also counts in ``requests``, ``submits`` or
    #: ``polls`` and ``errors``, as the provider's own would; an expired URL's 403 in ``errors``.
    injected: Counter[str] = field(default_factory=Counter)
    #: Requests answered 429 by an injected burst (never counted in ``rate_limited``).
    injected_429: int = 0

    @property
    def duplicate_submissions(self) -> int:
        """Accepted submissions that repeated an earlier body."""
        return sum(n - 1 for n in self.bodies.values() if n > 1)


@dataclass
class EmulatedJob:
    """One job the emulator accepted, and when each phase ends."""

    provider: str
    request_id: str
    model: str
    params: dict[str, Any]
    created: float
    queued_until: float
    done_at: float
    outcome: Literal["COMPLETED", "FAILED", "ERROR"]
    #: When the client cancelled the job (providers that allow it), else None.
    cancelled_at: float | None = None
    #: Status requests the client made for this job.
    polls: int = 0
    #: When a status request first found the job done (for detection delay), else None.
    seen_done_at: float | None = None

    @property
    def prompt(self) -> str:
        return str(self.params.get("prompt", ""))


def retry_after_header(wait: float, time_scale: float) -> str:
    """Retry-After in whole seconds, as HTTP has it; fractional only on a scaled clock."""
    if time_scale >= 1:
        return str(max(1, math.ceil(wait)))
    return f"{wait:.3f}"


class EmulatorState:
    """One emulator's config, clock, jobs and counters, and the job phases they imply."""

    def __init__(self, config: EmulatorConfig, clock: Callable[[], float]) -> None:
        self.config = config
        #: Every time the emulator keeps (job phases, windows, lockouts, URL expiry) is on this
        #: clock: a test may drive it by hand to force an outcome whatever the machine's speed.
        self.clock = clock
        self.stats: dict[str, ProviderStats] = {}
        self.jobs: dict[str, EmulatedJob] = {}

    def now(self) -> float:
        return self.clock()

    def wall_time(self, monotonic: float) -> str:
        """A time on :meth:`now`'s clock as an ISO 8601 UTC wall-clock time (``…Z``)."""
        wall = datetime.now(UTC) + timedelta(seconds=monotonic - self.now())
        return wall.isoformat().replace("+00:00", "Z")

    def provider_stats(self, provider: str) -> ProviderStats:
        stats = self.stats.get(provider)
        if stats is None:
            stats = self.stats[provider] = ProviderStats()
        return stats

    def has_balance(self, provider: str) -> bool:
        """Whether another submission may be accepted before the account runs dry."""
        balance = self.config.balance.get(provider)
        return balance is None or self.provider_stats(provider).accepted < balance

    def phase(self, job: EmulatedJob) -> Phase:
        now = self.now()
        if now < job.queued_until:
            return "QUEUED"
        if now < job.done_at:
            return "PROCESSING"
        return "DONE"

    def observe(self, job: EmulatedJob) -> None:
        """Count a status request for ``job``; note when one first finds it done."""
        job.polls += 1
        if job.seen_done_at is None and self.phase(job) == "DONE":
            job.seen_done_at = self.now()

    async def wait_until_done(self, job: EmulatedJob) -> None:
        """Hold a synchronous request until the job's generation time has passed."""
        delay = job.done_at - self.now()
        if delay > 0:
            await anyio.sleep(delay)
