"""The run's live state: each provider's limiter, slots, circuit breaker and progress, and the
stop signal every submit checks.

One :class:`ProviderRuntime` per provider used; its limiters come from ``limiter`` (by
default a :class:`RateLimiter` each), so that a run sharing its limits with other workers
passes another factory in and nothing else changes.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import TypeVar

import anyio
from pydantic import BaseModel, ConfigDict

from stableaudio_async.config import ProviderSettings, RateLimit, RetryPolicy
from stableaudio_async.errors import (
    AuthenticationError,
    InsufficientBalanceError,
    ProviderError,
    ProviderUnavailableError,
    RateLimitedError,
)
from stableaudio_async.lifecycle import Counts, HeldBack
from stableaudio_async.logs import Logger
from stableaudio_async.polling import CompletionTimes
from stableaudio_async.providers import Adapter, adapter_class
from stableaudio_async.ratelimit import RateLimiter, slot
from stableaudio_async.retry import Phase, backoff_delay, may_have_been_accepted, should_retry

__all__ = ["LimiterFactory", "ProviderProgress", "ProviderRuntime", "StopControl"]

T = TypeVar("T")

#: The request count of the pause-only limiter of a provider that publishes no limit.
_UNLIMITED = 10**9


class ProviderProgress(BaseModel):
    """How one provider's jobs stand right now (:meth:`Engine.progress`)."""

    model_config = ConfigDict(frozen=True)

    waiting: int
    queued: int
    running: int
    downloading: int
    completed: int
    failed: int
    requests: int
    rate: float
    rate_limit: float | None
    #: The pace adaptive pacing currently allows (below ``rate_limit`` after 429s).
    allowed_rate: float | None = None
    #: Jobs that ended this run pending (held back, or generated and not yet downloaded).
    pending: int = 0


def _refused(error: ProviderError) -> bool:
    """A refused key or an empty account: every submit would fail the same way."""
    return isinstance(error, AuthenticationError | InsufficientBalanceError)


#: Makes the limiter for one provider's limit (``None``: the provider publishes none).
LimiterFactory = Callable[[RateLimit | None], RateLimiter]


def local_limiter(limit: RateLimit | None) -> RateLimiter:
    """A limiter of this process alone. Without a published limit it only serves to pause the
    provider (a Retry-After, an open circuit): it counts every request and holds none back."""
    if limit is None:
        return RateLimiter(_UNLIMITED, 1.0)
    return RateLimiter(limit.requests, limit.period, margin=limit.margin,
                       min_margin=limit.min_margin, burst=limit.effective_burst)


