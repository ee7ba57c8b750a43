"""One job's life as a state machine: its phases, the moves allowed between them, and its run.

The phases and their transitions are written here and nowhere else::

    PENDING ──► SUBMITTING ──► SUBMITTED ──► RUNNING ──► DOWNLOADING ──► CHECKING ──► COMPLETED
       │             │   (synchronous: the held reply is the generation)       ▲
       │             └────────────────────────► RUNNING                         │
       └── resumed with a request id ──► SUBMITTED    (inline audio) ──────────┘

    every phase before COMPLETED ──► FAILED | HELD

``HELD`` is a job that ends this run pending: held back before its submit (stopped, the cost
cap, its provider stopped), generated but not yet downloaded, or cut off by an abort. The
journal's states are five of these phases, one to one (:data:`JOURNALLED`); the others are
kept in memory only, since a rerun resumes a job from what the journal says.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum

import anyio

from stableaudio_async.download import WrittenFile
from stableaudio_async.errors import (
    ContentRejectedError,
    DownloadError,
    JobFailedError,
    ProviderError,
    ProviderUnavailableError,
)
from stableaudio_async.models import (
    Failed,
    Job,
    JobResult,
    JobStatus,
    PendingReason,
    RemoteHandle,
    RemoteStatus,
    Succeeded,
    Timings,
)
from stableaudio_async.store import JobState

__all__ = ["JOURNALLED", "TRANSITIONS", "Counts", "HeldBack", "JobPhase", "JobRun",
           "Undelivered", "accept", "check_finish"]


class JobPhase(StrEnum):
    """Where one job is in this run."""

    PENDING = "pending"  # not sent yet
    SUBMITTING = "submitting"  # its submit is being sent (and retried)
    SUBMITTED = "submitted"  # accepted: request id known, waiting in the provider's queue
    RUNNING = "running"  # generating remotely (or, synchronous, on the held connection)
    DOWNLOADING = "downloading"  # the audio is being fetched
    CHECKING = "checking"  # the file is checked to be audio of the format and length asked
    COMPLETED = "completed"
    FAILED = "failed"
    HELD = "held"  # ends this run pending (see the module docstring)


_ENDS = frozenset({JobPhase.FAILED, JobPhase.HELD})

#: The moves each phase allows; a move not listed is a bug, raised as such.
TRANSITIONS: dict[JobPhase, frozenset[JobPhase]] = {
    JobPhase.PENDING: frozenset({JobPhase.SUBMITTING, JobPhase.SUBMITTED}) | _ENDS,
    JobPhase.SUBMITTING: frozenset({JobPhase.SUBMITTED, JobPhase.RUNNING}) | _ENDS,
    JobPhase.SUBMITTED: frozenset({JobPhase.RUNNING, JobPhase.DOWNLOADING,
                                   JobPhase.CHECKING}) | _ENDS,
    JobPhase.RUNNING: frozenset({JobPhase.DOWNLOADING, JobPhase.CHECKING}) | _ENDS,
    JobPhase.DOWNLOADING: frozenset({JobPhase.CHECKING}) | _ENDS,
    JobPhase.CHECKING: frozenset({JobPhase.COMPLETED}) | _ENDS,
    JobPhase.COMPLETED: frozenset(),
    JobPhase.FAILED: frozenset(),
    JobPhase.HELD: frozenset(),
}

#: The journal's states, each the phase of the same name.
JOURNALLED: dict[JobState, JobPhase] = {state: JobPhase(state.value) for state in JobState}

#: The progress counter each phase is shown under; CHECKING keeps the one before it.
_COUNTERS: dict[JobPhase, str | None] = {
    JobPhase.PENDING: "waiting",
    JobPhase.SUBMITTING: "waiting",
    JobPhase.SUBMITTED: "queued",
    JobPhase.RUNNING: "running",
    JobPhase.DOWNLOADING: "downloading",
    JobPhase.CHECKING: None,
    JobPhase.COMPLETED: "completed",
    JobPhase.FAILED: "failed",
    JobPhase.HELD: "pending",
}


class HeldBack(Exception):
    """A job not submitted in this run (stopping, the cost cap, its provider stopped: then
    ``error`` is what stopped it)."""

    def __init__(self, message: str, reason: PendingReason,
                 error: ProviderError | None = None) -> None:
        super().__init__(message)
        self.reason: PendingReason = reason
        self.error = error


class Undelivered(Exception):
    """A job the provider finished whose audio could not be fetched: it stays pending."""

    def __init__(self, error: DownloadError) -> None:
        super().__init__(error.message)
        self.error = error


class Counts:
    """How many of a provider's jobs are under each progress counter."""

    __slots__ = ("completed", "downloading", "failed", "pending", "queued", "running", "waiting")

    def __init__(self) -> None:
        self.waiting = self.queued = self.running = 0
        self.downloading = self.completed = self.failed = self.pending = 0


