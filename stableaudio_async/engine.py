"""Wires adapters, limiters, polling and downloads into a batch run; owns the task group.

A job's life: wait for a free slot (``max_in_flight``) and a rate-limit slot, submit, poll
until final, release the slot, download, append to the manifest. Whatever happens to one
job ends as a failed :class:`JobResult`; it never cancels the others.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import math
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self, TypeVar
from urllib.parse import urlsplit

import aiohttp
import anyio
import structlog
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectSendStream

from stableaudio_async.audiocheck import check_audio
from stableaudio_async.batch import LocatedJob, check_jobs, drop_unsupported
from stableaudio_async.budget import USD_PER_UNIT, Budget, price_usd
from stableaudio_async.config import PollPolicy, ProviderSettings, RetryPolicy, Settings
from stableaudio_async.download import (
    TEMP_SUFFIX,
    AtomicWriter,
    WrittenFile,
    fetch_audio,
    fetch_into,
    write_body,
)
from stableaudio_async.errors import (
    AudioInvalidError,
    AuthenticationError,
    ConfigError,
    ContentRejectedError,
    DeadlineExceededError,
    DownloadError,
    InsufficientBalanceError,
    InvalidBatchError,
    JobFailedError,
    ProviderError,
    ProviderUnavailableError,
    RateLimitedError,
)
from stableaudio_async.http import (
    HttpRequest,
    open_reply,
    read_reply,
    send,
    send_tracing,
    translate_errors,
)
from stableaudio_async.journal import JobRecord, JobState, JobStore, Journal
from stableaudio_async.manifest import Manifest
from stableaudio_async.models import (
    AudioSource,
    AudioURL,
    Failed,
    Job,
    JobResult,
    JobStatus,
    PendingReason,
    Queued,
    RemoteHandle,
    RemoteStatus,
    Running,
    Succeeded,
    Timings,
)
from stableaudio_async.polling import CompletionTimes, fetch_status, poll_until_done
from stableaudio_async.providers import Adapter, adapter_class
from stableaudio_async.providers.base import AUDIO_SUFFIXES, is_url
from stableaudio_async.ratelimit import RateLimiter, slot
from stableaudio_async.retry import Phase, backoff_delay, may_have_been_accepted, should_retry

__all__ = ["Engine", "ProviderProgress"]

log = structlog.get_logger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ProviderProgress:
    """How one provider's jobs stand right now."""

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


#: CDN answers meaning "this URL no longer works": ask the provider for a fresh one.
_EXPIRED = frozenset({403, 404, 410})

#: Files up to this size are checked on the event loop rather than in a worker thread.
_INLINE_CHECK_BYTES = 1024 * 1024

#: The request count of the pause-only limiter of a provider that publishes no limit.
_UNLIMITED = 10**9
#: Seconds of clock difference allowed between us and a provider when looking a submit up by
#: the time it was sent: a job created this much earlier still counts as ours.
_LOOKUP_SKEW = 60.0
#: Pages of a provider's job listing read for one lookup; past them it is not found.
_LOOKUP_PAGES = 5


class _HeldBack(Exception):
    """A job not submitted in this run (stopping, or the cost cap): it stays pending."""

    def __init__(self, message: str, reason: PendingReason) -> None:
        super().__init__(message)
        self.reason: PendingReason = reason


class _Undelivered(Exception):
    """A job the provider finished whose audio could not be fetched: it stays pending."""

    def __init__(self, error: DownloadError) -> None:
        super().__init__(error.message)
        self.error = error


def _remove_stale_parts(out_dir: Path) -> None:
    """Delete temporary files a killed run left behind (this engine has written none yet)."""
    # Only names AtomicWriter makes: ".<final name>.<8 hex digits>.part".
    for part in out_dir.glob(f".*.????????{TEMP_SUFFIX}"):
        part.unlink(missing_ok=True)


async def _intact(result: JobResult) -> bool:
    """Whether a finished job's file is still on disk, whole and unchanged."""
    if result.path is None or result.sha256 is None:
        return False
    path = anyio.Path(result.path)
    try:
        if (await path.stat()).st_size != result.bytes:
            return False
    except OSError:
        return False

    def digest() -> str:
        h = hashlib.sha256()
        with open(result.path, "rb") as fh:  # type: ignore[arg-type]
            while chunk := fh.read(1 << 20):
                h.update(chunk)
        return h.hexdigest()

    return await anyio.to_thread.run_sync(digest) == result.sha256


def _prior(policy: PollPolicy, job: Job) -> float | None:
    """The job's expected time to done before any of its provider's have finished, from the
    audio it asks for (``expected_per_second``); None: the provider-wide ``expected`` stands."""
    if policy.expected_per_second is None or job.duration is None:
        return None
    return policy.expected_per_second * job.duration


def _same_resource(old: AudioSource, new: AudioSource) -> bool:
    """Whether ``new`` is ``old`` re-signed (same scheme, host and path; the query differs), so
    that the bytes already fetched from ``old`` are the start of ``new`` too."""
    if not isinstance(old, AudioURL) or not isinstance(new, AudioURL):
        return False
    before, after = urlsplit(old.url), urlsplit(new.url)
    return (before.scheme, before.netloc, before.path) == (after.scheme, after.netloc, after.path)


