"""Figure 3, scale: peak memory with 10,000 jobs in flight at once (long generation times).

Pixazo's contract, with a limit raised to 5,000 requests/s (a tier far above the published
one, so that 10,000 jobs are in flight within seconds) and generation long enough (40 s) that all of
them are: the emulator's record of each job (accepted, then first seen done) gives the peak
number in flight. Ours runs at two sizes, and the growth per in-flight job is the slope
between them, so fixed costs (interpreter, imports, session) do not count. Its poll policy
is told the expected generation time, as the engine would otherwise learn it. The baseline
holds the same jobs with ``asyncio.gather``, polling every 30 s (emulated): at 2 s, 10,000 jobs
would need 5,000 polls/s. Prints one JSON object.
"""

from __future__ import annotations

import argparse
from typing import Any

from stableaudio_async.emulator import EmulatorConfig
from stableaudio_async.emulator.server import EmulatedLimit

from harness import emit, measure

GENERATION = 800.0  # emulated seconds: 40 s real, longer than submitting 10,000 jobs takes


def peak_in_flight(timings: list[dict[str, Any]]) -> int:
    """Most jobs accepted and not yet seen done at any one time."""
    events = sorted([(j["accepted_at"], 1) for j in timings] +
                    [(j["accepted_at"] + j["seen_after"], -1) for j in timings
                     if j["seen_after"] is not None])
    peak = level = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    return peak


def side(config: EmulatorConfig, script: str, jobs: int) -> dict[str, Any]:
    if script == "ours.py":
        options: dict[str, Any] = {"max_in_flight": jobs, "expected": GENERATION + 1.0,
                                   "poll_timeout": 3 * GENERATION}
    else:
        options = {"poll_interval": 30.0 * config.time_scale}
    run = measure(config, script, "pixazo", jobs, **options)
    client = run["client"]
    return {
        "jobs": jobs, "completed": client["completed"],
        "peak_in_flight": peak_in_flight(run["emulator"]["jobs"]),
        # How long submitting took, first acceptance to last.
        "accepting_seconds": round(max(j["accepted_at"] for j in run["emulator"]["jobs"]) -
                                   min(j["accepted_at"] for j in run["emulator"]["jobs"]), 1),
        "rss_before_mb": client["rss_before_mb"], "peak_rss_mb": client["max_rss_mb"],
        "wall_seconds": client["wall_seconds"],
        "cpu_ms_per_job": client["cpu_ms_per_job"],
        "emulator_cpu_share": run["emulator"]["cpu_share"],
    }


def main(jobs: int = 10_000, small: int = 2_500, time_scale: float = 0.05) -> dict[str, Any]:
    config = EmulatorConfig(
        time_scale=time_scale, api_key="bench-key", queue_time=1.0, generation_time=GENERATION,
        audio_variants=16,
        limits={"pixazo": EmulatedLimit(requests=250, period=1.0, counts="all")})
    few = side(config, "ours.py", small)
    many = side(config, "ours.py", jobs)
    baseline = side(config, "baseline.py", jobs)
    slope_kb = 1024 * (many["peak_rss_mb"] - few["peak_rss_mb"]) / (
        many["peak_in_flight"] - few["peak_in_flight"])
    base_kb = 1024 * (baseline["peak_rss_mb"] - baseline["rss_before_mb"]) / max(
        baseline["peak_in_flight"], 1)
    return {
        "benchmark": "scale", "provider": "pixazo",
        "generation": f"{GENERATION:g} s emulated ({GENERATION * time_scale:g} s real)",
        "target": "peak RSS < 300 MB at 10,000 in flight, growing well under 30 KB per job",
        "ours": many, "ours_small": few,
        "ours_kb_per_in_flight_job": round(slope_kb, 1),
        "baseline": baseline,
        "baseline_kb_per_in_flight_job": round(base_kb, 1),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--small", type=int, default=2_500, help="the smaller run, for the slope")
    parser.add_argument("--time-scale", type=float, default=0.05)
    args = parser.parse_args()
    emit(main(args.jobs, args.small, args.time_scale))
