"""The emulator itself: an aiohttp.web server hosting each provider's contract on its real paths.

:class:`Emulator` wires the parts, each in its own module — the config (:mod:`.config`), its
state, jobs and counters (:mod:`.state`), the rate limits (:mod:`.limits`), the faults
(:mod:`.faults`), the shared CDN (:mod:`.cdn`), its own ``/_emulator/`` routes
(:mod:`.control`) and one module per provider, each behind the request pipeline
(:mod:`.pipeline`) — and owns the server's lifecycle, the acceptance of jobs, and the client
settings that point the engine at it. Every request is counted, so tests can assert on what
reached it.
"""

from __future__ import annotations

import hashlib
import random
import ssl
import time
import uuid
from collections.abc import Callable
from typing import Any, Literal

from aiohttp import web

from stableaudio_async.config import RateLimit, RetryPolicy, Settings, load_settings
from stableaudio_async.emulator.cdn import Cdn
from stableaudio_async.emulator.config import (
    EmulatedLimit,
    EmulatorConfig,
    Reading,
    provider_modules,
)
from stableaudio_async.emulator.control import add_control_routes, job_timings, summary
from stableaudio_async.emulator.faults import FILE_PREFIX_NAMES, FaultInjector
from stableaudio_async.emulator.limits import RateLimits
from stableaudio_async.emulator.state import (
    ERROR_MARKER,
    FAIL_MARKER,
    SHORT_MARKER,
    EmulatedJob,
    EmulatorState,
    ProviderStats,
    retry_after_header,
)

# The names below the emulator's own were defined here once, and are still importable from here.
__all__ = ["ERROR_MARKER", "FAIL_MARKER", "SHORT_MARKER", "EmulatedJob", "EmulatedLimit",
           "Emulator", "EmulatorConfig", "ProviderStats", "Reading", "provider_modules",
           "retry_after_header"]


def _scaled_retry(policy: RetryPolicy, scale: float) -> RetryPolicy:
    """Backoff between retries on the emulator's clock, so faults cost scaled time too."""
    return policy.model_copy(update={"initial": policy.initial * scale,
                                     "max": policy.max * scale})


