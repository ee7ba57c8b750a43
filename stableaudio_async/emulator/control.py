"""The emulator's own routes under ``/_emulator/``: its counters, job timelines, process cost, and
lockouts on demand, for users and benchmarks driving an emulator in its own process.
"""

from __future__ import annotations

import math
import resource
from typing import Any

from aiohttp import web

from stableaudio_async.emulator.limits import RateLimits
from stableaudio_async.emulator.state import EmulatorState

__all__ = ["add_control_routes", "job_timings", "summary"]


def summary(state: EmulatorState) -> dict[str, dict[str, Any]]:
    """Per-provider counters, as served by ``GET /_emulator/stats``."""
    return {
        name: {
            "requests": s.requests, "submits": s.submits, "accepted": s.accepted,
            "polls": s.polls, "downloads": s.downloads, "rate_limited": s.rate_limited,
            "cancelled": s.cancelled,
            "lockouts": s.lockouts,
            "duplicate_submissions": s.duplicate_submissions,
            # From the first accepted submission to the last: the busy period's length.
            "busy_seconds": s.accepted_at[-1] - s.accepted_at[0] if s.accepted_at else 0.0,
            "errors": {str(k): v for k, v in sorted(s.errors.items())},
            "injected": dict(sorted(s.injected.items())),
            "injected_429": s.injected_429,
        }
        for name, s in sorted(state.stats.items())
    }


def job_timings(state: EmulatorState) -> list[dict[str, Any]]:
    """Every accepted job's timeline, as served by ``GET /_emulator/jobs``: when it was
    accepted (the emulator's monotonic clock), and in real seconds from then, when it was
    done and when a status request first found it done (``None`` if none has yet), with
    how many status requests it had."""
    return [
        {"provider": job.provider, "request_id": job.request_id, "accepted_at": job.created,
         "done_after": job.done_at - job.created, "polls": job.polls,
         "seen_after": None if job.seen_done_at is None else job.seen_done_at - job.created}
        for job in state.jobs.values()
    ]


def add_control_routes(app: web.Application, state: EmulatorState, limits: RateLimits) -> None:
    """Add the ``/_emulator/`` routes to ``app``."""

    async def stats(request: web.Request) -> web.StreamResponse:
        return web.json_response(summary(state))

    async def jobs(request: web.Request) -> web.StreamResponse:
        return web.json_response(job_timings(state))

    async def process(request: web.Request) -> web.StreamResponse:
        # The emulator's own cost, so a benchmark can show it is not the bottleneck.
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return web.json_response({"cpu_seconds": usage.ru_utime + usage.ru_stime,
                                  "max_rss_kb": usage.ru_maxrss})

    async def lockout(request: web.Request) -> web.StreamResponse:
        # {"provider": …, "seconds": …}; seconds absent: the provider's configured lockout.
        try:
            body = await request.json()
            provider, seconds = str(body["provider"]), body.get("seconds")
            if seconds is not None and not (isinstance(seconds, int | float)
                                            and 0 < seconds < math.inf):
                raise ValueError("seconds must be a positive number")
            until = limits.lock_out(provider, None if seconds is None else float(seconds))
        except (ValueError, KeyError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"provider": provider, "seconds": until - state.now()})

    app.router.add_get("/_emulator/stats", stats)
    app.router.add_get("/_emulator/jobs", jobs)
    app.router.add_get("/_emulator/process", process)
    app.router.add_post("/_emulator/lockout", lockout)
