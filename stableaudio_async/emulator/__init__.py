"""The built-in provider emulator: each provider's real contract, served locally over HTTP."""

from stableaudio_async.emulator.config import EmulatedLimit, EmulatorConfig, FaultRates, Reading
from stableaudio_async.emulator.server import Emulator
from stableaudio_async.emulator.state import ERROR_MARKER, FAIL_MARKER, EmulatedJob, ProviderStats

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
