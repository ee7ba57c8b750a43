"""What every benchmark shares: the emulator in its own process, the two clients in theirs.

The emulator, our engine (``ours.py``) and the comparison baseline (``baseline.py``) each run
in a separate process, so that each one's CPU time and peak memory are its own. The emulator
reports its CPU time too (``GET /_emulator/process``), to show it was never the bottleneck.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stableaudio_async.emulator import EmulatorConfig
from stableaudio_async.emulator.server import EmulatedLimit

HERE = Path(__file__).resolve().parent
KEY = "bench-key"


def pixazo_config(**fields: Any) -> EmulatorConfig:
    """An emulator whose Pixazo limit never binds, rendering from a small cached set of
    audio: for the benchmarks that measure something other than pacing."""
    fields.setdefault("audio_variants", 16)
    return EmulatorConfig(
        api_key=KEY, limits={"pixazo": EmulatedLimit(requests=1_000_000, period=1000.0,
                                                     counts="all")}, **fields)


def toml_value(value: Any) -> str:
    """``value`` as TOML (the subset an :class:`EmulatorConfig` dump needs)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()
                               if v is not None) + "}"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def write_config(config: EmulatorConfig, path: Path) -> Path:
    data = config.model_dump(mode="json", exclude_defaults=True)
    path.write_text("".join(f"{key} = {toml_value(value)}\n" for key, value in data.items()))
    return path


@dataclass
class Emulated:
    """A running emulator process."""

    url: str
    config: EmulatorConfig
    config_path: Path
    process: subprocess.Popen[bytes]

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=60) as reply:
            return json.load(reply)

    def stats(self, provider: str) -> dict[str, Any]:
        return dict(self.get("/_emulator/stats").get(provider, {}))

    def jobs(self) -> list[dict[str, Any]]:
        return list(self.get("/_emulator/jobs"))

    def cpu_seconds(self) -> float:
        return float(self.get("/_emulator/process")["cpu_seconds"])


@contextmanager
def emulator(config: EmulatorConfig) -> Iterator[Emulated]:
    """Run the emulator CLI with ``config`` on a free port until the block ends."""
    with tempfile.TemporaryDirectory(prefix="bench-emu-") as tmp:
        path = write_config(config, Path(tmp) / "emulator.toml")
        process = subprocess.Popen(
            [sys.executable, "-m", "stableaudio_async", "emulator", "--port", "0",
             "--config", str(path), "--log-level", "warning"],
            stdout=subprocess.PIPE)
        try:
            assert process.stdout is not None
            line = process.stdout.readline().decode()
            if "listening on " not in line:
                raise RuntimeError(f"the emulator did not start: {line!r}")
            url = line.split("listening on ")[1].split()[0]
            yield Emulated(url, config, path, process)
        finally:
            process.terminate()
            process.wait(timeout=30)


def run_client(script: str, args: list[str], *, timeout: float = 900) -> dict[str, Any]:
    """Run ``benchmarks/<script>`` in its own process; its one JSON line is the result."""
    started = time.monotonic()
    done = subprocess.run([sys.executable, str(HERE / script), *args], capture_output=True,
                          timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{script} failed ({done.returncode}): {done.stderr.decode()[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    result.setdefault("process_seconds", round(time.monotonic() - started, 2))
    return result


def usage() -> tuple[float, float]:
    """This process's CPU seconds so far, and its peak RSS in MB."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024


def rss_mb() -> float:
    """This process's current resident set, in MB."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1024**2


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    with open("/proc/meminfo") as fh:
        mem_kb = int(fh.readline().split()[1])
    model = ""
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"cpus": os.cpu_count(), "cpu_model": model, "memory_gib": round(mem_kb / 1024**2, 1),
            "python": sys.version.split()[0]}


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def emit(result: Mapping[str, Any]) -> None:
    """Print one benchmark's result as a single JSON line."""
    print(json.dumps(result), flush=True)


@contextmanager
def scratch() -> Iterator[Path]:
    """A folder for one run's output, on the project's file system rather than /tmp (which
    may be another file system, with other costs), deleted afterwards."""
    with tempfile.TemporaryDirectory(prefix="bench-", dir=os.environ.get("BENCH_TMP", HERE)) as d:
        yield Path(d)


def ours_args(emu: Emulated, provider: str, jobs: int, **options: Any) -> list[str]:
    """Arguments for ``ours.py``; ``options`` become ``--name value`` (True: a bare flag)."""
    args = ["--url", emu.url, "--emulator-config", str(emu.config_path), "--provider", provider,
            "--jobs", str(jobs)]
    return args + _flags(options)


def baseline_args(emu: Emulated, provider: str, jobs: int, **options: Any) -> list[str]:
    """Arguments for ``baseline.py``: the same emulated limit, in real seconds."""
    limit = emu.config.limits[provider]
    args = ["--url", emu.url, "--key", KEY, "--provider", provider, "--jobs", str(jobs),
            "--rate-requests", str(limit.requests),
            "--rate-period", str(limit.period * emu.config.time_scale), "--counts", limit.counts]
    return args + _flags(options)


def _flags(options: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            out.append(flag)
        elif value not in (None, False):
            out += [flag, str(value)]
    return out


def measure(config: EmulatorConfig, script: str, provider: str, jobs: int,
            **options: Any) -> dict[str, Any]:
    """One client's run against a fresh emulator: what the client printed, under ``client``,
    and what the emulator saw, under ``emulator`` (its counters, per-job timings and CPU)."""
    make_args = ours_args if script == "ours.py" else baseline_args
    with emulator(config) as emu, scratch() as out:
        cpu0 = emu.cpu_seconds()
        client = run_client(script, make_args(emu, provider, jobs, out=out, **options))
        emu_cpu = emu.cpu_seconds() - cpu0
        if client["completed"] != jobs:
            raise RuntimeError(f"{script}: {client['completed']} of {jobs} jobs completed; "
                               f"first error: {client['first_error']}")
        stats = emu.stats(provider)
        timings = emu.jobs()
    wall = client["wall_seconds"]
    return {"client": client, "emulator": {
        "stats": stats, "jobs": timings, "cpu_seconds": round(emu_cpu, 3),
        # Of one core, over the client's run: well under 1 means it was never the bottleneck.
        "cpu_share": round(emu_cpu / wall, 3) if wall else None}}