class JobRun:
    """What one job has been through so far: its phase, ids, attempts and phase times."""

    def __init__(self, counts: Counts, *, started: float, seed: int | None) -> None:
        self.counts = counts
        self.started = started
        self.seed = seed
        self.phase = JobPhase.PENDING
        self.request_id: str | None = None
        self.finish_reason: str | None = None
        self.possibly_duplicated = False
        #: When a submit that may have been accepted was first sent (seconds since the epoch,
        #: less a skew): set, the next attempt first looks the job up by its input.
        self.lookup_since: float | None = None
        #: Whether a listing without the job proves it was never made.
        self.lookup_settles = True
        #: When this run first sent the job's submit (seconds since the epoch).
        self.first_sent: float | None = None
        self.attempts = 0
        #: Attempts recorded by earlier runs; an intent is journalled once per run.
        self.journal_attempts = 0
        self.marks: dict[str, float] = {}
        #: Called after every move, with this run (a job handle's events).
        self.listener: Callable[[JobRun], None] | None = None
        #: Cancelled by its caller's ``handle.cancel()``: cancelled remotely too, if it can be.
        self.cancel_remote = False
        #: What the shielded submit got, kept here so that a cancellation arriving just after
        #: it cannot lose it: the accepted job's handle, or a synchronous reply's audio.
        self.handle: RemoteHandle | None = None
        self.written: WrittenFile | None = None
        self._counter = "waiting"
        counts.waiting += 1

    def advance(self, to: JobPhase) -> None:
        """Move to phase ``to``, which :data:`TRANSITIONS` must allow from the current one."""
        if to not in TRANSITIONS[self.phase]:
            raise RuntimeError(f"a job cannot go from {self.phase} to {to}")
        self.phase = to
        counter = _COUNTERS[to]
        if counter is not None and counter != self._counter:
            setattr(self.counts, self._counter, getattr(self.counts, self._counter) - 1)
            setattr(self.counts, counter, getattr(self.counts, counter) + 1)
            self._counter = counter
        if self.listener is not None:
            self.listener(self)

    def flag_possible_duplicate(self) -> None:
        """A submit the provider may have taken is about to be sent again."""
        self.possibly_duplicated = True

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


def accept(provider: str, job: Job, run: JobRun, final: RemoteStatus) -> Succeeded:
    """A final status as audio to keep, or the job's failure."""
    if isinstance(final, Failed):
        error = JobFailedError(final.reason, provider=provider, job_id=job.id,
                               request_id=run.request_id)
        error.charged = final.charged
        raise error
    if not isinstance(final, Succeeded):
        raise ProviderUnavailableError(f"no final status ({type(final).__name__.lower()})",
                                       provider=provider, request_id=run.request_id)
    if final.seed is not None:
        run.seed = final.seed
    check_finish(provider, run, final.finish_reason)
    return final


def check_finish(provider: str, run: JobRun, finish_reason: str | None) -> None:
    """Record the provider's finish reason; anything but success is the job's failure."""
    run.finish_reason = finish_reason
    if finish_reason is not None and finish_reason.upper() != "SUCCESS":
        # e.g. CONTENT_FILTERED: the provider answered, but not with the audio asked for.
        raise ContentRejectedError(f"finish reason {finish_reason}", provider=provider,
                                   request_id=run.request_id)
