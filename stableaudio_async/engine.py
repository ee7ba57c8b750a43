"""The public engine: runs jobs concurrently in one task group, streams a batch's results,
hands out handles on single jobs, and stops or aborts.

A job's life is decided in :mod:`.job` (its phases in :mod:`.lifecycle`); one job id's run,
shared by every caller of that id, and the handles on it are in :mod:`.handle`; the
providers' limiters, slots and circuit breakers live in :mod:`.runtime`; submits in
:mod:`.submit`; polls and downloads in :mod:`.fetch`; journal, manifest and budget in
:mod:`.bookkeeping`. Whatever happens to one job ends as its :class:`JobResult`; it never
cancels the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping
from pathlib import Path
from typing import Self

import aiohttp
import anyio
from anyio.abc import TaskGroup

from stableaudio_async.batch import LocatedJob, check_jobs, drop_unsupported
from stableaudio_async.bookkeeping import Ledger
from stableaudio_async.config import Settings
from stableaudio_async.errors import (
    ConfigError,
    InvalidBatchError,
    InvalidJobError,
    JobIssue,
    UnknownJobError,
)
from stableaudio_async.fetch import Fetcher
from stableaudio_async.handle import Flight, JobEvent, JobHandle, JobOptions
from stableaudio_async.http import send_tracing
from stableaudio_async.job import JobRunner
from stableaudio_async.journal import JobStore, Journal
from stableaudio_async.logs import get_logger
from stableaudio_async.models import Job, JobResult, JobStatus
from stableaudio_async.runtime import (
    LimiterFactory,
    ProviderProgress,
    ProviderRuntime,
    StopControl,
    local_limiter,
)
from stableaudio_async.store import JobRecord
from stableaudio_async.submit import Submitter

__all__ = ["Engine", "ProviderProgress"]

log = get_logger(__name__)

EventCallback = Callable[[JobEvent], object]


class Engine:
    """Runs jobs against the configured providers and writes their audio to ``out_dir``.

    ::

        async with Engine(settings, out_dir="out") as engine:
            async for result in engine.run(jobs):   # results in the order jobs finish
                ...
            result = await engine.generate(job)     # raises the job's error if it fails
            handle = await engine.submit(job)       # once accepted, its request id durable

    API keys are read from the environment (``env``, by default :data:`os.environ`) when a
    provider is first used; a missing key is a :class:`ConfigError` before any request.

    The calls share what they run: every call for one job id joins the same run of it (one
    submission, one result), and every job of a provider shares its limits. Cancelling a
    caller never strands a submit on the wire: it is answered and its request id journalled
    first, so that a rerun (or :meth:`attach`) follows it instead of paying for it again.
    asyncio only: aiohttp does not run under trio.
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
        #: Makes each provider's limiters (a shared limit would pass another factory here).
        self._limiter: LimiterFactory = local_limiter
        self._providers: dict[str, ProviderRuntime] = {}
        self._session: aiohttp.ClientSession | None = None
        self._tg: TaskGroup | None = None
        self._ledger = Ledger(self.out_dir, journal if journal is not None
                              else Journal(self.out_dir), settings, max_cost_usd)
        self._stop = StopControl()
        self._jobs: JobRunner | None = None
        self._flights: dict[str, Flight] = {}

    async def __aenter__(self) -> Self:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "stableaudio-async runs on asyncio only (its HTTP client, aiohttp, is "
                "asyncio-only), and this is another event loop (trio?): run it with "
                "asyncio.run(), or anyio.run(..., backend='asyncio')") from None
        self.out_dir.mkdir(parents=True, exist_ok=True)
        # The limiters decide how many requests go out; the pool must not add its own cap.
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, ttl_dns_cache=300)
        self._session = session = aiohttp.ClientSession(
            connector=connector, trust_env=False, trace_configs=[send_tracing()])
        try:
            await self._ledger.__aenter__()
        except BaseException:
            # A folder that cannot be used (locked, a corrupt journal, a manifest that is not
            # a file): nothing was sent, and nothing is left open behind the error.
            await session.close()
            self._session = None
            raise
        journal = self._ledger.journal
        download = self.settings.download
        self._jobs = JobRunner(
            self._providers, self._ledger,
            Submitter(session, journal, self._stop, self.out_dir, download),
            Fetcher(session, journal, self._stop, self.out_dir, download, self._rand),
            self._stop, force=self.force, out_dir=self.out_dir)
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._tg is not None and self._session is not None
        try:
            # Work still running here belongs to a caller that let it go (a handle not waited
            # for, a run() not closed): stop it. Submits on the wire are answered and recorded
            # first. The body's own exception is not handed to the task group, so it reaches
            # the caller as itself rather than wrapped in an ExceptionGroup.
            self._tg.cancel_scope.cancel()
            await self._tg.__aexit__(None, None, None)
        finally:
            self._tg = None
            self._jobs = None
            await self._session.close()
            self._session = None
            await self._ledger.__aexit__(None, None, None)

    # -- stopping --------------------------------------------------------------------------

    def stop(self) -> None:
        """Send no more submits. Jobs already accepted go on until :meth:`abort`."""
        self._stop.stop()

    async def submits_settled(self) -> None:
        """Wait until no submit is on the wire (after :meth:`stop`)."""
        await self._stop.settled()

    def abort(self) -> None:
        """End every running job now, submits on the wire included (after :meth:`stop` and
        :meth:`submits_settled`, none is). Accepted jobs keep their request ids in the journal
        and are not cancelled remotely, so the next run resumes them."""
        self._stop.abort()
        for flight in list(self._flights.values()):
            flight.scope.cancel()

    def resume_provider(self, name: str) -> None:
        """Take submits to provider ``name`` again after a refused key or an empty account
        stopped it (401, 403, 402), without waiting for its cool-down's probe."""
        provider = self._providers.get(name)
        if provider is not None:
            provider.resume(log.bind(provider=name), reason="resume_provider() was called")

    # -- preparation -----------------------------------------------------------------------

    def _provider(self, name: str) -> ProviderRuntime:
        provider = self._providers.get(name)
        if provider is None:
            settings = self.settings.provider(name)
            key = settings.api_key(self._env)
            if key is None:
                raise ConfigError(
                    f"no API key for provider {name!r}: set the environment variable "
                    f"{settings.api_key_env}"
                )
            provider = self._providers[name] = ProviderRuntime(
                name, settings, key, limiter=self._limiter, rand=self._rand)
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

    async def _prepare_one(self, job: Job) -> Job:
        """One job validated, its key checked and registered in the journal."""
        self._runner()
        try:
            (job,) = self.prepare([job])
        except InvalidBatchError as exc:
            raise InvalidJobError(exc.issues) from None
        await self._ledger.journal.register([job])
        return job

    def _runner(self) -> JobRunner:
        if self._jobs is None:
            raise RuntimeError("use `async with Engine(...)` before running jobs")
        return self._jobs

    # -- flights ---------------------------------------------------------------------------

    def _join(self, job: Job, options: JobOptions, record: JobRecord | None = None) -> Flight:
        """The run of ``job``'s id in this engine: joined if one is going on, else started."""
        flight = self._flights.get(job.id)
        if flight is not None:
            if flight.job != job:
                raise InvalidJobError([JobIssue(
                    "a different job with this id is running in this engine", job_id=job.id,
                    field="id")])
            flight.listen(options.on_event)
            return flight
        flight = self._flights[job.id] = Flight(job, options)
        if record is not None:
            flight.request_id = record.request_id  # known from an earlier run
        assert self._tg is not None
        self._tg.start_soon(self._fly, flight, record, name=f"job {job.id}")
        return flight

    async def _fly(self, flight: Flight, record: JobRecord | None) -> None:
        runner = self._runner()
        options = flight.options
        try:
            with flight.scope, anyio.move_on_after(
                    math.inf if options.timeout is None else options.timeout) as timer:
                await runner.run(flight.job, record, flight=flight, force=options.force,
                                 path=Path(options.path) if options.path else None)
            flight.timed_out = timer.cancelled_caught
        except Exception as exc:  # the journal failing under it: the job's end, not the batch's
            log.exception("job.crashed", job_id=flight.job.id, provider=flight.job.provider)
            flight.finish(JobResult(
                id=flight.job.id, provider=flight.job.provider, model=flight.job.model,
                task=flight.job.task, status=JobStatus.FAILED, error_type="InternalError",
                error=f"internal error: {type(exc).__name__}: {exc}"))
        finally:
            if flight.result is None:
                flight.cancelled_early()
            if self._flights.get(flight.job.id) is flight:
                del self._flights[flight.job.id]

    def _cancel(self, flight: Flight) -> None:
        if flight.run is not None:
            flight.run.cancel_remote = True
        flight.scope.cancel()

    # -- running ---------------------------------------------------------------------------

    async def run(self, jobs: Iterable[Job | LocatedJob], *,
                  on_event: EventCallback | None = None) -> AsyncGenerator[JobResult, None]:
        """Run ``jobs`` concurrently and yield each result as its job finishes.

        The batch is validated whole before anything is sent. A failed job is yielded as its
        failed result (:meth:`JobResult.raise_for_status` raises its error). Leaving the loop
        early, or cancelling the caller, cancels the batch's jobs; submits on the wire are
        answered and journalled first (wrap in :func:`contextlib.aclosing` to close it at
        once). ``on_event`` is called with each step of every job (:class:`JobEvent`).
        """
        self._runner()
        batch = self.prepare(jobs)
        await self._ledger.journal.register(batch)
        # One read for the whole batch rather than one per job.
        known = {record.job_id: record for record in await self._ledger.journal.records()}
        options = JobOptions(on_event=on_event)
        send, receive = anyio.create_memory_object_stream[JobResult](math.inf)
        done = anyio.Event()

        async def one(job: Job) -> None:
            result = await self._join(job, options, known.pop(job.id, None)).wait()
            with contextlib.suppress(anyio.BrokenResourceError):  # the caller has left
                send.send_nowait(result)

        scope = anyio.CancelScope()

        async def run_batch() -> None:
            try:
                with scope:
                    async with anyio.create_task_group() as tg:
                        for job in batch:
                            tg.start_soon(one, job)
            finally:
                send.close()
                done.set()

        assert self._tg is not None
        self._tg.start_soon(run_batch)
        try:
            async with receive:
                async for result in receive:
                    yield result
        finally:
            scope.cancel()
            # The batch winds down before the caller goes on: each cancelled job's submit on
            # the wire is answered and journalled first.
            with anyio.CancelScope(shield=True):
                await done.wait()

    # ``timeout`` is the job's own deadline, which fail_after() around the call cannot be:
    # it ends the job (a handle's too, after submit() returned), not merely the wait.
    async def generate(self, job: Job, *, force: bool | None = None,
                       timeout: float | None = None,  # noqa: ASYNC109
                       path: str | Path | None = None,
                       on_event: EventCallback | None = None) -> JobResult:
        """Run one job and return its result, or raise its error.

        The result is that of a completed job, or ``skipped`` when the job is already done in
        the output folder. Otherwise the job's typed error is raised, carrying its ``result``
        (see :meth:`JobResult.raise_for_status`). ``force`` runs it again even if done;
        ``timeout`` (seconds) ends the job if it is not done by then, as
        :class:`DeadlineExceededError` (its request id kept: a rerun or :meth:`attach` follows
        it); ``path`` is where its audio goes; ``on_event`` is called with each step.

        Concurrent calls for one job id share one run of it. Cancelling the call cancels the
        job unless another call or a handle holds it.
        """
        flight = self._join(await self._prepare_one(job), _options(force, timeout, path, on_event))
        await flight.wait()
        return flight.outcome()

    async def submit(self, job: Job, *, force: bool | None = None,
                     timeout: float | None = None,  # noqa: ASYNC109
                     path: str | Path | None = None,
                     on_event: EventCallback | None = None) -> JobHandle:
        """Start one job; return its handle once the provider has accepted it and its request
        id is in the journal (for a synchronous provider such as Stability, whose reply is the
        audio, once it is done). A job that fails before it is accepted raises its error.
        Options as for :meth:`generate`.
        """
        flight = self._join(await self._prepare_one(job), _options(force, timeout, path, on_event))
        handle = JobHandle(flight, self._cancel)
        try:
            await flight.accepted.wait()
        except anyio.get_cancelled_exc_class():
            # Nobody got this handle: the job ends with the call (its submit on the wire
            # answered and journalled first), unless another caller or handle holds it.
            flight.handles -= 1
            await flight.left()
            raise
        if flight.finished.is_set():
            flight.outcome()  # ended before it was accepted: raises unless it is done
        return handle

    async def attach(self, job_id: str, *, on_event: EventCallback | None = None) -> JobHandle:
        """A handle on a job the journal of this output folder knows, after a restart or from
        another process once that one has closed the folder. A job that is over is handed back
        done at once: completed (its file intact, the result ``skipped``) or failed (never
        submitted again: :meth:`generate` with ``force`` does that). An accepted job is
        followed by its request id, never submitted again; a job recorded but never accepted
        is submitted. Raises :class:`UnknownJobError` for an id the journal does not know."""
        runner = self._runner()
        options = JobOptions(on_event=on_event)
        flight = self._flights.get(job_id)
        if flight is not None:
            flight.listen(on_event)
            return JobHandle(flight, self._cancel)
        record = await self._ledger.journal.get(job_id)
        if record is None:
            raise UnknownJobError(f"no job {job_id!r} in the journal of {self.out_dir}")
        ended = await runner.ended(record)
        if ended is not None:
            flight = Flight(record.job, options)
            flight.finish(ended)
            return JobHandle(flight, self._cancel)
        self.prepare([record.job])
        return JobHandle(self._join(record.job, options, record), self._cancel)

    def progress(self) -> dict[str, ProviderProgress]:
        """A snapshot of every provider used so far."""
        return {name: p.progress() for name, p in self._providers.items()}


def _options(force: bool | None, timeout: float | None, path: str | Path | None,
             on_event: EventCallback | None) -> JobOptions:
    if timeout is not None and not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
    return JobOptions(force=force, timeout=timeout, path=None if path is None else str(path),
                      on_event=on_event)
