"""Figure 2, overhead: client CPU per job for submit + polls + download of a small file.

A fast emulator (Pixazo's contract, generation in milliseconds, a limit that never binds,
1 s MP3s from a small set of pre-rendered variants) so that the clients' own work is what is
measured. CPU is each client process's user + system time over its run, divided by the jobs.
Ours includes what the baseline does not do: the durable journal, the manifest, fsyncs and the
audio check. Prints one JSON object.
"""

from __future__ import annotations

import argparse
from typing import Any

from stableaudio_async.emulator import EmulatorConfig

from harness import emit, measure, pixazo_config, ratio


def side(config: EmulatorConfig, script: str, jobs: int, concurrency: int) -> dict[str, Any]:
    options: dict[str, Any] = ({"max_in_flight": concurrency} if script == "ours.py" else
                               # The baseline's fixed 2 s (emulated) interval.
                               {"concurrency": concurrency, "poll_interval": 2.0 * config.time_scale})
    run = measure(config, script, "pixazo", jobs, **options)
    client, seen = run["client"], run["emulator"]["stats"]
    return {
        "completed": client["completed"],
        "cpu_ms_per_job": client["cpu_ms_per_job"],
        "cpu_user_ms_per_job": round(1000 * client["cpu_user_seconds"] / jobs, 3)
        if "cpu_user_seconds" in client else None,
        "cpu_system_ms_per_job": round(1000 * client["cpu_system_seconds"] / jobs, 3)
        if "cpu_system_seconds" in client else None,
        "requests_per_job": round(seen["requests"] / jobs + seen["downloads"] / jobs, 2),
        "jobs_per_second": round(jobs / client["wall_seconds"], 1),
        "emulator_cpu_share": run["emulator"]["cpu_share"],
    }


def main(jobs: int = 2000, concurrency: int = 64) -> dict[str, Any]:
    config = pixazo_config(time_scale=0.001, queue_time=1.0, generation_time=4.0)
    ours = side(config, "ours.py", jobs, concurrency)
    baseline = side(config, "baseline.py", jobs, concurrency)
    return {
        "benchmark": "overhead", "provider": "pixazo", "jobs": jobs, "in_flight": concurrency,
        "target": "ours cpu_ms_per_job < 2",
        "ours": ours, "baseline": baseline,
        "ours_over_baseline": ratio(ours["cpu_ms_per_job"], baseline["cpu_ms_per_job"]),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    emit(main(args.jobs, args.concurrency))
