"""What the command line shows while and after it runs a batch: the live progress and the
end-of-run summary (the listings are in :mod:`.listings`); it decides nothing and sends
nothing.

The live display is one overall bar (jobs done of the batch, throughput, an ETA) above a
table with a row per provider. Its ETA never promises more than the rate limits allow: the
jobs still to submit need at least one submit each, paced by their provider's limit, so the
shown estimate is the larger of that floor and what the observed throughput says
(:func:`submit_seconds`, :func:`eta_seconds`).
"""

from __future__ import annotations

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
from stableaudio_async.config import RateLimit, Settings
from stableaudio_async.engine import ProviderProgress
from stableaudio_async.errors import printable
from stableaudio_async.models import JobResult, JobStatus

__all__ = [
    "LiveProgress",
    "eta_seconds",
    "print_summary",
    "submit_pace",
    "submit_seconds",
    "summary_event",
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


#: The live table's columns; ``held`` counts the jobs that ended this run pending (held back
#: by the budget or a stopped provider, or generated and not yet downloaded).
COLUMNS = ("provider", "waiting", "queued", "running", "downloading", "held", "done", "failed",
           "req/s")


def _progress_table(progress: Mapping[str, ProviderProgress], elapsed: float,
                    budget_held: Mapping[str, int] | None = None) -> Table:
    # Sized for 80 columns with six-digit counts: no outer edge, one space between cells, and
    # what needs words (a provider slowed by 429s, jobs held by the budget) said under the
    # table rather than in a cell.
    table = Table(title=f"stableaudio-async · {elapsed:5.1f} s", title_justify="left",
                  box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True,
                  padding=(0, 0), caption_justify="left")
    for column in COLUMNS:
        table.add_column(column, justify="left" if column == "provider" else "right",
                         no_wrap=True)
    notes = []
    for name, p in sorted(progress.items()):
        rate = f"{p.rate:.1f}" + (f" / {p.rate_limit:.1f}" if p.rate_limit else "")
        if p.allowed_rate is not None and p.rate_limit and p.allowed_rate < p.rate_limit - 1e-9:
            notes.append(f"{name} slowed to {p.allowed_rate:.1f} req/s after 429s")
        if held := (budget_held or {}).get(name, 0):
            notes.append(f"{name}: {held} held (budget)")
        table.add_row(name, str(p.waiting), str(p.queued), str(p.running), str(p.downloading),
                      str(p.pending), str(p.completed), str(p.failed), rate)
    if notes:
        table.caption = "; ".join(notes)
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
        self._budget_held: Counter[str] = Counter()
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
        totals: Counter[str] = Counter(item.job.provider for item in jobs)
        return cls(console, totals,
                   {name: settings.provider(name).rate_limit for name in totals})

    def record(self, result: JobResult) -> None:
        """Count one result of the run (skipped ones add to what the engine reports, and
        jobs held by the budget are told apart from the other held ones)."""
        if result.status is JobStatus.SKIPPED:
            self._skipped[result.provider] += 1
        elif result.status is JobStatus.PENDING and result.pending_reason == "max_cost":
            self._budget_held[result.provider] += 1

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
        return Group(self._bar,
                     _progress_table(self._snapshot, self._elapsed, self._budget_held))

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


def _slowed(progress: Mapping[str, ProviderProgress] | None) -> dict[str, ProviderProgress]:
    return {name: p for name, p in sorted((progress or {}).items())
            if p.allowed_rate is not None and p.rate_limit
            and p.allowed_rate < p.rate_limit - 1e-9}


def _left(results: Sequence[JobResult], total: int) -> int:
    """The batch's jobs a rerun still has to run: neither completed, nor done, nor failed."""
    ended = sum(r.status is not JobStatus.PENDING for r in results)
    return max(0, total - ended)


def print_summary(console: Console, results: Sequence[JobResult], elapsed: float,
                  out_dir: Path, *, total: int, interrupted: bool = False,
                  dropped: Mapping[str, Mapping[str, int]] | None = None,
                  progress: Mapping[str, ProviderProgress] | None = None,
                  max_cost_usd: float | None = None, spent_usd: float | None = None) -> None:
    """The end-of-run summary: counts, failures, what is left and why, what was spent against
    ``--max-cost``, fields left out, and each provider whose pacing 429s slowed (from
    ``progress``). Lines are not cut to the console's width, so they grep whole."""
    def say(text: str) -> None:
        console.print(text, soft_wrap=True)

    counts = Counter(r.status for r in results)
    failed = [r for r in results if r.status is JobStatus.FAILED]
    left = _left(results, total)
    say(f"{total} job(s) in {elapsed:.1f} s: {counts[JobStatus.COMPLETED]} completed, "
        f"{counts[JobStatus.SKIPPED]} already done, {len(failed)} failed, {left} left "
        f"to run{' (interrupted)' if interrupted else ''}; audio and manifest.jsonl in {out_dir}")
    for result in failed[:20]:
        # A provider's words: printed as text, never read as markup.
        say(f"  failed {result.id} ({result.provider}): {_shown(result.error)}")
    if len(failed) > 20:
        say(f"  … and {len(failed) - 20} more (see manifest.jsonl)")
    pending = [r for r in results if r.status is JobStatus.PENDING]
    undelivered = [r for r in pending if r.pending_reason == "download"]
    budget = [r for r in pending if r.pending_reason == "max_cost"]
    held = [r for r in pending if r.pending_reason not in ("download", "max_cost")]
    if undelivered:
        say(f"  {len(undelivered)} job(s) generated but not downloaded yet "
            f"({_shown(undelivered[0].error)}): a rerun fetches them by their "
            "request ids, without submitting them again")
    if budget:
        say(f"  {len(budget)} job(s) held (budget): {_shown(budget[0].error)}")
    if held:
        say(f"  {len(held)} job(s) held back: {_shown(held[0].error)}")
    if max_cost_usd is not None and spent_usd is not None:
        say(f"  spent ${spent_usd:.4f} of --max-cost ${max_cost_usd:.2f} in this output "
            f"folder (${max(0.0, max_cost_usd - spent_usd):.4f} left)")
    if left:
        say("  rerun the same command to pick up where this run stopped")
    for provider, fields in sorted((dropped or {}).items()):
        named = ", ".join(f"{name} ({count} job{'s' if count > 1 else ''})"
                          for name, count in sorted(fields.items()))
        say(f"  left out, as {provider} does not take them: {named}")
    for name, p in _slowed(progress).items():
        say(f"  {name}: 429s slowed pacing to {p.allowed_rate:.2f} requests/s "
            f"(configured {p.rate_limit:.2f}); lower its rate_limit if this recurs")


def summary_event(results: Sequence[JobResult], elapsed: float, out_dir: Path, *,
                  total: int, exit_code: int, interrupted: bool = False,
                  dropped: Mapping[str, Mapping[str, int]] | None = None,
                  progress: Mapping[str, ProviderProgress] | None = None,
                  max_cost_usd: float | None = None,
                  spent_usd: float | None = None) -> dict[str, Any]:
    """The end-of-run summary as one event's fields, for ``--log-format json`` (the last line
    a run writes): what :func:`print_summary` says, every failed job included.

    ``pending`` is every job a rerun still has to run (``held`` counts those this run ended
    pending, by reason; the rest were not reached before an interruption).
    """
    counts = Counter(r.status for r in results)
    by_provider: dict[str, Counter[str]] = {}
    for result in results:
        by_provider.setdefault(result.provider, Counter())[result.status.value] += 1
    held = Counter(r.pending_reason or "stopped" for r in results
                   if r.status is JobStatus.PENDING)
    return {
        "event": "run.summary",
        "jobs": total,
        "completed": counts[JobStatus.COMPLETED],
        "skipped": counts[JobStatus.SKIPPED],
        "failed": counts[JobStatus.FAILED],
        "pending": _left(results, total),
        "held": dict(sorted(held.items())),
        "by_provider": {name: {status.value: c[status.value] for status in JobStatus}
                        for name, c in sorted(by_provider.items())},
        "failed_jobs": [{"id": r.id, "provider": r.provider, "error_type": r.error_type,
                         "http_status": r.http_status}
                        for r in results if r.status is JobStatus.FAILED],
        "elapsed_s": round(elapsed, 3),
        "interrupted": interrupted,
        "out_dir": str(out_dir),
        "manifest": str(out_dir / "manifest.jsonl"),
        "max_cost_usd": max_cost_usd,
        "spent_usd": None if spent_usd is None else round(spent_usd, 6),
        "dropped_fields": {name: dict(sorted(fields.items()))
                           for name, fields in sorted((dropped or {}).items())},
        "slowed": {name: {"allowed_rate": p.allowed_rate, "rate_limit": p.rate_limit}
                   for name, p in _slowed(progress).items()},
        "exit_code": exit_code,
    }
