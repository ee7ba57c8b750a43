"""``journal.sqlite3``: each job's life, written durably so a rerun never pays twice nor loses a result.

The order of writes is the contract the engine resumes from: intent to submit is committed
*before* the submit request is sent, the provider's request id as soon as it is known, then the
final result. A job found ``SUBMITTING`` after a crash may or may not have reached the provider.

Writes go through group commit. One writer thread owns the sqlite3 connection; callers enqueue
writes and the writer drains everything queued, runs it in one transaction and commits once
(WAL, ``synchronous=FULL``: the commit is on disk when it returns), then wakes the callers. A
burst of hundreds of ``intent`` calls therefore costs a few fsyncs, not hundreds. Durable
writes wait for their commit; :meth:`Journal.status` notes do not, and ride along with the next
commit (or are flushed after :data:`NOTE_DELAY` seconds, or on close).
"""

from __future__ import annotations

import asyncio
import enum
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import closing, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import anyio
import anyio.to_thread
from pydantic import ValidationError

from stableaudio_async.errors import StableAudioError
from stableaudio_async.logs import get_logger
from stableaudio_async.models import Job, JobResult, JobStatus, RemoteHandle
from stableaudio_async.store import JobRecord, JobState, JobStore

__all__ = [
    "JOURNAL_NAME",
    "JobRecord",
    "JobState",
    "JobStore",
    "Journal",
    "JournalError",
    "read_records",
]

log = get_logger(__name__)

JOURNAL_NAME = "journal.sqlite3"

#: Longest a :meth:`Journal.status` note waits for a durable write to share its commit.
NOTE_DELAY = 1.0

_SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq                 INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id              TEXT NOT NULL UNIQUE,
    provider            TEXT NOT NULL,
    state               TEXT NOT NULL,
    job                 TEXT NOT NULL,
    request_id          TEXT,
    poll_url            TEXT,
    result_url          TEXT,
    cancel_url          TEXT,
    attempts            INTEGER NOT NULL DEFAULT 0,
    possibly_duplicated INTEGER NOT NULL DEFAULT 0,
    remote_status       TEXT,
    result              TEXT,
    updated_at          REAL NOT NULL
)
"""

_COLUMNS = (
    "job_id, provider, state, job, request_id, poll_url, result_url, cancel_url, "
    "attempts, possibly_duplicated, remote_status, result, updated_at"
)

_REGISTER = (
    "INSERT OR IGNORE INTO jobs (job_id, provider, state, job, updated_at) "
    "VALUES (?, ?, 'pending', ?, ?)"
)

# A new intent supersedes whatever an earlier attempt left: the record must never show a
# request id under SUBMITTING, or a resume would take a stale handle for this attempt's.
# possibly_duplicated is sticky: once an attempt may have been billed twice, it stays so.
_INTENT = """
INSERT INTO jobs (job_id, provider, state, job, attempts, possibly_duplicated, updated_at)
VALUES (?, ?, 'submitting', ?, 1, ?, ?)
ON CONFLICT (job_id) DO UPDATE SET
    provider = excluded.provider,
    state = 'submitting',
    job = excluded.job,
    attempts = jobs.attempts + 1,
    possibly_duplicated = jobs.possibly_duplicated OR excluded.possibly_duplicated,
    request_id = NULL, poll_url = NULL, result_url = NULL, cancel_url = NULL,
    remote_status = NULL, result = NULL,
    updated_at = excluded.updated_at
