"""Figure 1, ceiling: N Stability jobs at its limit (150 per 10 s, time-scaled), ours vs baseline.

For each client, against its own fresh emulator: the accepted-submit rate over the busy
period (first to last accepted submit) as a fraction of the ceiling, the 429s and lockouts
the emulator counted, and wall time against the ideal (N / rate). Prints one JSON object.
"""

from __future__ import annotations

import argparse
from typing import Any

from stableaudio_async.emulator import EmulatorConfig

from harness import emit, measure, ratio


def side(config: EmulatorConfig, script: str, jobs: int) -> dict[str, Any]:
    run = measure(config, script, "stability", jobs)
    client, seen = run["client"], run["emulator"]["stats"]
    limit = config.limits["stability"]
    ceiling = limit.requests / (limit.period * config.time_scale)
    busy = seen["busy_seconds"]
    # N submits span N - 1 intervals.
    busy_rate = (seen["accepted"] - 1) / busy if busy else 0.0
    return {
        "completed": client["completed"],
        "busy_rate_over_ceiling": round(busy_rate / ceiling, 3),
        "rate_limited_429": seen["rate_limited"],
        "lockouts": seen["lockouts"],
        "duplicate_submissions": seen["duplicate_submissions"],
        "wall_seconds": client["wall_seconds"],
        "wall_over_ideal": ratio(client["wall_seconds"], jobs / ceiling),
        "cpu_ms_per_job": client["cpu_ms_per_job"],
        "emulator_cpu_share": run["emulator"]["cpu_share"],
    }


def main(jobs: int = 600, time_scale: float = 0.5) -> dict[str, Any]:
    # Jobs hold their connection for a 4 s generation (plus 1 s queue), as Stability's do.
    config = EmulatorConfig(time_scale=time_scale, api_key="bench-key", queue_time=1.0,
                            generation_time=4.0, audio_variants=16)
    limit = config.limits["stability"]
    return {
        "benchmark": "ceiling", "provider": "stability", "jobs": jobs,
        "limit": f"{limit.requests} submits / {limit.period * time_scale:g} s "
                 f"({limit.period:g} s emulated at time scale {time_scale:g})",
        "target": "busy_rate_over_ceiling >= 0.97 with 0 429s",
        "ours": side(config, "ours.py", jobs),
        "baseline": side(config, "baseline.py", jobs),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=600)
    parser.add_argument("--time-scale", type=float, default=0.5)
    args = parser.parse_args()
    emit(main(args.jobs, args.time_scale))
