"""``manifest.jsonl``: one line per finished job, appended and fsynced as each job finishes."""

from __future__ import annotations

import os
from pathlib import Path

import anyio

from stableaudio_async.models import JobResult

__all__ = ["MANIFEST_NAME", "Manifest"]

MANIFEST_NAME = "manifest.jsonl"


class Manifest:
    """Appends results to ``<out_dir>/manifest.jsonl``, one JSON object per line."""

    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / MANIFEST_NAME
        self._lock = anyio.Lock()

    async def append(self, result: JobResult) -> None:
        """Append ``result`` as one line and make it durable before returning."""
        line = result.model_dump_json() + "\n"
        async with self._lock:
            # Shielded: a line cancelled halfway would corrupt the manifest for good.
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._write, line.encode())

    def _write(self, data: bytes) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
