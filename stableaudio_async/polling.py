"""One job's status loop: poll with capped exponential backoff and jitter until final or the deadline."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable

import aiohttp
import anyio
import structlog

from stableaudio_async.config import PollPolicy
from stableaudio_async.errors import DeadlineExceededError, ProviderError, RateLimitedError
from stableaudio_async.http import send
from stableaudio_async.models import Failed, Ready, RemoteHandle, RemoteStatus, Succeeded
from stableaudio_async.providers.base import Adapter
from stableaudio_async.ratelimit import RateLimiter, slot
from stableaudio_async.retry import backoff_delay, should_retry

__all__ = ["fetch_status", "poll_until_done"]

log = structlog.get_logger(__name__)


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
) -> AsyncIterator[RemoteStatus]:
    """Yield each new status of ``handle`` until it is final (the last one yielded).

    A :class:`Ready` status is followed at once by fetching the result. Waits ``initial``,
    then ``initial * factor``, … up to ``max`` seconds between polls, each
    shortened by up to ``jitter``. Every poll first takes a slot from ``limiter`` (pass the
    provider's limiter only when it counts polls). Transient errors are retried on the same
    schedule; a 429 pauses the whole limiter for its Retry-After. ``on_outcome`` hears of
    every poll's success (``None``) or error, for circuit breaking and adaptive pacing. Past ``deadline`` (a
    time on :func:`anyio.current_time`'s clock) :class:`DeadlineExceededError` is raised.
    """
    last: RemoteStatus = handle.status
    attempt = 0
    while True:
        now = anyio.current_time()
        if now >= deadline:
            raise DeadlineExceededError(
                f"no final status within the job deadline (last: {type(last).__name__.lower()})",
                provider=adapter.name, job_id=job_id, request_id=handle.request_id,
            )
        delay = backoff_delay(attempt, initial=policy.initial, maximum=policy.max,
                              factor=policy.factor, jitter=policy.jitter, rand=rand)
        # The last poll happens at the deadline rather than after it.
        await anyio.sleep(min(delay, deadline - now))
        attempt += 1
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
        if status != last:
            last = status
            yield status
        if isinstance(status, Succeeded | Failed):
            return
