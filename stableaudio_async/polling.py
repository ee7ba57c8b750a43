"""One job's status loop: poll where the provider's jobs are likely to finish (learned from the
jobs before it), else with capped exponential backoff, with jitter, until final or the deadline."""

from __future__ import annotations

import bisect
import random
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import anyio

from stableaudio_async.config import PollPolicy
from stableaudio_async.errors import DeadlineExceededError, ProviderError, RateLimitedError
from stableaudio_async.http import send
from stableaudio_async.logs import get_logger
from stableaudio_async.models import Failed, Ready, RemoteHandle, RemoteStatus, Succeeded
from stableaudio_async.providers.base import Adapter
from stableaudio_async.ratelimit import RateLimiter, slot
from stableaudio_async.retry import backoff_delay, should_retry

__all__ = ["CompletionTimes", "fetch_status", "poll_until_done"]

log = get_logger(__name__)


class CompletionTimes:
    """How long one provider's jobs take from submission to done, learned as they finish.

    Each finished job adds one observation: the midpoint between its last poll that found it
    unfinished and the first that found it done. :meth:`next_poll` places polls at the deciles
    of the latest ``window`` observations, at least ``min_gap`` seconds apart, so that every
    poll has about the same chance of finding the job done and the detection delay stays near
    ``min_gap / 2`` however long generation takes. Until ``min_samples`` jobs have finished
    (one by default: the first completion already tells the jobs still waiting that theirs
    is near), ``prior`` (a documented typical time, if any) is the only observation; with
    ``learn`` false it always is.
    """

    #: The fractions of completion times polls are placed at.
    QUANTILES = tuple(q / 10 for q in range(1, 11))

    def __init__(self, prior: float | None = None, *, min_gap: float = 1.0, window: int = 64,
                 min_samples: int = 1, learn: bool = True) -> None:
        self.prior = prior
        self.min_gap = min_gap
        self.min_samples = min_samples
        self.learn = learn
        self._recent: deque[float] = deque(maxlen=window)
        self._targets: list[float] | None = None

    def record(self, not_done_at: float, done_at: float) -> None:
        """Note a job found unfinished ``not_done_at`` and done ``done_at`` seconds after
        its submission. Ignored when not learning."""
        if not self.learn:
            return
        self._recent.append((not_done_at + done_at) / 2)
        self._targets = None

    def targets(self, prior: float | None = None) -> list[float]:
        """Seconds after submission to poll at, before backing off; empty: nothing known.

        ``prior`` is one job's own expected time (it scales with the audio asked for); it
        stands in for the provider's until something has been learned.
        """
        if len(self._recent) < self.min_samples:
            prior = self.prior if prior is None else prior
            return [] if prior is None else [prior]
        if self._targets is None:
            ordered = sorted(self._recent)
            last = len(ordered) - 1
            self._targets = sorted({ordered[round(q * last)] for q in self.QUANTILES})
        return self._targets

    def next_poll(self, elapsed: float, polled: bool, prior: float | None = None
                  ) -> float | None:
        """Seconds after submission for the next poll of a job ``elapsed`` seconds old, or
        ``None`` once it is past every target (the caller backs off). ``polled`` says whether
        the job has been polled yet: the gap from the last poll is kept only after one.
        ``prior`` as in :meth:`targets`."""
        targets = self.targets(prior)
        earliest = elapsed + self.min_gap if polled else elapsed
        index = bisect.bisect_right(targets, elapsed)
        if index == len(targets):
            return None
        return max(targets[index], earliest)


async def fetch_status(
    session: aiohttp.ClientSession,
    adapter: Adapter,
    handle: RemoteHandle,
    *,
    limiter: RateLimiter | None,
    request_timeout: float,
) -> RemoteStatus:
    """Ask once for the job's status; a :class:`Ready` one is followed by fetching the result."""
    async with slot(limiter) as sent:
        reply = await send(session, adapter.poll_request(handle), provider=adapter.name,
                           total_timeout=request_timeout, on_sent=sent)
    status = adapter.parse_poll(reply, handle)
    if isinstance(status, Ready):
        # Done remotely; the result lives at its own URL (fal's response_url).
        async with slot(limiter) as sent:
            reply = await send(session, adapter.result_request(handle), provider=adapter.name,
                               total_timeout=request_timeout, on_sent=sent)
        status = adapter.parse_result(reply, handle)
    return status


