"""The emulator's core: an aiohttp.web server that hosts each provider's contract on its real paths.

It keeps what every provider needs — accepted keys, a sliding-window rate limit that answers
429 (and, for providers that have one, locks the key out after an overflow), a store of emulated
jobs whose status follows a (time-scaled) clock, and a CDN serving deterministic audio — and
counts every request, so tests can assert on what reached it. Faults a client must survive can
be injected per provider (``EmulatorConfig.faults``; see :mod:`.faults`).
"""

from __future__ import annotations

import bisect
import contextvars
import functools
import hashlib
import importlib
import json
import math
import pkgutil
import random
import resource
import ssl
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Literal

import anyio
from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from stableaudio_async.config import RateLimit, RetryPolicy, Settings, load_settings
from stableaudio_async.emulator.audio import CONTENT_TYPES, render_audio
from stableaudio_async.emulator.faults import FILE_PREFIX_NAMES, FaultInjector, FaultRates

__all__ = ["EmulatedJob", "EmulatedLimit", "Emulator", "EmulatorConfig", "ProviderStats",
           "Reading"]

#: A prompt holding one of these makes the emulated job end that way (for tests and CI users).
FAIL_MARKER = "emulator:fail"
ERROR_MARKER = "emulator:error"
#: A prompt holding this gets audio half as long as asked for (a provider cutting corners).
SHORT_MARKER = "emulator:short"


#: How a provider answers where its documentation allows two readings. ``strict`` follows the
#: documentation's letter and the official clients (fal answers 202 while a request is pending;
#: Pixazo's ``sync_mode`` submit holds and answers with the finished request, ``media_url`` a
#: list; WaveSpeed answers a failed prediction with HTTP 200). ``loose`` is the other reading
#: (fal 200 while pending; Pixazo queues a ``sync_mode`` request as any other and puts the
#: inline audio in the status body, ``media_url`` a plain string; WaveSpeed answers a failed
#: prediction with HTTP 500, the failed prediction in the envelope). Clients should survive
#: both; the engine's tests run both.
Reading = Literal["strict", "loose"]

#: When the request being handled reached the emulator (see ``Emulator._stamp_arrival``).
_arrival: contextvars.ContextVar[float] = contextvars.ContextVar("arrival")


class EmulatedLimit(BaseModel):
    """A provider's rate limit in emulated seconds: ``requests`` per ``period``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    requests: int = Field(ge=1)
    period: float = Field(gt=0)
    counts: Literal["submits", "all"] = "submits"


class EmulatorConfig(BaseModel):
    """How the emulator behaves. Durations are emulated seconds; real ones are × ``time_scale``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: Real seconds per emulated second: 0.01 runs everything a hundred times faster.
    time_scale: float = Field(default=1.0, gt=0)
    #: The only API key the emulator accepts (for every provider).
    api_key: str = "emulator-key"
    queue_time: float = Field(default=2.0, ge=0)
    #: Emulated generation time: a fixed part plus a part per second of requested audio.
    generation_time: float = Field(default=5.0, ge=0)
    generation_time_per_second: float = Field(default=0.0, ge=0)
    #: Spread of generation times: each job's is drawn uniformly within ± this fraction
    #: (seeded by ``fault_seed``), as real generation times vary with load and prompt.
    generation_jitter: float = Field(default=0.0, ge=0, lt=1)
    limits: dict[str, EmulatedLimit] = Field(
        default_factory=lambda: {
            "pixazo": EmulatedLimit(requests=10, period=1.0, counts="all"),
            "stability": EmulatedLimit(requests=150, period=10.0, counts="submits"),
            "wavespeed": EmulatedLimit(requests=60, period=60.0, counts="all"),
            "aimlapi": EmulatedLimit(requests=10, period=1.0, counts="all"),
            "replicate": EmulatedLimit(requests=600, period=60.0, counts="submits"),
        }
    )
    #: A second window for every request that is not a submit (Replicate: 3000 per minute).
    poll_limits: dict[str, EmulatedLimit] = Field(
        default_factory=lambda: {"replicate": EmulatedLimit(requests=3000, period=60.0)})
    #: Jobs a provider runs at once; more wait in its queue (fal, WaveSpeed's tiers).
    concurrency: dict[str, int] = Field(default_factory=dict)
    #: Emulated seconds a key is locked out (every request 429s) once its window overflows;
    #: providers absent here only refuse the overflowing requests themselves.
    lockouts: dict[str, float] = Field(default_factory=lambda: {"stability": 60.0})
    #: Accepted submissions per provider before it answers 402 (``None``: unlimited).
    balance: dict[str, int] = Field(default_factory=dict)
    #: Faults to inject, per provider (none by default: the faithful emulator).
    faults: dict[str, FaultRates] = Field(default_factory=dict)
    #: Seeds every fault decision, so that a run meets the same faults again.
    fault_seed: int = 0
    #: Render at most this many distinct pieces of audio (each job's prompt and seed pick
    #: one), cached once rendered, so that the CPU goes to serving rather than to synthesis:
    #: for benchmarks of many jobs. ``None``: every prompt and seed sounds different.
    audio_variants: int | None = Field(default=None, ge=1)
    #: The reading each provider is served in (see :data:`Reading`); ``"*"`` names every
    #: provider not listed by name. Absent: ``strict``.
    readings: dict[str, Reading] = Field(default_factory=dict)

    @field_validator("faults", "readings")
    @classmethod
    def _known_providers(cls, by_provider: dict[str, Any], info: ValidationInfo
                         ) -> dict[str, Any]:
        known = {getattr(m, "PROVIDER", None) for m in provider_modules()}
        if info.field_name == "readings":
            known.add("*")
        unknown = sorted(set(by_provider) - known)
        if unknown:
            raise ValueError(f"no emulated provider named {', '.join(unknown)}")
        return by_provider

    def reading(self, provider: str) -> Reading:
        """The reading ``provider`` is served in."""
        return self.readings.get(provider, self.readings.get("*", "strict"))


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


