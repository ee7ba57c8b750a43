"""What the command line draws: the ETA's arithmetic, the overall bar and the provider table at
80 columns, and the live display only on a terminal."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import anyio
import pytest
from rich.console import Console

from stableaudio_async.config import RateLimit
from stableaudio_async.engine import ProviderProgress
from stableaudio_async.models import JobResult, JobStatus
from stableaudio_async.render import (
    LiveProgress,
    eta_seconds,
    print_summary,
    submit_pace,
    submit_seconds,
    summary_event,
)

#: 60 submits a minute, with no margin: exactly one a second.
ONE_PER_SECOND = RateLimit(requests=60, period=60.0, margin=0.0, min_margin=0.0)


class FakeClock:
    """The time rich measures throughput by, moved by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def snapshot(*, waiting: int = 0, queued: int = 0, running: int = 0, completed: int = 0,
             failed: int = 0, pending: int = 0, rate: float = 0.0,
             rate_limit: float | None = None,
             allowed_rate: float | None = None) -> ProviderProgress:
    return ProviderProgress(waiting=waiting, queued=queued, running=running, downloading=0,
                            completed=completed, failed=failed, requests=0, rate=rate,
                            rate_limit=rate_limit, allowed_rate=allowed_rate, pending=pending)


def rendered(display: LiveProgress) -> list[str]:
    console = Console(record=True, width=80)
    console.print(display)
    return console.export_text().splitlines()


# -- the arithmetic ----------------------------------------------------------------------------


def test_submit_pace_is_requests_per_window_and_none_without_a_limit() -> None:
    """A limit's pace counts its margin; no limit, no pace."""
    assert submit_pace(None) is None
    assert submit_pace(ONE_PER_SECOND) == pytest.approx(1.0)
    stability = RateLimit(requests=150, period=10.0)  # margin 2 % of 10 s < 0.25 s floor
    assert submit_pace(stability) == pytest.approx(150 / 10.25)


def test_submit_pace_follows_429_slowed_pacing_never_above_the_limit() -> None:
    """Adaptive pacing's allowed rate lowers the pace; a higher one does not raise it."""
    assert submit_pace(ONE_PER_SECOND, allowed_rate=0.5) == pytest.approx(0.5)
    assert submit_pace(ONE_PER_SECOND, allowed_rate=3.0) == pytest.approx(1.0)


def test_submit_seconds_is_decided_by_the_slowest_limited_provider() -> None:
    """Providers submit side by side; an unlimited one, or one with nothing left, adds none."""
    to_submit = {"slow": 90, "fast": 400, "free": 10_000, "done": 0}
    pace = {"slow": 1.0, "fast": 10.0, "free": None, "done": 0.1}
    assert submit_seconds(to_submit, pace) == pytest.approx(90.0)
    assert submit_seconds({"free": 10_000}, {"free": None}) == 0.0
    assert submit_seconds({}, {}) == 0.0


@pytest.mark.parametrize(
    ("remaining", "throughput", "floor", "expected"),
    [
        (70, 2.0, 70.0, 70.0),  # observed says 35 s, the limits need 70 s: the limits win
        (70, 0.5, 70.0, 140.0),  # observed is slower than the limits allow: observed wins
        (70, 2.0, 0.0, 35.0),  # unlimited: observed alone
        (70, None, 70.0, 70.0),  # nothing observed yet: the floor is all there is
        (70, 0.0, 0.0, None),  # nothing observed and no floor: unknown
        (0, None, 50.0, 0.0),  # nothing left
    ],
)
def test_eta_is_the_observed_estimate_held_at_the_rate_limit_floor(
        remaining: int, throughput: float | None, floor: float, expected: float | None) -> None:
    """ETA = max(remaining / throughput, submit floor), or the floor before any throughput."""
    assert eta_seconds(remaining, throughput, floor) == (
        pytest.approx(expected) if expected is not None else None)


# -- the overall bar ---------------------------------------------------------------------------


def test_overall_bar_shows_done_of_total_throughput_and_the_rate_bound_eta() -> None:
    """30 of 100 done at 2 jobs/s, 70 still to submit at 1/s: the ETA is 70 s, not 35 s."""
    clock = FakeClock()
    display = LiveProgress(Console(), {"slowprov": 100}, {"slowprov": ONE_PER_SECOND},
                           clock=clock)
    display.update({"slowprov": snapshot(waiting=100)}, 0.0)
    clock.now = 10.0
    display.update({"slowprov": snapshot(waiting=90, completed=10)}, 10.0)
    clock.now = 20.0
    display.update({"slowprov": snapshot(waiting=70, completed=30)}, 20.0)
    bar = rendered(display)[0]
    assert bar.startswith("jobs ")
    assert " 30/100 " in bar
    assert " 30% " in bar
    assert "2.0 jobs/s" in bar
    assert bar.endswith("ETA 0:01:10")


