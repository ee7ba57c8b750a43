"""Every benchmark in one command: ceiling, overhead, scale, downloads and polling.

Each prints its JSON line as it finishes; at the end one JSON object holds them all with the
machine they ran on, and is also written to ``--output`` (default
``benchmarks/results.json``) so that later runs can be compared. ``--quick`` runs smaller
sizes (a smoke test, not figures to quote).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import ceiling
import downloads
import overhead
import polling
import scale

from harness import HERE, emit, machine

FULL: dict[str, Callable[[], dict[str, Any]]] = {
    "ceiling": lambda: ceiling.main(jobs=600, time_scale=0.5),
    "overhead": lambda: overhead.main(jobs=2000, concurrency=64),
    "scale": lambda: scale.main(jobs=10_000, small=2_500),
    "downloads": lambda: downloads.main(jobs=24, parallel=8),
    "polling": lambda: polling.main(jobs=300, concurrency=32),
}
QUICK: dict[str, Callable[[], dict[str, Any]]] = {
    "ceiling": lambda: ceiling.main(jobs=150, time_scale=0.2),
    "overhead": lambda: overhead.main(jobs=200, concurrency=32),
    "scale": lambda: scale.main(jobs=1000, small=250, time_scale=0.005),
    "downloads": lambda: downloads.main(jobs=4, parallel=4),
    "polling": lambda: polling.main(jobs=60, concurrency=16),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test")
    parser.add_argument("--only", nargs="*", choices=sorted(FULL), help="run just these")
    parser.add_argument("--output", type=Path, default=HERE / "results.json")
    args = parser.parse_args()
    suite = QUICK if args.quick else FULL
    started = time.monotonic()
    results: dict[str, Any] = {}
    for name, run in suite.items():
        if args.only and name not in args.only:
            continue
        began = time.monotonic()
        results[name] = run()
        results[name]["seconds"] = round(time.monotonic() - began, 1)
        emit(results[name])
    report = {"measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
              "machine": machine(), "quick": args.quick,
              "seconds": round(time.monotonic() - started, 1), "results": results}
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    emit(report)


if __name__ == "__main__":
    main()
