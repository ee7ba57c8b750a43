"""One job in flight in an engine, and the handles its callers hold on it.

A :class:`Flight` is the one run of a job id in an engine: every ``generate()``, ``submit()``,
``attach()`` and batch of that id joins it, so they share one submission and one result
(single flight). It runs in the engine's task group, not in any caller's, so that a caller
giving up decides its fate by a rule rather than by which task it happened to run in:

- a ``generate()`` (or a batch of ``run()``) that is cancelled leaves the flight; the last one
  to leave, when no :class:`JobHandle` was handed out, cancels it. A submit on the wire is
  shielded until its answer is in the journal, and the caller's cancellation goes through
  once the flight has wound down, so the journal holds every accepted request id;
- a :class:`JobHandle` keeps the job running until :meth:`JobHandle.cancel` or the engine's
  end; abandoning ``await handle.result()`` abandons only the wait.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Literal

import anyio
from anyio.streams.memory import MemoryObjectSendStream
from pydantic import BaseModel, ConfigDict

from stableaudio_async.errors import DeadlineExceededError, StableAudioError
from stableaudio_async.lifecycle import JobPhase, JobRun
from stableaudio_async.logs import get_logger
from stableaudio_async.models import Job, JobResult, JobStatus, Timings

__all__ = ["Flight", "JobEvent", "JobHandle", "JobOptions", "Phase"]

log = get_logger(__name__)

#: Where a job is: a :class:`~stableaudio_async.lifecycle.JobPhase` value.
Phase = Literal["pending", "submitting", "submitted", "running", "downloading", "checking",
                "completed", "failed", "held"]

_FINAL = frozenset({JobPhase.COMPLETED, JobPhase.FAILED, JobPhase.HELD})


def _phase(phase: JobPhase) -> Phase:
    return phase.value


class JobEvent(BaseModel):
    """One step of a job: it moved to ``phase``. The last event of a job is its final phase
    (``completed``, ``failed`` or ``held``) and carries its ``result``; a job found done in the
    output folder has only that one (``completed``, the result ``skipped``)."""

    model_config = ConfigDict(frozen=True)

    job_id: str
    phase: Phase
    request_id: str | None = None
    result: JobResult | None = None


@dataclass(frozen=True, slots=True)
class JobOptions:
    """What one call asked of its job. The first call of a flight decides ``force``,
    ``timeout`` and ``path``; every call's ``on_event`` is called."""

    force: bool | None = None
    timeout: float | None = None
    path: str | None = None
    on_event: Callable[[JobEvent], object] | None = None


