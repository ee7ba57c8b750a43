"""Batch files (JSONL, or TOML with defaults, jobs and a matrix) into validated jobs, every problem named."""

from __future__ import annotations

import itertools
import json
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from stableaudio_async.config import Settings
from stableaudio_async.errors import InvalidBatchError, InvalidJobError, JobIssue
from stableaudio_async.models import Job
from stableaudio_async.providers import ADAPTERS

__all__ = ["LocatedJob", "check_jobs", "drop_unsupported", "dropped_fields", "load_batch"]


@dataclass(frozen=True, slots=True)
class LocatedJob:
    """A job and where it was written (file, and line for JSONL)."""

    job: Job
    source: str | None = None
    line: int | None = None
    #: Fields left out because the provider does not take them (``unsupported = "drop"``).
    dropped: tuple[str, ...] = ()


def drop_unsupported(jobs: Iterable[LocatedJob]) -> list[LocatedJob]:
    """The jobs without the fields their provider does not take, each noting what it lost.

    A job keeps its id: it names the job as written, so a rerun of the same batch finds it.
    """
    kept = []
    for item in jobs:
        adapter = ADAPTERS.get(item.job.provider)
        names = adapter.unsupported_fields(item.job) if adapter is not None else []
        if names:
            item = replace(item, job=item.job.model_copy(update=dict.fromkeys(names)),
                           dropped=item.dropped + tuple(names))
        kept.append(item)
    return kept


def dropped_fields(jobs: Iterable[LocatedJob]) -> dict[str, dict[str, int]]:
    """How many jobs lost each field, per provider (for the run's summary)."""
    counts: dict[str, dict[str, int]] = {}
    for item in jobs:
        for name in item.dropped:
            fields = counts.setdefault(item.job.provider, {})
            fields[name] = fields.get(name, 0) + 1
    return counts


def _make_job(
    raw: Any, source: str, line: int | None, issues: list[JobIssue]
) -> LocatedJob | None:
    if not isinstance(raw, Mapping):
        issues.append(JobIssue("a job must be a JSON object", line=line, source=source))
        return None
    try:
        return LocatedJob(Job.model_validate(raw), source, line)
    except InvalidJobError as exc:
        issues.extend(replace(issue, line=line, source=source) for issue in exc.issues)
        return None
    except RecursionError:
        issues.append(JobIssue(_TOO_DEEP, line=line, source=source))
        return None


#: A batch nested this deep is no job: refused rather than recursed into.
_TOO_DEEP = "nested too deeply to be a job"
#: The most jobs one batch may hold unless ``--max-jobs`` says otherwise.
MAX_JOBS = 100_000


def _too_many(count: int, max_jobs: int, source: str) -> JobIssue:
    return JobIssue(f"the batch holds {count:,} jobs, over the limit of {max_jobs:,} "
                    "(--max-jobs)", source=source)


def _load_jsonl(text: str, source: str, issues: list[JobIssue],
                max_jobs: int) -> list[LocatedJob]:
    jobs = []
    count = 0
    # Not splitlines(): JSON strings may hold U+2028 and friends, which it would split on.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        count += 1
        if count > max_jobs:
            issues.append(_too_many(sum(1 for t in text.split("\n") if t.strip()), max_jobs,
                                    source))
            return []
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as exc:
            issues.append(JobIssue(f"malformed JSON: {exc.msg} at column {exc.colno}",
                                   line=number, source=source))
            continue
        except RecursionError:
            issues.append(JobIssue(_TOO_DEEP, line=number, source=source))
            continue
        located = _make_job(raw, source, number, issues)
        if located is not None:
            jobs.append(located)
    return jobs


_MATRIX_AXES = {"prompts": "prompt", "seeds": "seed", "durations": "duration"}