def _lost_reply(provider: str, request_id: str | None, exc: BaseException) -> DownloadError:
    """The error for a synchronous reply that broke off after the generation finished.

    The provider has billed the generation and cannot hand the audio over again, so this is
    never retried within the run (a second submit would bill it a second time): the job fails
    with its cost recorded, and only a rerun the user asks for generates it again.
    """
    detail = exc.message if isinstance(exc, ProviderError) else (
        f"cannot write the audio: {getattr(exc, 'strerror', None) or exc}")
    error = DownloadError(f"the reply broke off after the generation finished, which is billed "
                          f"and cannot be fetched again ({detail})", provider=provider,
                          request_id=request_id,
                          status=exc.status if isinstance(exc, ProviderError) else None)
    error.charged = True
    return error


class _Counts:
    __slots__ = ("completed", "downloading", "failed", "pending", "queued", "running", "waiting")

    def __init__(self) -> None:
        self.waiting = self.queued = self.running = 0
        self.downloading = self.completed = self.failed = self.pending = 0


class _Provider:
    """A provider's live state: its adapter, limiter, concurrency slots and counters."""

    def __init__(self, name: str, settings: ProviderSettings, api_key: str) -> None:
        self.name = name
        self.settings = settings
        self.adapter: Adapter = adapter_class(name)(settings, api_key)
        limit = settings.rate_limit
        # Without a published limit the limiter only serves to pause the provider (a
        # Retry-After, an open circuit), so it counts every request and never holds one back.
        self.limiter = (
            RateLimiter(limit.requests, limit.period, margin=limit.margin,
                        min_margin=limit.min_margin, burst=limit.effective_burst)
            if limit else RateLimiter(_UNLIMITED, 1.0)
        )
        # Polls (and uploads, result fetches, cancels) go through their own limit where the
        # provider sets one (Replicate: 3000/min beside 600 creates/min), else through the
        # main limit when it counts every request.
        poll_limit = settings.poll_rate_limit
        self.poll_limiter = (
            RateLimiter(poll_limit.requests, poll_limit.period, margin=poll_limit.margin,
                        min_margin=poll_limit.min_margin, burst=poll_limit.effective_burst)
            if poll_limit else self.limiter if limit is None or limit.counts == "all" else None
        )
        self.slots = anyio.CapacityLimiter(settings.max_in_flight)
        poll = settings.poll
        self.completion_times = CompletionTimes(poll.expected, min_gap=poll.near_interval,
                                                learn=poll.learn)
        self.counts = _Counts()
        #: The error that stopped all submissions to this provider (a refused key, no credit).
        self.stopped: ProviderError | None = None
        # The circuit breaker: consecutive failures, and the next pause's length.
        self.failures = 0
        self.cooldown = settings.circuit.cooldown
        #: Whether the provider lists recent jobs, so that a lost submit can be looked up.
        self.can_look_up = self.adapter.lookup_request() is not None
        #: Request ids this run's jobs hold: a lookup never takes one another job owns.
        self.claimed: set[str] = set()

    def check_open(self) -> None:
        """Hold a job back, without sending anything, once the provider has been stopped."""
        if self.stopped is not None:
            raise _HeldBack(f"not submitted: {self.name} was stopped by "
                            f"{type(self.stopped).__name__} ({self.stopped.message})",
                            "provider_stopped")

    def record_outcome(self, error: ProviderError | None,
                       bound: structlog.typing.FilteringBoundLogger) -> None:
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

    def stop(self, error: ProviderError, bound: structlog.typing.FilteringBoundLogger) -> None:
        """Stop all further submissions: a wrong key or an empty account fails every job."""
        if self.stopped is None:
            self.stopped = error
            bound.error("provider.stopped", reason=error.message, http_status=error.status,
                        hint=f"check {self.settings.api_key_env} and the account; "
                             "other providers carry on")

    def pause_for(self, error: RateLimitedError) -> float | None:
        """How long the whole provider must hold off after a 429: its lockout, else Retry-After."""
        limit = self.settings.rate_limit
        lockout = limit.lockout if limit is not None else None
        if lockout is not None:
            return max(lockout, error.retry_after or 0.0)
        return error.retry_after

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


class _JobRun:
    """What one job has been through so far: its counter, ids, attempts and phase times."""

    def __init__(self, counts: _Counts, *, started: float, seed: int | None) -> None:
        self.counts = counts
        self.started = started
        self.seed = seed
        self.request_id: str | None = None
        self.finish_reason: str | None = None
        self.possibly_duplicated = False
        #: When a submit that may have been accepted was first sent (seconds since the epoch,
        #: less a skew): set, the next attempt first looks the job up by its input.
        self.lookup_since: float | None = None
        #: Whether a listing without the job proves it was never made (see ``_submit``).
        self.lookup_settles = True
        #: When this run first sent the job's submit (seconds since the epoch).
        self.first_sent: float | None = None
        self.attempts = 0
        #: Attempts recorded by earlier runs; an intent is journalled once per run.
        self.journal_attempts = 0
        self.marks: dict[str, float] = {}
        self.counter = "waiting"
        counts.waiting += 1

    def flag_possible_duplicate(self) -> None:
        """A submit the provider may have taken is about to be sent again."""
        self.possibly_duplicated = True

    def move(self, to: str) -> None:
        """Move the job from its current progress counter to ``to``."""
        setattr(self.counts, self.counter, getattr(self.counts, self.counter) - 1)
        setattr(self.counts, to, getattr(self.counts, to) + 1)
        self.counter = to

    def timings(self) -> Timings:
        end = anyio.current_time()
        done = self.marks.get("done")
        generating_at = self.marks.get("running", done)
        download = self.marks.get("download")
        return Timings(
            queued=generating_at - self.started if generating_at is not None else None,
            generating=done - generating_at
            if done is not None and generating_at is not None else None,
            downloading=end - download if download is not None else None,
            total=end - self.started,
        )

    def result(
        self,
        job: Job,
        status: JobStatus,
        *,
        written: WrittenFile | None = None,
        price: tuple[float, str] | None = None,
        error: str | None = None,
        error_type: str | None = None,
        http_status: int | None = None,
        pending_reason: PendingReason | None = None,
    ) -> JobResult:
        return JobResult(
            id=job.id, provider=job.provider, model=job.model, task=job.task, status=status,
            path=str(written.path) if written else None,
            sha256=written.sha256 if written else None,
            bytes=written.size if written else None,
            content_type=written.content_type if written else None,
            request_id=self.request_id, seed=self.seed, finish_reason=self.finish_reason,
            cost=price[0] if price else None, cost_unit=price[1] if price else None,
            attempts=self.attempts, possibly_duplicated=self.possibly_duplicated,
            timings=self.timings(), error=error,
            error_type=error_type, http_status=http_status, pending_reason=pending_reason,
        )


