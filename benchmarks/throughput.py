"""Throughput against the rate-limit ceiling, for Pixazo (queue + poll) or Stability (held
connections), measured by the emulator running in its own process.

Prints one JSON object: the accepted-submit rate over the busy period against the ceiling,
the 429s and lockouts the emulator recorded, duplicate submissions, and the engine's CPU time
per job. Run: ``.venv/bin/python benchmarks/throughput.py --provider stability``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import anyio
import structlog

from stableaudio_async import Engine, Job
from stableaudio_async.emulator import Emulator, EmulatorConfig

KEY = "bench-key"


async def start_emulator(config_path: Path) -> tuple[anyio.abc.Process, str]:
    server = await anyio.open_process(
        [sys.executable, "-m", "stableaudio_async", "emulator", "--port", "0",
         "--config", str(config_path), "--log-level", "warning"])
    assert server.stdout is not None
    line = b""
    while b"\n" not in line:
        line += await server.stdout.receive()
    return server, line.decode().split("listening on ")[1].split()[0]


async def main(provider: str, jobs: int, time_scale: float) -> dict[str, object]:
    config = EmulatorConfig(time_scale=time_scale, api_key=KEY, queue_time=1.0,
                            generation_time=4.0)
    limit = config.limits[provider]
    with tempfile.TemporaryDirectory() as tmp:
        config_path = Path(tmp) / "emulator.toml"
        config_path.write_text(f'time_scale = {time_scale}\napi_key = "{KEY}"\n'
                               "queue_time = 1.0\ngeneration_time = 4.0\n")
        server, url = await start_emulator(config_path)
        try:
            # An unstarted emulator object only derives the client settings for that URL.
            shadow = Emulator(config)
            shadow.port = int(url.rsplit(":", 1)[1])
            settings = shadow.client_settings()
            batch = [Job(provider=provider, prompt=f"bench {i}", seed=i + 1, duration=1)
                     for i in range(jobs)]
            cpu0 = resource.getrusage(resource.RUSAGE_SELF)
            t0 = time.monotonic()
            async with Engine(settings, out_dir=Path(tmp) / "out",
                              env={settings.providers[provider].api_key_env: KEY}) as engine:
                results = [r async for r in engine.run(batch)]
            wall = time.monotonic() - t0
            cpu1 = resource.getrusage(resource.RUSAGE_SELF)
            async with aiohttp.ClientSession() as http, http.get(f"{url}/_emulator/stats") as r:
                seen = (await r.json())[provider]
        finally:
            server.terminate()
            await server.wait()
    ceiling = limit.requests / (limit.period * time_scale)
    unit = "submits" if limit.counts == "submits" else "requests"
    counted = seen["accepted"] if unit == "submits" else seen["requests"] - seen["rate_limited"]
    busy_rate = (seen["accepted"] - 1) / seen["busy_seconds"] if seen["busy_seconds"] else 0.0
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    return {
        "benchmark": "throughput",
        "provider": provider,
        "jobs": jobs,
        "completed": sum(r.ok for r in results),
        "limit": f"{limit.requests} {unit} / {limit.period * time_scale:g} s",
        "ceiling_per_s": round(ceiling, 2),
        "emulator_requests": seen["requests"],
        "counted_per_s": round(counted / wall, 2),
        "accepted_submits_per_s_busy": round(busy_rate, 2),
        "busy_rate_over_ceiling": round(busy_rate / ceiling, 3) if unit == "submits" else None,
        "whole_run_rate_over_ceiling": round(counted / wall / ceiling, 3),
        "rate_limited_429": seen["rate_limited"],
        "lockouts": seen.get("lockouts", 0),
        "duplicate_submissions": seen["duplicate_submissions"],
        "wall_seconds": round(wall, 2),
        "ideal_seconds": round(counted / ceiling, 2),
        "engine_cpu_ms_per_job": round(1000 * cpu / jobs, 3),
        "cpus": os.cpu_count(),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--provider", choices=("stability", "pixazo"), default="stability")
    parser.add_argument("--jobs", type=int, default=600)
    parser.add_argument("--time-scale", type=float, default=0.5)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    print(json.dumps(anyio.run(main, args.provider, args.jobs, args.time_scale)))
