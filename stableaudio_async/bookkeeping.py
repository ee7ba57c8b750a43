"""The record of a run's results: the journal (what a rerun trusts), the manifest (the user's
record) and the ``--max-cost`` budget, kept together so that every outcome is written the
same way, journal first.

The job store is passed in (:class:`JobStore`; the SQLite :class:`Journal` by default), so
that a run sharing its jobs with other workers hands in another one.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import anyio

from stableaudio_async.budget import USD_PER_UNIT, Budget, price_usd
from stableaudio_async.config import Settings
from stableaudio_async.download import TEMP_SUFFIX
from stableaudio_async.lifecycle import HeldBack
from stableaudio_async.manifest import Manifest
from stableaudio_async.models import Job, JobResult
from stableaudio_async.store import JobStore

__all__ = ["Ledger", "intact"]


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

    async def __aenter__(self) -> Ledger:
        await self.journal.__aenter__()
        await self.manifest.load()
        await anyio.to_thread.run_sync(_remove_stale_parts, self.out_dir)
        if self._max_cost_usd is not None:
            self._budget = Budget(self._max_cost_usd, spent_usd=await self._spent_usd())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.journal.__aexit__(None, None, None)

    async def _spent_usd(self) -> float:
        """What finished jobs in this output folder have cost, for the ``--max-cost`` cap."""
        spent = 0.0
        for record in await self.journal.records():
            result = record.result
            if result is not None and result.cost is not None and result.cost_unit is not None:
                spent += result.cost * USD_PER_UNIT.get(result.cost_unit, 0.0)
        return spent

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
        await self.journal.finished(result)
        await self.manifest.append(result)

    async def skipped(self, result: JobResult) -> None:
        """A job already done in this folder: complete the manifest if the last run died
        between journal and manifest."""
        if result.id not in self.manifest.ids:
            await self.manifest.append(result)


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
