"""Where the examples' providers come from: the configured ones, or an in-process emulator.

Each example takes the same options::

    --config PATH   a providers TOML merged over the built-in defaults (as the CLI's --config);
                    API keys come from the environment, as the engine reads them
    --emulator      start the built-in provider emulator in this process instead (no key, no
                    network); also on when STABLEAUDIO_EXAMPLE_EMULATOR=1
"""

from __future__ import annotations

import argparse
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from stableaudio_async import Settings, load_settings
from stableaudio_async.emulator import Emulator, EmulatorConfig


def add_provider_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--config``, ``--emulator`` and ``--time-scale`` to ``parser``."""
    parser.add_argument("--config", metavar="PATH", help="providers TOML (default: built-ins)")
    parser.add_argument("--emulator", action="store_true",
                        default=os.environ.get("STABLEAUDIO_EXAMPLE_EMULATOR") == "1",
                        help="run against an in-process provider emulator")
    parser.add_argument("--time-scale", type=float, default=0.05,
                        help="the emulator's real seconds per emulated second")


@asynccontextmanager
async def providers(args: argparse.Namespace) -> AsyncIterator[tuple[Settings, Mapping[str, str]]]:
    """The settings and the environment (keys) to open an ``Engine`` with."""
    settings = load_settings(args.config)
    if not args.emulator:
        yield settings, os.environ
        return
    async with Emulator(EmulatorConfig(time_scale=args.time_scale)) as emu:
        # Every provider pointed at the emulator, its limits and poll pace on its time scale;
        # the emulator takes one key for all of them.
        settings = emu.client_settings(settings)
        yield settings, {p.api_key_env: emu.config.api_key for p in settings.providers.values()}