class ProviderRuntime:
    """A provider's live state: its adapter, limiters, concurrency slots and counters."""

    def __init__(self, name: str, settings: ProviderSettings, api_key: str,
                 limiter: LimiterFactory = local_limiter,
                 rand: Callable[[], float] = random.random) -> None:
        self.name = name
        self._rand = rand
        self.settings = settings
        self.adapter: Adapter = adapter_class(name)(settings, api_key)
        limit = settings.rate_limit
        self.limiter = limiter(limit)
        # Polls (and uploads, result fetches, cancels) go through their own limit where the
        # provider sets one (Replicate: 3000/min beside 600 creates/min), else through the
        # main limit when it counts every request.
        poll_limit = settings.poll_rate_limit
        self.poll_limiter = (
            limiter(poll_limit) if poll_limit
            else self.limiter if limit is None or limit.counts == "all" else None
        )
        self.slots = anyio.CapacityLimiter(settings.max_in_flight)
        poll = settings.poll
        self.completion_times = CompletionTimes(poll.expected, min_gap=poll.near_interval,
                                                learn=poll.learn)
        self.counts = Counts()
        #: The error that stopped all submissions to this provider (a refused key, no credit),
        #: when it came, and whether the one probe after the cool-down is out.
        self.stopped: ProviderError | None = None
        self.stopped_at = 0.0
        self.probing = False
        # The circuit breaker: consecutive failures, and the next pause's length.
        self.failures = 0
        self.cooldown = settings.circuit.cooldown
        #: Whether the provider lists recent jobs, so that a lost submit can be looked up.
        self.can_look_up = self.adapter.lookup_request() is not None
        #: Request ids this run's jobs hold: a lookup never takes one another job owns.
        self.claimed: set[str] = set()

    def check_open(self) -> bool:
        """Hold a job back, without sending anything, while the provider is stopped; True when
        this job is to be the probe of a stopped provider whose cool-down is over."""
        if self.stopped is None:
            return False
        cooldown = self.settings.circuit.auth_cooldown
        if self.probing or cooldown is None or anyio.current_time() - self.stopped_at < cooldown:
            raise HeldBack(f"not submitted: {self.name} was stopped by "
                           f"{type(self.stopped).__name__} ({self.stopped.message})",
                           "provider_stopped", self.stopped)
        self.probing = True
        return True

    def record_outcome(self, error: ProviderError | None, bound: Logger) -> None:
        """Feed the circuit breaker and the adaptive pacing with one request's outcome.

        A run of 5xx or connection failures pauses the whole provider (doubling up to the
        policy's maximum), after which the next request is the probe; any success closes the
        circuit again. A 429 halves the pace; successes win it back gradually.
        """
        if isinstance(error, RateLimitedError):
            self.limiter.throttle()
            return
        if not isinstance(error, ProviderUnavailableError):
            self.failures = 0
            self.cooldown = self.settings.circuit.cooldown
            if error is None:
                self.limiter.recover()
            return
        self.failures += 1
        if self.failures >= self.settings.circuit.failures:
            self.failures = 0
            pause = self.cooldown
            self.cooldown = min(self.cooldown * 2, self.settings.circuit.max_cooldown)
            self.limiter.pause(pause)
            if self.poll_limiter is not None and self.poll_limiter is not self.limiter:
                self.poll_limiter.pause(pause)
            bound.warning("provider.circuit_open", seconds=pause, error=str(error),
                          hint="failing repeatedly: paused, then probed with one request")

    def stop(self, error: ProviderError, bound: Logger) -> None:
        """Stop all further submissions: a wrong key or an empty account fails every job.
        The cool-down (``circuit.auth_cooldown``) runs from the latest such answer."""
        first = self.stopped is None
        self.stopped, self.stopped_at, self.probing = error, anyio.current_time(), False
        if first:
            bound.error("provider.stopped", reason=error.message, http_status=error.status,
                        hint=f"check {self.settings.api_key_env} and the account; "
                             "other providers carry on")

    def resume(self, bound: Logger, *, reason: str) -> None:
        """Take submits again after :meth:`stop` (a probe got through, or the caller said so)."""
        self.probing = False
        if self.stopped is not None:
            self.stopped = None
            bound.warning("provider.resumed", reason=reason)

    def probe_ended(self, error: BaseException | None, bound: Logger) -> None:
        """The probe of a stopped provider is over: a submit that got any answer but a refused
        key or account reopens it; another refusal has stopped it again already."""
        if not self.probing:
            return
        self.probing = False
        if error is None or (isinstance(error, ProviderError) and not _refused(error)):
            self.resume(bound, reason="the probe after the cool-down was not refused")

    def pause_for(self, error: RateLimitedError) -> float | None:
        """How long the whole provider must hold off after a 429: its lockout, else Retry-After."""
        limit = self.settings.rate_limit
        lockout = limit.lockout if limit is not None else None
        if lockout is not None:
            return max(lockout, error.retry_after or 0.0)
        return error.retry_after

    async def retrying(
        self,
        phase: Phase,
        policy: RetryPolicy,
        operation: Callable[[Callable[[], None]], Awaitable[T]],
        *,
        bound: Logger,
        limiter: RateLimiter | None = None,
        on_resend: Callable[[ProviderError], None] | None = None,
    ) -> T:
        """Run ``operation``, retrying what :func:`should_retry` allows for ``phase``: the one
        place a failed request of this provider is decided on (resent, paused for, given up).

        With a ``limiter``, each attempt first takes a slot, and ``operation`` gets the
        callback to call when its request is on the wire (see :meth:`RateLimiter.request`).
        ``on_resend`` is called, with the error, before a submit is sent again that the
        provider may have accepted already.
        """
        attempt = 0
        while True:
            try:
                async with slot(limiter) as sent:
                    outcome = await operation(sent)
                if phase != "download":  # the CDN's health says nothing about the API's
                    self.record_outcome(None, bound)
                return outcome
            except ProviderError as exc:
                if phase != "download":
                    self.record_outcome(exc, bound)
                attempt += 1
                free = self.adapter.free_failures
                retryable = should_retry(phase, exc, free_failures=free,
                                         submit_5xx=policy.submit_5xx, look_up=self.can_look_up)
                if attempt >= policy.attempts or not retryable:
                    raise
                if phase == "submit" and on_resend is not None \
                        and may_have_been_accepted(exc, free_failures=free):
                    on_resend(exc)
                wait = backoff_delay(attempt - 1, initial=policy.initial, maximum=policy.max,
                                     factor=policy.factor, jitter=0.5, rand=self._rand)
                pause = self.pause_for(exc) if isinstance(exc, RateLimitedError) else None
                if pause is not None:
                    wait = pause
                    # A Retry-After or a lockout speaks for the whole provider: every request
                    # would be refused, so none is sent until it is over.
                    self.limiter.pause(pause)
                    bound.warning("provider.paused", seconds=pause)
                bound.warning(f"{phase}.retry_scheduled", attempt=attempt, wait=round(wait, 3),
                              error=str(exc))
                await anyio.sleep(wait)

    def progress(self) -> ProviderProgress:
        c = self.counts
        stats = self.limiter.statistics()
        limit = self.settings.rate_limit
        return ProviderProgress(
            waiting=c.waiting, queued=c.queued, running=c.running, downloading=c.downloading,
            completed=c.completed, failed=c.failed, requests=stats.granted,
            rate=stats.recent_rate,
            rate_limit=limit.requests / limit.period if limit else None,
            # On the same footing as rate_limit (requests per period, without the margin),
            # so the two differ only after 429s slowed the pacing.
            allowed_rate=stats.allowed / limit.period if limit else None,
            pending=c.pending,
        )


