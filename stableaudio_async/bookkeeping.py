"""The record of a run's results: the journal (what a rerun trusts), the manifest (the user's
record) and the ``--max-cost`` budget, kept together so that every outcome is written the
same way, journal first.

The job store is passed in (:class:`JobStore`; the SQLite :class:`Journal` by default), so
that a run sharing its jobs with other workers hands in another one.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

import anyio

from stableaudio_async.budget import USD_PER_UNIT, Budget, price_usd
from stableaudio_async.config import Settings
from stableaudio_async.download import TEMP_SUFFIX
from stableaudio_async.errors import ConfigError
from stableaudio_async.lifecycle import HeldBack
from stableaudio_async.logs import get_logger
from stableaudio_async.manifest import Manifest
from stableaudio_async.models import Job, JobResult
from stableaudio_async.store import JobRecord, JobState, JobStore

__all__ = ["LOCK_NAME", "Ledger", "intact", "spent_usd"]

log = get_logger(__name__)

#: Held (``flock``) by the run writing to an output folder, for as long as it runs.
LOCK_NAME = ".stableaudio.lock"


class Ledger:
    """Journal, manifest and budget of one output folder; use as ``async with``."""

    def __init__(self, out_dir: Path, journal: JobStore, settings: Settings,
                 max_cost_usd: float | None) -> None:
        self.out_dir = out_dir
        self.journal = journal
        self.manifest = Manifest(out_dir)
        self._settings = settings
        self._max_cost_usd = max_cost_usd
        self._budget: Budget | None = None
        self._lock: int | None = None

    async def __aenter__(self) -> Ledger:
        # One run per output folder at a time: two would both resume the same jobs, and pay
        # for each twice. Taken before anything in the folder is read.
        self._lock = await anyio.to_thread.run_sync(_lock_folder, self.out_dir)
        try:
            await self._open()
        except BaseException:
            os.close(self._lock)
            self._lock = None
            raise
        return self

    async def _open(self) -> None:
        await self.journal.__aenter__()
        try:
            await self._load()
        except BaseException:
            await self.journal.__aexit__(None, None, None)
            raise

    async def _load(self) -> None:
        await self.manifest.load()
        records = await self.journal.records() \
            if self.manifest.completed or self._max_cost_usd is not None else []
        if self.manifest.completed:
            known = {r.job_id for r in records if r.state is JobState.COMPLETED}
            lost = set(self.manifest.completed) - known
            if lost:
                # Said once: the journal was deleted, emptied or replaced beside outputs the
                # manifest still lists. Those jobs are taken from it where their files match.
                log.warning("journal.recovering", folder=str(self.out_dir), jobs=len(lost),
                            hint="the journal lacks jobs manifest.jsonl lists as completed: "
                                 "those whose files match their sha256 are not run again")
        await anyio.to_thread.run_sync(_remove_stale_parts, self.out_dir)
        if self._max_cost_usd is not None:
            self._budget = Budget(self._max_cost_usd, spent_usd=spent_usd(records))

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            await self.journal.__aexit__(None, None, None)
        finally:
            if self._lock is not None:
                os.close(self._lock)  # closing the descriptor releases the lock
                self._lock = None

    def reserve(self, job: Job) -> float | None:
        """Before a submit: set the job's price aside under the cap, or hold the job back."""
        if self._budget is None:
            return None
        price = price_usd(job, self._settings) or 0.0
        if not self._budget.reserve(price):
            raise HeldBack(f"not submitted: it would take spending over --max-cost "
                           f"${self._budget.cap_usd:g}", "max_cost")
        return price

    async def record(self, job: Job, result: JobResult, reserved: float | None = None) -> None:
        """Settle what ``reserved`` set aside against what the job cost, then write its
        outcome: journal first, since it is what a rerun trusts."""
        if self._budget is not None and reserved is not None:
            billed = result.cost is not None and result.cost > 0
            self._budget.settle(reserved,
                                (price_usd(job, self._settings) or 0.0) if billed else 0.0)
        kept = self.stored(result)
        await self.journal.finished(kept)
        await self.manifest.append(kept)

    def recovered(self, job_id: str) -> JobResult | None:
        """The job's completed result as the manifest's last line for it says, with its path
        usable from here; None when the manifest lists it as anything else, or not at all."""
        result = self.manifest.completed.get(job_id)
        return None if result is None else self.resolved(result)

    async def skipped(self, result: JobResult) -> None:
        """A job already done in this folder: complete the manifest if the last run died
        between journal and manifest."""
        if result.id not in self.manifest.ids:
            await self.manifest.append(self.stored(result))

    def stored(self, result: JobResult) -> JobResult:
        """``result`` as journal and manifest keep it: its file named relative to the output
        folder, so that the folder resumes from any directory, and after it has moved."""
        if result.path is None:
            return result
        path = Path(result.path)
        try:
            relative = path.relative_to(self.out_dir)
        except ValueError:
            return result
        return result.model_copy(update={"path": str(relative)})

    def resolved(self, result: JobResult) -> JobResult:
        """A stored ``result`` with its file's path usable from here: a name relative to the
        output folder (as this engine writes them) joined to it. A path with folders in it
        was written by an older version relative to its working directory: it is taken as
        it is when that file exists, else by its name in the output folder."""
        if result.path is None:
            return result
        stored = Path(result.path)
        if stored.is_absolute() or len(stored.parts) > 1:
            if stored.exists() or stored.is_symlink():
                return result
            stored = Path(stored.name)
        return result.model_copy(update={"path": str(self.out_dir / stored)})


def spent_usd(records: Iterable[JobRecord]) -> float:
    """What finished jobs in this output folder have cost, for the ``--max-cost`` cap."""
    spent = 0.0
    for record in records:
        result = record.result
        if result is not None and result.cost is not None and result.cost_unit is not None:
            spent += result.cost * USD_PER_UNIT.get(result.cost_unit, 0.0)
    return spent


def _lock_folder(out_dir: Path) -> int:
    """Take the output folder's lock, or raise :class:`ConfigError` naming the run holding it.

    The lock file is never followed if it is a symlink, and the lock is the kernel's
    (``flock``): it goes with the process, however that process ends.
    """
    path = out_dir / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        reason = "it is a symlink" if exc.errno == errno.ELOOP else exc.strerror or str(exc)
        raise ConfigError(f"cannot lock the output folder {out_dir}: {path.name}: "
                          f"{reason}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise ConfigError(f"cannot lock the output folder {out_dir}: "
                              f"{exc.strerror or exc}") from exc
        who = f"process {holder}" if holder.isdigit() else "another process"
        raise ConfigError(f"output folder {out_dir} is in use by another run ({who}); wait "
                          f"for it to finish, or choose another --out") from exc
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _remove_stale_parts(out_dir: Path) -> None:
    """Delete temporary files a killed run left behind (this engine has written none yet)."""
    # Only names AtomicWriter makes: ".<final name>.<8 hex digits>.part".
    for part in out_dir.glob(f".*.????????{TEMP_SUFFIX}"):
        part.unlink(missing_ok=True)


async def intact(result: JobResult) -> bool:
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
