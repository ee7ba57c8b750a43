"""The public engine: runs a batch of jobs concurrently in one task group, streams their
results, and stops or aborts the batch.

A job's life is decided in :mod:`.job` (its phases in :mod:`.lifecycle`); the providers'
limiters, slots and circuit breakers live in :mod:`.runtime`; submits in :mod:`.submit`;
polls and downloads in :mod:`.fetch`; journal, manifest and budget in :mod:`.bookkeeping`.
Whatever happens to one job ends as its :class:`JobResult`; it never cancels the others.
"""

from __future__ import annotations

import math
import random
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from pathlib import Path
from typing import Self

import aiohttp
import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectSendStream

from stableaudio_async.batch import LocatedJob, check_jobs, drop_unsupported
from stableaudio_async.bookkeeping import Ledger
from stableaudio_async.config import Settings
from stableaudio_async.errors import ConfigError, InvalidBatchError
from stableaudio_async.fetch import Fetcher
from stableaudio_async.http import send_tracing
from stableaudio_async.job import JobRunner
from stableaudio_async.journal import JobStore, Journal
from stableaudio_async.models import Job, JobResult
from stableaudio_async.runtime import (
    LimiterFactory,
    ProviderProgress,
    ProviderRuntime,
    StopControl,
    local_limiter,
)
from stableaudio_async.submit import Submitter

__all__ = ["Engine", "ProviderProgress"]


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
        #: Makes each provider's limiters (a shared limit would pass another factory here).
        self._limiter: LimiterFactory = local_limiter
        self._providers: dict[str, ProviderRuntime] = {}
        self._session: aiohttp.ClientSession | None = None
        self._tg: TaskGroup | None = None
        self._ledger = Ledger(self.out_dir, journal if journal is not None
                              else Journal(self.out_dir), settings, max_cost_usd)
        self._stop = StopControl()
        self._jobs: JobRunner | None = None
        self._batch_scopes: set[anyio.CancelScope] = set()

    async def __aenter__(self) -> Self:
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
            self._stop, force=self.force)
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._tg is not None and self._session is not None
        try:
            # Work still running here belongs to a run() its caller abandoned: stop it. The
            # body's own exception is not handed to the task group, so it reaches the caller
            # as itself rather than wrapped in an ExceptionGroup.
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
        """End every running batch now. Accepted jobs keep their request ids in the journal and
        are not cancelled remotely, so the next run resumes them."""
        self._stop.stopping = True
        for scope in list(self._batch_scopes):
            scope.cancel()

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

    # -- running ---------------------------------------------------------------------------

    async def run(self, jobs: Iterable[Job | LocatedJob]) -> AsyncIterator[JobResult]:
        """Run ``jobs`` concurrently and yield each result as its job finishes.

        The batch is validated whole before anything is sent. Leaving the loop early cancels
        the batch's remaining jobs (wrap in :func:`contextlib.aclosing` to do so at once).
        """
        if self._tg is None:
            raise RuntimeError("use `async with Engine(...)` before running jobs")
        batch = self.prepare(jobs)
        await self._ledger.journal.register(batch)
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
        if self._jobs is None:
            raise RuntimeError("use `async with Engine(...)` before running jobs")
        (job,) = self.prepare([job])
        await self._ledger.journal.register([job])
        return await self._jobs.run(job)

    def progress(self) -> dict[str, ProviderProgress]:
        """A snapshot of every provider used so far."""
        return {name: p.progress() for name, p in self._providers.items()}

    async def _run_batch(
        self, jobs: list[Job], results: MemoryObjectSendStream[JobResult], scope: anyio.CancelScope
    ) -> None:
        assert self._jobs is not None
        runner = self._jobs

        async def one(job: Job) -> None:
            result = await runner.run(job, known.pop(job.id, None))
            await results.send(result)

        with scope:
            # One read for the whole batch rather than one per job.
            known = {record.job_id: record for record in await self._ledger.journal.records()}
            async with results, anyio.create_task_group() as tg:
                for job in jobs:
                    tg.start_soon(one, job)
