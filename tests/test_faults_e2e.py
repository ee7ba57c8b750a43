"""Every fault at once, through the CLI: the engine turns each into the right outcome."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from stableaudio_async.config import Settings
from stableaudio_async.emulator import EmulatedJob, Emulator, ProviderStats
from stableaudio_async.emulator.faults import FaultRates

from conftest import TEST_KEY, fast_config, write_settings
from test_cli_e2e import run_cli, write_jsonl

pytestmark = pytest.mark.anyio

ENV = {"PIXAZO_API_KEY": TEST_KEY, "STABILITY_API_KEY": TEST_KEY, "WAVESPEED_API_KEY": TEST_KEY,
       "AIMLAPI_API_KEY": TEST_KEY, "FAL_KEY": TEST_KEY, "REPLICATE_API_TOKEN": TEST_KEY}

#: Faults at rates a bad day on a real provider might bring.
QUEUED_FAULTS = FaultRates(
    submit_503=0.05, submit_5xx=0.05, poll_5xx=0.05, burst_429=0.02, burst_length=3,
    cdn_reset=0.05, cdn_truncate=0.05, cdn_slow=0.05, url_stale=0.10,
    job_failed=0.05, job_error=0.03)

JOBS: dict[str, dict[str, Any]] = {
    "pixazo": {"duration": 2}, "wavespeed": {"duration": 2}, "aimlapi": {"duration": 2},
    "fal": {"duration": 2}, "replicate": {"duration": 2}, "stability": {"duration": 2},
}


def patient(settings: Settings) -> Settings:
    """More attempts than the defaults: a 429 burst alone can use three."""
    providers = {name: p.model_copy(update={"retry": p.retry.model_copy(update={"attempts": 12})})
                 for name, p in settings.providers.items()}
    download = settings.download.model_copy(
        update={"retry": settings.download.retry.model_copy(update={"attempts": 12})})
    return settings.model_copy(update={"providers": providers, "download": download})


async def run_with_faults(tmp_path: Path, rows: list[dict[str, Any]],
                          faults: dict[str, FaultRates], *, seed: int
                          ) -> tuple[int, str, dict[str, ProviderStats], list[EmulatedJob]]:
    """``rows`` through the CLI into ``tmp_path / "out"``, patiently, against an emulator
    injecting ``faults``; the exit code, stderr, and what the emulator saw."""
    async with Emulator(fast_config(faults=faults, fault_seed=seed)) as emu:
        config = write_settings(patient(emu.client_settings()), tmp_path / "providers.toml")
        batch = write_jsonl(tmp_path / "batch.jsonl", rows)
        code, _, stderr = await run_cli("run", str(batch), "--out", str(tmp_path / "out"),
                                        "--config", str(config), "--log-level", "warning",
                                        env=ENV)
        return code, stderr, dict(emu.stats), list(emu.jobs.values())


async def test_three_hundred_jobs_with_every_fault_injected(tmp_path: Path) -> None:
    """Completed jobs arrive byte-identical, failed ones fail with the provider's reason, once."""
    faults = {name: QUEUED_FAULTS for name in JOBS if name != "stability"}
    # 429 bursts with a Retry-After for some providers, without for the others.
    for name in ("fal", "replicate"):
        faults[name] = QUEUED_FAULTS.model_copy(update={"burst_retry_after": True})
    # Stability's failures arrive as 5xx replies, which it does not bill and we retry; a 503
    # before acceptance is the fault that matters there.
    faults["stability"] = FaultRates(submit_503=0.05, burst_429=0.02, burst_length=2)
    rows = [{"provider": provider, "prompt": f"{provider} fault {i}", **fields}
            for provider, fields in JOBS.items() for i in range(55)]
    code, stderr, stats, jobs = await run_with_faults(tmp_path, rows, faults, seed=7)
    outcomes = {job.request_id: job.outcome for job in jobs}
    entries = [json.loads(line)
               for line in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]
    assert code == 1, stderr[-3000:]  # some jobs failed, by design
    assert len(entries) == len(rows) == len({e["id"] for e in entries}) >= 300
    injected = {name: sum(s.injected.values()) for name, s in stats.items()}
    print(f"\ninjected faults per provider: {injected}")
    assert all(injected[name] > 0 for name in JOBS)
    kinds = {kind for s in stats.values() for kind, n in s.injected.items() if n}
    print(f"fault kinds met: {sorted(kinds)}")
    # Every kind of fault happened at least once, expired URLs (refreshed by re-polling) too.
    assert kinds >= {"submit_503", "submit_5xx", "poll_5xx", "burst_429", "cdn_reset",
                     "cdn_truncate", "cdn_slow", "url_expiry", "job_failed", "job_error"}
    failed_by_provider = 0
    for entry in entries:
        outcome = outcomes.get(entry["request_id"], "COMPLETED")
        if outcome == "COMPLETED":
            assert entry["status"] == "completed", (entry["error_type"], entry["error"])
            data = (tmp_path / "out" / entry["path"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == entry["sha256"]
            assert entry["sha256"] == stats[entry["provider"]].served[entry["request_id"]]
        else:
            failed_by_provider += 1
            assert entry["status"] == "failed", entry
            assert entry["error_type"] == "JobFailedError" and entry["error"], entry
            assert not list((tmp_path / "out").glob(f"{entry['id']}.*"))
    assert failed_by_provider > 0
    for name, provider_stats in stats.items():
        assert provider_stats.duplicate_submissions == 0, name
        assert provider_stats.rate_limited == 0, name  # every 429 was an injected one
    assert not list((tmp_path / "out").glob(".*.part"))


async def test_402_after_k_submissions_stops_that_provider_only(tmp_path: Path) -> None:
    """After the balance runs out, at most max_in_flight more submits reach the provider."""
    rows = [{"provider": "pixazo", "prompt": f"p{i}", "duration": 1} for i in range(60)]
    rows += [{"provider": "fal", "prompt": f"f{i}", "duration": 1} for i in range(20)]
    async with Emulator(fast_config(balance={"pixazo": 12})) as emu:
        settings = emu.client_settings()
        pixazo = settings.providers["pixazo"].model_copy(update={"max_in_flight": 4})
        settings = settings.model_copy(
            update={"providers": {**settings.providers, "pixazo": pixazo}})
        config = write_settings(settings, tmp_path / "providers.toml")
        batch = write_jsonl(tmp_path / "batch.jsonl", rows)
        code, _, stderr = await run_cli("run", str(batch), "--out", str(tmp_path / "out"),
                                        "--config", str(config), env=ENV)
        stats = dict(emu.stats)
    status_code, status_out, _ = await run_cli("status", "--out", str(tmp_path / "out"),
                                               "--json", env=ENV)
    assert code == 1
    assert stats["pixazo"].accepted == 12
    assert 1 <= stats["pixazo"].errors[402] <= 4  # the first 402, and those already in flight
    assert stats["fal"].accepted == 20
    entries = [json.loads(line)
               for line in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]
    assert sum(e["status"] == "completed" for e in entries) == 12 + 20
    assert "held back" in stderr and "stopped by InsufficientBalanceError" in stderr
    # The manifest accounts for every job: the refused ones failed, the rest pending, with why.
    assert len(entries) == len({e["id"] for e in entries}) == len(rows)
    held = [e for e in entries if e["status"] == "pending"]
    assert held and {e["pending_reason"] for e in held} == {"provider_stopped"}
    assert all("stopped by InsufficientBalanceError" in e["error"] for e in held)
    failed = [e for e in entries if e["status"] == "failed"]
    assert {e["error_type"] for e in failed} == {"InsufficientBalanceError"}
    assert len(held) + len(failed) == 60 - 12
    # `status --json` tells the same story as the manifest's last line per job.
    assert status_code == 1  # as the run: some failed, some pending
    states = {s["id"]: s for s in json.loads(status_out)["jobs"]}
    assert {e["id"]: (e["status"], e["pending_reason"]) for e in entries} == {
        i: (s["status"], s["pending_reason"]) for i, s in states.items()}


@pytest.mark.parametrize("resend", [True, False])
async def test_a_submit_answered_500_or_502_is_resent_flagged_or_failed_if_strict(
        tmp_path: Path, resend: bool) -> None:
    """retry.submit_5xx (default on): a submit the emulator refused with a 500 or 502 is sent
    again and its job completes, flagged possibly_duplicated, except on Replicate, where the
    listing of recent predictions shows it was not created; off, those jobs fail instead."""
    faults = {name: FaultRates(submit_5xx=0.3) for name in ("pixazo", "wavespeed", "replicate")}
    rows = [{"provider": provider, "prompt": f"{provider} 5xx {i}", "duration": 1}
            for provider in faults for i in range(12)]
    async with Emulator(fast_config(faults=faults, fault_seed=3)) as emu:
        settings = patient(emu.client_settings())
        providers = {name: p.model_copy(update={"retry": p.retry.model_copy(
            update={"submit_5xx": resend})}) for name, p in settings.providers.items()}
        config = write_settings(settings.model_copy(update={"providers": providers}),
                                tmp_path / "providers.toml")
        batch = write_jsonl(tmp_path / "batch.jsonl", rows)
        code, _, stderr = await run_cli("run", str(batch), "--out", str(tmp_path / "out"),
                                        "--config", str(config), "--log-level", "warning",
                                        env=ENV)
        stats = dict(emu.stats)
    entries = [json.loads(line)
               for line in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]
    assert len(entries) == len(rows)
    refused = sum(stats[name].injected["submit_5xx"] for name in faults)
    assert refused > 0 and all(stats[name].duplicate_submissions == 0 for name in faults)
    resent = [e for e in entries if e["attempts"] > 1]
    if resend:
        assert code == 0, stderr[-3000:]
        assert all(e["status"] == "completed" for e in entries)
        assert {e["provider"] for e in resent} == set(faults)
        assert all(e["possibly_duplicated"] == (e["provider"] != "replicate") for e in resent)
        assert not any(e["possibly_duplicated"] for e in entries if e["attempts"] == 1)
    else:
        assert code == 1
        failed = [e for e in entries if e["status"] == "failed"]
        assert failed and {e["error_type"] for e in failed} == {"ProviderUnavailableError"}
        assert len(failed) + sum(e["status"] == "completed" for e in entries) == len(rows)
        assert not any(e["possibly_duplicated"] for e in entries)


async def test_an_accepted_submit_whose_reply_is_lost_is_found_on_replicate(
        tmp_path: Path) -> None:
    """A submit the provider accepted, answered 500/502 (the gateway lost the reply): Replicate
    lists the key's predictions, so the engine finds the job by its input and follows it, with
    no second submission and no flag; Pixazo lists nothing, so it sends again, flagged, and the
    emulator counts the duplicate that cost."""
    faults = {name: FaultRates(submit_lost_reply=0.4) for name in ("replicate", "pixazo")}
    rows = [{"provider": provider, "prompt": f"{provider} lost {i}", "duration": 1, "seed": i}
            for provider in faults for i in range(15)]
    code, stderr, stats, _ = await run_with_faults(tmp_path, rows, faults, seed=5)
    assert code == 0, stderr[-3000:]
    entries = {e["id"]: e for e in map(json.loads, (tmp_path / "out" / "manifest.jsonl")
                                       .read_text().splitlines())}
    assert {e["status"] for e in entries.values()} == {"completed"}
    replicate = stats["replicate"]
    assert replicate.injected["submit_lost_reply"] > 0
    assert replicate.accepted == 15 and replicate.duplicate_submissions == 0
    assert not any(e["possibly_duplicated"] for e in entries.values()
                   if e["provider"] == "replicate")
    pixazo = stats["pixazo"]
    lost = pixazo.injected["submit_lost_reply"]
    assert lost > 0 and pixazo.accepted == 15 + lost == 15 + pixazo.duplicate_submissions
    mine = [e for e in entries.values() if e["provider"] == "pixazo"]
    # A job may lose the reply to its resend too: every lost reply is one more attempt.
    assert sum(e["attempts"] - 1 for e in mine) == lost
    assert all(e["possibly_duplicated"] == (e["attempts"] > 1) for e in mine)
    # Every file is the one the request id it names was served.
    for e in entries.values():
        digest = hashlib.sha256((tmp_path / "out" / e["path"]).read_bytes()).hexdigest()
        assert digest == e["sha256"] == stats[e["provider"]].served[e["request_id"]]