def _scaled_retry(policy: RetryPolicy, scale: float) -> RetryPolicy:
    """Backoff between retries on the emulator's clock, so faults cost scaled time too."""
    return policy.model_copy(update={"initial": policy.initial * scale,
                                     "max": policy.max * scale})


def provider_modules() -> list[ModuleType]:
    """The emulator's provider modules (each with ``add_routes``), in name order."""
    package = importlib.import_module("stableaudio_async.emulator")
    modules = []
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        if callable(getattr(module, "add_routes", None)):
            modules.append(module)
    return modules


class Emulator:
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
        self.config = config or EmulatorConfig()
        #: Serve over TLS with this context (for clients that only speak https, as
        #: fal-client's queue does); None serves plain http.
        self.ssl_context = ssl_context
        #: Every time the emulator keeps (job phases, windows, lockouts, URL expiry) is on this
        #: clock: a test may drive it by hand to force an outcome whatever the machine's speed.
        self.clock = clock
        self.host = host
        self.port = port
        self.stats: dict[str, ProviderStats] = {}
        self.jobs: dict[str, EmulatedJob] = {}
        self._windows: dict[tuple[str, str], _Window] = {}
        #: Real (monotonic) time each locked-out (provider, key) is let in again.
        self._locked_until: dict[tuple[str, str], float] = {}
        self._runner: web.AppRunner | None = None
        self.faults = FaultInjector(self)
        self._generation_rand = random.Random(self.config.fault_seed)
        self._render_slots: anyio.CapacityLimiter | None = None
        self.app = self._build_app()

    # -- lifecycle ---------------------------------------------------------------------------

    def _build_app(self) -> web.Application:
        # Above every provider's own request limit (Stability's 50 MB is the largest), so that
        # the provider modules, not aiohttp, decide what is too large.
        app = web.Application(client_max_size=64 * 1024**2,
                              middlewares=[self._stamp_arrival, self.faults.middleware()])
        cdn = app.router.add_get("/cdn/{provider}/{name}", self._cdn)
        self.faults.register([cdn], None, ())
        app.router.add_get("/_emulator/stats", self._stats)
        app.router.add_get("/_emulator/jobs", self._jobs)
        app.router.add_get("/_emulator/process", self._process)
        app.router.add_post("/_emulator/lockout", self._lockout)
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

    @web.middleware
    async def _stamp_arrival(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        # First thing, before faults, auth or any parsing: the time the rate limit judges a
        # request by should be as close to its arrival as this process can tell.
        _arrival.set(self.now())
        return await handler(request)

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

    # -- shared services for the provider modules -------------------------------------------

    def now(self) -> float:
        return self.clock()

    def lock_out(self, provider: str, seconds: float | None = None, *,
                 key: str | None = None) -> float:
        """Lock ``key`` (default: the emulator's own) out of ``provider`` now, as an overflow of
        its window would: every request of that key 429s until the lockout ends. ``seconds``
        are real ones, by default the provider's configured lockout, scaled. Returns the
        (:meth:`now`) time the key is let in again. Counted in ``ProviderStats.lockouts``.
        """
        if seconds is None:
            lockout = self.config.lockouts.get(provider)
            if lockout is None:
                raise ValueError(f"{provider} has no lockout configured: give seconds")
            seconds = lockout * self.config.time_scale
        until = self.now() + seconds
        self._locked_until[(provider, key or self.config.api_key)] = until
        self.provider_stats(provider).lockouts += 1
        return until

    def provider_stats(self, provider: str) -> ProviderStats:
        stats = self.stats.get(provider)
        if stats is None:
            stats = self.stats[provider] = ProviderStats()
        return stats

    def admit(self, provider: str, key: str, *, submit: bool) -> float | None:
        """Count a request against the provider's window; the wait in real seconds if refused.

        A provider with a lockout configured locks the key out when its window overflows:
        until the lockout ends every request of that key is refused (and not counted), even
        those the window would have room for, and whether or not they are submits.
        """
        limit = self.config.limits.get(provider) or self.config.poll_limits.get(provider)
        if limit is None:
            return None
        now = _arrival.get(None) or self.now()
        stats = self.provider_stats(provider)
        locked_until = self._locked_until.get((provider, key))
        if locked_until is not None:
            if now < locked_until:
                stats.rate_limited += 1
                return locked_until - now
            del self._locked_until[(provider, key)]
        if limit.counts == "submits" and not submit:
            limit = self.config.poll_limits.get(provider)
            if limit is None:
                return None
        name = provider if limit is self.config.limits.get(provider) else f"{provider}:other"
        window = self._windows.get((name, key))
        if window is None:
            window = self._windows[(name, key)] = _Window(
                limit.requests, limit.period * self.config.time_scale)
        wait = window.admit(now)
        if wait is None:
            bisect.insort(stats.counted_at, now)  # in arrival order, as it is judged
            return None
        stats.rate_limited += 1
        lockout = self.config.lockouts.get(provider)
        if lockout is not None:
            stats.lockouts += 1
            wait = lockout * self.config.time_scale
            self._locked_until[(provider, key)] = now + wait
        return wait

    def has_balance(self, provider: str) -> bool:
        """Whether another submission may be accepted before the account runs dry."""
        balance = self.config.balance.get(provider)
        return balance is None or self.provider_stats(provider).accepted < balance

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

    async def wait_until_done(self, job: EmulatedJob) -> None:
        """Hold a synchronous request until the job's generation time has passed."""
        delay = job.done_at - self.now()
        if delay > 0:
            await anyio.sleep(delay)

    def observe(self, job: EmulatedJob) -> None:
        """Count a status request for ``job``; note when one first finds it done."""
        job.polls += 1
        if job.seen_done_at is None and self.phase(job) == "DONE":
            job.seen_done_at = self.now()

    def phase(self, job: EmulatedJob) -> Literal["QUEUED", "PROCESSING", "DONE"]:
        now = self.now()
        if now < job.queued_until:
            return "QUEUED"
        if now < job.done_at:
            return "PROCESSING"
        return "DONE"

    def cdn_url(self, request: web.Request, job: EmulatedJob) -> str:
        """The job's file on the shared CDN; signed to expire if the provider's URLs do."""
        fmt = str(job.params.get("output_format") or "mp3")
        name = f"{job.request_id}.{fmt}"
        url = f"{request.scheme}://{request.host}/cdn/{job.provider}/{name}"
        query = self.faults.signed_query(job.provider, name)
        return url if query is None else f"{url}?{query}"

    def render(self, job: EmulatedJob) -> tuple[bytes, str]:
        """The job's audio file and its content type; records its checksum as served."""
        data, content_type = self.audio(job)
        self.provider_stats(job.provider).served[job.request_id] = hashlib.sha256(data).hexdigest()
        return data, content_type

    async def render_off_loop(self, job: EmulatedJob) -> tuple[bytes, str]:
        """:meth:`render` in a worker thread, so the event loop goes on serving meanwhile."""
        return await anyio.to_thread.run_sync(self.render, job, limiter=self._renders())

    async def audio_off_loop(self, job: EmulatedJob) -> tuple[bytes, str]:
        """:meth:`audio` in a worker thread, as :meth:`render_off_loop`."""
        return await anyio.to_thread.run_sync(self.audio, job, limiter=self._renders())

    def _renders(self) -> anyio.CapacityLimiter:
        # One render at a time. Synthesis is Python code holding the GIL, so more threads
        # would not render faster; they would only starve the event loop thread of the GIL,
        # delaying the stamps the rate limit is judged by (by a quarter of a second and more
        # on a busy 2-core machine: a false 429, which on Stability is a 60 s lockout).
        if self._render_slots is None:
            self._render_slots = anyio.CapacityLimiter(1)
        return self._render_slots

    def audio(self, job: EmulatedJob) -> tuple[bytes, str]:
        """The job's audio file and its content type (deterministic in the job's parameters)."""
        fmt = str(job.params.get("output_format") or "mp3")
        bitrate = job.params.get("bitrate")
        kbps = int(str(bitrate).rstrip("kK")) if bitrate else None
        seed = job.params.get("seed")
        duration = float(job.params.get("duration") or 30)
        if SHORT_MARKER in job.prompt:
            duration /= 2
        seed = seed if isinstance(seed, int) else None
        variants = self.config.audio_variants
        if variants is None:
            data = render_audio(job.prompt, seed, duration, fmt, bitrate_kbps=kbps)
        else:
            key = hashlib.sha256(json.dumps([job.prompt, seed]).encode()).digest()
            variant = int.from_bytes(key[:8], "big") % variants
            data = _render_variant(variant, duration, fmt, kbps)
        return data, CONTENT_TYPES[fmt]

    def summary(self) -> dict[str, dict[str, Any]]:
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
            for name, s in sorted(self.stats.items())
        }

    async def _stats(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.summary())

    def job_timings(self) -> list[dict[str, Any]]:
        """Every accepted job's timeline, as served by ``GET /_emulator/jobs``: when it was
        accepted (the emulator's monotonic clock), and in real seconds from then, when it was
        done and when a status request first found it done (``None`` if none has yet), with
        how many status requests it had."""
        return [
            {"provider": job.provider, "request_id": job.request_id, "accepted_at": job.created,
             "done_after": job.done_at - job.created, "polls": job.polls,
             "seen_after": None if job.seen_done_at is None else job.seen_done_at - job.created}
            for job in self.jobs.values()
        ]

    async def _jobs(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.job_timings())

    async def _lockout(self, request: web.Request) -> web.StreamResponse:
        # For users driving an emulator in its own process: {"provider": …, "seconds": …}.
        try:
            body = await request.json()
            provider, seconds = str(body["provider"]), body.get("seconds")
            if seconds is not None and not (isinstance(seconds, int | float)
                                            and 0 < seconds < math.inf):
                raise ValueError("seconds must be a positive number")
            until = self.lock_out(provider, None if seconds is None else float(seconds))
        except (ValueError, KeyError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"provider": provider, "seconds": until - self.now()})

    async def _process(self, request: web.Request) -> web.StreamResponse:
        # The emulator's own cost, so a benchmark can show it is not the bottleneck.
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return web.json_response({"cpu_seconds": usage.ru_utime + usage.ru_stime,
                                  "max_rss_kb": usage.ru_maxrss})

    # -- the CDN -----------------------------------------------------------------------------

    async def _cdn(self, request: web.Request) -> web.StreamResponse:
        # Ranges and download faults are applied on the way out, by the faults' middleware.
        provider = request.match_info["provider"]
        name = request.match_info["name"]
        request_id, _, _ext = name.rpartition(".")
        job = self.jobs.get(request_id)
        if job is None or job.provider != provider or self.phase(job) != "DONE" \
                or job.outcome != "COMPLETED":
            return web.Response(status=404, text="Not Found")
        stats = self.provider_stats(provider)
        if self.faults.url_expired(provider, name, request):
            stats.errors[403] += 1
            stats.injected["url_expiry"] += 1
            return web.Response(status=403, text="Forbidden: the signed URL has expired")
        stats.downloads += 1
        # Rendered off the event loop, so that the stamps the rate limit is judged by are not
        # delayed by the CDN's CPU work.
        data, content_type = await self.render_off_loop(job)
        return web.Response(body=data, content_type=content_type)


@functools.lru_cache(maxsize=16)
def _render_variant(variant: int, duration: float, fmt: str, kbps: int | None) -> bytes:
    """One of a bounded set of renders (``EmulatorConfig.audio_variants``), kept once made."""
    return render_audio(f"variant {variant}", variant, duration, fmt, bitrate_kbps=kbps)


def retry_after_header(wait: float, time_scale: float) -> str:
    """Retry-After in whole seconds, as HTTP has it; fractional only on a scaled clock."""
    if time_scale >= 1:
        return str(max(1, math.ceil(wait)))
    return f"{wait:.3f}"