class StopControl:
    """Whether the run is stopping, and the submits still on the wire that a stop waits for."""

    def __init__(self) -> None:
        self.stopping = False
        self._on_the_wire = 0
        self._settled = anyio.Event()
        self._shields: set[anyio.CancelScope] = set()

    @contextmanager
    def shielded(self) -> Iterator[None]:
        """Around a submit on the wire: the caller's cancellation waits until its answer is
        recorded (then it goes through); only :meth:`abort` cuts it short."""
        scope = anyio.CancelScope(shield=True)
        self._shields.add(scope)
        try:
            with scope:
                yield
        finally:
            self._shields.discard(scope)

    def abort(self) -> None:
        """Stop, and cut short the submits on the wire."""
        self.stopping = True
        for scope in list(self._shields):
            scope.cancel()

    def stop(self) -> None:
        """Send no more submits."""
        self.stopping = True
        if self._on_the_wire == 0:
            self._settled.set()

    async def settled(self) -> None:
        """Return once no submit is on the wire (after :meth:`stop`)."""
        await self._settled.wait()

    def refuse_if_stopping(self) -> None:
        """Hold a job back, unsent, once the run is stopping."""
        if self.stopping:
            raise HeldBack("not submitted: the run was stopped", "stopped")

    @asynccontextmanager
    async def on_the_wire(self) -> AsyncIterator[None]:
        """Around one submit attempt: refused once stopping, else counted until answered."""
        self.refuse_if_stopping()
        self._on_the_wire += 1
        try:
            yield
        finally:
            self._on_the_wire -= 1
            if self.stopping and self._on_the_wire == 0:
                self._settled.set()
