"""The manifest's group commit: every append returns only once its own line is on disk."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from stableaudio_async.manifest import Manifest
from stableaudio_async.models import Job

from test_journal import make_result

pytestmark = pytest.mark.anyio


async def test_a_failed_group_write_leaves_the_other_lines_for_their_callers(tmp_path: Path,
                                                                            monkeypatch) -> None:
    """When a batch write fails, the caller who wrote it sees the error and the others whose
    lines it carried write them themselves: none returns with its line missing."""
    manifest = Manifest(tmp_path)
    jobs = [Job(provider="pixazo", prompt=f"line {i}", seed=i + 1) for i in range(3)]
    calls = 0
    release = anyio.Event()
    write = manifest._write

    def flaky(data: bytes) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:  # the first write holds the lock while the other two queue up
            anyio.from_thread.run(release.wait)
        elif calls == 2:  # the two queued lines, written together, fail
            raise OSError(28, "No space left on device")
        write(data)

    monkeypatch.setattr(manifest, "_write", flaky)
    outcomes: dict[str, BaseException | None] = {}

    async def append(job: Job) -> None:
        try:
            await manifest.append(make_result(job))
            outcomes[job.id] = None
        except OSError as exc:
            outcomes[job.id] = exc

    async with anyio.create_task_group() as tg:
        tg.start_soon(append, jobs[0])
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(append, jobs[1])
        tg.start_soon(append, jobs[2])
        await anyio.wait_all_tasks_blocked()
        release.set()
    written = {json.loads(line)["id"] for line in (tmp_path / "manifest.jsonl").read_text()
               .splitlines()}
    failed = [job_id for job_id, error in outcomes.items() if error is not None]
    assert len(outcomes) == 3 and len(failed) == 1
    # Every caller that returned normally has its line on disk.
    assert {job_id for job_id, error in outcomes.items() if error is None} <= written
