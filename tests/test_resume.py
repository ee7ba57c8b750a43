"""Never pay twice, never lose a result: crash and Ctrl-C resumes, skipping, cost caps, audio checks."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from stableaudio_async import Engine, Job
from stableaudio_async.emulator import EmulatedLimit, Emulator, ProviderStats
from stableaudio_async.journal import JobState, Journal, read_records

from conftest import TEST_KEY, fast_config, write_settings
from test_cli_e2e import run_cli, write_jsonl

pytestmark = pytest.mark.anyio

ENV = {"PIXAZO_API_KEY": TEST_KEY, "STABILITY_API_KEY": TEST_KEY, "FAL_KEY": TEST_KEY,
       "WAVESPEED_API_KEY": TEST_KEY}


def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_KEY"))}
    return {**env, **ENV}


async def start_cli(*args: str) -> anyio.abc.Process:
    return await anyio.open_process([sys.executable, "-m", "stableaudio_async", *args],
                                    env=cli_env())


async def wait_for(condition: Callable[[], bool], *, timeout: float = 30) -> None:
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.01)


def manifest(out: Path) -> list[dict[str, Any]]:
    path = out / "manifest.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def total(stats: dict[str, ProviderStats], field: str) -> int:
    return sum(getattr(s, field) for s in stats.values())


async def test_sigkill_at_three_points_then_resume_completes_each_job_once(tmp_path) -> None:
    """Killed during submits, polling and downloads, reruns finish every job exactly once."""
    config = fast_config(limits={**fast_config().limits,
                                 "pixazo": EmulatedLimit(requests=40, period=10.0, counts="all")})
    rows = [{"provider": "pixazo", "prompt": f"kill {i}", "seed": i + 1, "duration": 1}
            for i in range(170)]
    rows += [{"provider": "stability", "prompt": f"held {i}", "seed": i + 1, "duration": 1}
             for i in range(40)]
    out = tmp_path / "out"
    async with Emulator(config) as emu:
        settings = emu.client_settings()
        held = settings.providers["stability"].model_copy(update={"max_in_flight": 8})
        settings = settings.model_copy(
            update={"providers": {**settings.providers, "stability": held}})
        config_path = write_settings(settings, tmp_path / "providers.toml")
        batch = write_jsonl(tmp_path / "batch.jsonl", rows)
        args = ("run", str(batch), "--out", str(out), "--config", str(config_path),
                "--log-level", "warning")
        stats = emu.stats
        # Each run is killed once it has done this much more of one phase than before it.
        kill_points = [("accepted", 40),    # submits under way
                       ("polls", 40),       # polling
                       ("downloads", 15)]   # downloads
        for field, more in kill_points:
            target = total(stats, field) + more
            process = await start_cli(*args)
            await wait_for(lambda p=process, f=field, t=target: total(stats, f) >= t
                           or p.returncode is not None)
            # Each kill lands mid-run, never after the batch already finished.
            assert process.returncode is None
            process.kill()
            await process.wait()
            print(f"\nkilled at accepted={total(stats, 'accepted')} "
                  f"polls={total(stats, 'polls')} downloads={total(stats, 'downloads')}")
        code, _, stderr = await run_cli(*args, env=ENV)
        assert code == 0, stderr[-2000:]
        stats = dict(emu.stats)
    records = {r.job_id: r for r in read_records(out)}
    entries = manifest(out)
    # Every job completed, each with one manifest line and an intact file; no temp files.
    assert len(records) == len(rows) and {r.state for r in records.values()} == {
        JobState.COMPLETED}
    assert {e["id"] for e in entries} == set(records)
    assert len(entries) == len(records)  # one line per job, none lost, none repeated
    for entry in entries:
        data = (out / entry["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
        assert entry["sha256"] == stats[entry["provider"]].served[entry["request_id"]]
    assert not list(out.glob(".*.part"))
    # Only submits that were on the wire at a kill were sent twice: each such job is flagged,
    # and there are at most max_in_flight of them per provider per kill.
    for provider, limit in (("pixazo", settings.providers["pixazo"].max_in_flight),
                            ("stability", settings.providers["stability"].max_in_flight)):
        extra = stats[provider].accepted - sum(r["provider"] == provider for r in rows)
        twice = sum(1 for n in stats[provider].bodies.values() if n > 1)
        flagged = sum(r.possibly_duplicated for r in records.values() if r.provider == provider)
        print(f"\n{provider}: {extra} submit(s) sent again after kills, for {twice} job(s); "
              f"{flagged} flagged possibly_duplicated")
        # Every job the provider saw more than once is flagged, and each kill can have caught
        # at most max_in_flight submits on the wire.
        assert twice <= flagged
        assert 0 <= extra <= 3 * limit
    assert stats["pixazo"].duplicate_submissions == stats["pixazo"].accepted - 170


async def test_sigint_exits_130_quickly_and_rerun_sends_no_duplicates(tmp_path) -> None:
    """Ctrl-C stops submitting and exits 130 within seconds; the rerun resumes by request id."""
    rows = [{"provider": "pixazo", "prompt": f"int {i}", "seed": i + 1, "duration": 1}
            for i in range(120)]
    out = tmp_path / "out"
    async with Emulator(fast_config(generation_time=30.0)) as emu:
        config_path = write_settings(emu.client_settings(), tmp_path / "providers.toml")
        batch = write_jsonl(tmp_path / "batch.jsonl", rows)
        args = ("run", str(batch), "--out", str(out), "--config", str(config_path),
                "--log-level", "warning")
        process = await start_cli(*args)
        await wait_for(lambda: emu.stats.get("pixazo") is not None
                       and emu.stats["pixazo"].accepted >= 30)
        process.send_signal(signal.SIGINT)
        started = anyio.current_time()
        with anyio.fail_after(10):
            await process.wait()
        stopped_in = anyio.current_time() - started
        assert process.returncode == 130
        accepted_at_stop = emu.stats["pixazo"].accepted
        code, stdout, _ = await run_cli("status", "--out", str(out), env=ENV)
        assert code == 1 and "left to finish" in stdout
        # The manifest accounts for every job of the batch: completed, or pending because the
        # run was stopped (those accepted by then named by their request id), and
        # `status --json` says the same of each.
        first = {e["id"]: e for e in manifest(out)}
        assert len(first) == 120
        pending = [e for e in first.values() if e["status"] != "completed"]
        assert pending and {(e["status"], e["pending_reason"]) for e in pending} == {
            ("pending", "stopped")}
        assert sum(1 for e in first.values() if e["request_id"]) == accepted_at_stop
        code, stdout, _ = await run_cli("status", "--out", str(out), "--json", env=ENV)
        status = {s["id"]: s for s in json.loads(stdout)["jobs"]}
        assert code == 1 and set(status) == set(first)
        assert all((status[i]["status"], status[i]["pending_reason"], status[i]["request_id"])
                   == (e["status"], e["pending_reason"], e["request_id"])
                   for i, e in first.items())
        code, _, stderr = await run_cli(*args, env=ENV)
        stats = emu.stats["pixazo"]
    # Within the fail_after above; how quickly depends on the machine, so it is printed only.
    print(f"\nSIGINT: exited 130 in {stopped_in:.2f} s with {accepted_at_stop} accepted")
    assert code == 0, stderr[-2000:]
    assert stats.accepted == 120 and stats.duplicate_submissions == 0
    assert stats.cancelled == 0  # stopping never cancels remote work
    # Jobs the stop held back before the run ended have a pending line from the first run;
    # the last line of every id is its completion.
    entries = manifest(out)
    last = {e["id"]: e for e in entries}
    assert len(last) == 120 and {e["status"] for e in last.values()} == {"completed"}
    assert sum(e["status"] == "completed" for e in entries) == 120
    assert {e["pending_reason"] for e in entries if e["status"] == "pending"} <= {"stopped"}


async def test_rerunning_a_finished_batch_sends_nothing(tmp_path) -> None:
    """Same batch, same folder: every job is skipped by its content id, zero requests sent."""
    rows = [{"provider": "pixazo", "prompt": f"again {i}", "duration": 1} for i in range(10)]
    rows += [{"provider": "stability", "prompt": f"again {i}", "duration": 1} for i in range(5)]
    async with Emulator(fast_config()) as emu:
        config_path = write_settings(emu.client_settings(), tmp_path / "providers.toml")
        batch = write_jsonl(tmp_path / "batch.jsonl", rows)
        args = ("run", str(batch), "--out", str(tmp_path / "out"), "--config", str(config_path))
        assert (await run_cli(*args, env=ENV))[0] == 0
        before = total(emu.stats, "requests")
        code, _, stderr = await run_cli(*args, env=ENV)
        assert code == 0, stderr
        assert total(emu.stats, "requests") == before
        assert "15 already done" in stderr
        # A damaged file is not trusted: that one job (and only it) is generated again.
        damaged = tmp_path / "out" / manifest(tmp_path / "out")[0]["path"]
        damaged.write_bytes(b"not the audio")
        accepted = total(emu.stats, "accepted")
        assert (await run_cli(*args, env=ENV))[0] == 0
        assert total(emu.stats, "accepted") == accepted + 1
        # --force regenerates everything.
        assert (await run_cli(*args, "--force", env=ENV))[0] == 0
        assert total(emu.stats, "accepted") == accepted + 1 + 15


async def test_dry_run_prints_the_estimate_and_sends_nothing(tmp_path) -> None:
    """--dry-run validates, lists each job with its price and totals, and sends no request."""
    rows = [{"provider": "stability", "prompt": f"s{i}", "duration": 1} for i in range(3)]
    rows += [{"provider": "stability", "prompt": "sa2", "model": "stable-audio-2",
              "steps": 100, "duration": 1}]
    rows += [{"provider": "fal", "prompt": f"f{i}", "duration": 1} for i in range(2)]
    rows += [{"provider": "pixazo", "prompt": "p", "duration": 1}]
    async with Emulator(fast_config()) as emu:
        config_path = write_settings(emu.client_settings(), tmp_path / "providers.toml")
        batch = write_jsonl(tmp_path / "batch.jsonl", rows)
        code, stdout, stderr = await run_cli("run", str(batch), "--out", str(tmp_path / "o"),
                                             "--config", str(config_path), "--dry-run", env=ENV)
        assert not emu.stats
    assert code == 0, stderr
    # Stability: 3 × 20 credits + (17 + 0.06 × 100) credits at $0.01; fal: 2 × $0.20.
    assert "stability: 4 job(s) to run, $0.8300" in stdout
    assert "fal: 2 job(s) to run, $0.4000" in stdout
    assert "pixazo: 1 job(s) to run, $0.0000 + 1 without a known price" in stdout
    assert "estimated $1.2300" in stdout
    assert not (tmp_path / "o").exists()


async def test_max_cost_stops_at_the_cap_and_a_higher_cap_finishes(tmp_path) -> None:
    """Spending never passes --max-cost; the rest stay pending and a rerun with more finishes."""
    rows = [{"provider": "stability", "prompt": f"budget {i}", "duration": 1}
            for i in range(10)]
    async with Emulator(fast_config()) as emu:
        config_path = write_settings(emu.client_settings(), tmp_path / "providers.toml")
        batch = write_jsonl(tmp_path / "batch.jsonl", rows)
        args = ("run", str(batch), "--out", str(tmp_path / "out"), "--config", str(config_path))
        code, _, stderr = await run_cli(*args, "--max-cost", "1.00", env=ENV)
        first = emu.stats["stability"].accepted
        assert code == 1 and "held (budget)" in stderr
        # Every job of the batch is accounted for: the held-back ones as pending, with why.
        held = [e for e in manifest(tmp_path / "out") if e["status"] == "pending"]
        assert len(held) == 5 and {e["pending_reason"] for e in held} == {"max_cost"}
        assert all(e["cost"] is None and e["request_id"] is None for e in held)
        code, _, stderr = await run_cli(*args, "--max-cost", "2.00", env=ENV)
        stats = emu.stats["stability"]
    assert first == 5  # 5 × 20 credits = $1.00
    assert code == 0, stderr
    assert stats.accepted == 10 and stats.duplicate_submissions == 0
    entries = manifest(tmp_path / "out")
    last = {e["id"]: e for e in entries}  # the last line of an id is its state
    assert len(entries) == 15 and len(last) == 10
    assert {e["status"] for e in last.values()} == {"completed"}
    assert sum(e["cost"] for e in last.values()) == pytest.approx(200.0)


async def test_max_cost_needs_a_price_for_every_provider(tmp_path) -> None:
    """A batch with jobs of unknown price is refused under --max-cost before anything is sent."""
    batch = write_jsonl(tmp_path / "b.jsonl", [{"provider": "pixazo", "prompt": "x"}])
    code, _, stderr = await run_cli("run", str(batch), "--out", str(tmp_path / "o"),
                                    "--max-cost", "5", env=ENV)
    assert code == 2 and "price_usd" in stderr


async def test_short_audio_is_rejected_not_kept(tmp_path) -> None:
    """A file half as long as asked for ends the job failed as truncated, under no final name."""
    rows = [{"id": "short", "provider": "pixazo", "prompt": "x emulator:short",
             "duration": 8, "output_format": "wav"},
            {"id": "fine", "provider": "pixazo", "prompt": "y", "duration": 8}]
    async with Emulator(fast_config()) as emu:
        config_path = write_settings(emu.client_settings(), tmp_path / "providers.toml")
        batch = write_jsonl(tmp_path / "batch.jsonl", rows)
        code, _, _ = await run_cli("run", str(batch), "--out", str(tmp_path / "out"),
                                   "--config", str(config_path), env=ENV)
    assert code == 1
    entries = {e["id"]: e for e in manifest(tmp_path / "out")}
    assert entries["fine"]["status"] == "completed"
    assert entries["short"]["status"] == "failed"
    assert entries["short"]["error_type"] == "AudioInvalidError"
    assert entries["short"]["error"].startswith("truncated")
    assert not (tmp_path / "out" / "short.wav").exists()
    assert (tmp_path / "out" / "short.rejected.wav").exists()


class _GatedJournal(Journal):
    """A journal whose intent writes wait at a gate, to stop a run in the middle of one."""

    def __init__(self, out_dir: Path) -> None:
        super().__init__(out_dir)
        self.writing_intent = anyio.Event()
        self.gate = anyio.Event()

    async def intent(self, job: Job, *, possibly_duplicated: bool = False) -> None:
        self.writing_intent.set()
        await self.gate.wait()
        await super().intent(job, possibly_duplicated=possibly_duplicated)


async def test_a_stop_during_the_intent_waits_for_that_submit(tmp_path, emulator, settings,
                                                              env) -> None:
    """Stopping while a submit's intent is being written does not count the submits as
    settled: the submit goes out, and its request id is journalled before the stop is done."""
    journal = _GatedJournal(tmp_path / "out")
    job = Job(provider="pixazo", prompt="stopped mid-intent", seed=7, duration=1)
    async with Engine(settings, out_dir=tmp_path / "out", env=env, journal=journal) as engine, \
            anyio.create_task_group() as tg:

        async def run() -> None:
            async for _ in engine.run([job]):
                pass

        tg.start_soon(run)
        await journal.writing_intent.wait()
        engine.stop()
        with anyio.move_on_after(0.2) as early:
            await engine.submits_settled()
        assert early.cancel_called, "the stop counted a submit that was about to go as settled"
        journal.gate.set()
        with anyio.fail_after(10):
            await engine.submits_settled()
        record = await journal.get(job.id)
        engine.abort()
    assert record is not None and record.state is JobState.SUBMITTED and record.request_id
    assert emulator.stats["pixazo"].accepted == 1
