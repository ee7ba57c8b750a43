"""The job store's interface: a job's journalled states, its record, and what the engine needs
from a store (:class:`JobStore`). :class:`~stableaudio_async.journal.Journal` is the SQLite
one; a run sharing its jobs with other workers passes the engine another.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from types import TracebackType
from typing import Any, Protocol, runtime_checkable

from stableaudio_async.models import Job, JobResult, RemoteHandle

__all__ = ["JobRecord", "JobState", "JobStore"]


class JobState(StrEnum):
    """Where a job is in its life, as far as the journal knows."""

    PENDING = "pending"  # known, never sent
    SUBMITTING = "submitting"  # intent recorded; the submit may or may not have reached the provider
    SUBMITTED = "submitted"  # the provider accepted it: request id known
    COMPLETED = "completed"  # audio on disk, checksum recorded
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class JobRecord:
    """One job as the journal last recorded it."""

    job_id: str
    provider: str
    state: JobState
    job: Job
    request_id: str | None
    poll_url: str | None
    result_url: str | None
    cancel_url: str | None
    attempts: int
    possibly_duplicated: bool
    result: JobResult | None
    updated_at: float
    #: The latest word from :meth:`Journal.status` (not durable: may lag after a crash).
    remote_status: str | None = None


@runtime_checkable
class JobStore(Protocol):
    """What the engine needs from a journal; :class:`Journal` is the SQLite one.

    ``intent``, ``submitted`` and ``finished`` must be durable when they return; ``status``
    may be batched. Another backend (a shared database for several machines, say) implements
    this and is passed to the engine.
    """

    async def __aenter__(self) -> Any: ...
    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> Any: ...
    async def register(self, jobs: Sequence[Job]) -> None: ...
    async def intent(self, job: Job, *, possibly_duplicated: bool = False) -> None: ...
    async def submitted(self, job_id: str, handle: RemoteHandle) -> None: ...
    async def finished(self, result: JobResult) -> None: ...
    async def reset(self, job_id: str) -> None: ...
    def status(self, job_id: str, word: str) -> None: ...
    async def get(self, job_id: str) -> JobRecord | None: ...
    async def records(self) -> list[JobRecord]: ...