"""

_SUBMITTED = (
    "UPDATE jobs SET state = 'submitted', request_id = ?, poll_url = ?, result_url = ?, "
    "cancel_url = ?, updated_at = ? WHERE job_id = ?"
)

_FINISHED = "UPDATE jobs SET state = ?, result = ?, updated_at = ? WHERE job_id = ?"

# A pending outcome leaves the state as it was: a job generated but not yet downloaded stays
# SUBMITTED with its request id, so the next run fetches it rather than submitting it again.
_PENDING = "UPDATE jobs SET result = ?, updated_at = ? WHERE job_id = ?"

_RESET = (
    "UPDATE jobs SET state = 'pending', request_id = NULL, poll_url = NULL, result_url = NULL, "
    "cancel_url = NULL, attempts = 0, possibly_duplicated = 0, remote_status = NULL, "
    "result = NULL, updated_at = ? WHERE job_id = ?"
)

_NOTE = "UPDATE jobs SET remote_status = ?, updated_at = ? WHERE job_id = ?"


class JournalError(StableAudioError):
    """The journal cannot be opened, written or read, or a write names a job it does not know."""


class _Signal(enum.Enum):
    WAKE = enum.auto()  # a status note arrived: start its flush timer
    STOP = enum.auto()


@dataclass(eq=False, slots=True)
class _Op:
    """One unit of work for the writer thread, and the outcome its caller is waiting for."""

    run: Callable[[sqlite3.Connection], Any]
    event: anyio.Event = field(default_factory=anyio.Event)
    value: Any = None
    error: BaseException | None = None


class Journal:
    """Durable per-job state in ``<out_dir>/journal.sqlite3``; use as ``async with Journal(d) as j``.

    ``commits`` counts the transactions the writer has committed (group commit makes it far
    smaller than the number of durable writes under load).
    """

    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / JOURNAL_NAME
        self.commits = 0
        self._queue: queue.SimpleQueue[_Op | _Signal] = queue.SimpleQueue()
        # Guards _accepting and the hand-over of ops, so nothing is enqueued after the writer's
        # last drain (which would leave its caller waiting forever).
        self._gate = threading.Lock()
        self._accepting = False
        self._notes: dict[str, tuple[str, float]] = {}
        self._notes_due = 0.0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __aenter__(self) -> Self:
        # Shielded: abandoning the thread halfway would leak an open connection.
        with anyio.CancelScope(shield=True):
            conn = await anyio.to_thread.run_sync(self._open)
        self._loop = asyncio.get_running_loop()
        self._accepting = True
        # Daemon: should the event loop die without closing us, the interpreter may still exit;
        # whatever was committed is safe, which is the point of the journal.
        self._thread = threading.Thread(
            target=self._writer, args=(conn,), name=f"journal-writer:{self.path}", daemon=True
        )
        self._thread.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Flush pending status notes, commit, close the database and join the writer thread."""
        with self._gate:
            if not self._accepting:
                thread = None
            else:
                self._accepting = False
                self._queue.put(_Signal.STOP)
                thread = self._thread
        if thread is not None:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(thread.join)

    # -- writes ------------------------------------------------------------------------------

    async def register(self, jobs: Sequence[Job]) -> None:
        """Record jobs not yet known as ``PENDING``; known jobs keep their state. Durable."""
        now = time.time()
        rows = [(job.id, job.provider, job.model_dump_json(), now) for job in jobs]
        await self._call(lambda conn: conn.executemany(_REGISTER, rows))

    async def intent(self, job: Job, *, possibly_duplicated: bool = False) -> None:
        """Record that ``job`` is about to be submitted; returns once that is on disk.

        The job becomes ``SUBMITTING`` and its ``attempts`` grows by one; request ids and any
        result left by an earlier attempt are cleared. ``possibly_duplicated`` is sticky.
        """
        row = (job.id, job.provider, job.model_dump_json(), int(possibly_duplicated), time.time())
        await self._call(lambda conn: conn.execute(_INTENT, row))

    async def submitted(self, job_id: str, handle: RemoteHandle) -> None:
        """Record that the provider accepted ``job_id`` and where to find it. Durable."""
        row = (handle.request_id, handle.poll_url, handle.result_url, handle.cancel_url,
               time.time(), job_id)
        await self._update(job_id, _SUBMITTED, row)

    async def finished(self, result: JobResult) -> None:
        """Record a job's outcome: ``COMPLETED`` or ``FAILED`` per ``result.status``. Durable.

        A ``PENDING`` result is recorded beside the state it leaves unchanged (a job whose
        audio is still to be fetched stays ``SUBMITTED``, with its request id).
        """
        if result.status is JobStatus.PENDING:
            await self._update(result.id, _PENDING,
                               (result.model_dump_json(), time.time(), result.id))
            return
        state = JobState.COMPLETED if result.status is JobStatus.COMPLETED else JobState.FAILED
        row = (state.value, result.model_dump_json(), time.time(), result.id)
        await self._update(result.id, _FINISHED, row)

    async def reset(self, job_id: str) -> None:
        """Put a job back to ``PENDING`` with no request ids, result or attempts. Durable."""
        await self._update(job_id, _RESET, (time.time(), job_id))

    def status(self, job_id: str, word: str) -> None:
        """Note the latest remote status of a job (e.g. ``"running"``) without waiting.

        Notes are coalesced per job and committed with the next durable write, after
        :data:`NOTE_DELAY` seconds at the latest, or on close.
        """
        with self._gate:
            if not self._accepting:
                raise JournalError("the journal is closed")
            first = not self._notes
            self._notes[job_id] = (word, time.time())
            if first:
                self._notes_due = time.monotonic() + NOTE_DELAY
                self._queue.put(_Signal.WAKE)

    # -- reads -------------------------------------------------------------------------------

    async def get(self, job_id: str) -> JobRecord | None:
        """The record of ``job_id``, or ``None`` if the journal does not know it."""
        sql = f"SELECT {_COLUMNS} FROM jobs WHERE job_id = ?"  # noqa: S608 - constant columns
        rows = await self._call(lambda conn: conn.execute(sql, (job_id,)).fetchall())
        return _record(rows[0]) if rows else None

    async def records(self) -> list[JobRecord]:
        """Every record, in the order the jobs were first recorded."""
        return _records(await self._call(_select_all))

    # -- plumbing ----------------------------------------------------------------------------

    async def _update(self, job_id: str, sql: str, row: tuple[Any, ...]) -> None:
        changed = await self._call(lambda conn: conn.execute(sql, row).rowcount)
        if not changed:
            raise JournalError(f"the journal has no job {job_id!r}")

    async def _call(self, run: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run ``run`` on the writer thread and return its value once its batch is committed."""
        op = _Op(run)
        with self._gate:
            if not self._accepting:
                raise JournalError("the journal is closed")
            self._queue.put(op)
        # Shielded: the commit takes milliseconds, and a caller must not walk away not knowing
        # whether its intent is on disk.
        with anyio.CancelScope(shield=True):
            await op.event.wait()
        if op.error is not None:
            raise JournalError(f"journal operation failed: {op.error}") from op.error
        return op.value

    def _open(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: transactions are begun and committed explicitly, per batch.
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise JournalError(f"cannot open the journal {self.path}: {exc}") from exc
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise JournalError(f"cannot put the journal {self.path} in WAL mode (got {mode!r})")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=10000")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > _SCHEMA_VERSION:
                raise JournalError(
                    f"the journal {self.path} was written by a newer version (schema {version})"
                )
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(_SCHEMA)
            conn.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException as exc:
            conn.close()
            if isinstance(exc, sqlite3.Error):
                raise JournalError(f"cannot open the journal {self.path}: {exc}") from exc
            raise
        return conn

    def _writer(self, conn: sqlite3.Connection) -> None:
        """The writer thread: wait for work, drain the queue, commit once, wake the callers."""
        batch: list[_Op] = []  # taken off the queue, callers not yet woken
        try:
            stop = False
            while not stop:
                with self._gate:
                    timeout = max(0.0, self._notes_due - time.monotonic()) if self._notes else None
                try:
                    items = [self._queue.get(timeout=timeout)]
                except queue.Empty:
                    items = []  # a note's flush timer ran out
                while True:
                    try:
                        items.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                batch = [item for item in items if isinstance(item, _Op)]
                stop = _Signal.STOP in items
                with self._gate:
                    notes_due = bool(self._notes) and time.monotonic() >= self._notes_due
                    if batch or stop or notes_due:
                        notes, self._notes = self._notes, {}
                    else:
                        continue  # only a note's wake-up: let its timer run
                self._commit(conn, batch, notes)
                batch = []
        except BaseException as exc:
            log.error("journal.writer_crashed", path=str(self.path), error=repr(exc))
            raise
        finally:
            with self._gate:
                self._accepting = False
                leftover = batch
                while True:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if isinstance(item, _Op):
                        leftover.append(item)
            for op in leftover:
                op.value, op.error = None, JournalError("the journal writer has stopped")
            self._wake(leftover)
            conn.close()

    def _commit(
        self, conn: sqlite3.Connection, ops: list[_Op], notes: dict[str, tuple[str, float]]
    ) -> None:
        changes = conn.total_changes
        try:
            conn.execute("BEGIN IMMEDIATE")
            for op in ops:
                # A savepoint per op: one bad write fails alone, not the batch it shares.
                conn.execute("SAVEPOINT op")
                try:
                    op.value = op.run(conn)
                except Exception as exc:
                    conn.execute("ROLLBACK TO op")
                    op.error = exc
                conn.execute("RELEASE op")
            conn.executemany(_NOTE, [(word, at, job_id) for job_id, (word, at) in notes.items()])
            conn.execute("COMMIT")
            if conn.total_changes != changes:  # a batch of reads writes (and syncs) nothing
                self.commits += 1
        except sqlite3.Error as exc:
            log.error("journal.commit_failed", path=str(self.path), ops=len(ops), error=str(exc))
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            for op in ops:
                op.value, op.error = None, exc
        self._wake(ops)

    def _wake(self, ops: list[_Op]) -> None:
        if not ops or self._loop is None:
            return
        # Handed to the event loop without waiting for it to run, so the writer goes straight
        # on to the next batch. If the loop is gone, so is everyone who was waiting.
        with suppress(RuntimeError):
            self._loop.call_soon_threadsafe(_set_all, ops)


def _set_all(ops: list[_Op]) -> None:
    for op in ops:
        op.event.set()


def _select_all(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
    sql = f"SELECT {_COLUMNS} FROM jobs ORDER BY seq"  # noqa: S608 - constant columns
    return conn.execute(sql).fetchall()


def _records(rows: list[tuple[Any, ...]]) -> list[JobRecord]:
    return [_record(row) for row in rows]


def _record(row: tuple[Any, ...]) -> JobRecord:
    (job_id, provider, state, job, request_id, poll_url, result_url, cancel_url,
     attempts, possibly_duplicated, remote_status, result, updated_at) = row
    try:
        return JobRecord(
            job_id=job_id,
            provider=provider,
            state=JobState(state),
            job=Job.model_validate_json(job),
            request_id=request_id,
            poll_url=poll_url,
            result_url=result_url,
            cancel_url=cancel_url,
            attempts=attempts,
            possibly_duplicated=bool(possibly_duplicated),
            result=None if result is None else JobResult.model_validate_json(result),
            updated_at=updated_at,
            remote_status=remote_status,
        )
    except (ValueError, ValidationError) as exc:
        raise JournalError(f"the journal's record of job {job_id!r} is unreadable: {exc}") from exc


def read_records(out_dir: Path) -> list[JobRecord]:
    """Every record in ``out_dir``'s journal, read-only; ``[]`` when there is no journal."""
    path = out_dir / JOURNAL_NAME
    if not path.is_file():
        return []
    try:
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as conn:
            conn.execute("PRAGMA busy_timeout=10000")
            found = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'jobs'"
            ).fetchone()
            # A journal caught between being created and getting its table holds nothing yet.
            return _records(_select_all(conn)) if found else []
    except sqlite3.Error as exc:
        raise JournalError(f"cannot read the journal {path}: {exc}") from exc
