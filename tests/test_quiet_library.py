"""The engine used as a library prints nothing: its events go to stdlib ``logging`` under
``stableaudio_async``, which has only a NullHandler, and the application decides the rest."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from stableaudio_async import Engine, Job, JobStatus
from stableaudio_async.config import Settings
from stableaudio_async.emulator import Emulator
from stableaudio_async.logs import EVENT_ATTRIBUTE, ROOT

pytestmark = pytest.mark.anyio


def batch(tag: str) -> list[Job]:
    """Three jobs that complete and one that fails (a warning, ``job.failed``)."""
    jobs = [Job(provider="pixazo", prompt=f"{tag} {i}", duration=1) for i in range(3)]
    return [*jobs, Job(provider="pixazo", prompt=f"{tag} emulator:fail", duration=1)]


async def run(settings: Settings, env: dict[str, str], out: Path, tag: str) -> None:
    async with Engine(settings, out_dir=out, env=env) as engine:
        results = [r async for r in engine.run(batch(tag))]
    assert sorted(r.status for r in results) == [JobStatus.COMPLETED] * 3 + [JobStatus.FAILED]


@pytest.fixture
def bare_logging() -> Iterator[logging.Logger]:
    """The package's logger as the package leaves it: a handler an in-process CLI run may
    have left is taken off, its level and propagation reset; restored afterwards."""
    logger = logging.getLogger(ROOT)
    saved = (logger.handlers[:], logger.level, logger.propagate)
    for handler in logger.handlers[:]:
        if type(handler) is not logging.NullHandler:
            logger.removeHandler(handler)
    logger.setLevel(logging.NOTSET)
    logger.propagate = True
    try:
        yield logger
    finally:
        logger.handlers[:] = saved[0]
        logger.setLevel(saved[1])
        logger.propagate = saved[2]


@contextmanager
def bare_root() -> Iterator[None]:
    """No handler on the root logger, as in an application that configured no logging:
    pytest's own (added for each test's call) are set aside meanwhile, so that
    ``logging.lastResort`` would print a warning if nothing stopped it."""
    root = logging.getLogger()
    saved = root.handlers[:]
    for handler in saved:
        root.removeHandler(handler)
    try:
        yield
    finally:
        for handler in saved:
            root.addHandler(handler)


async def test_a_library_run_writes_nothing_to_stdout_or_stderr(
        bare_logging: logging.Logger, emulator: Emulator, settings: Settings,
        env: dict[str, str], tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """Jobs that complete and one that fails (a warning) leave both file descriptors empty;
    the package's logger has nothing but its NullHandler."""
    assert [type(h) for h in bare_logging.handlers] == [logging.NullHandler]
    capfd.readouterr()
    with bare_root():
        await run(settings, env, tmp_path, "quiet")
    assert capfd.readouterr() == ("", "")


async def test_critical_level_silences_the_package(
        bare_logging: logging.Logger, emulator: Emulator, settings: Settings,
        env: dict[str, str], tmp_path: Path) -> None:
    """``logging.getLogger("stableaudio_async").setLevel(CRITICAL)`` silences an attached
    handler, failed job's warning included."""
    records: list[logging.LogRecord] = []
    handler = Collect(records)
    bare_logging.addHandler(handler)
    bare_logging.setLevel(logging.CRITICAL)
    try:
        await run(settings, env, tmp_path, "silenced")
    finally:
        bare_logging.removeHandler(handler)
    assert records == []


async def test_at_debug_records_carry_the_structured_event(
        bare_logging: logging.Logger, emulator: Emulator, settings: Settings,
        env: dict[str, str], tmp_path: Path) -> None:
    """At DEBUG an attached handler gets every event, each record carrying the event as a
    dict under ``record.stableaudio`` and readable ``event key=value`` text as its message."""
    records: list[logging.LogRecord] = []
    handler = Collect(records)
    bare_logging.addHandler(handler)
    bare_logging.setLevel(logging.DEBUG)
    try:
        await run(settings, env, tmp_path, "heard")
    finally:
        bare_logging.removeHandler(handler)
    events = [getattr(r, EVENT_ATTRIBUTE) for r in records]
    assert all(isinstance(e, dict) and e["event"] for e in events)
    assert all(r.name.startswith(f"{ROOT}.") for r in records)
    completed = [r for r in records if getattr(r, EVENT_ATTRIBUTE)["event"] == "job.completed"]
    assert len(completed) == 3
    assert all(r.getMessage().startswith("job.completed ") for r in completed)
    (failed,) = [r for r in records if getattr(r, EVENT_ATTRIBUTE)["event"] == "job.failed"]
    assert failed.levelno == logging.WARNING
    assert getattr(failed, EVENT_ATTRIBUTE)["provider"] == "pixazo"


class Collect(logging.Handler):
    """Keeps every record it is handed."""

    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__()
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