class Emulator(EmulatorState):
    """The provider emulator, runnable in-process (``async with``) or as a server (CLI).

    ::

        async with Emulator(EmulatorConfig(time_scale=0.01)) as emu:
            settings = emu.client_settings()     # every provider pointed at the emulator
            ...
            assert emu.stats["pixazo"].rate_limited == 0
    """

    def __init__(self, config: EmulatorConfig | None = None, *, host: str = "127.0.0.1",
                 port: int = 0, clock: Callable[[], float] = time.monotonic,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        super().__init__(config or EmulatorConfig(), clock)
        #: Serve over TLS with this context (for clients that only speak https, as
        #: fal-client's queue does); None serves plain http.
        self.ssl_context = ssl_context
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None
        self.limits = RateLimits(self)
        self.faults = FaultInjector(self)
        self.cdn = Cdn(self, self.faults)
        self._generation_rand = random.Random(self.config.fault_seed)
        self.app = self._build_app()

    # -- lifecycle ---------------------------------------------------------------------------

    def _build_app(self) -> web.Application:
        # Above every provider's own request limit (Stability's 50 MB is the largest), so that
        # the provider modules, not aiohttp, decide what is too large.
        app = web.Application(client_max_size=64 * 1024**2,
                              middlewares=[self.limits.stamp_arrival, self.faults.middleware()])
        cdn = app.router.add_get(Cdn.PATH, self.cdn.serve)
        self.faults.register([cdn], None, ())
        add_control_routes(app, self, self.limits)
        # Every provider on its real paths, one port for all: a provider is a module here
        # with an `add_routes(app, emulator)`. The routes each adds are recorded as its own,
        # for the faults; those under a MEDIA_PREFIX or DELIVERY_PREFIX it names serve files.
        for module in provider_modules():
            before = set(app.router.routes())
            module.add_routes(app, self)
            added = [route for route in app.router.routes() if route not in before]
            prefixes = [prefix for name in FILE_PREFIX_NAMES
                        if isinstance(prefix := getattr(module, name, None), str)]
            self.faults.register(added, getattr(module, "PROVIDER", None), prefixes)
        return app

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start serving on ``host:port`` (port 0 picks a free one; see :attr:`url`)."""
        # A short shutdown: held (synchronous) requests are abandoned, as a killed server would.
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False,
                                     shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, backlog=1024,
                           ssl_context=self.ssl_context)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        """The base URL every provider is served under."""
        scheme = "http" if self.ssl_context is None else "https"
        return f"{scheme}://{self.host}:{self.port}"

    def client_settings(self, base: Settings | None = None, *, margin: float | None = None,
                        min_margin: float | None = None, poll_timeout: float = 600.0
                        ) -> Settings:
        """Settings that point every provider at this emulator, on its time scale.

        Rate limits (with their lockouts) and poll intervals are the emulator's own, scaled to
        real seconds, so a client using them paces as it would against the real provider.
        ``margin`` and ``min_margin`` default to the provider's configured ones; note that
        ``min_margin`` is in real seconds and is *not* scaled, because the jitter it absorbs
        is not.
        """
        base = base or load_settings(env={})
        scale = self.config.time_scale
        providers = {}
        for name, provider in base.providers.items():
            poll = provider.poll
            providers[name] = provider.model_copy(update={
                "base_url": self.url,
                "rate_limit": self._scaled(self.config.limits.get(name), provider.rate_limit,
                                           self.config.lockouts.get(name), margin, min_margin),
                "poll_rate_limit": self._scaled(self.config.poll_limits.get(name),
                                                provider.poll_rate_limit, None, margin,
                                                min_margin),
                "poll": poll.model_copy(update={
                    "initial": poll.initial * scale, "max": poll.max * scale,
                    "near_interval": poll.near_interval * scale,
                    "expected": None if poll.expected is None else poll.expected * scale,
                    "expected_per_second": None if poll.expected_per_second is None
                    else poll.expected_per_second * scale,
                    "timeout": poll_timeout * scale}),
                "circuit": provider.circuit.model_copy(update={
                    "cooldown": provider.circuit.cooldown * scale,
                    "max_cooldown": provider.circuit.max_cooldown * scale}),
                "retry": _scaled_retry(provider.retry, scale),
            })
        download = base.download.model_copy(
            update={"retry": _scaled_retry(base.download.retry, scale)})
        return base.model_copy(update={"providers": providers, "download": download})

    def _scaled(self, limit: EmulatedLimit | None, configured: RateLimit | None,
                lockout: float | None, margin: float | None, min_margin: float | None
                ) -> RateLimit | None:
        """The client's view of one of this emulator's limits, in real seconds."""
        if limit is None:
            return None
        scale = self.config.time_scale
        configured = configured or RateLimit(requests=1, period=1.0)
        return RateLimit(
            requests=limit.requests, period=limit.period * scale, counts=limit.counts,
            margin=configured.margin if margin is None else margin,
            min_margin=configured.min_margin if min_margin is None else min_margin,
            lockout=None if lockout is None else lockout * scale)

    # -- the services the provider modules share ----------------------------------------------

    def admit(self, provider: str, key: str, *, submit: bool) -> float | None:
        """Count a request against the provider's window (:meth:`RateLimits.admit`)."""
        return self.limits.admit(provider, key, submit=submit)

    def lock_out(self, provider: str, seconds: float | None = None, *,
                 key: str | None = None) -> float:
        """Lock a key out of ``provider`` now (:meth:`RateLimits.lock_out`)."""
        return self.limits.lock_out(provider, seconds, key=key)

    def create_job(self, provider: str, model: str, params: dict[str, Any], body: bytes,
                   *, request_id: str | None = None) -> EmulatedJob:
        """Accept a job: record it and schedule its phases on the scaled clock.

        ``request_id`` is the provider's id for it (default ``<model>_<uuid>``).
        """
        stats = self.provider_stats(provider)
        stats.accepted += 1
        now = self.now()
        stats.accepted_at.append(now)
        digest = hashlib.sha256(body).hexdigest()
        stats.bodies[digest] += 1
        cfg = self.config
        duration = float(params.get("duration") or 0)
        queue = cfg.queue_time * cfg.time_scale
        generation = (cfg.generation_time + cfg.generation_time_per_second * duration
                      ) * cfg.time_scale
        if cfg.generation_jitter:
            generation *= 1 + cfg.generation_jitter * (2 * self._generation_rand.random() - 1)
        prompt = str(params.get("prompt", ""))
        outcome: Literal["COMPLETED", "FAILED", "ERROR"] = "COMPLETED"
        if FAIL_MARKER in prompt:
            outcome = "FAILED"
        elif ERROR_MARKER in prompt:
            outcome = "ERROR"
        elif (forced := self.faults.job_outcome(provider, digest, stats.bodies[digest])) \
                is not None:
            outcome = forced
            stats.injected[f"job_{forced.lower()}"] += 1
        job = EmulatedJob(provider=provider, request_id=request_id or f"{model}_{uuid.uuid4()}",
                          model=model,
                          params=params, created=now, queued_until=now + queue,
                          done_at=now + queue + generation, outcome=outcome)
        self.jobs[job.request_id] = job
        return job

    def cdn_url(self, request: web.Request, job: EmulatedJob) -> str:
        """The job's file on the shared CDN (:meth:`Cdn.url`)."""
        return self.cdn.url(request, job)

    def render(self, job: EmulatedJob) -> tuple[bytes, str]:
        """The job's audio file and its content type, recorded as served (:meth:`Cdn.render`)."""
        return self.cdn.render(job)

    async def render_off_loop(self, job: EmulatedJob) -> tuple[bytes, str]:
        """:meth:`render` in a worker thread, so the event loop goes on serving meanwhile."""
        return await self.cdn.render_off_loop(job)

    def audio(self, job: EmulatedJob) -> tuple[bytes, str]:
        """The job's audio file and its content type, not recorded (:meth:`Cdn.audio`)."""
        return self.cdn.audio(job)

    async def audio_off_loop(self, job: EmulatedJob) -> tuple[bytes, str]:
        """:meth:`audio` in a worker thread, as :meth:`render_off_loop`."""
        return await self.cdn.audio_off_loop(job)

    # -- what reached it ---------------------------------------------------------------------

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per-provider counters, as served by ``GET /_emulator/stats``."""
        return summary(self)

    def job_timings(self) -> list[dict[str, Any]]:
        """Every accepted job's timeline, as served by ``GET /_emulator/jobs``
        (:func:`.control.job_timings`)."""
        return job_timings(self)
