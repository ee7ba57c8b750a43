"""Shared fixtures: the anyio backend, a time-scaled emulator, and settings pointing at it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from stableaudio_async.config import Settings
from stableaudio_async.emulator import EmulatedLimit, Emulator, EmulatorConfig

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
async def emulator() -> AsyncIterator[Emulator]:
    """A running, time-scaled emulator on a free loopback port."""
    async with Emulator(fast_config()) as emu:
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
