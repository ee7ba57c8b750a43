"""Shared fixtures: the anyio backend, a time-scaled emulator, and settings pointing at it."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from stableaudio_async import JobResult, StableAudioError
from stableaudio_async.config import Settings
from stableaudio_async.emulator import EmulatedLimit, Emulator, EmulatorConfig, Reading
from stableaudio_async.logs import EVENT_ATTRIBUTE, ROOT

#: A key distinctive enough that finding it anywhere in output is a leak.
TEST_KEY = "sk-test-KEY-7f3a9c1e5b"


@pytest.fixture
def anyio_backend() -> str:
    """Run async tests on asyncio (the engine's home)."""
    return "asyncio"


def fast_config(**overrides: Any) -> EmulatorConfig:
    """An emulator 100× faster than real time, whose Pixazo limit the engine must respect."""
    values: dict[str, Any] = {
        "time_scale": 0.01,
        "api_key": TEST_KEY,
        "limits": {**EmulatorConfig().limits,
                   "pixazo": EmulatedLimit(requests=50, period=10.0, counts="all")},
    }
    values.update(overrides)
    return EmulatorConfig(**values)


@pytest.fixture
def reading() -> Reading:
    """The reading :func:`emulator` serves every provider in. A module whose engine tests must
    hold under both readings overrides this with ``params=READINGS``."""
    return "strict"


#: Both readings, for modules that parametrize :func:`reading`.
READINGS: tuple[Reading, ...] = ("strict", "loose")


@pytest.fixture
async def emulator(reading: Reading) -> AsyncIterator[Emulator]:
    """A running, time-scaled emulator on a free loopback port."""
    async with Emulator(fast_config(readings={"*": reading})) as emu:
        yield emu


@pytest.fixture
def settings(emulator: Emulator) -> Settings:
    """Client settings pointing at :func:`emulator`, on its time scale."""
    return emulator.client_settings()


@pytest.fixture
def env() -> dict[str, str]:
    """An environment holding only the test key."""
    return {"PIXAZO_API_KEY": TEST_KEY}


def to_toml(data: Mapping[str, Any], prefix: str = "") -> str:
    """Serialise nested dicts of scalars as TOML (enough for a settings file)."""
    scalars, tables = [], []
    for key, value in data.items():
        if isinstance(value, Mapping):
            tables.append((key, value))
        elif value is not None:
            scalars.append(f"{key} = {_toml_value(value)}")
    out = ([f"[{prefix}]"] if prefix and scalars else []) + scalars
    for key, value in tables:
        out.append(to_toml(value, f"{prefix}.{key}" if prefix else key))
    return "\n".join(out) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def write_settings(settings: Settings, path: Path) -> Path:
    """Write ``settings`` as a config file the CLI can load with ``--config``."""
    path.write_text(to_toml(settings.model_dump(mode="json")))
    return path


class HandClock:
    """An emulator clock that moves only when the test moves it: phases end when it says so."""

    def __init__(self, start: float = 1000.0) -> None:
        self.time = start

    def __call__(self) -> float:
        return self.time

    def move_to(self, when: float) -> None:
        """Move to exactly ``when`` (never back)."""
        assert when >= self.time
        self.time = when

    def move_past(self, when: float) -> None:
        """Move just past ``when`` (a phase's end), well short of any other phase's."""
        self.move_to(when + 0.001)


class HeldClock:
    """An emulator clock that stands still until ``condition()`` holds, then runs in real time."""

    def __init__(self, condition: Callable[[], bool], start: float = 1000.0) -> None:
        self.condition = condition
        self.start = start
        self.since: float | None = None

    def __call__(self) -> float:
        if self.since is None:
            if not self.condition():
                return self.start
            self.since = time.monotonic()
        return self.start + time.monotonic() - self.since


@pytest.fixture
def clock() -> HandClock:
    """A :class:`HandClock` for :func:`still`."""
    return HandClock()


@pytest.fixture
async def still(clock: HandClock) -> AsyncIterator[Emulator]:
    """The time-scaled emulator on :func:`clock`: nothing happens until the test moves it."""
    async with Emulator(fast_config(), clock=clock) as emu:
        yield emu


async def raised(call: Awaitable[Any], error: type[StableAudioError]) -> JobResult:
    """The job result carried by the error that ``call`` (``engine.generate(...)``, say) must
    raise, of class ``error``."""
    with pytest.raises(error) as info:
        await call
    assert info.value.result is not None, "a job's error carries its result"
    return info.value.result


@contextmanager
def capture_logs() -> Iterator[list[dict[str, Any]]]:
    """Every event the package logs meanwhile, at any level, as its dict (``event``, its
    fields, and ``log_level``): the library logs through stdlib ``logging`` (see
    :mod:`stableaudio_async.logs`), so this listens there."""
    events: list[dict[str, Any]] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            event = dict(getattr(record, EVENT_ATTRIBUTE, None) or {"event": record.getMessage()})
            event["log_level"] = record.levelname.lower()
            events.append(event)

    logger = logging.getLogger(ROOT)
    handler, level = Collect(logging.DEBUG), logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        yield events
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


async def when(condition: Callable[[], bool]) -> None:
    """Return once ``condition()`` holds, letting the other tasks run meanwhile (a condition
    to wait for, never a time to hope by)."""
    while not condition():
        await anyio.sleep(0.001)


@asynccontextmanager
async def emulator_process(*args: str) -> AsyncIterator[str]:
    """``stableaudio-async emulator --port 0 ARGS`` in its own process; yields its URL, then
    terminates it (by its PID) on the way out."""
    command = [sys.executable, "-m", "stableaudio_async", "emulator", "--port", "0", *args]
    async with await anyio.open_process(command) as server:
        assert server.stdout is not None
        line = b""
        with anyio.fail_after(20):  # a hang guard: the first line comes at start-up
            while b"\n" not in line:
                line += await server.stdout.receive()
        try:
            yield line.decode().split("listening on ")[1].split()[0]
        finally:
            server.terminate()