class Flight:
    """The one run of a job id in an engine (see the module docstring)."""

    def __init__(self, job: Job, options: JobOptions) -> None:
        self.job = job
        self.options = options
        self.scope = anyio.CancelScope()
        self.accepted = anyio.Event()
        self.finished = anyio.Event()
        self.result: JobResult | None = None
        self.phase: JobPhase = JobPhase.PENDING
        self.request_id: str | None = None
        self.run: JobRun | None = None
        #: Set once the call's ``timeout`` ended the job.
        self.timed_out = False
        #: Callers waiting for the result that cancel it when the last of them leaves.
        self.waiters = 0
        #: Handles handed out: while there is one, the job lives until cancelled or the
        #: engine ends.
        self.handles = 0
        self._history: list[JobEvent] = []
        self._listeners: list[MemoryObjectSendStream[JobEvent]] = []
        self._callbacks: list[Callable[[JobEvent], object]] = []
        self.listen(options.on_event)

    def listen(self, callback: Callable[[JobEvent], object] | None) -> None:
        """Call ``callback`` with each event from now on (a call that joined the flight)."""
        if callback is not None and callback not in self._callbacks:
            self._callbacks.append(callback)

    # -- what the runner reports -----------------------------------------------------------

    def attach_run(self, run: JobRun) -> None:
        self.run = run
        run.listener = self._moved

    def _moved(self, run: JobRun) -> None:
        self.phase = run.phase
        self.request_id = run.request_id
        if run.phase is JobPhase.SUBMITTED:
            self.accepted.set()  # the request id is in the journal
        if run.phase not in _FINAL:  # the final event carries the result: see finish()
            self._emit(JobEvent(job_id=self.job.id, phase=_phase(run.phase),
                                request_id=run.request_id))

    def finish(self, result: JobResult) -> None:
        if self.result is not None:
            return
        self.result = result
        self.request_id = result.request_id or self.request_id
        self.phase = {JobStatus.FAILED: JobPhase.FAILED, JobStatus.PENDING: JobPhase.HELD
                      }.get(result.status, JobPhase.COMPLETED)
        self._emit(JobEvent(job_id=self.job.id, phase=_phase(self.phase),
                            request_id=self.request_id, result=result))
        for listener in self._listeners:
            listener.close()
        self._listeners.clear()
        self.accepted.set()
        self.finished.set()

    def cancelled_early(self) -> None:
        """The flight ended before its job's run began (cancelled at once)."""
        self.finish(JobResult(id=self.job.id, provider=self.job.provider, model=self.job.model,
                              task=self.job.task, status=JobStatus.PENDING,
                              pending_reason="cancelled", timings=Timings(),
                              error="cancelled before it started: a rerun submits it"))

    def _emit(self, event: JobEvent) -> None:
        self._history.append(event)
        for listener in self._listeners:
            listener.send_nowait(event)
        for callback in self._callbacks:
            try:
                callback(event)
            except Exception:  # the caller's bug must not end the job
                log.exception("job.event_callback_failed", job_id=self.job.id)

    # -- what callers do -------------------------------------------------------------------

    def events(self) -> AsyncIterator[JobEvent]:
        """Every event so far, then each as it comes, ending after the final one."""
        send, receive = anyio.create_memory_object_stream[JobEvent](math.inf)
        for event in self._history:
            send.send_nowait(event)
        if self.finished.is_set():
            send.close()
        else:
            self._listeners.append(send)

        async def stream() -> AsyncIterator[JobEvent]:
            async with receive:
                async for event in receive:
                    yield event

        return stream()

    def outcome(self) -> JobResult:
        """The result, or the job's error raised (see :meth:`JobResult.raise_for_status`)."""
        result = self.result
        assert result is not None
        if self.timed_out:
            error: StableAudioError = DeadlineExceededError(
                f"did not finish within the call's timeout of {self.options.timeout:g} s: "
                + ("its request id is kept, and a rerun or attach() follows it"
                   if result.request_id else "a rerun submits it"),
                provider=self.job.provider, job_id=self.job.id, request_id=result.request_id)
            error.result = result
            raise error
        return result.raise_for_status()

    async def wait(self) -> JobResult:
        """Wait for the result as one of the flight's waiters (``generate()``, a batch)."""
        self.waiters += 1
        try:
            await self.finished.wait()
        except anyio.get_cancelled_exc_class():
            self.waiters -= 1
            await self.left()
            raise
        self.waiters -= 1
        assert self.result is not None
        return self.result

    async def left(self) -> None:
        """A cancelled caller has left: the last to go, with no handle out, cancels the job.
        Returns once the job has wound down (a submit on the wire answered and journalled)."""
        if self.waiters == 0 and self.handles == 0:
            self.scope.cancel()
        with anyio.CancelScope(shield=True):
            await self.finished.wait()


class JobHandle:
    """A job accepted by its provider, whose request id is durable in the journal.

    From :meth:`Engine.submit` or :meth:`Engine.attach`. The job goes on in the engine until
    it ends, :meth:`cancel` is called or the engine closes; giving up on :meth:`result` gives up
    only the wait. Handles of one job id share one run.
    """

    def __init__(self, flight: Flight, cancel: Callable[[Flight], None]) -> None:
        self._flight = flight
        self._cancel = cancel
        flight.handles += 1

    def __repr__(self) -> str:
        return f"<JobHandle {self.job_id} {self.status()} request_id={self.request_id}>"

    @property
    def job(self) -> Job:
        return self._flight.job

    @property
    def job_id(self) -> str:
        return self._flight.job.id

    @property
    def request_id(self) -> str | None:
        """The provider's id for the job (``None`` for a synchronous provider until done)."""
        return self._flight.request_id

    @property
    def done(self) -> bool:
        return self._flight.finished.is_set()

    def status(self) -> Phase:
        """Where the job is now."""
        return _phase(self._flight.phase)

    async def result(self) -> JobResult:
        """Wait for the job's result; raise its error as :meth:`Engine.generate` does."""
        await self._flight.finished.wait()
        return self._flight.outcome()

    async def cancel(self) -> None:
        """Cancel the job: remotely too where the provider can (fal, Replicate); elsewhere the
        provider finishes it and a rerun, or :meth:`Engine.attach`, fetches it. Returns once
        the job has wound down (a submit on the wire is answered and journalled first)."""
        flight = self._flight
        if not flight.finished.is_set():
            self._cancel(flight)
        with anyio.CancelScope(shield=True):
            await flight.finished.wait()

    def events(self) -> AsyncIterator[JobEvent]:
        """The job's events: every one so far, then each as it comes; ends after the last."""
        return self._flight.events()
