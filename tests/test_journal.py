"""The journal: every job's life recorded durably, with group commit, for crash-safe resume."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from stableaudio_async import journal as journal_module
from stableaudio_async.journal import (
    JOURNAL_NAME,
    JobState,
    Journal,
    JournalError,
    read_records,
)
from stableaudio_async.models import (
    Job,
    JobResult,
    JobStatus,
    Queued,
    RemoteHandle,
    Task,
    Timings,
)

pytestmark = pytest.mark.anyio

#: Reads one job's state from the journal in another process, with nothing but sqlite3.
READ_STATE = (
    "import sqlite3, sys\n"
    "conn = sqlite3.connect(sys.argv[1])\n"
    "print(conn.execute('SELECT state FROM jobs WHERE job_id = ?', (sys.argv[2],)).fetchone()[0])\n"
)

#: Records intent for 50 jobs, says so, then hangs until killed.
WRITE_AND_HANG = """
import sys
from pathlib import Path

import anyio

from stableaudio_async.journal import Journal
from stableaudio_async.models import Job


async def main() -> None:
    journal = Journal(Path(sys.argv[1]))
    await journal.__aenter__()
    async with anyio.create_task_group() as tg:
        for i in range(50):
            tg.start_soon(journal.intent, Job(id=f"job-{i}", provider="pixazo", prompt="rain"))
    print("ready", flush=True)
    await anyio.sleep(60)


