"""The built-in provider emulator: each provider's real contract, served locally over HTTP."""

from stableaudio_async.emulator.faults import FaultRates
from stableaudio_async.emulator.server import (
    ERROR_MARKER,
    FAIL_MARKER,
    EmulatedJob,
    EmulatedLimit,
    Emulator,
    EmulatorConfig,
    ProviderStats,
    Reading,
)

__all__ = [
    "ERROR_MARKER",
    "FAIL_MARKER",
    "EmulatedJob",
    "EmulatedLimit",
    "Emulator",
    "EmulatorConfig",
    "FaultRates",
    "ProviderStats",
    "Reading",
]
