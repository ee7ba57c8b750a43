"""One job, start to finish: where its life is decided.

It resumes from what the journal says, takes a slot of its provider, submits (or follows the
request id it already has), waits for the final status, downloads, checks the audio, and
records the outcome. Whatever goes wrong ends as a :class:`JobResult` — failed, or pending
when the job may still be finished by a rerun — and never cancels another job. The phases it
moves through are :class:`~stableaudio_async.lifecycle.JobPhase`'s.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path

import anyio

from stableaudio_async.audiocheck import check_audio
from stableaudio_async.bookkeeping import Ledger, intact
from stableaudio_async.download import WrittenFile
from stableaudio_async.errors import (
    AudioInvalidError,
    AuthenticationError,
    DownloadError,
    InsufficientBalanceError,
    JobFailedError,
    ProviderError,
)
from stableaudio_async.fetch import Fetcher, destination
from stableaudio_async.handle import Flight
from stableaudio_async.lifecycle import HeldBack, JobPhase, JobRun, Undelivered, accept
from stableaudio_async.logs import Logger, get_logger
from stableaudio_async.models import (
    Job,
    JobResult,
    JobStatus,
    PendingReason,
    Queued,
    RemoteHandle,
    Timings,
)
from stableaudio_async.runtime import ProviderRuntime, StopControl
from stableaudio_async.store import JobRecord, JobState
from stableaudio_async.submit import LOOKUP_SKEW, Submitter

__all__ = ["JobRunner"]

log = get_logger(__name__)


#: Files up to this size are checked on the event loop rather than in a worker thread.
_INLINE_CHECK_BYTES = 1024 * 1024


class JobRunner:
    """Runs jobs of one engine, each to its result (see the module docstring)."""

    def __init__(self, providers: Mapping[str, ProviderRuntime], ledger: Ledger,
                 submitter: Submitter, fetcher: Fetcher, stop: StopControl, *,
                 force: bool, out_dir: Path) -> None:
        self._providers = providers
        self._ledger = ledger
        self._submitter = submitter
        self._fetcher = fetcher
        self._stop = stop
        self._force = force
        self._out_dir = out_dir

    async def run(self, job: Job, record: JobRecord | None = None, *,
                  flight: Flight | None = None, force: bool | None = None,
                  path: Path | None = None) -> JobResult:
        """Run one job to its result; ``record`` is its journal record, if already read.

        ``flight`` follows the job's moves (its handles' events) and gets its result, a
        cancelled job's included; ``force`` and ``path`` are the call's own (else the
        engine's ``force``, and ``<out>/<id>.<format>``).
        """
        result = await self._run(job, record, flight, self._force if force is None else force,
                                 path or destination(self._out_dir, job))
        if flight is not None:
            flight.finish(result)
        return result

    async def ended(self, record: JobRecord) -> JobResult | None:
        """The outcome a journal record holds of a job that is over in this folder: done (its
        file intact: as ``skipped``) or failed. None for a job still to be run or followed."""
        if record.result is None:
            return None
        kept = self._ledger.resolved(record.result)
        if record.state is JobState.COMPLETED and await intact(kept):
            return _skipped(kept)
        return kept if record.state is JobState.FAILED else None

    async def _run(self, job: Job, record: JobRecord | None, flight: Flight | None,
                   force: bool, dest: Path) -> JobResult:
        provider = self._providers[job.provider]
        journal = self._ledger.journal
        bound = log.bind(job_id=job.id, provider=job.provider)
        if record is None:
            record = await journal.get(job.id)
        if record is not None and force and record.state is not JobState.PENDING:
            await journal.reset(job.id)
            record = None
        done = self._ledger.resolved(record.result) \
            if record is not None and record.state is JobState.COMPLETED and record.result \
            else None
        if done is not None and await intact(done):
            bound.info("job.skipped", reason="already completed in this output folder")
            await self._ledger.skipped(done)
            return _skipped(done)
        if not force and (record is None or record.state is JobState.PENDING):
            # Not in the journal (deleted, emptied), but in the manifest with its file intact.
            listed = self._ledger.recovered(job.id)
            if listed is not None and await intact(listed):
                bound.warning("job.recovered", path=listed.path,
                              reason="completed by the manifest; its file matches its sha256")
                await journal.finished(self._ledger.stored(listed))
                return _skipped(listed)
        run = JobRun(provider.counts, started=anyio.current_time(), seed=job.seed)
        if flight is not None:
            flight.attach_run(run)
        resume = self._resumed(provider, run, record)
        price = provider.adapter.cost(job)
        reserved: float | None = None
        handle: RemoteHandle | None = None
        probe = False  # this job is the probe of a provider stopped by a refused key
        try:
            if provider.adapter.synchronous:
                # The connection is held for the whole generation, download included.
                async with provider.slots:
                    probe = provider.check_open()
                    reserved = self._reserve(job)
                    written = await self._submitter.generate(provider, job, run, bound, dest)
                    probe = _probed(provider, probe, bound)
            else:
                # The slot is the provider's: it is free again once the job is final, and the
                # download proceeds without it.
                async with provider.slots:
                    probe = provider.check_open()
                    if resume is None:
                        reserved = self._reserve(job)
                        handle = await self._submitter.submit(provider, job, run, bound)
                        probe = _probed(provider, probe, bound)
                    else:
                        handle = resume
                        run.request_id = handle.request_id
                        bound.info("job.resumed", request_id=handle.request_id)
                    bound = bound.bind(request_id=handle.request_id)
                    run.advance(JobPhase.SUBMITTED)
                    final = await self._fetcher.follow(provider, job, handle, run, bound)
                    run.marks["done"] = anyio.current_time()
                accepted = accept(provider.name, job, run, final)
                run.advance(JobPhase.DOWNLOADING)
                run.marks["download"] = anyio.current_time()
                try:
                    written = await self._fetcher.download(provider, job, accepted, handle,
                                                           bound, dest)
                except DownloadError as exc:
                    # Generated and billed: never given up while the provider still holds it.
                    raise Undelivered(exc) from exc
            run.advance(JobPhase.CHECKING)
            await self._check_audio(provider, job, run, written)
        except HeldBack as held:
            run.advance(JobPhase.HELD)
            bound.info("job.held_back", reason=str(held))
            # Recorded like any outcome, so the manifest accounts for every job of the batch.
            stopped_by = held.error
            result = run.result(job, JobStatus.PENDING, error=str(held),
                                pending_reason=held.reason,
                                error_type=type(stopped_by).__name__ if stopped_by else None,
                                http_status=stopped_by.status if stopped_by else None)
        except Undelivered as undelivered:
            lost = undelivered.error
            run.advance(JobPhase.HELD)
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
            elif probe:
                provider.probe_ended(exc, bound)
            run.advance(JobPhase.FAILED)
            bound.warning("job.failed", error=str(exc), error_type=type(exc).__name__,
                          http_status=exc.status)
            charged = (isinstance(exc, JobFailedError | AudioInvalidError) and exc.charged
                       and not provider.adapter.free_failures) \
                or (isinstance(exc, DownloadError) and exc.charged)
            result = run.result(job, JobStatus.FAILED, error=exc.message,
                                error_type=type(exc).__name__, http_status=exc.status,
                                price=price if charged or price is None else (0.0, price[1]))
            result._error = exc
        except anyio.get_cancelled_exc_class():
            # Ended before its outcome: by abort() (the CLI's Ctrl-C), by its caller giving up,
            # or by handle.cancel(). Its submit is not on the wire (that is shielded), so the
            # journal holds its request id if it was accepted: a rerun follows it. The
            # manifest accounts for it, pending, and the counters no longer show it running.
            with anyio.CancelScope(shield=True):
                if probe:
                    provider.probing = False
                if provider.adapter.synchronous and run.written is not None \
                        and await self._completed_anyway(provider, job, run):
                    # The reply was the audio, generated and billed: kept, not given up.
                    result = run.result(job, JobStatus.COMPLETED, written=run.written,
                                        price=price)
                    await self._ledger.record(job, result, reserved)
                    if flight is not None:
                        flight.finish(result)
                    raise
                handle = handle or run.handle
                if run.cancel_remote and handle is not None:
                    await self._fetcher.cancel_remote(provider, handle, bound)
                if run.phase not in (JobPhase.FAILED, JobPhase.HELD, JobPhase.COMPLETED):
                    run.advance(JobPhase.HELD)
                how: PendingReason = "stopped" if self._stop.stopping else "cancelled"
                result = run.result(
                    job, JobStatus.PENDING, pending_reason=how,
                    error=f"{how} before it finished: a rerun "
                          + ("follows its request id without submitting it again"
                             if run.request_id else "submits it"))
                bound.info("job.cancelled", reason=how, request_id=run.request_id)
                # A reservation is released only when nothing was sent in this run.
                nothing_sent = run.request_id is None and run.attempts == run.journal_attempts
                await self._ledger.record(job, result, reserved if nothing_sent else None)
                if flight is not None:
                    flight.finish(result)
            raise
        except Exception as exc:  # a bug must fail its job, not the batch
            if run.phase not in (JobPhase.FAILED, JobPhase.HELD, JobPhase.COMPLETED):
                run.advance(JobPhase.FAILED)
            bound.exception("job.crashed")
            result = run.result(job, JobStatus.FAILED,
                                error=f"internal error: {type(exc).__name__}: {exc}",
                                error_type="InternalError")
        else:
            _probed(provider, probe, bound)  # a resumed job's polls got through
            run.advance(JobPhase.COMPLETED)
            result = run.result(job, JobStatus.COMPLETED, written=written, price=price)
            bound.info("job.completed", path=str(written.path), bytes=written.size,
                       seconds=round(result.timings.total, 3))
        with anyio.CancelScope(shield=True):  # the outcome is recorded whole, or not begun
            await self._ledger.record(job, result, reserved)
        return result

    async def _completed_anyway(self, provider: ProviderRuntime, job: Job, run: JobRun) -> bool:
        """Whether a synchronous job cancelled once its audio was written is complete: the
        audio checks out (else it is kept aside, as any rejected file is)."""
        assert run.written is not None
        if run.phase in (JobPhase.FAILED, JobPhase.HELD, JobPhase.COMPLETED):
            return False
        if run.phase is not JobPhase.CHECKING:
            run.advance(JobPhase.CHECKING)
        try:
            await self._check_audio(provider, job, run, run.written)
        except AudioInvalidError:
            return False
        run.advance(JobPhase.COMPLETED)
        return True

    def _resumed(self, provider: ProviderRuntime, run: JobRun,
                 record: JobRecord | None) -> RemoteHandle | None:
        """What the journal says of an earlier run of this job: the request to follow, if it
        was accepted; otherwise how to treat a submit that may have been on the wire."""
        if record is None:
            return None
        run.attempts = run.journal_attempts = record.attempts
        if record.state is JobState.SUBMITTED and record.request_id \
                and not provider.adapter.synchronous:
            provider.claimed.add(record.request_id)
            return RemoteHandle(record.request_id, record.poll_url, Queued(),
                                record.result_url, record.cancel_url)
        if record.state is JobState.SUBMITTING and provider.can_look_up:
            # The last run died with this submit on the wire: look for it among the
            # provider's jobs made since its intent was written before sending again.
            run.lookup_since = record.updated_at - LOOKUP_SKEW
        elif record.state in (JobState.SUBMITTING, JobState.SUBMITTED):
            # The last run died with this submit on the wire (or, for a synchronous
            # provider, mid-reply): no id to look it up by, so it is sent again, flagged.
            run.possibly_duplicated = True
        return None

    def _reserve(self, job: Job) -> float | None:
        """Before a submit: refuse once stopping, and set the job's price aside under the cap."""
        self._stop.refuse_if_stopping()
        return self._ledger.reserve(job)

    async def _check_audio(self, provider: ProviderRuntime, job: Job, run: JobRun,
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


def _probed(provider: ProviderRuntime, probe: bool, bound: Logger) -> bool:
    """After a submit was accepted: a probe that got through reopens its provider."""
    if probe:
        provider.probe_ended(None, bound)
    return False


def _skipped(done: JobResult) -> JobResult:
    """A job found done in this folder, as this run reports it."""
    return done.model_copy(update={"status": JobStatus.SKIPPED, "timings": Timings()})