def test_overall_bar_uses_the_observed_estimate_when_it_is_slower() -> None:
    """With every job already submitted, the limit bounds nothing: 70 left at 2/s is 35 s."""
    clock = FakeClock()
    display = LiveProgress(Console(), {"slowprov": 100}, {"slowprov": ONE_PER_SECOND},
                           clock=clock)
    display.update({"slowprov": snapshot(queued=100)}, 0.0)
    clock.now = 10.0
    display.update({"slowprov": snapshot(queued=90, completed=10)}, 10.0)
    clock.now = 20.0
    display.update({"slowprov": snapshot(queued=70, completed=30)}, 20.0)
    assert rendered(display)[0].endswith("ETA 0:00:35")


def test_failed_and_pending_jobs_count_as_done() -> None:
    """Completed, failed and held-back jobs have all reached their end for this run."""
    display = LiveProgress(Console(), {"p": 10}, {"p": None}, clock=FakeClock())
    display.update({"p": snapshot(completed=3, failed=2, pending=4, running=1)}, 1.0)
    assert " 9/10 " in rendered(display)[0]


def test_skipped_jobs_count_as_done_but_not_as_throughput() -> None:
    """Jobs already done in the folder fill the bar without reading as 25 jobs a second."""
    clock = FakeClock()
    display = LiveProgress(Console(), {"pixazo": 100}, {"pixazo": None}, clock=clock)
    skipped = JobResult(id="x", provider="pixazo", task="text-to-audio", status=JobStatus.SKIPPED)
    for tick in range(2):
        for _ in range(25):
            display.record(skipped)
        clock.now = tick * 0.25
        display.update({"pixazo": snapshot(waiting=50)}, clock.now)
    clock.now = 10.0
    display.update({"pixazo": snapshot(waiting=40, completed=10)}, 10.0)
    clock.now = 20.0
    display.update({"pixazo": snapshot(waiting=30, completed=20)}, 20.0)
    bar = rendered(display)[0]
    assert " 70/100 " in bar
    assert "1.0 jobs/s" in bar
    assert bar.endswith("ETA 0:00:30")


def test_before_any_update_the_bar_shows_nothing_done_and_no_eta() -> None:
    """A fresh display reads 0/total and an unknown ETA."""
    display = LiveProgress(Console(), {"a": 3, "b": 4}, {"a": None, "b": None},
                           clock=FakeClock())
    bar = rendered(display)[0]
    assert " 0/7 " in bar
    assert bar.endswith("-.- jobs/s ETA -:--:--")


def test_display_fits_80_columns_names_whole_and_rates_on_one_line() -> None:
    """Six providers, six-digit counts, held jobs and a 429-slowed one: nothing cut, nothing
    wrapped, at 80 columns."""
    names = ["aimlapi", "fal", "pixazo", "replicate", "stability", "wavespeed"]
    display = LiveProgress(Console(), dict.fromkeys(names, 999_999),
                           dict.fromkeys(names, ONE_PER_SECOND), clock=FakeClock())
    progress = {name: snapshot(waiting=123_456, queued=150, running=150, completed=456_789,
                               failed=321_000, pending=100_000, rate=149.9, rate_limit=150.0,
                               allowed_rate=75.0 if name == "pixazo" else 150.0)
                for name in names}
    display.update(progress, 1234.5)
    lines = rendered(display)
    assert all(len(line) <= 80 for line in lines)
    assert "…" not in "".join(lines)
    assert lines[1].startswith("stableaudio-async · 1234.5 s")
    header = lines[2].split()
    assert header == ["provider", "waiting", "queued", "running", "downloading", "held",
                      "done", "failed", "req/s"]
    rows = lines[4:10]
    assert [row.split()[0] for row in rows] == names
    assert all(row.split()[1:7] == ["123456", "150", "150", "0", "100000", "456789"]
               for row in rows)
    assert all(row.endswith("149.9 / 150.0") for row in rows)
    assert lines[-1].strip() == "pixazo slowed to 75.0 req/s after 429s"


def test_jobs_held_by_the_budget_are_named_under_the_table() -> None:
    """A job the --max-cost cap held back counts as held, and the table says so: "held
    (budget)", not waiting; one held for another reason is only counted."""
    display = LiveProgress(Console(), {"stability": 10}, {"stability": None},
                           clock=FakeClock())
    for i in range(4):
        display.record(JobResult(id=f"b{i}", provider="stability", task="text-to-audio",
                                 status=JobStatus.PENDING, pending_reason="max_cost"))
    display.record(JobResult(id="s", provider="stability", task="text-to-audio",
                             status=JobStatus.PENDING, pending_reason="provider_stopped"))
    display.update({"stability": snapshot(completed=5, pending=5)}, 3.0)
    lines = rendered(display)
    row = next(line for line in lines if line.startswith("stability "))
    assert row.split()[1:7] == ["0", "0", "0", "0", "5", "5"]  # waiting 0, held 5, done 5
    assert lines[-1].strip() == "stability: 4 held (budget)"
    assert " 10/10 " in lines[0]


def summary_of(results: list[JobResult], **kwargs: object) -> list[str]:
    console = Console(record=True, width=80)
    print_summary(console, results, 12.0, Path("out"), **kwargs)  # type: ignore[arg-type]
    return console.export_text().splitlines()