anyio.run(main)
"""


def make_job(job_id: str = "a", **overrides: object) -> Job:
    """A job with most fields set, so a round trip has something to lose."""
    values: dict[str, object] = {
        "id": job_id, "provider": "pixazo", "model": "stable-audio-2.5", "prompt": "rain on a tin roof",
        "negative_prompt": "voices", "duration": 12.5, "steps": 8, "guidance_scale": 1.5,
        "seed": 42, "output_format": "mp3", "options": {"extra": [1, "two"]},
    }
    values.update(overrides)
    return Job.model_validate(values)


def make_handle(n: int = 1) -> RemoteHandle:
    """A handle with every URL set."""
    return RemoteHandle(
        request_id=f"req-{n}", poll_url=f"https://api.test/jobs/{n}", status=Queued(position=3),
        result_url=f"https://api.test/jobs/{n}/result", cancel_url=f"https://api.test/jobs/{n}/cancel",
    )


def make_result(job: Job, status: JobStatus = JobStatus.COMPLETED) -> JobResult:
    """A result with most fields set."""
    ok = status is JobStatus.COMPLETED
    return JobResult(
        id=job.id, provider=job.provider, model=job.model, task=Task.TEXT_TO_AUDIO, status=status,
        path=f"/out/{job.id}.mp3" if ok else None, sha256="ab" * 32 if ok else None,
        bytes=1234 if ok else None, content_type="audio/mpeg" if ok else None, request_id="req-1",
        seed=42, cost=0.2 if ok else 0.0, cost_unit="credits", attempts=1,
        timings=Timings(queued=0.5, generating=3.0, downloading=0.1 if ok else None, total=3.6),
        error=None if ok else "moderation refused", error_type=None if ok else "ContentRejectedError",
        http_status=None if ok else 422,
    )


async def test_life_cycle_round_trips_every_field(tmp_path: Path) -> None:
    """PENDING → SUBMITTING → SUBMITTED → COMPLETED, with the job, handle and result read back equal."""
    job = make_job()
    async with Journal(tmp_path) as journal:
        await journal.register([job])
        record = await journal.get("a")
        assert record is not None
        assert (record.state, record.job, record.attempts) == (JobState.PENDING, job, 0)
        assert record.request_id is None and record.result is None

        await journal.intent(job)
        record = await journal.get("a")
        assert record is not None
        assert (record.state, record.attempts, record.possibly_duplicated) == (JobState.SUBMITTING, 1, False)

        await journal.submitted("a", make_handle())
        record = await journal.get("a")
        assert record is not None
        assert record.state is JobState.SUBMITTED
        assert (record.request_id, record.poll_url, record.result_url, record.cancel_url) == (
            "req-1", "https://api.test/jobs/1", "https://api.test/jobs/1/result",
            "https://api.test/jobs/1/cancel",
        )

        result = make_result(job)
        await journal.finished(result)
        record = await journal.get("a")
        assert record is not None
        assert (record.state, record.result, record.job) == (JobState.COMPLETED, result, job)
        assert record.provider == "pixazo" and record.job_id == "a"
        assert abs(record.updated_at - time.time()) < 60


async def test_failed_result_is_recorded(tmp_path: Path) -> None:
    """A failed result makes the job FAILED and keeps the error details."""
    job = make_job()
    result = make_result(job, JobStatus.FAILED)
    async with Journal(tmp_path) as journal:
        await journal.intent(job)
        await journal.finished(result)
        record = await journal.get("a")
    assert record is not None
    assert (record.state, record.result) == (JobState.FAILED, result)


async def test_attempts_count_intents_and_possibly_duplicated_is_sticky(tmp_path: Path) -> None:
    """Each intent adds an attempt and clears the old handle; possibly_duplicated, once set, stays."""
    job = make_job()
    async with Journal(tmp_path) as journal:
        await journal.intent(job)
        await journal.submitted("a", make_handle())
        await journal.intent(job, possibly_duplicated=True)
        record = await journal.get("a")
        assert record is not None
        assert (record.attempts, record.possibly_duplicated, record.request_id) == (2, True, None)
        await journal.intent(job)
        await journal.submitted("a", make_handle(3))
    [record] = read_records(tmp_path)
    assert (record.attempts, record.possibly_duplicated, record.request_id) == (3, True, "req-3")


async def test_committed_intent_is_visible_to_another_process(tmp_path: Path) -> None:
    """Once intent() returns, another process reading the database sees the job SUBMITTING."""
    async with Journal(tmp_path) as journal:
        await journal.intent(make_job())
        done = subprocess.run(
            [sys.executable, "-c", READ_STATE, str(tmp_path / JOURNAL_NAME), "a"],
            capture_output=True, text=True, check=True, timeout=30,
        )
        assert done.stdout.strip() == "submitting"


async def test_intents_survive_sigkill(tmp_path: Path) -> None:
    """A writer killed with SIGKILL after its intents returned leaves all of them, intact."""
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITE_AND_HANG, str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if line != "ready\n":
            proc.kill()
            pytest.fail(f"writer did not get ready: {line!r} {proc.communicate()[1]}")
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()
        proc.stderr.close()

    async with Journal(tmp_path) as journal:
        records = await journal.records()
    assert len(records) == 50
    assert {r.state for r in records} == {JobState.SUBMITTING}
    assert all(r.attempts == 1 for r in records)
    conn = sqlite3.connect(tmp_path / JOURNAL_NAME)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()


async def test_concurrent_intents_share_commits(tmp_path: Path) -> None:
    """500 concurrent intents are all committed in far fewer than 500 commits."""
    jobs = [make_job(f"job-{i}") for i in range(500)]
    async with Journal(tmp_path) as journal:
        before = journal.commits
        async with anyio.create_task_group() as tg:
            for job in jobs:
                tg.start_soon(journal.intent, job)
        commits = journal.commits - before
        records = await journal.records()
    assert 1 <= commits <= 50, commits
    assert [r.job_id for r in records] == [job.id for job in jobs]
    assert {r.state for r in records} == {JobState.SUBMITTING}


async def test_cancelled_intent_still_returns_only_once_committed(tmp_path: Path) -> None:
    """A caller cancelled while awaiting intent() is only released once the intent is on disk."""
    async with Journal(tmp_path) as journal:
        with anyio.CancelScope() as scope:
            scope.cancel()
            await journal.intent(make_job())
        assert [r.state for r in read_records(tmp_path)] == [JobState.SUBMITTING]


async def test_status_notes_do_not_wait_and_ride_along(tmp_path: Path) -> None:
    """status() neither blocks nor commits by itself; the next durable write carries it along."""
    async with Journal(tmp_path) as journal:
        await journal.intent(make_job("a"))
        before = journal.commits
        journal.status("a", "queued")
        journal.status("a", "running")
        assert journal.commits == before
        await journal.intent(make_job("b"))
        assert journal.commits == before + 1
        [a, _] = read_records(tmp_path)
        assert a.remote_status == "running"


async def test_status_notes_flushed_after_a_delay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without any durable write, status notes are committed after NOTE_DELAY."""
    monkeypatch.setattr(journal_module, "NOTE_DELAY", 0.05)
    async with Journal(tmp_path) as journal:
        await journal.intent(make_job())
        journal.status("a", "running")
        with anyio.fail_after(5):
            while read_records(tmp_path)[0].remote_status != "running":
                await anyio.sleep(0.02)


