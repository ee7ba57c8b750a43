"""Pixazo throughput against the emulator: achieved request rate vs the configured ceiling.

The emulator runs in its own process (as a provider would), so the figures are the engine's
alone. Prints one JSON object. Run: ``.venv/bin/python benchmarks/pixazo_throughput.py``.
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
from stableaudio_async.emulator import EmulatedLimit, Emulator, EmulatorConfig


async def main(jobs: int, requests: int, period: float, time_scale: float) -> dict[str, object]:
    config = EmulatorConfig(time_scale=time_scale, api_key="bench-key", queue_time=1.0,
                            generation_time=4.0,
                            limits={"pixazo": EmulatedLimit(requests=requests, period=period,
                                                            counts="all")})
    with tempfile.TemporaryDirectory() as tmp:
        config_path = Path(tmp) / "emulator.toml"
        config_path.write_text(
            f"time_scale = {time_scale}\napi_key = \"bench-key\"\nqueue_time = 1.0\n"
            f"generation_time = 4.0\n[limits.pixazo]\nrequests = {requests}\n"
            f"period = {period}\ncounts = \"all\"\n")
        async with await anyio.open_process(
                [sys.executable, "-m", "stableaudio_async", "emulator", "--port", "0",
                 "--config", str(config_path), "--log-level", "warning"]) as server:
            assert server.stdout is not None
            line = b""
            while b"\n" not in line:
                line += await server.stdout.receive()
            url = line.decode().split("listening on ")[1].split()[0]
            # An unstarted emulator object only derives the client settings for that URL.
            shadow = Emulator(config)
            shadow.port = int(url.rsplit(":", 1)[1])
            settings = shadow.client_settings()
            settings = settings.model_copy(update={"providers": {"pixazo": settings.providers[
                "pixazo"].model_copy(update={"max_in_flight": 256})}})
            batch = [Job(provider="pixazo", prompt=f"bench {i}", seed=i, duration=1)
                     for i in range(jobs)]
            cpu0 = resource.getrusage(resource.RUSAGE_SELF)
            t0 = time.monotonic()
            async with Engine(settings, out_dir=Path(tmp) / "out",
                              env={"PIXAZO_API_KEY": "bench-key"}) as engine:
                results = [r async for r in engine.run(batch)]
                requests_sent = engine.progress()["pixazo"].requests
            wall = time.monotonic() - t0
            cpu1 = resource.getrusage(resource.RUSAGE_SELF)
            async with aiohttp.ClientSession() as http, http.get(f"{url}/_emulator/stats") as r:
                seen = (await r.json())["pixazo"]
            server.terminate()
    ceiling = requests / (period * time_scale)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    return {
        "benchmark": "pixazo_throughput",
        "jobs": jobs,
        "completed": sum(r.ok for r in results),
        "requests": requests_sent,
        "emulator_requests": seen["requests"],
        "rate_limited_429": seen["rate_limited"],
        "duplicate_submissions": seen["duplicate_submissions"],
        "wall_seconds": round(wall, 3),
        "request_rate": round(requests_sent / wall, 1),
        "ceiling": round(ceiling, 1),
        "rate_over_ceiling": round(requests_sent / wall / ceiling, 3),
        "engine_cpu_ms_per_job": round(1000 * cpu / jobs, 3),
        "cpus": os.cpu_count(),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--period", type=float, default=10.0)
    parser.add_argument("--time-scale", type=float, default=0.2)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    print(json.dumps(anyio.run(main, args.jobs, args.requests, args.period, args.time_scale)))