class Engine:
    """Runs jobs against the configured providers and writes their audio to ``out_dir``.

    ::

        async with Engine(settings, out_dir="out") as engine:
            async for result in engine.run(jobs):   # results in the order jobs finish
                ...
            result = await engine.generate(job)

    API keys are read from the environment (``env``, by default :data:`os.environ`) when a
    provider is first used; a missing key is a :class:`ConfigError` before any request.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        out_dir: str | Path = "out",
        env: Mapping[str, str] | None = None,
        rand: Callable[[], float] | None = None,
        force: bool = False,
        max_cost_usd: float | None = None,
        journal: JobStore | None = None,
    ) -> None:
        self.settings = settings
        self.out_dir = Path(out_dir)
        self.force = force
        self.max_cost_usd = max_cost_usd
        self._env = env
        self._rand = rand or random.Random().random
        self._providers: dict[str, _Provider] = {}
        self._session: aiohttp.ClientSession | None = None
        self._tg: TaskGroup | None = None
        self._manifest = Manifest(self.out_dir)
        self._uploads: dict[tuple[str, str], str] = {}
        self._upload_locks: dict[tuple[str, str], anyio.Lock] = {}
        self._journal: JobStore = journal if journal is not None else Journal(self.out_dir)
        self._budget: Budget | None = None
        self._stopping = False
        self._batch_scopes: set[anyio.CancelScope] = set()
        # Submits on the wire whose answer (and request id) is still to come.
        self._submitting = 0
        self._submits_settled = anyio.Event()

    async def __aenter__(self) -> Self:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        # The limiters decide how many requests go out; the pool must not add its own cap.
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(connector=connector, trust_env=False,
                                              trace_configs=[send_tracing()])
        await self._journal.__aenter__()
        await self._manifest.load()
        await anyio.to_thread.run_sync(_remove_stale_parts, self.out_dir)
        if self.max_cost_usd is not None:
            self._budget = Budget(self.max_cost_usd, spent_usd=await self._spent_usd())
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        assert self._tg is not None and self._session is not None
        try:
            # Work still running here belongs to a run() its caller abandoned: stop it. The
            # body's own exception is not handed to the task group, so it reaches the caller
            # as itself rather than wrapped in an ExceptionGroup.
            self._tg.cancel_scope.cancel()
            await self._tg.__aexit__(None, None, None)
        finally:
            self._tg = None
            await self._session.close()
            self._session = None
            await self._journal.__aexit__(None, None, None)

    async def _spent_usd(self) -> float:
        """What finished jobs in this output folder have cost, for the ``--max-cost`` cap."""
        spent = 0.0
        for record in await self._journal.records():
            result = record.result
            if result is not None and result.cost is not None and result.cost_unit is not None:
                spent += result.cost * USD_PER_UNIT.get(result.cost_unit, 0.0)
        return spent

    # -- stopping --------------------------------------------------------------------------

    def stop(self) -> None:
        """Send no more submits. Jobs already accepted go on until :meth:`abort`."""
        self._stopping = True
        if self._submitting == 0:
            self._submits_settled.set()

    async def submits_settled(self) -> None:
        """Wait until no submit is on the wire (after :meth:`stop`)."""
        await self._submits_settled.wait()

    def abort(self) -> None:
        """End every running batch now. Accepted jobs keep their request ids in the journal and
        are not cancelled remotely, so the next run resumes them."""
        self._stopping = True
        for scope in list(self._batch_scopes):
            scope.cancel()

    # -- preparation -----------------------------------------------------------------------

    def _provider(self, name: str) -> _Provider:
        provider = self._providers.get(name)
        if provider is None:
            settings = self.settings.provider(name)
            key = settings.api_key(self._env)
            if key is None:
                raise ConfigError(
                    f"no API key for provider {name!r}: set the environment variable "
                    f"{settings.api_key_env}"
                )
            provider = self._providers[name] = _Provider(name, settings, key)
        return provider

    def prepare(self, jobs: Iterable[Job | LocatedJob]) -> list[Job]:
        """Validate a whole batch and check every key it needs, sending nothing.

        Raises :class:`InvalidBatchError` listing every bad job, or :class:`ConfigError` for
        a provider that is not configured or has no key. With ``unsupported = "drop"`` in the
        settings, fields a provider does not take are left out of its jobs instead.
        """
        located = [j if isinstance(j, LocatedJob) else LocatedJob(j) for j in jobs]
        if self.settings.unsupported == "drop":
            located = drop_unsupported(located)
        issues = check_jobs(located, self.settings)
        if issues:
            raise InvalidBatchError(issues)
        for name in sorted({item.job.provider for item in located}):
            self._provider(name)
        return [item.job for item in located]

    # -- running ---------------------------------------------------------------------------

    async def run(self, jobs: Iterable[Job | LocatedJob]) -> AsyncIterator[JobResult]:
        """Run ``jobs`` concurrently and yield each result as its job finishes.

        The batch is validated whole before anything is sent. Leaving the loop early cancels
        the batch's remaining jobs (wrap in :func:`contextlib.aclosing` to do so at once).
        """
        if self._tg is None:
            raise RuntimeError("use `async with Engine(...)` before running jobs")
        batch = self.prepare(jobs)
        await self._journal.register(batch)
        send_results, receive_results = anyio.create_memory_object_stream[JobResult](math.inf)
        scope = anyio.CancelScope()
        self._batch_scopes.add(scope)
        self._tg.start_soon(self._run_batch, batch, send_results, scope)
        try:
            async with receive_results:
                async for result in receive_results:
                    yield result
        finally:
            scope.cancel()
            self._batch_scopes.discard(scope)

    async def generate(self, job: Job) -> JobResult:
        """Run one job and return its result."""
        if self._session is None:
            raise RuntimeError("use `async with Engine(...)` before running jobs")
        (job,) = self.prepare([job])
        await self._journal.register([job])
        return await self._run_job(job)

    def progress(self) -> dict[str, ProviderProgress]:
        """A snapshot of every provider used so far."""
        return {name: p.progress() for name, p in self._providers.items()}

    async def _run_batch(
        self, jobs: list[Job], results: MemoryObjectSendStream[JobResult], scope: anyio.CancelScope
    ) -> None:
        async def one(job: Job) -> None:
            result = await self._run_job(job, known.pop(job.id, None))
            await results.send(result)

        with scope:
            # One read for the whole batch rather than one per job.
            known = {record.job_id: record for record in await self._journal.records()}
            async with results, anyio.create_task_group() as tg:
                for job in jobs:
                    tg.start_soon(one, job)

    async def _run_job(self, job: Job, record: JobRecord | None = None) -> JobResult:
        """Run one job to its result; ``record`` is its journal record, if already read."""
        provider = self._providers[job.provider]
        bound = log.bind(job_id=job.id, provider=job.provider)
        if record is None:
            record = await self._journal.get(job.id)
        if record is not None and self.force and record.state is not JobState.PENDING:
            await self._journal.reset(job.id)
            record = None
        if record is not None and record.state is JobState.COMPLETED and record.result \
                and await _intact(record.result):
            bound.info("job.skipped", reason="already completed in this output folder")
            if job.id not in self._manifest.ids:
                # The last run died between journal and manifest: complete the manifest.
                await self._manifest.append(record.result)
            return record.result.model_copy(update={"status": JobStatus.SKIPPED,
                                                    "timings": Timings()})
        run = _JobRun(provider.counts, started=anyio.current_time(), seed=job.seed)
        resume: RemoteHandle | None = None
        if record is not None:
            run.attempts = run.journal_attempts = record.attempts
            if record.state is JobState.SUBMITTED and record.request_id \
                    and not provider.adapter.synchronous:
                resume = RemoteHandle(record.request_id, record.poll_url, Queued(),
                                      record.result_url, record.cancel_url)
                provider.claimed.add(record.request_id)
            elif record.state is JobState.SUBMITTING and provider.can_look_up:
                # The last run died with this submit on the wire: look for it among the
                # provider's jobs made since its intent was written before sending again.
                run.lookup_since = record.updated_at - _LOOKUP_SKEW
            elif record.state in (JobState.SUBMITTING, JobState.SUBMITTED):
                # The last run died with this submit on the wire (or, for a synchronous
                # provider, mid-reply): no id to look it up by, so it is sent again, flagged.
                run.possibly_duplicated = True
        price = provider.adapter.cost(job)
        reserved: float | None = None
        try:
            if provider.adapter.synchronous:
                # The connection is held for the whole generation, download included.
                async with provider.slots:
                    provider.check_open()
                    reserved = self._reserve(job)
                    written = await self._generate(provider, job, run, bound)
            else:
                # The slot is the provider's: it is free again once the job is final, and the
                # download proceeds without it.
                async with provider.slots:
                    provider.check_open()
                    if resume is None:
                        reserved = self._reserve(job)
                        handle = await self._submit(provider, job, run, bound)
                    else:
                        handle = resume
                        run.request_id = handle.request_id
                        bound.info("job.resumed", request_id=handle.request_id)
                    bound = bound.bind(request_id=handle.request_id)
                    run.move("queued")
                    final = await self._follow(provider, job, handle, run, bound)
                    run.marks["done"] = anyio.current_time()
                accepted = self._accept(provider, job, run, final)
                run.move("downloading")
                run.marks["download"] = anyio.current_time()
                try:
                    written = await self._download(provider, job, accepted, handle, bound)
                except DownloadError as exc:
                    # Generated and billed: never given up while the provider still holds it.
                    raise _Undelivered(exc) from exc
            await self._check_audio(provider, job, run, written)
        except _HeldBack as held:
            run.move("pending")
            bound.info("job.held_back", reason=str(held))
            # Recorded like any outcome, so the manifest accounts for every job of the batch.
            result = run.result(job, JobStatus.PENDING, error=str(held),
                                pending_reason=held.reason)
        except _Undelivered as undelivered:
            lost = undelivered.error
            run.move("pending")
            bound.warning("job.download_pending", error=str(lost), http_status=lost.status,
                          hint="generated: a rerun fetches it without submitting it again")
            result = run.result(job, JobStatus.PENDING, error=lost.message,
                                error_type=type(lost).__name__, http_status=lost.status,
                                price=price, pending_reason="download")
        except ProviderError as exc:
            exc.with_context(job_id=job.id, request_id=run.request_id)
            # An error body may name the request even when no submit was accepted.
            run.request_id = run.request_id or exc.request_id
            if isinstance(exc, AuthenticationError | InsufficientBalanceError):
                provider.stop(exc, bound)
            run.move("failed")
            bound.warning("job.failed", error=str(exc), error_type=type(exc).__name__,
                          http_status=exc.status)
            charged = (isinstance(exc, JobFailedError | AudioInvalidError) and exc.charged
                       and not provider.adapter.free_failures) \
                or (isinstance(exc, DownloadError) and exc.charged)
            result = run.result(job, JobStatus.FAILED, error=exc.message,
                                error_type=type(exc).__name__, http_status=exc.status,
                                price=price if charged or price is None else (0.0, price[1]))
        except anyio.get_cancelled_exc_class():
            if self._stopping:
                # Ended by abort() (the CLI's Ctrl-C) before its outcome: the manifest still
                # accounts for it, pending, and the journal keeps its id for the rerun.
                with anyio.CancelScope(shield=True):
                    run.move("pending")
                    result = run.result(
                        job, JobStatus.PENDING, pending_reason="stopped",
                        error="stopped before it finished: a rerun "
                              + ("resumes it without submitting it again"
                                 if run.request_id else "submits it"))
                    await self._journal.finished(result)
                    await self._manifest.append(result)
            raise
        except Exception as exc:  # a bug must fail its job, not the batch
            run.move("failed")
            bound.exception("job.crashed")
            result = run.result(job, JobStatus.FAILED,
                                error=f"internal error: {type(exc).__name__}: {exc}",
                                error_type="InternalError")
        else:
            run.move("completed")
            result = run.result(job, JobStatus.COMPLETED, written=written, price=price)
            bound.info("job.completed", path=str(written.path), bytes=written.size,
                       seconds=round(result.timings.total, 3))
        billed = result.cost is not None and result.cost > 0
        self._settle(reserved, (price_usd(job, self.settings) or 0.0) if billed else 0.0)
        # Journal first: it is what a rerun trusts; the manifest is the user's record.
        await self._journal.finished(result)
        await self._manifest.append(result)
        return result

    def _reserve(self, job: Job) -> float | None:
        """Before a submit: refuse once stopping, and set the job's price aside under the cap."""
        if self._stopping:
            raise _HeldBack("not submitted: the run was stopped", "stopped")
        if self._budget is None:
            return None
        price = price_usd(job, self.settings) or 0.0
        if not self._budget.reserve(price):
            raise _HeldBack(f"not submitted: it would take spending over --max-cost "
                            f"${self._budget.cap_usd:g}", "max_cost")
        return price

    def _settle(self, reserved: float | None, charged: float) -> None:
        if self._budget is not None and reserved is not None:
            self._budget.settle(reserved, charged)

    async def _check_audio(self, provider: _Provider, job: Job, run: _JobRun,
                           written: WrittenFile) -> None:
        """Keep a download only if it is audio of the format and about the length asked for."""
        check = functools.partial(check_audio, written.path,
                                  expected_format=provider.adapter.output_format(job),
                                  expected_duration=job.duration)
        # A small file was just written and is in the page cache: its headers are read in
        # well under a millisecond, less than a trip to a worker thread costs.
        problem = check() if written.size <= _INLINE_CHECK_BYTES \
            else await anyio.to_thread.run_sync(check)
        if problem is None:
            return
        # Kept beside the real outputs for inspection, never under the final name.
        rejected = written.path.with_name(f"{job.id}.rejected{written.path.suffix}")
        written.path.replace(rejected)
        error = AudioInvalidError(f"{problem.reason}: {problem.detail}", provider=provider.name,
                                  job_id=job.id, request_id=run.request_id)
        error.reason = problem.reason
        raise error

    def _accept(
        self, provider: _Provider, job: Job, run: _JobRun, final: RemoteStatus
    ) -> Succeeded:
        """A final status as audio to keep, or the job's failure."""
        if isinstance(final, Failed):
            error = JobFailedError(final.reason, provider=provider.name, job_id=job.id,
                                   request_id=run.request_id)
            error.charged = final.charged
            raise error
        if not isinstance(final, Succeeded):
            raise ProviderUnavailableError(f"no final status ({type(final).__name__.lower()})",
                                           provider=provider.name, request_id=run.request_id)
        if final.seed is not None:
            run.seed = final.seed
        self._check_finish(provider, run, final.finish_reason)
        return final

    def _check_finish(self, provider: _Provider, run: _JobRun, finish_reason: str | None) -> None:
        run.finish_reason = finish_reason
        if finish_reason is not None and finish_reason.upper() != "SUCCESS":
            # e.g. CONTENT_FILTERED: the provider answered, but not with the audio asked for.
            raise ContentRejectedError(f"finish reason {finish_reason}", provider=provider.name,
                                       request_id=run.request_id)

    async def _retrying(
        self,
        phase: Phase,
        policy: RetryPolicy,
        operation: Callable[[Callable[[], None]], Awaitable[T]],
        *,
        provider: _Provider,
        bound: structlog.typing.FilteringBoundLogger,
        limiter: RateLimiter | None = None,
        on_resend: Callable[[ProviderError], None] | None = None,
    ) -> T:
        """Run ``operation``, retrying what :func:`should_retry` allows for ``phase``.

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
                    provider.record_outcome(None, bound)
                return outcome
            except ProviderError as exc:
                if phase != "download":
                    provider.record_outcome(exc, bound)
                attempt += 1
                free = provider.adapter.free_failures
                retryable = should_retry(phase, exc, free_failures=free,
                                         submit_5xx=policy.submit_5xx,
                                         look_up=provider.can_look_up)
                if attempt >= policy.attempts or not retryable:
                    raise
                if phase == "submit" and on_resend is not None \
                        and may_have_been_accepted(exc, free_failures=free):
                    on_resend(exc)
                wait = backoff_delay(attempt - 1, initial=policy.initial, maximum=policy.max,
                                     factor=policy.factor, jitter=0.5, rand=self._rand)
                pause = provider.pause_for(exc) if isinstance(exc, RateLimitedError) else None
                if pause is not None:
                    wait = pause
                    # A Retry-After or a lockout speaks for the whole provider: every request
                    # would be refused, so none is sent until it is over.
                    provider.limiter.pause(pause)
                    bound.warning("provider.paused", seconds=pause)
                bound.warning(f"{phase}.retry_scheduled", attempt=attempt, wait=round(wait, 3),
                              error=str(exc))
                await anyio.sleep(wait)

    async def _submit(
        self,
        provider: _Provider,
        job: Job,
        run: _JobRun,
        bound: structlog.typing.FilteringBoundLogger,
    ) -> RemoteHandle:
        assert self._session is not None
        session = self._session
        request = provider.adapter.submit_request(job, await self._input_audio(provider, job, bound))

        async def attempt(on_sent: Callable[[], None]) -> RemoteHandle:
            if run.lookup_since is not None and not self._stopping:
                found = await self._look_up(provider, request, run, bound)
                if found is not None:
                    run.request_id = found.request_id
                    await self._journal.submitted(job.id, found)
                    return found
            async with self._submit_attempt(job, run):
                if run.first_sent is None:
                    run.first_sent = time.time()
                reply = await send(session, request, provider=provider.name,
                                   total_timeout=provider.settings.request_timeout,
                                   on_sent=on_sent)
                handle = provider.adapter.parse_submit(reply)
                run.request_id = handle.request_id
                if handle.request_id is not None:
                    provider.claimed.add(handle.request_id)
                # Durable before anything else happens: a rerun polls this id, never resubmits.
                await self._journal.submitted(job.id, handle)
            return handle

        def unsure(error: ProviderError) -> None:
            # The provider may hold the job already: look for it first where it lists jobs,
            # else send again and say so.
            if provider.can_look_up and run.first_sent is not None:
                run.lookup_since = run.first_sent - _LOOKUP_SKEW
                # A reply (a 5xx) means the provider is done with the request, so a listing
                # without the job settles it; after a reset or a timeout the job may still
                # appear later, so a resend then stays flagged.
                run.lookup_settles = error.status is not None
            else:
                run.flag_possible_duplicate()

        handle = await self._retrying("submit", provider.settings.retry, attempt,
                                      provider=provider, bound=bound, limiter=provider.limiter,
                                      on_resend=unsure)
        bound.info("job.submitted", request_id=handle.request_id, attempts=run.attempts)
        return handle

    async def _look_up(self, provider: _Provider, request: HttpRequest, run: _JobRun,
                       bound: structlog.typing.FilteringBoundLogger) -> RemoteHandle | None:
        """The job a lost submit of ``request`` created, from the provider's listing of recent
        jobs, or None when it made none (the submit is then sent again, unflagged). When the
        listing cannot be read, the resend that follows is flagged ``possibly_duplicated``.

        Of several jobs made from the same body (identical jobs in one batch), the oldest not
        held by another job of this run is taken.
        """
        assert self._session is not None and run.lookup_since is not None
        since, run.lookup_since = run.lookup_since, None
        adapter = provider.adapter
        found: list[RemoteHandle] = []
        page: str | None = None
        try:
            for _ in range(_LOOKUP_PAGES):
                lookup = adapter.lookup_request(page)
                assert lookup is not None
                async with slot(provider.poll_limiter) as sent:
                    reply = await send(self._session, lookup, provider=provider.name,
                                       total_timeout=provider.settings.request_timeout,
                                       on_sent=sent)
                listed = adapter.parse_lookup(reply, request, since)
                found += listed.found
                if listed.next_page is None:
                    break
                page = listed.next_page
            else:
                raise ProviderUnavailableError(
                    f"the job listing goes on past {_LOOKUP_PAGES} pages", provider=provider.name)
        except ProviderError as exc:
            bound.warning("submit.lookup_failed", error=str(exc))
            run.flag_possible_duplicate()
            return None
        free = [h for h in found if h.request_id is not None
                and h.request_id not in provider.claimed]
        if not free:
            bound.info("submit.lookup", found=False)
            if not run.lookup_settles:
                run.flag_possible_duplicate()
            return None
        handle = free[-1]  # the listing is newest first
        assert handle.request_id is not None
        provider.claimed.add(handle.request_id)
        bound.info("submit.lookup", found=True, request_id=handle.request_id)
        return handle

    async def _generate(
        self,
        provider: _Provider,
        job: Job,
        run: _JobRun,
        bound: structlog.typing.FilteringBoundLogger,
    ) -> WrittenFile:
        """A synchronous job: the submit's reply is the audio, streamed straight to disk."""
        assert self._session is not None
        session = self._session
        adapter = provider.adapter
        request = adapter.submit_request(job, await self._input_audio(provider, job, bound))
        dest = self._destination(job)
        chunk_size = self.settings.download.chunk_size

        async def attempt(on_sent: Callable[[], None]) -> WrittenFile:
            run.marks["running"] = anyio.current_time()
            async with self._submit_attempt(job, run), open_reply(
                    session, request, provider=provider.name,
                    total_timeout=provider.settings.request_timeout,
                    on_sent=on_sent) as response:
                headers = {k.lower(): v for k, v in response.headers.items()}
                run.marks["done"] = run.marks["download"] = anyio.current_time()
                stream = adapter.audio_stream(response.status, headers)
                if stream is None:
                    # JSON (base64 audio) or an error: small, read whole.
                    try:
                        with translate_errors(provider.name, what="reading the reply"):
                            reply = await read_reply(response)
                    except ProviderError as exc:
                        if response.status == 200:  # the audio, generated and billed
                            run.request_id = headers.get("x-request-id")
                            raise _lost_reply(provider.name, run.request_id, exc) from exc
                        raise
                    handle = adapter.parse_submit(reply)
                    run.request_id = handle.request_id
                    final = self._accept(provider, job, run, handle.status)
                    return await fetch_audio(session, final.audio[0], dest,
                                             provider=provider.name)
                run.request_id = stream.request_id
                # Generated (and billed) from here on: a crash mid-body is not a free retry.
                await self._journal.submitted(
                    job.id, RemoteHandle(stream.request_id, None, Running()))
                if stream.seed is not None:
                    run.seed = stream.seed
                self._check_finish(provider, run, stream.finish_reason)
                run.move("downloading")
                try:
                    with translate_errors(provider.name, what="reading the audio"):
                        return await write_body(response, dest, provider=provider.name,
                                                chunk_size=chunk_size,
                                                content_type=stream.content_type)
                except (ProviderError, OSError) as exc:
                    raise _lost_reply(provider.name, stream.request_id, exc) from exc

        run.move("running")
        written = await self._retrying("submit", provider.settings.retry, attempt,
                                       provider=provider, bound=bound, limiter=provider.limiter,
                                       on_resend=lambda _: run.flag_possible_duplicate())
        bound.info("job.generated", request_id=run.request_id, attempts=run.attempts,
                   seed=run.seed)
        return written

    @asynccontextmanager
    async def _submit_attempt(self, job: Job, run: _JobRun) -> AsyncIterator[None]:
        """Around one submit attempt: stop if stopping, record the intent durably first, and
        count the attempt as on the wire until its answer is in."""
        if self._stopping:
            raise _HeldBack("not submitted: the run was stopped", "stopped")
        # Counted from before the intent is written: a stop that comes while it is being
        # written waits for this submit to be answered (and its id journalled) rather than
        # cutting it off on the wire, which would leave it to be sent again on resume.
        self._submitting += 1
        try:
            if run.attempts == run.journal_attempts:
                await self._journal.intent(job, possibly_duplicated=run.possibly_duplicated)
            run.attempts += 1
            yield
        finally:
            self._submitting -= 1
            if self._stopping and self._submitting == 0:
                self._submits_settled.set()

    async def _input_audio(
        self, provider: _Provider, job: Job, bound: structlog.typing.FilteringBoundLogger
    ) -> str | None:
        """The job's input audio in the form its provider takes (see ``Adapter.local_audio``)."""
        audio = job.audio
        mode = provider.adapter.local_audio
        if audio is None or is_url(audio) or mode in ("none", "multipart"):
            return audio if audio is None or is_url(audio) else None
        path = Path(await anyio.Path(audio).absolute())
        if mode == "data_uri":
            data = await anyio.Path(path).read_bytes()
            media_type = AUDIO_SUFFIXES.get(path.suffix.lower(), "application/octet-stream")
            return f"data:{media_type};base64,{base64.b64encode(data).decode()}"
        # Uploaded once per engine, however many jobs use the file.
        key = (provider.name, str(path))
        async with self._upload_locks.setdefault(key, anyio.Lock()):
            url = self._uploads.get(key)
            if url is None:
                url = self._uploads[key] = await self._upload(provider, path, bound)
        return url

    async def _upload(
        self, provider: _Provider, path: Path, bound: structlog.typing.FilteringBoundLogger
    ) -> str:
        assert self._session is not None
        session = self._session
        request = provider.adapter.upload_request(path)

        async def attempt(on_sent: Callable[[], None]) -> str:
            reply = await send(session, request, provider=provider.name,
                               total_timeout=provider.settings.request_timeout, on_sent=on_sent)
            return provider.adapter.parse_upload(reply)

        url = await self._retrying("upload", provider.settings.retry, attempt, provider=provider,
                                   bound=bound, limiter=provider.poll_limiter)
        bound.info("input.uploaded", file=path.name, url=url)
        return url

    async def _cancel_remote(
        self, provider: _Provider, handle: RemoteHandle, bound: structlog.typing.FilteringBoundLogger
    ) -> None:
        """Best effort: ask the provider to stop a job we no longer wait for."""
        request = provider.adapter.cancel_request(handle)
        if request is None or self._session is None:
            return
        with anyio.move_on_after(10):
            try:
                async with slot(provider.poll_limiter) as sent:
                    reply = await send(self._session, request, provider=provider.name,
                                       total_timeout=10, on_sent=sent)
                bound.info("job.cancelled_remotely", http_status=reply.status)
            except ProviderError as exc:
                bound.warning("job.cancel_failed", error=str(exc))

    def _destination(self, job: Job) -> Path:
        return self.out_dir / f"{job.id}.{adapter_class(job.provider).output_format(job)}"

    async def _follow(
        self,
        provider: _Provider,
        job: Job,
        handle: RemoteHandle,
        run: _JobRun,
        bound: structlog.typing.FilteringBoundLogger,
    ) -> Succeeded | Failed:
        assert self._session is not None
        status: RemoteStatus = handle.status
        if isinstance(status, Succeeded | Failed):  # final in the submit reply (sync_mode)
            return status
        policy = provider.settings.poll
        statuses = poll_until_done(
            self._session, provider.adapter, handle, policy=policy,
            deadline=anyio.current_time() + policy.timeout, limiter=provider.poll_limiter,
            request_timeout=provider.settings.request_timeout, rand=self._rand, job_id=job.id,
            on_outcome=lambda error: provider.record_outcome(error, bound),
            times=provider.completion_times, prior=_prior(policy, job),
        )
        try:
            async for status in statuses:
                word = type(status).__name__.lower()
                bound.debug("job.status", status=word)
                self._journal.status(job.id, word)
                if isinstance(status, Running) and "running" not in run.marks:
                    run.marks["running"] = anyio.current_time()
                    run.move("running")
        except DeadlineExceededError:
            await self._cancel_remote(provider, handle, bound)
            raise
        except anyio.get_cancelled_exc_class():
            # The caller gave up on the job: so should the provider, where it can. Not when
            # the run is being stopped: the journal keeps the id and the next run resumes it.
            if not self._stopping:
                with anyio.CancelScope(shield=True):
                    await self._cancel_remote(provider, handle, bound)
            raise
        if not isinstance(status, Succeeded | Failed):  # poll_until_done ends on a final status
            raise ProviderUnavailableError("status polling ended without a final status",
                                           provider=provider.name, request_id=handle.request_id)
        return status

    async def _download(
        self,
        provider: _Provider,
        job: Job,
        final: Succeeded,
        handle: RemoteHandle,
        bound: structlog.typing.FilteringBoundLogger,
    ) -> WrittenFile:
        """Fetch the audio, resuming broken transfers with Range, and asking the provider for a
        fresh URL when the CDN says the one we have expired (403, 404, 410)."""
        assert self._session is not None
        session = self._session
        source = final.audio[0]
        download = self.settings.download

        async def once() -> None:
            await fetch_into(session, source, writer, provider=provider.name,
                             headers=provider.adapter.download_headers(
                                 getattr(source, "url", "")),
                             chunk_size=download.chunk_size, total_timeout=download.timeout)

        async def attempt(on_sent: Callable[[], None]) -> None:
            nonlocal source
            try:
                await once()
            except DownloadError as exc:
                if exc.status not in _EXPIRED or not isinstance(source, AudioURL):
                    raise
                try:
                    fresh = await self._fresh_audio(provider, handle)
                except RateLimitedError:
                    raise  # the provider asked us to hold off: the retry loop pauses it
                except ProviderError as refresh_error:
                    # Worth another attempt: the next one meets the expiry and asks again.
                    raise DownloadError(f"{exc.message}; asking for a fresh URL failed: "
                                        f"{refresh_error.message}", provider=provider.name
                                        ) from refresh_error
                if fresh is None or fresh == source:
                    raise
                bound.info("download.url_refreshed", http_status=exc.status)
                if not _same_resource(source, fresh):
                    await writer.restart()  # another file: what we hold is not its start
                source = fresh
                try:
                    await once()
                except DownloadError as again:
                    if again.status not in _EXPIRED:
                        raise
                    # Expired again before we got to it: worth another (slower) attempt.
                    raise DownloadError(f"fresh URL expired too: {again.message}",
                                        provider=provider.name) from again

        try:
            async with AtomicWriter(self._destination(job)) as writer:
                # One temporary file across attempts: a retry resumes where the last broke off.
                await self._retrying("download", download.retry, attempt, provider=provider,
                                     bound=bound)
                return await writer.commit()
        except OSError as exc:
            raise DownloadError(f"cannot write the audio: {exc.strerror or exc}",
                                provider=provider.name, job_id=job.id,
                                request_id=handle.request_id) from exc
        except DownloadError as exc:
            raise exc.with_context(job_id=job.id, request_id=handle.request_id) from exc.__cause__
        except ProviderError as exc:  # a refresh that met a 429 on the last attempt
            raise DownloadError(f"asking for a fresh URL failed: {exc.message}",
                                provider=provider.name, job_id=job.id,
                                request_id=handle.request_id, status=exc.status) from exc

    async def _fresh_audio(self, provider: _Provider, handle: RemoteHandle
                           ) -> AudioSource | None:
        """The job's audio as the provider lists it now (a CDN URL re-signed, say), if it can."""
        if self._session is None or handle.poll_url is None:
            return None
        status = await fetch_status(self._session, provider.adapter, handle,
                                    limiter=provider.poll_limiter,
                                    request_timeout=provider.settings.request_timeout)
        return status.audio[0] if isinstance(status, Succeeded) and status.audio else None
