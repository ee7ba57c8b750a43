"""Figure 5, polling: status polls per job and detection delay, ours vs a fixed 2 s interval.

Pixazo's contract with realistic timing: jobs queue 2 s and generate 20 s ± 25 % (emulated
seconds, time-scaled), under a limit that never binds, with the same number of jobs in
flight on both sides. The emulator records every status request per job and the moment one
first found the job done, so detection delay is the emulator's own measure: from the job
being done to the client seeing it. Figures are in emulated seconds. Ours runs twice: as
shipped (learning completion times) and with learning off (the configured backoff alone).
The ``warm_`` figures cover the jobs submitted after five had been seen done, when there
was something to learn from.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

from stableaudio_async.emulator import EmulatorConfig

from harness import emit, measure, pixazo_config, ratio

INTERVAL = 2.0  # the baseline's fixed interval, emulated seconds


def side(config: EmulatorConfig, script: str, jobs: int, concurrency: int,
         **options: Any) -> dict[str, Any]:
    scale = config.time_scale
    if script == "ours.py":
        options["max_in_flight"] = concurrency
    else:
        options.update(concurrency=concurrency, poll_interval=INTERVAL * scale)
    run = measure(config, script, "pixazo", jobs, **options)
    timed = [j for j in run["emulator"]["jobs"] if j["seen_after"] is not None]
    delays = sorted((j["seen_after"] - j["done_after"]) / scale for j in timed)
    # Jobs submitted once five had been seen done: what a long batch mostly consists of.
    fifth_seen = sorted(j["accepted_at"] + j["seen_after"] for j in timed)[4]
    warm = [(j["seen_after"] - j["done_after"]) / scale for j in timed
            if j["accepted_at"] > fifth_seen]
    warm_polls = [j["polls"] for j in timed if j["accepted_at"] > fifth_seen]
    polls = [j["polls"] for j in run["emulator"]["jobs"]]
    return {
        "completed": run["client"]["completed"],
        "polls_per_job": round(statistics.fmean(polls), 2),
        "detection_delay_mean_s": round(statistics.fmean(delays), 3),
        "detection_delay_p50_s": round(delays[len(delays) // 2], 3),
        "detection_delay_p95_s": round(delays[int(0.95 * (len(delays) - 1))], 3),
        "warm_jobs": len(warm),
        "warm_polls_per_job": round(statistics.fmean(warm_polls), 2) if warm else None,
        "warm_detection_delay_mean_s": round(statistics.fmean(warm), 3) if warm else None,
        "wall_seconds": run["client"]["wall_seconds"],
        "emulator_cpu_share": run["emulator"]["cpu_share"],
    }


def main(jobs: int = 300, concurrency: int = 32, time_scale: float = 0.05) -> dict[str, Any]:
    config = pixazo_config(time_scale=time_scale, queue_time=2.0, generation_time=20.0,
                           generation_jitter=0.25)
    ours = side(config, "ours.py", jobs, concurrency)
    baseline = side(config, "baseline.py", jobs, concurrency)
    return {
        "benchmark": "polling", "provider": "pixazo", "jobs": jobs, "in_flight": concurrency,
        "generation": "2 s queue + 20 s ± 25 % (emulated)",
        "target": f"fewer polls per job than a fixed {INTERVAL:g} s interval at equal or "
                  "better detection delay",
        "ours": ours,
        "ours_learning_off": side(config, "ours.py", jobs, concurrency, no_learn=True),
        "baseline": baseline,
        "polls_ours_over_baseline": ratio(ours["polls_per_job"], baseline["polls_per_job"]),
        "delay_ours_over_baseline": ratio(ours["detection_delay_mean_s"],
                                          baseline["detection_delay_mean_s"]),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--time-scale", type=float, default=0.05)
    args = parser.parse_args()
    emit(main(args.jobs, args.concurrency, args.time_scale))