def test_summary_tells_budget_held_jobs_and_spending_apart_and_never_wraps() -> None:
    """Held by --max-cost: "held (budget)" with the spent total against the cap; held by a
    stopped provider: "held back"; a long line stays one line, to grep whole."""
    budget = "not submitted: it would take spending over --max-cost $0.5"
    results = [JobResult(id="ok", provider="stability", task="text-to-audio",
                         status=JobStatus.COMPLETED)]
    results += [JobResult(id=f"b{i}", provider="stability", task="text-to-audio",
                          status=JobStatus.PENDING, pending_reason="max_cost", error=budget)
                for i in range(3)]
    results += [JobResult(id="s", provider="pixazo", task="text-to-audio",
                          status=JobStatus.PENDING, pending_reason="provider_stopped",
                          error="stopped by InsufficientBalanceError")]
    lines = summary_of(results, total=5, max_cost_usd=0.5, spent_usd=0.4)
    assert lines[0].startswith("5 job(s) in 12.0 s: 1 completed, 0 already done, 0 failed, "
                               "4 left to run") and lines[0].endswith("in out")
    assert f"  3 job(s) held (budget): {budget}" in lines
    assert "  1 job(s) held back: stopped by InsufficientBalanceError" in lines
    assert ("  spent $0.4000 of --max-cost $0.50 in this output folder ($0.1000 left)"
            in lines)
    assert not any("spent" in line for line in summary_of(results, total=5))


def test_summary_event_counts_every_status_and_names_failed_jobs() -> None:
    """The JSON summary: per-status counts overall and per provider, held by reason, each
    failed job with its error type, the folder, the cap and the exit code."""
    results = [
        JobResult(id="a", provider="pixazo", task="text-to-audio", status=JobStatus.COMPLETED),
        JobResult(id="b", provider="pixazo", task="text-to-audio", status=JobStatus.SKIPPED),
        JobResult(id="c", provider="fal", task="text-to-audio", status=JobStatus.FAILED,
                  error="boom", error_type="JobFailedError", http_status=None),
        JobResult(id="d", provider="fal", task="text-to-audio", status=JobStatus.PENDING,
                  pending_reason="max_cost"),
    ]
    event = summary_event(results, 3.21, Path("out"), total=5, exit_code=1,
                          max_cost_usd=1.0, spent_usd=0.2)
    assert event["event"] == "run.summary"
    assert (event["jobs"], event["completed"], event["skipped"], event["failed"],
            event["pending"]) == (5, 1, 1, 1, 2)  # one job never reached counts as pending
    assert event["held"] == {"max_cost": 1}
    assert event["by_provider"]["fal"] == {"completed": 0, "failed": 1, "skipped": 0,
                                           "pending": 1}
    assert event["failed_jobs"] == [{"id": "c", "provider": "fal",
                                     "error_type": "JobFailedError", "http_status": None}]
    assert (event["out_dir"], event["max_cost_usd"], event["spent_usd"],
            event["exit_code"]) == ("out", 1.0, 0.2, 1)


# -- only on a terminal ------------------------------------------------------------------------


async def run_demo(out: Path, *args: str) -> tuple[int, str]:
    """The demo batch through the CLI, its stderr claimed by rich to be a terminal."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env |= {"TTY_COMPATIBLE": "1", "COLUMNS": "80", "NO_COLOR": "1"}
    env.pop("FORCE_COLOR", None)
    result = await anyio.run_process(
        [sys.executable, "-m", "stableaudio_async", "demo", "--out", str(out),
         "--time-scale", "0.02", *args], env=env, check=False)
    # The live display's cursor moves and styles, which NO_COLOR leaves, are not the text.
    return result.returncode, re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", result.stderr.decode())


@pytest.mark.anyio
async def test_a_terminal_gets_the_bar_above_the_table(tmp_path: Path) -> None:
    """On a terminal the run ends with the full bar, then the table, then the summary."""
    code, stderr = await run_demo(tmp_path / "out")
    assert code == 0, stderr[-3000:]
    assert "jobs ━" in stderr
    assert "ETA" in stderr
    bar = [line for line in stderr.splitlines() if " 100% " in line]
    assert bar and "21/21" in bar[-1]
    assert re.search(r"provider +waiting", stderr)
    assert "21 job(s) in" in stderr


@pytest.mark.anyio
async def test_json_logs_get_no_live_display_even_on_a_terminal(tmp_path: Path) -> None:
    """JSON lines stay machine-readable: no bar, no table, no text between them, and the
    summary is the last of them."""
    code, stderr = await run_demo(tmp_path / "out", "--log-format", "json")
    assert code == 0, stderr[-3000:]
    assert "ETA" not in stderr
    assert not re.search(r"provider +waiting", stderr)
    events = [json.loads(line) for line in stderr.splitlines()]  # nothing else in between
    assert events[0]["event"] == "demo.emulator_listening"
    assert events[-1]["event"] == "run.summary" and events[-1]["completed"] == 21
    assert all(e["level"] and e["timestamp"] for e in events)
