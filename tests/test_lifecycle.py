"""The job lifecycle's state machine: its table, its journal mapping, and its counters."""

from __future__ import annotations

import pytest

from stableaudio_async.journal import JobState
from stableaudio_async.lifecycle import JOURNALLED, TRANSITIONS, Counts, JobPhase, JobRun

pytestmark = pytest.mark.anyio


def test_every_journal_state_is_one_phase_of_the_same_name() -> None:
    """The journal's states map onto the lifecycle one to one."""
    assert set(JOURNALLED) == set(JobState)
    assert len(set(JOURNALLED.values())) == len(JobState)
    assert all(phase.value == state.value for state, phase in JOURNALLED.items())


def test_the_table_covers_every_phase_and_ends_only_in_final_ones() -> None:
    """Every phase has its row; only COMPLETED, FAILED and HELD are final, and every phase
    before them can fail or be held."""
    assert set(TRANSITIONS) == set(JobPhase)
    final = {p for p, moves in TRANSITIONS.items() if not moves}
    assert final == {JobPhase.COMPLETED, JobPhase.FAILED, JobPhase.HELD}
    for phase, moves in TRANSITIONS.items():
        if phase not in final:
            assert {JobPhase.FAILED, JobPhase.HELD} <= moves, phase
    # COMPLETED is reached only from CHECKING: no audio is kept unchecked.
    assert [p for p, moves in TRANSITIONS.items() if JobPhase.COMPLETED in moves] == [
        JobPhase.CHECKING]


async def test_a_queued_job_moves_its_progress_counters_and_refuses_a_skipped_step() -> None:
    counts = Counts()
    run = JobRun(counts, started=0.0, seed=None)
    assert (counts.waiting, run.phase) == (1, JobPhase.PENDING)
    for phase, counter in [(JobPhase.SUBMITTING, "waiting"), (JobPhase.SUBMITTED, "queued"),
                           (JobPhase.RUNNING, "running"), (JobPhase.DOWNLOADING, "downloading"),
                           (JobPhase.CHECKING, "downloading"),
                           (JobPhase.COMPLETED, "completed")]:
        run.advance(phase)
        assert getattr(counts, counter) == 1, phase
        assert sum(getattr(counts, name) for name in Counts.__slots__) == 1
    with pytest.raises(RuntimeError, match="cannot go from completed to failed"):
        run.advance(JobPhase.FAILED)
    skipping = JobRun(counts, started=0.0, seed=None)
    with pytest.raises(RuntimeError, match="cannot go from pending to downloading"):
        skipping.advance(JobPhase.DOWNLOADING)