def _load_toml(text: str, source: str, issues: list[JobIssue],
               max_jobs: int) -> list[LocatedJob]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        issues.append(JobIssue(f"not valid TOML: {exc}", source=source))
        return []
    except RecursionError:
        issues.append(JobIssue(f"not a batch: {_TOO_DEEP}", source=source))
        return []
    unknown = sorted(set(data) - {"defaults", "jobs", "matrix"})
    if unknown:
        issues.append(JobIssue(f"unknown table(s) {', '.join(unknown)} "
                               "(expected [defaults], [[jobs]], [matrix])", source=source))
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        issues.append(JobIssue("defaults must be a table ([defaults])", source=source,
                               field="defaults"))
        defaults = {}
    listed = data.get("jobs", [])
    if not isinstance(listed, list):
        issues.append(JobIssue("jobs must be an array of tables ([[jobs]])", source=source,
                               field="jobs"))
        listed = []
    matrix = data.get("matrix")
    if matrix is not None and not isinstance(matrix, dict):
        issues.append(JobIssue("matrix must be a table ([matrix])", source=source,
                               field="matrix"))
        matrix = None
    # Counted before anything is expanded: a small file can name a million jobs.
    count = len(listed)
    if matrix is not None:
        size = 1
        for key in _MATRIX_AXES:
            values = matrix.get(key, [None])
            size *= len(values) if isinstance(values, list) else 1
        count += size
    if count > max_jobs:
        issues.append(_too_many(count, max_jobs, source))
        return []
    entries: list[tuple[str, Any]] = []
    for index, entry in enumerate(listed, start=1):
        entries.append((f"{source} [[jobs]] #{index}",
                        {**defaults, **entry} if isinstance(entry, dict) else entry))
    if matrix is not None:
        extra = sorted(set(matrix) - _MATRIX_AXES.keys())
        if extra:
            issues.append(JobIssue(f"unknown matrix key(s) {', '.join(extra)} "
                                   f"(expected {', '.join(_MATRIX_AXES)})", source=source))
        axes = []
        for key, field in _MATRIX_AXES.items():
            values = matrix.get(key, [None])
            if not isinstance(values, list) or not values:
                issues.append(JobIssue(f"matrix.{key} must be a non-empty list", source=source,
                                       field=f"matrix.{key}"))
                values = []
            axes.append((field, values))
        for index, values in enumerate(itertools.product(*(v for _, v in axes)), start=1):
            raw = dict(defaults)
            raw.update({field: value for (field, _), value in zip(axes, values, strict=True)
                        if value is not None})
            entries.append((f"{source} [matrix] #{index}", raw))
    jobs = []
    for where, raw in entries:
        located = _make_job(raw, where, None, issues)
        if located is not None:
            jobs.append(located)
    return jobs


def load_batch(path: str | Path, settings: Settings | None = None, *,
               max_jobs: int = MAX_JOBS) -> list[LocatedJob]:
    """Read a ``.jsonl`` or ``.toml`` batch file; raise :class:`InvalidBatchError` naming every bad job.

    With ``settings``, the jobs that parse are also checked against their providers
    (:func:`check_jobs`), so one error lists every problem in the file at once. A batch of
    more than ``max_jobs`` jobs is refused before it is expanded or validated.
    """
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidBatchError([JobIssue(f"cannot read batch: {exc}", source=source)]) from exc
    issues: list[JobIssue] = []
    if path.suffix.lower() == ".toml":
        jobs = _load_toml(text, source, issues, max_jobs)
    else:
        jobs = _load_jsonl(text, source, issues, max_jobs)
    if settings is not None:
        if settings.unsupported == "drop":
            jobs = drop_unsupported(jobs)
        issues.extend(check_jobs(jobs, settings))
    if issues:
        raise InvalidBatchError(sorted(issues, key=_position))
    if not jobs:
        raise InvalidBatchError([JobIssue("the batch holds no jobs", source=source)])
    return jobs


def _position(issue: JobIssue) -> tuple[str, int]:
    return issue.source or "", issue.line or 0


def check_jobs(jobs: Iterable[LocatedJob | Job], settings: Settings) -> list[JobIssue]:
    """Every reason the configured providers cannot run these jobs (empty when all can)."""
    issues: list[JobIssue] = []
    seen: dict[str, LocatedJob] = {}
    for item in jobs:
        located = item if isinstance(item, LocatedJob) else LocatedJob(item)
        job = located.job

        def add(found: Sequence[JobIssue], located: LocatedJob = located) -> None:
            issues.extend(replace(i, line=located.line, source=located.source) for i in found)

        first = seen.setdefault(job.id, located)
        if first is not located:
            where = f"line {first.line}" if first.line is not None else first.source or "earlier"
            add([JobIssue(f"duplicate job id (first at {where})", job_id=job.id, field="id")])
            continue
        adapter = ADAPTERS.get(job.provider)
        if adapter is None:
            known = ", ".join(sorted(ADAPTERS))
            add([JobIssue(f"unknown provider {job.provider!r} (known: {known})",
                          job_id=job.id, field="provider")])
        elif job.provider not in settings.providers:
            add([JobIssue(f"provider {job.provider!r} is not configured",
                          job_id=job.id, field="provider")])
        else:
            add(adapter.validate(job))
    return issues
