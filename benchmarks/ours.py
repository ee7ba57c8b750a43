"""stableaudio-async's side of a benchmark: one batch through :class:`Engine`, in this process.

Run by the benchmark scripts beside ``baseline.py`` and with the same arguments where they
share them, against an emulator already running. Settings come from the emulator's config
(its limits and poll intervals on its time scale), as ``Emulator.client_settings`` derives
them, so the engine paces as it would against the real provider. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import time
import tomllib
from pathlib import Path
from typing import Any

import anyio
import structlog

from stableaudio_async import Engine, Job
from stableaudio_async.config import Settings, load_settings
from stableaudio_async.emulator import Emulator, EmulatorConfig

from harness import KEY, rss_mb, usage


def settings_for(args: argparse.Namespace) -> Settings:
    """The built-in settings with this run's changes, as the emulator's time scale has them."""
    config = EmulatorConfig.model_validate(tomllib.loads(Path(args.emulator_config).read_text()))
    base = load_settings(env={})
    provider = base.providers[args.provider]
    poll: dict[str, Any] = {}
    if args.no_learn:
        poll["learn"] = False
    if args.expected:
        poll["expected"] = args.expected  # emulated seconds, scaled below like the rest
    update: dict[str, Any] = {"poll": provider.poll.model_copy(update=poll)}
    if args.max_in_flight:
        update["max_in_flight"] = args.max_in_flight
    base = base.model_copy(update={"providers": {
        **base.providers, args.provider: provider.model_copy(update=update)}})
    # An unstarted emulator object only derives the client settings for that URL.
    shadow = Emulator(config)
    shadow.host, port = args.url.removeprefix("http://").rsplit(":", 1)
    shadow.port = int(port)
    return shadow.client_settings(base, poll_timeout=args.poll_timeout)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    settings = settings_for(args)
    jobs = [Job(provider=args.provider, prompt=f"bench {i}", seed=i + 1, duration=args.duration,
                output_format=args.output_format) for i in range(args.jobs)]
    env = {settings.providers[args.provider].api_key_env: KEY}
    rss_before = rss_mb()
    cpu0, _ = usage()
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.monotonic()
    completed = failed = 0
    size = 0
    first_error = None
    async with Engine(settings, out_dir=args.out, env=env) as engine:
        async for result in engine.run(jobs):
            if result.ok:
                completed += 1
                size += result.bytes or 0
            else:
                failed += 1
                first_error = first_error or result.error
    wall = time.monotonic() - t0
    cpu1, peak = usage()
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "client": "stableaudio-async", "provider": args.provider, "jobs": args.jobs,
        "completed": completed, "failed": failed, "wall_seconds": round(wall, 3),
        "cpu_seconds": round(cpu1 - cpu0, 3),
        "cpu_ms_per_job": round(1000 * (cpu1 - cpu0) / args.jobs, 3),
        "cpu_user_seconds": round(ru1.ru_utime - ru0.ru_utime, 3),
        "cpu_system_seconds": round(ru1.ru_stime - ru0.ru_stime, 3),
        "rss_before_mb": round(rss_before, 1), "max_rss_mb": round(peak, 1), "bytes": size,
        "first_error": first_error,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--emulator-config", required=True, help="the emulator's TOML config")
    parser.add_argument("--provider", required=True)
    parser.add_argument("--jobs", type=int, required=True)
    parser.add_argument("--duration", type=int, default=1)
    parser.add_argument("--output-format", choices=("mp3", "wav"), default="mp3")
    parser.add_argument("--max-in-flight", type=int, default=0, help="0: the provider default")
    parser.add_argument("--no-learn", action="store_true", help="poll on the configured schedule")
    parser.add_argument("--poll-timeout", type=float, default=600.0,
                        help="each job's deadline (emulated seconds)")
    parser.add_argument("--expected", type=float, default=0.0,
                        help="the poll policy's expected generation time (emulated seconds)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
                        cache_logger_on_first_use=True)
    print(json.dumps(anyio.run(run, args)))


if __name__ == "__main__":
    main()
