"""What the command line lists on stdout: the dry run's jobs and prices, a batch's ``status``
from its journal, and the ``providers`` it knows; it decides nothing and sends nothing."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from stableaudio_async.batch import LocatedJob
from stableaudio_async.budget import estimate, price_usd
from stableaudio_async.config import Settings
from stableaudio_async.errors import printable
from stableaudio_async.providers import adapter_class
from stableaudio_async.store import JobRecord, JobState

__all__ = [
    "all_completed",
    "print_dry_run",
    "print_providers",
    "print_status",
    "print_status_json",
    "shorten",
    "status_document",
]


#: How much of a prompt the dry-run shows.
PROMPT_WIDTH = 40


def shorten(text: str, width: int = PROMPT_WIDTH) -> str:
    """``text`` escaped (:func:`~stableaudio_async.errors.printable`) and cut to ``width``
    characters, an ellipsis marking the cut."""
    shown = printable(text)
    return shown if len(shown) <= width else shown[:width - 1] + "…"


def _aligned(rows: Sequence[Sequence[str]]) -> list[str]:
    """Rows as lines of left-aligned columns two spaces apart (the last one unpadded)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return ["  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)),
                       row[-1]]).rstrip() for row in rows]


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def print_dry_run(settings: Settings, jobs: Sequence[LocatedJob], done: set[str]) -> None:
    """Every job (its provider, the model it runs on, task, duration, seed, price and the
    start of its prompt), then the totals per provider and overall; the ids in ``done`` are
    already completed in the output folder and are not counted. ``-`` is the provider's
    default (a seed it picks)."""
    rows = [("id", "provider", "model", "task", "duration", "seed", "price", "prompt")]
    for item in jobs:
        job = item.job
        price = price_usd(job, settings)
        cost = f"${price:.4f}" if price is not None else "unknown"
        rows.append((printable(job.id), job.provider,
                     printable(job.model or adapter_class(job.provider).default_model),
                     job.task, _number(job.duration), _number(job.seed),
                     "done: skipped" if job.id in done else cost,
                     shorten(job.prompt)))
    if jobs:
        for line in _aligned(rows):
            print(line)
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


def _job_status(record: JobRecord) -> dict[str, Any]:
    result = record.result
    return {
        "id": record.job_id, "provider": record.provider, "state": record.state.value,
        "request_id": record.request_id, "attempts": record.attempts,
        "possibly_duplicated": record.possibly_duplicated,
        "status": result.status.value if result else None,
        "pending_reason": result.pending_reason if result else None,
        "error_type": result.error_type if result else None,
        "error": result.error if result else None,
    }


def all_completed(records: Sequence[JobRecord]) -> bool:
    """Whether every job of the journal has its audio (none failed, none left to finish)."""
    return all(record.state is JobState.COMPLETED for record in records)


def status_document(records: Sequence[JobRecord]) -> dict[str, Any]:
    """``status --json``: every job (its journal state, and the outcome its last run recorded,
    the same as its last line in manifest.jsonl), then the totals per state and provider.

    ``unfinished`` counts the jobs a rerun still has to finish (never sent, or sent and not
    yet done); ``failed`` those that failed, which a rerun runs again.
    """
    states = [state.value for state in JobState]
    by_provider: dict[str, Counter[str]] = {}
    for record in records:
        by_provider.setdefault(record.provider, Counter())[record.state.value] += 1
    overall = Counter(record.state.value for record in records)
    failed = overall[JobState.FAILED.value]
    return {
        "jobs": [_job_status(record) for record in records],
        "totals": {
            "jobs": len(records),
            "completed": overall[JobState.COMPLETED.value],
            "failed": failed,
            "unfinished": len(records) - overall[JobState.COMPLETED.value] - failed,
            "by_state": {state: overall[state] for state in states},
            "by_provider": {name: {state: counts[state] for state in states}
                            for name, counts in sorted(by_provider.items())},
            "possibly_duplicated": [r.job_id for r in records if r.possibly_duplicated],
        },
        "all_completed": all_completed(records),
    }


def print_status_json(records: Sequence[JobRecord]) -> None:
    """:func:`status_document` as one JSON document on stdout."""
    print(json.dumps(status_document(records)))


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
    failed = sum(r.state is JobState.FAILED for r in records)
    unfinished = sum(r.state not in (JobState.COMPLETED, JobState.FAILED) for r in records)
    if not failed and not unfinished:
        print(f"{len(records)} job(s), all completed")
        return
    parts = ([f"{unfinished} left to finish"] if unfinished else []) \
        + ([f"{failed} failed"] if failed else [])
    print(f"{len(records)} job(s): {', '.join(parts)} (rerun the same command to "
          f"{'resume' if unfinished else 'run the failed ones again'})")


def _span(bounds: Mapping[str, float]) -> str:
    """``{"min": 1, "max": 47}`` as ``1–47``."""
    return "–".join(str(v) if isinstance(v, int) else f"{v:g}"
                    for v in (bounds["min"], bounds["max"]))


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
            ranges = ", ".join(f"{k} {_span(v)}" for k, v in info["ranges"].items())
            default = " (default)" if info["default"] else ""
            print(f"  {model}{default}: {', '.join(info['tasks'])}; {ranges}; "
                  f"formats {', '.join(info['formats'])}")
