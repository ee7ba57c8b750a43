"""What the command line shows: the live progress, the end-of-run summary, and the dry-run,
``status`` and ``providers`` listings; it decides nothing and sends nothing.

The live display is one overall bar (jobs done of the batch, throughput, an ETA) above a
table with a row per provider. Its ETA never promises more than the rate limits allow: the
jobs still to submit need at least one submit each, paced by their provider's limit, so the
shown estimate is the larger of that floor and what the observed throughput says
(:func:`submit_seconds`, :func:`eta_seconds`).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
)
from rich.table import Table
from rich.text import Text

from stableaudio_async.batch import LocatedJob
from stableaudio_async.budget import estimate, price_usd
from stableaudio_async.config import RateLimit, Settings
from stableaudio_async.engine import ProviderProgress
from stableaudio_async.errors import printable
from stableaudio_async.models import JobResult, JobStatus
from stableaudio_async.store import JobRecord, JobState

__all__ = [
    "LiveProgress",
    "eta_seconds",
    "print_dry_run",
    "print_providers",
    "print_status",
    "print_status_json",
    "print_summary",
    "submit_pace",
    "submit_seconds",
]

#: How far back the overall bar's throughput looks. Jobs finish in waves about one
#: generation time apart (20–50 s), so a shorter window would swing between them.
_SPEED_WINDOW = 60.0


# -- the ETA, as arithmetic --------------------------------------------------------------------



def _shown(text: str | None) -> str:
    """Untrusted text (a provider's error) as printed: control characters escaped, so it
    cannot drive the terminal or forge lines, and no rich markup taken from it."""
    return escape(printable(text or ""))


def submit_pace(limit: RateLimit | None, allowed_rate: float | None = None) -> float | None:
    """The submits per second ``limit`` lets through; ``None``: no limit.

    The pace is the limiter's: ``requests`` per window (``period`` plus its margin). After
    429s adaptive pacing allows fewer (``allowed_rate``, in requests per ``period`` like
    :attr:`ProviderProgress.rate_limit`), and the lower of the two counts. A limit that also
    counts polls (``counts = "all"``) leaves submits less than this, so it stays a floor.
    """
    if limit is None:
        return None
    requests = float(limit.requests)
    if allowed_rate is not None:
        requests = min(requests, allowed_rate * limit.period)
    return requests / limit.window


def submit_seconds(to_submit: Mapping[str, int], pace: Mapping[str, float | None]) -> float:
    """The least time the jobs still to submit need, each costing at least one submit.

    Providers submit side by side, so the slowest decides: ``max(n / pace)`` over providers,
    an unlimited provider (pace ``None``) taking no time.
    """
    floors = [n / rate for name, n in to_submit.items()
              if n > 0 and (rate := pace.get(name)) is not None and rate > 0]
    return max(floors, default=0.0)


def eta_seconds(remaining: float, throughput: float | None, submit_floor: float) -> float | None:
    """Seconds until ``remaining`` jobs are done; ``None`` while there is nothing to go on.

    ``remaining / throughput`` (jobs per second observed), but never less than
    ``submit_floor`` (:func:`submit_seconds`): no throughput yet observed can outrun the rate
    limits the submits still wait for. Before any throughput is observed the floor alone is
    the estimate, if there is one.
    """
    if remaining <= 0:
        return 0.0
    observed = remaining / throughput if throughput else None
    if observed is None:
        return submit_floor if submit_floor > 0 else None
    return max(observed, submit_floor)


# -- the live display --------------------------------------------------------------------------


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "-:--:--"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:d}:{minutes:02d}:{secs:02d}"


class _ThroughputColumn(ProgressColumn):
    """Jobs per second, as rich measures the task's speed."""

    def render(self, task: Task) -> Text:
        speed = task.speed
        shown = f"{speed:.1f}" if speed is not None else "-.-"
        return Text(f"{shown} jobs/s", style="progress.data.speed")


class _RateBoundRemainingColumn(ProgressColumn):
    """rich's time remaining, held at or above the rate limits' floor (:func:`eta_seconds`)."""

    # As rich's TimeRemainingColumn: twice a second, or the estimate jitters.
    max_refresh = 0.5

    def render(self, task: Task) -> Text:
        floor = float(task.fields.get("submit_floor", 0.0))
        return Text(_clock(eta_seconds(task.remaining or 0.0, task.speed, floor)),
                    style="progress.remaining")


def _progress_table(progress: Mapping[str, ProviderProgress], elapsed: float) -> Table:
    # Sized for 80 columns: no outer edge, padding collapsed between cells, and a provider
    # slowed by 429s named under the table rather than in its req/s cell.
    table = Table(title=f"stableaudio-async · {elapsed:5.1f} s", title_justify="left",
                  box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True,
                  caption_justify="left")
    for column in ("provider", "waiting", "queued", "running", "downloading", "done", "failed",
                   "req/s"):
        table.add_column(column, justify="left" if column == "provider" else "right",
                         no_wrap=True)
    slowed = []
    for name, p in sorted(progress.items()):
        rate = f"{p.rate:.1f}" + (f" / {p.rate_limit:.1f}" if p.rate_limit else "")
        if p.allowed_rate is not None and p.rate_limit and p.allowed_rate < p.rate_limit - 1e-9:
            slowed.append(f"{name} slowed to {p.allowed_rate:.1f} req/s after 429s")
        table.add_row(name, str(p.waiting), str(p.queued), str(p.running), str(p.downloading),
                      str(p.completed), str(p.failed), rate)
    if slowed:
        table.caption = "; ".join(slowed)
    return table


class LiveProgress:
    """The run's live display: the overall bar above the per-provider table.

    Feed it every result (:meth:`record`) and a fresh engine snapshot now and then
    (:meth:`update`); as a context manager it draws itself on ``console`` until the block
    ends. ``totals`` is the batch's jobs per provider, ``limits`` their providers' submit
    limits, ``clock`` the time rich measures throughput by.
    """

    def __init__(self, console: Console, totals: Mapping[str, int],
                 limits: Mapping[str, RateLimit | None], *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._console = console
        self._totals = dict(totals)
        self._total = sum(self._totals.values())
        self._limits = dict(limits)
        self._skipped: Counter[str] = Counter()
        self._counted_skips = 0
        self._snapshot: Mapping[str, ProviderProgress] = {}
        self._elapsed = 0.0
        self._live: Live | None = None
        self._bar = Progress(
            TextColumn("jobs"), BarColumn(bar_width=None), MofNCompleteColumn(),
            TaskProgressColumn(), _ThroughputColumn(), TextColumn("ETA"),
            _RateBoundRemainingColumn(),
            console=console, get_time=clock, auto_refresh=False, expand=True,
            speed_estimate_period=_SPEED_WINDOW,
        )
        self._task = self._bar.add_task("jobs", total=self._total, submit_floor=0.0)

    @classmethod
    def for_batch(cls, console: Console, settings: Settings,
                  jobs: Sequence[LocatedJob]) -> LiveProgress:
        """The display for ``jobs``, run under ``settings`` (every provider configured)."""
        totals = Counter(item.job.provider for item in jobs)
        return cls(console, totals,
                   {name: settings.provider(name).rate_limit for name in totals})

    def record(self, result: JobResult) -> None:
        """Count one result of the run (only skipped ones add to what the engine reports)."""
        if result.status is JobStatus.SKIPPED:
            self._skipped[result.provider] += 1

    def update(self, progress: Mapping[str, ProviderProgress], elapsed: float) -> None:
        """Take the engine's latest snapshot, ``elapsed`` seconds into the run."""
        self._snapshot, self._elapsed = progress, elapsed
        done = sum(self._skipped.values())
        to_submit: dict[str, int] = {}
        pace: dict[str, float | None] = {}
        for name, total in self._totals.items():
            p = progress.get(name)
            ended = (p.completed + p.failed + p.pending) if p else 0
            started = (p.queued + p.running + p.downloading) if p else 0
            done += ended
            # Jobs not yet seen by the engine count as waiting, as they will be.
            to_submit[name] = max(0, total - self._skipped[name] - ended - started)
            pace[name] = submit_pace(self._limits.get(name), p.allowed_rate if p else None)
        done = min(done, self._total)
        floor = submit_seconds(to_submit, pace)
        skips = sum(self._skipped.values())
        if skips != self._counted_skips:
            # Jobs already done in the folder finish at once, and would read as throughput:
            # rich's speed samples restart from here.
            self._counted_skips = skips
            self._bar.reset(self._task, completed=done, submit_floor=floor)
        else:
            self._bar.update(self._task, completed=done, submit_floor=floor)

    def __rich__(self) -> RenderableType:
        return Group(self._bar, _progress_table(self._snapshot, self._elapsed))

    def __enter__(self) -> LiveProgress:
        self._live = Live(self, console=self._console, refresh_per_second=4, transient=False)
        self._live.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None


# -- after the run -----------------------------------------------------------------------------


def print_summary(console: Console, results: Sequence[JobResult], elapsed: float,
                  out_dir: Path, *, total: int, interrupted: bool = False,
                  dropped: Mapping[str, Mapping[str, int]] | None = None,
                  progress: Mapping[str, ProviderProgress] | None = None) -> None:
    """The end-of-run summary: counts, failures, what is left and why, fields left out, and
    each provider whose pacing 429s slowed (from ``progress``)."""
    counts = Counter(r.status for r in results)
    failed = [r for r in results if r.status is JobStatus.FAILED]
    left = total - counts[JobStatus.COMPLETED] - counts[JobStatus.SKIPPED] - len(failed)
    console.print(
        f"{total} job(s) in {elapsed:.1f} s: {counts[JobStatus.COMPLETED]} completed, "
        f"{counts[JobStatus.SKIPPED]} already done, {len(failed)} failed, {left} left "
        f"to run{' (interrupted)' if interrupted else ''}; audio and manifest.jsonl in {out_dir}"
    )
    for result in failed[:20]:
        # A provider's words: printed as text, never read as markup.
        console.print(f"  failed {result.id} ({result.provider}): {_shown(result.error)}")
    if len(failed) > 20:
        console.print(f"  … and {len(failed) - 20} more (see manifest.jsonl)")
    pending = [r for r in results if r.status is JobStatus.PENDING]
    undelivered = [r for r in pending if r.pending_reason == "download"]
    held = [r for r in pending if r.pending_reason != "download"]
    if undelivered:
        console.print(f"  {len(undelivered)} job(s) generated but not downloaded yet "
                      f"({_shown(undelivered[0].error)}): a rerun fetches them by their "
                      "request ids, without submitting them again")
    if held:
        console.print(f"  {len(held)} job(s) held back: {_shown(held[0].error)}")
    if left:
        console.print("  rerun the same command to pick up where this run stopped")
    for provider, fields in sorted((dropped or {}).items()):
        named = ", ".join(f"{name} ({count} job{'s' if count > 1 else ''})"
                          for name, count in sorted(fields.items()))
        console.print(f"  left out, as {provider} does not take them: {named}")
    for name, p in sorted((progress or {}).items()):
        if p.allowed_rate is not None and p.rate_limit and p.allowed_rate < p.rate_limit - 1e-9:
            console.print(f"  {name}: 429s slowed pacing to {p.allowed_rate:.2f} "
                          f"requests/s (configured {p.rate_limit:.2f}); lower its "
                          "rate_limit if this recurs")


# -- listings on stdout ------------------------------------------------------------------------


def print_dry_run(settings: Settings, jobs: Sequence[LocatedJob], done: set[str]) -> None:
    """Every job, its provider and price, then the totals per provider and overall; the ids
    in ``done`` are already completed in the output folder and are not counted."""
    for item in jobs:
        job = item.job
        price = price_usd(job, settings)
        note = " (already done: skipped)" if job.id in done else ""
        cost = f"${price:.4f}" if price is not None else "price unknown"
        print(f"{job.id}  {job.provider}  {job.model or '-'}  {job.task}  {cost}{note}")
    todo = [item.job for item in jobs if item.job.id not in done]
    est = estimate(todo, settings)
    for provider in sorted(est.jobs):
        unpriced = est.unpriced.get(provider, 0)
        print(f"{provider}: {est.jobs[provider]} job(s) to run, "
              f"${est.usd.get(provider, 0.0):.4f}"
              + (f" + {unpriced} without a known price" if unpriced else ""))
    print(f"total: {len(todo)} job(s) to run ({len(jobs) - len(todo)} already done), "
          f"estimated ${est.total_usd:.4f}"
          + (" plus jobs without a known price (set providers.<name>.price_usd)"
             if est.unpriced else ""))


def print_status_json(records: Sequence[JobRecord]) -> None:
    """One object per job: its journal state, and the outcome its last run recorded (the same
    as its last line in manifest.jsonl)."""
    for record in records:
        result = record.result
        print(json.dumps({
            "id": record.job_id, "provider": record.provider, "state": record.state.value,
            "request_id": record.request_id, "attempts": record.attempts,
            "possibly_duplicated": record.possibly_duplicated,
            "status": result.status.value if result else None,
            "pending_reason": result.pending_reason if result else None,
            "error": result.error if result else None,
        }))


def print_status(records: Sequence[JobRecord]) -> None:
    """Jobs per journal state and provider, the possibly duplicated ones, and what is left."""
    table: dict[str, Counter[str]] = {}
    for record in records:
        table.setdefault(record.provider, Counter())[record.state] += 1
    states = [state.value for state in JobState]
    print("provider".ljust(12) + "".join(state.rjust(12) for state in states))
    for provider, counts in sorted(table.items()):
        print(provider.ljust(12) + "".join(str(counts[state]).rjust(12) for state in states))
    doubtful = [r.job_id for r in records if r.possibly_duplicated]
    if doubtful:
        print(f"possibly duplicated (submit in flight at a crash, sent again): "
              f"{', '.join(doubtful)}")
    unfinished = [r for r in records if r.state not in (JobState.COMPLETED, JobState.FAILED)]
    print(f"{len(records)} job(s): {len(unfinished)} left to finish "
          f"(rerun the same command to resume)" if unfinished else
          f"{len(records)} job(s), all finished")


def print_providers(described: Sequence[Mapping[str, Any]]) -> None:
    """Each provider's key, limits and kind, then its models with their ranges and formats."""
    for entry in described:
        key = ("set" if entry["key_set"] else "NOT set") if entry["configured"] else "-"
        print(f"{entry['name']}: key {entry.get('api_key_env', '?')} {key}; "
              f"limit {entry.get('rate_limit') or 'none'}; "
              f"max in flight {entry.get('max_in_flight', '-')}; "
              f"{'synchronous' if entry['synchronous'] else 'queued'}; "
              f"local input audio: {entry['local_audio']}")
        for model, info in entry["models"].items():
            ranges = ", ".join(f"{k} {v}" for k, v in info["ranges"].items())
            default = " (default)" if info["default"] else ""
            print(f"  {model}{default}: {', '.join(info['tasks'])}; {ranges}; "
                  f"formats {', '.join(info['formats'])}")
