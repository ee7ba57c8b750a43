"""A paid result is never given up: a download that keeps failing leaves its job pending, and
the rerun fetches it by request id without submitting it again."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from stableaudio_async import DownloadError, Engine, Job, JobStatus
from stableaudio_async.config import Settings
from stableaudio_async.emulator import Emulator
from stableaudio_async.emulator.faults import FaultRates
from stableaudio_async.fetch import same_resource as _same_resource
from stableaudio_async.journal import JobState, read_records
from stableaudio_async.models import AudioURL, InlineAudio

from conftest import TEST_KEY, fast_config, raised, write_settings
from test_cli_e2e import run_cli, write_jsonl

pytestmark = pytest.mark.anyio

ENV = {"PIXAZO_API_KEY": TEST_KEY, "FAL_KEY": TEST_KEY}

#: Download attempts per job in a run (the download retry budget).
ATTEMPTS = 3


def with_download_attempts(settings: Settings, attempts: int) -> Settings:
    download = settings.download.model_copy(
        update={"retry": settings.download.retry.model_copy(update={"attempts": attempts})})
    return settings.model_copy(update={"download": download})


def manifest(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


async def test_a_download_failing_every_attempt_stays_pending_and_the_rerun_fetches_it(
        tmp_path: Path) -> None:
    """Every attempt of the first run is reset: pending (reason, request id); the rerun completes
    every job with zero new submissions, counted at the emulator."""
    # Each file's connection is reset on exactly ATTEMPTS requests, then served whole: the
    # first run spends its whole budget on them, whatever the machine's speed.
    faults = FaultRates(cdn_reset=1.0, cdn_faults_per_file=ATTEMPTS)
    rows = [{"provider": provider, "prompt": f"{provider} {i}", "seed": i + 1, "duration": 1}
            for provider in ("pixazo", "fal") for i in range(3)]
    out = tmp_path / "out"
    async with Emulator(fast_config(faults={"pixazo": faults, "fal": faults})) as emu:
        settings = with_download_attempts(emu.client_settings(), ATTEMPTS)
        config = write_settings(settings, tmp_path / "providers.toml")
        batch = write_jsonl(tmp_path / "batch.jsonl", rows)
        args = ("run", str(batch), "--out", str(out), "--config", str(config),
                "--log-level", "warning")
        code, _, stderr = await run_cli(*args, env=ENV)
        accepted = {name: s.accepted for name, s in emu.stats.items()}
        first = manifest(out)
        records = {r.job_id: r for r in read_records(out)}

        assert code == 1, stderr[-3000:]  # pending: not done, resumable
        assert "6 job(s) generated but not downloaded yet" in stderr
        assert accepted == {"pixazo": 3, "fal": 3}
        assert len(first) == 6
        for entry in first:
            assert entry["status"] == "pending" and entry["pending_reason"] == "download"
            assert entry["error_type"] == "DownloadError" and entry["request_id"], entry
            assert entry["request_id"] in emu.jobs and entry["path"] is None
            # The journal keeps the job as accepted, with its id: what a rerun resumes from.
            record = records[entry["id"]]
            assert record.state is JobState.SUBMITTED
            assert record.request_id == entry["request_id"]
        assert not list(out.glob("*.mp3")) and not list(out.glob(".*.part"))

        code, _, stderr = await run_cli(*args, env=ENV)
        stats = dict(emu.stats)
    assert code == 0, stderr[-3000:]
    assert {name: s.accepted for name, s in stats.items()} == accepted  # nothing resubmitted
    assert all(s.duplicate_submissions == 0 for s in stats.values())
    second = manifest(out)[len(first):]
    assert sorted(e["id"] for e in second) == sorted(e["id"] for e in first)
    by_id = {e["id"]: e for e in first}
    for entry in second:
        assert entry["status"] == "completed", entry
        assert entry["request_id"] == by_id[entry["id"]]["request_id"]
        data = (out / Path(entry["path"]).name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
        assert entry["sha256"] == stats[entry["provider"]].served[entry["request_id"]]
    assert {r.state for r in read_records(out)} == {JobState.COMPLETED}


async def test_a_pending_download_is_resumed_by_the_library_too(tmp_path: Path) -> None:
    """Through the Engine: the pending result carries its id; a second Engine completes it."""
    faults = FaultRates(cdn_truncate=1.0, cdn_faults_per_file=ATTEMPTS)
    job = Job(provider="pixazo", prompt="keep me", seed=3, duration=1)
    async with Emulator(fast_config(faults={"pixazo": faults})) as emu:
        settings = with_download_attempts(emu.client_settings(), ATTEMPTS)
        async with Engine(settings, out_dir=tmp_path, env=ENV) as engine:
            pending = await raised(engine.generate(job), DownloadError)
            progress = engine.progress()["pixazo"]
        assert pending.status is JobStatus.PENDING and pending.pending_reason == "download"
        assert pending.request_id in emu.jobs and not pending.ok
        assert "bytes to resume from" in (pending.error or "")
        assert progress.pending == 1 and progress.downloading == progress.failed == 0
        async with Engine(settings, out_dir=tmp_path, env=ENV) as engine:
            done = await engine.generate(job)
        stats = emu.stats["pixazo"]
    assert done.status is JobStatus.COMPLETED and done.request_id == pending.request_id
    assert stats.accepted == 1 and stats.injected["cdn_truncate"] == ATTEMPTS


async def test_a_stale_url_is_refreshed_and_a_broken_transfer_resumed(tmp_path: Path) -> None:
    """A URL that answers 403 first is replaced by a fresh one from a new status call, and a
    reset on that one resumes with Range: one attempt's budget each, all within one run."""
    faults = FaultRates(url_stale=1.0, cdn_reset=1.0, cdn_faults_per_file=1)
    async with Emulator(fast_config(faults={"pixazo": faults})) as emu:
        settings = with_download_attempts(emu.client_settings(), 2)
        async with Engine(settings, out_dir=tmp_path, env=ENV) as engine:
            result = await engine.generate(Job(provider="pixazo", prompt="stale", duration=1))
        stats = emu.stats["pixazo"]
    assert result.status is JobStatus.COMPLETED, result.error
    assert stats.injected["url_expiry"] == 1 and stats.injected["cdn_reset"] == 1
    assert stats.errors[403] == 1 and stats.accepted == 1
    assert result.sha256 == stats.served[result.request_id or ""]


def test_only_a_re_signed_url_counts_as_the_same_file() -> None:
    """Same scheme, host and path with another query: the same file; anything else is not."""
    old = AudioURL("https://cdn.example/a/b.mp3?expires=1&sig=x")
    assert _same_resource(old, AudioURL("https://cdn.example/a/b.mp3?expires=2&sig=y"))
    assert _same_resource(old, AudioURL("https://cdn.example/a/b.mp3"))
    for other in ("https://cdn.example/a/c.mp3?expires=1&sig=x",
                  "https://other.example/a/b.mp3?expires=1&sig=x",
                  "http://cdn.example/a/b.mp3?expires=1&sig=x"):
        assert not _same_resource(old, AudioURL(other)), other
    assert not _same_resource(old, InlineAudio(b"data"))