async def test_status_notes_flushed_on_close(tmp_path: Path) -> None:
    """Status notes still pending when the journal closes are committed by the close."""
    async with Journal(tmp_path) as journal:
        await journal.register([make_job("a"), make_job("b")])
        journal.status("a", "running")
        journal.status("b", "queued")
    assert [r.remote_status for r in read_records(tmp_path)] == ["running", "queued"]


async def test_register_is_idempotent_and_keeps_state(tmp_path: Path) -> None:
    """Registering known jobs again changes nothing; unknown ones are added as PENDING, in order."""
    a, b, c = make_job("a"), make_job("b"), make_job("c")
    async with Journal(tmp_path) as journal:
        await journal.register([a, b])
        await journal.intent(a)
        await journal.submitted("a", make_handle())
        await journal.register([c, b, a])
        await journal.register([c, b, a])
        records = await journal.records()
    assert [(r.job_id, r.state, r.request_id) for r in records] == [
        ("a", JobState.SUBMITTED, "req-1"),
        ("b", JobState.PENDING, None),
        ("c", JobState.PENDING, None),
    ]


async def test_reset_returns_a_job_to_pending(tmp_path: Path) -> None:
    """reset() makes a finished job PENDING again, with no handle, result or attempts."""
    job = make_job()
    async with Journal(tmp_path) as journal:
        await journal.intent(job, possibly_duplicated=True)
        await journal.submitted("a", make_handle())
        journal.status("a", "running")
        await journal.finished(make_result(job))
        await journal.reset("a")
        record = await journal.get("a")
    assert record is not None
    assert record.job == job
    assert (record.state, record.request_id, record.poll_url, record.result_url, record.cancel_url) == (
        JobState.PENDING, None, None, None, None,
    )
    assert (record.result, record.attempts, record.possibly_duplicated, record.remote_status) == (
        None, 0, False, None,
    )


async def test_writes_to_unknown_jobs_are_refused(tmp_path: Path) -> None:
    """submitted(), finished() and reset() on a job the journal does not know raise JournalError."""
    async with Journal(tmp_path) as journal:
        with pytest.raises(JournalError, match="no job 'x'"):
            await journal.submitted("x", make_handle())
        with pytest.raises(JournalError, match="no job 'x'"):
            await journal.finished(make_result(make_job("x")))
        with pytest.raises(JournalError, match="no job 'x'"):
            await journal.reset("x")
        assert await journal.get("x") is None
        await journal.intent(make_job("y"))  # the writer carries on
    assert [r.job_id for r in read_records(tmp_path)] == ["y"]


async def test_closed_journal_refuses_writes(tmp_path: Path) -> None:
    """After close, every method raises JournalError instead of hanging."""
    journal = Journal(tmp_path)
    async with journal:
        pass
    with pytest.raises(JournalError, match="closed"):
        await journal.intent(make_job())
    with pytest.raises(JournalError, match="closed"):
        journal.status("a", "running")
    await journal.aclose()  # closing twice is harmless


def test_read_records_without_a_journal(tmp_path: Path) -> None:
    """read_records() on a folder with no journal (or no folder at all) returns []."""
    assert read_records(tmp_path / "missing") == []
    assert read_records(tmp_path) == []


async def test_reopened_journal_sees_everything(tmp_path: Path) -> None:
    """A second Journal on the same folder after close reads back every record and can go on."""
    jobs = [make_job(f"job-{i}") for i in range(5)]
    async with Journal(tmp_path / "nested" / "out") as journal:
        await journal.register(jobs)
        await journal.intent(jobs[0])
        await journal.submitted("job-0", make_handle())
        await journal.finished(make_result(jobs[0]))
        await journal.intent(jobs[1])
        first = await journal.records()
    async with Journal(tmp_path / "nested" / "out") as journal:
        again = await journal.records()
        await journal.intent(jobs[1])
        record = await journal.get("job-1")
    assert again == first
    assert [r.state for r in again] == [JobState.COMPLETED, JobState.SUBMITTING] + [JobState.PENDING] * 3
    assert record is not None and record.attempts == 2
    assert read_records(tmp_path / "nested" / "out") == [again[0], record, *again[2:]]