async def poll_until_done(
    session: aiohttp.ClientSession,
    adapter: Adapter,
    handle: RemoteHandle,
    *,
    policy: PollPolicy,
    deadline: float,
    limiter: RateLimiter | None,
    request_timeout: float,
    rand: Callable[[], float] = random.random,
    job_id: str | None = None,
    on_outcome: Callable[[ProviderError | None], None] | None = None,
    times: CompletionTimes | None = None,
    prior: float | None = None,
    clock: Callable[[], float] = anyio.current_time,
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
) -> AsyncIterator[RemoteStatus]:
    """Yield each new status of ``handle`` until it is final (the last one yielded).

    A :class:`Ready` status is followed at once by fetching the result. With ``times`` (the
    provider's :class:`CompletionTimes`), polls go where its jobs finish and a success is
    recorded there; past those, or without them, waits ``initial`` (``near_interval`` past
    learned times), then that times ``factor``, … up to ``max`` seconds between polls, each
    shortened by up to ``jitter``; ``prior`` is this job's expected time until something is
    learned (see :meth:`CompletionTimes.targets`). Every poll first takes a slot from ``limiter`` (pass the
    provider's limiter only when it counts polls). Transient errors are retried on the same
    schedule; a 429 pauses the whole limiter for its Retry-After. ``on_outcome`` hears of
    every poll's success (``None``) or error, for circuit breaking and adaptive pacing. Past
    ``deadline`` (a time on ``clock``, by default :func:`anyio.current_time`)
    :class:`DeadlineExceededError` is raised. ``clock`` and ``sleep`` are injectable so that
    a test can run the schedule on a fake clock, whatever the machine's speed.
    """
    last: RemoteStatus = handle.status
    start = clock()
    attempt = 0
    # Polls since the job outlived every learned target: the backoff restarts from there.
    overdue = 0
    not_done_at = 0.0
    while True:
        now = clock()
        if now >= deadline:
            raise DeadlineExceededError(
                f"no final status within the job deadline (last: {type(last).__name__.lower()})",
                provider=adapter.name, job_id=job_id, request_id=handle.request_id,
            )
        target = times.next_poll(now - start, attempt > 0, prior) if times is not None else None
        if target is not None:
            # Spread by a fraction of the gap between polls, not of the wait: a long-awaited
            # poll shortened by a tenth would land well before the job is likely done.
            delay = max(0.0, start + target - now - policy.jitter * policy.near_interval * rand())
        elif times is not None and times.targets(prior):
            delay = backoff_delay(overdue, initial=policy.near_interval, maximum=policy.max,
                                  factor=policy.factor, jitter=policy.jitter, rand=rand)
            overdue += 1
        else:
            delay = backoff_delay(attempt, initial=policy.initial, maximum=policy.max,
                                  factor=policy.factor, jitter=policy.jitter, rand=rand)
        if attempt == 0:
            # What a user asks first when results seem slow: how long before the first look.
            log.debug("poll.first", provider=adapter.name, job_id=job_id,
                      request_id=handle.request_id, wait=round(delay, 4), prior=prior)
        # The last poll happens at the deadline rather than after it.
        await sleep(min(delay, deadline - now))
        attempt += 1
        polled_at = clock() - start
        try:
            status = await fetch_status(session, adapter, handle, limiter=limiter,
                                        request_timeout=request_timeout)
        except ProviderError as exc:
            exc.with_context(job_id=job_id, request_id=handle.request_id)
            if on_outcome is not None:
                on_outcome(exc)
            if not should_retry("poll", exc):
                raise
            if isinstance(exc, RateLimitedError) and limiter is not None and exc.retry_after:
                limiter.pause(exc.retry_after)
            log.warning("poll.retry_scheduled", provider=adapter.name, job_id=job_id,
                        request_id=handle.request_id, error=str(exc))
            continue
        if on_outcome is not None:
            on_outcome(None)
        if isinstance(status, Succeeded):
            if times is not None:
                # Found done at its first poll, a job only says it took no longer than that:
                # taking the midpoint with submission would pull the learned times down, and
                # every later first poll earlier, one batch after another.
                times.record(not_done_at if not_done_at else polled_at, polled_at)
        elif not isinstance(status, Failed):
            not_done_at = polled_at
        if status != last:
            last = status
            yield status
        if isinstance(status, Succeeded | Failed):
            return
