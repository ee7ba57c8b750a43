"""``manifest.jsonl``: one line per job outcome, appended and fsynced as each job finishes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import anyio
from pydantic import ValidationError

from stableaudio_async.errors import ConfigError
from stableaudio_async.models import JobResult, JobStatus

__all__ = ["MANIFEST_NAME", "Manifest"]

MANIFEST_NAME = "manifest.jsonl"


class Manifest:
    """Appends results to ``<out_dir>/manifest.jsonl``, one JSON object per line."""

    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / MANIFEST_NAME
        self._lock = anyio.Lock()
        #: Ids of the jobs with a ``completed`` line in the manifest (see :meth:`load`).
        self.ids: set[str] = set()
        #: Each job whose last line read at :meth:`load` says it completed: that line.
        self.completed: dict[str, JobResult] = {}
        # Lines waiting for the next write; how many were ever queued, and written.
        self._pending: list[bytes] = []
        self._queued = 0
        self._written = 0

    async def load(self) -> None:
        """Read the ids listed as completed, dropping a last line a crash left half-written."""
        self.ids, self.completed = await anyio.to_thread.run_sync(self._load)

    def _load(self) -> tuple[set[str], dict[str, JobResult]]:
        if self.path.is_symlink() or (self.path.exists() and not self.path.is_file()):
            raise ConfigError(f"{self.path} is not a regular file: move it away, or choose "
                              "another --out")
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return set(), {}
        except OSError as exc:
            raise ConfigError(f"cannot read {self.path}: {exc.strerror or exc}") from exc
        end = data.rfind(b"\n") + 1
        if end < len(data):
            # A process killed mid-append: cut the fragment so the next line starts clean.
            with open(self.path, "r+b") as fh:
                fh.truncate(end)
                os.fsync(fh.fileno())
        ids = set()
        last: dict[str, bytes] = {}
        for line in data[:end].splitlines():
            try:
                entry = json.loads(line)
                last[str(entry["id"])] = line
                if entry["status"] == JobStatus.COMPLETED:
                    ids.add(str(entry["id"]))
            except (ValueError, KeyError, TypeError):
                continue
        completed = {}
        for job_id, line in last.items():
            try:
                result = JobResult.model_validate_json(line)
            except ValidationError:
                continue
            if result.status is JobStatus.COMPLETED:
                completed[job_id] = result
        return ids, completed

    async def append(self, result: JobResult) -> None:
        """Append ``result`` as one line and make it durable before returning.

        Lines appended while another write is on its way are written (and fsynced) together
        by whichever caller gets the lock next: a group commit.
        """
        if result.status is JobStatus.COMPLETED:
            self.ids.add(result.id)
        self._pending.append(result.model_dump_json().encode() + b"\n")
        self._queued += 1
        mine = self._queued
        async with self._lock:
            if self._written >= mine:
                return  # an earlier caller's write took this line along
            lines, self._pending = self._pending, []
            try:
                # Shielded: a line cancelled halfway would corrupt the manifest for good.
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(self._write, b"".join(lines))
            except BaseException:
                # Back for the next writer: the other callers whose lines these are must not
                # find them gone and return as if they were on disk.
                self._pending[:0] = lines
                raise
            self._written += len(lines)

    def _write(self, data: bytes) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
