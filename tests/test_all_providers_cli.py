"""Every provider in one CLI run against the emulator: 300+ jobs, local-file inputs, no duplicates."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from stableaudio_async.emulator import Emulator, Reading
from stableaudio_async.emulator.audio import render_audio
from stableaudio_async.providers import ADAPTERS

from conftest import TEST_KEY, fast_config, to_toml
from test_cli_e2e import run_cli, write_jsonl

pytestmark = pytest.mark.anyio

# One text-to-audio job shape per provider, within each provider's ranges.
TEXT_JOBS: dict[str, dict[str, Any]] = {
    "pixazo": {"duration": 2, "steps": 8},
    "stability": {"duration": 2, "steps": 8},
    "wavespeed": {"duration": 2},
    "aimlapi": {"duration": 2},
    "fal": {"duration": 2, "steps": 8},
    "replicate": {"duration": 2, "steps": 8},
}


@pytest.mark.parametrize("reading", ["strict", "loose"])
async def test_three_hundred_jobs_over_all_six_providers(tmp_path: Path, reading: Reading) -> None:
    """300+ jobs, 50 per provider plus local-file audio-to-audio: all complete exactly once,
    under either reading of the providers' documentation, and no job waits on a built-in
    prior for its first poll when the config sets ``poll.initial`` (AI/ML API's is 50 s)."""
    assert set(ADAPTERS) == set(TEXT_JOBS)
    source = tmp_path / "source.wav"
    source.write_bytes(render_audio("source", 3, 8.0, "wav"))
    rows: list[dict[str, Any]] = []
    for provider, fields in TEXT_JOBS.items():
        for i in range(50):
            row = {"provider": provider, "prompt": f"{provider} cue {i}", **fields}
            if provider != "aimlapi":  # Stable Audio Open takes no seed
                row["seed"] = i + 1
            rows.append(row)
    # Audio-to-audio from a local file, for every provider that takes one.
    for provider in ("stability", "wavespeed", "fal"):
        rows += [{"provider": provider, "task": "audio-to-audio", "audio": str(source),
                  "prompt": f"{provider} remix {i}", "seed": i + 1, "duration": 2,
                  "strength": 0.5} for i in range(3)]
    rows.append({"provider": "pixazo", "task": "audio-to-audio", "prompt": "pixazo remix",
                 "audio": "https://cdn.example.com/source.mp3", "duration": 2})
    async with Emulator(fast_config(readings={"*": reading})) as emu:
        # AI/ML API's poll table as a user writes it: an initial wait, no expected time. The
        # built-in prior (about 50 s for a default clip) must not come back in its place.
        data = emu.client_settings().model_dump(mode="json")
        poll = data["providers"]["aimlapi"]["poll"]
        del poll["expected"], poll["expected_per_second"]
        poll["initial"] = initial = 0.005
        config = tmp_path / "providers.toml"
        config.write_text(to_toml(data))
        batch = write_jsonl(tmp_path / "batch.jsonl", rows)
        env = {adapter_env: TEST_KEY for adapter_env in (
            "PIXAZO_API_KEY", "STABILITY_API_KEY", "WAVESPEED_API_KEY", "AIMLAPI_API_KEY",
            "FAL_KEY", "REPLICATE_API_TOKEN")}
        code, _, stderr = await run_cli("run", str(batch), "--out", str(tmp_path / "out"),
                                        "--config", str(config), "--log-level", "debug",
                                        "--log-format", "json", env=env)
        stats = dict(emu.stats)
    assert code == 0, stderr[-3000:]
    events = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    first = [e["wait"] for e in events
             if e.get("event") == "poll.first" and e.get("provider") == "aimlapi"]
    assert len(first) == 50
    # The first jobs wait what the config says; later ones where the learned completion
    # times (emulated seconds ~ hundredths of real ones) put them. None waits anything like
    # the built-in prior, here 50 s / 30 s × 2 s of audio = 3.3 s.
    assert min(first) <= initial and max(first) < 1.5
    manifest = [json.loads(line)
                for line in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]
    assert len(manifest) == len(rows) >= 300
    assert {m["status"] for m in manifest} == {"completed"}
    for provider in TEXT_JOBS:
        expected = sum(1 for r in rows if r["provider"] == provider)
        assert stats[provider].accepted == expected, provider
        assert stats[provider].duplicate_submissions == 0, provider
        assert stats[provider].rate_limited == 0, provider
    for entry in manifest:
        data = (tmp_path / "out" / entry["path"]).read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        assert digest == entry["sha256"] == stats[entry["provider"]].served[entry["request_id"]]
