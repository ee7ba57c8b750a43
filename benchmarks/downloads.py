"""Figure 4, downloads: streaming a large file set from the emulator's CDN, vs plain ``curl``.

Pixazo jobs whose generation takes milliseconds and whose output is a long WAV, so that the
run is nearly all download. Each client (ours, the baseline) runs against its own emulator;
then ``curl --parallel`` fetches the very same CDN URLs from that emulator with the same
number of transfers at once, for the reference throughput. Run at two file sizes (20 MB and
1.7 MB WAVs): peak RSS should not follow the file size. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import subprocess
import time
from pathlib import Path
from typing import Any

from stableaudio_async.emulator import EmulatorConfig

from harness import (
    baseline_args,
    emit,
    emulator,
    ours_args,
    pixazo_config,
    ratio,
    run_client,
    scratch,
)


def curl(urls: list[str], out: Path, parallel: int) -> tuple[float, int]:
    """Fetch ``urls`` into ``out`` with curl, ``parallel`` at once: seconds taken, bytes."""
    args = ["curl", "--no-progress-meter", "--fail", "--parallel", "--parallel-max",
            str(parallel)]
    for i, url in enumerate(urls):
        args += ["-o", str(out / f"{i}.wav"), url]
    started = time.monotonic()
    subprocess.run(args, check=True)
    took = time.monotonic() - started
    return took, sum(p.stat().st_size for p in out.iterdir())


def side(config: EmulatorConfig, script: str, jobs: int, duration: int,
         parallel: int) -> dict[str, Any]:
    make_args = ours_args if script == "ours.py" else baseline_args
    options: dict[str, Any] = {"duration": duration, "output_format": "wav"}
    options.update({"max_in_flight": parallel} if script == "ours.py"
                   else {"concurrency": parallel, "poll_interval": 0.01})
    with emulator(config) as emu:
        with scratch() as out:
            cpu0 = emu.cpu_seconds()
            client = run_client(script, make_args(emu, "pixazo", jobs, out=out, **options))
            emu_cpu = emu.cpu_seconds() - cpu0
            if client["completed"] != jobs:
                raise RuntimeError(f"{script}: {client['completed']} of {jobs} jobs completed; "
                                   f"first error: {client['first_error']}")
        urls = [f"{emu.url}/cdn/pixazo/{j['request_id']}.wav" for j in emu.jobs()]
        with scratch() as out:
            cpu0 = emu.cpu_seconds()
            curl_seconds, curl_bytes = curl(urls, out, parallel)
            curl_emu_cpu = emu.cpu_seconds() - cpu0
    return {
        "files": jobs, "file_mb": round(client["bytes"] / jobs / 1024**2, 1),
        "completed": client["completed"],
        "mb_per_s": round(client["bytes"] / 1024**2 / client["wall_seconds"], 1),
        "curl_mb_per_s": round(curl_bytes / 1024**2 / curl_seconds, 1),
        "over_curl": ratio(client["bytes"] / client["wall_seconds"], curl_bytes / curl_seconds),
        "peak_rss_mb": client["max_rss_mb"],
        "emulator_cpu_share": round(emu_cpu / client["wall_seconds"], 3),
        # The same emulator serving curl faster shows it was not what held the client back.
        "emulator_cpu_share_serving_curl": round(curl_emu_cpu / curl_seconds, 3),
    }


def main(jobs: int = 24, parallel: int = 8) -> dict[str, Any]:
    config = pixazo_config(time_scale=0.001, queue_time=1.0, generation_time=4.0,
                           audio_variants=4)
    large = {"ours": side(config, "ours.py", jobs, 120, parallel),
             "baseline": side(config, "baseline.py", jobs, 120, parallel)}
    small = {"ours": side(config, "ours.py", jobs, 10, parallel),
             "baseline": side(config, "baseline.py", jobs, 10, parallel)}
    return {
        "benchmark": "downloads", "provider": "pixazo", "in_flight": parallel,
        "target": "throughput near curl's; peak RSS independent of file size",
        "large_files": large, "small_files": small,
        "ours_peak_rss_large_over_small": ratio(large["ours"]["peak_rss_mb"],
                                                small["ours"]["peak_rss_mb"]),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=24)
    parser.add_argument("--parallel", type=int, default=8)
    args = parser.parse_args()
    emit(main(args.jobs, args.parallel))
