"""Every provider in one CLI run against the emulator: 300+ jobs, local-file inputs, no duplicates."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from stableaudio_async.emulator import Emulator
from stableaudio_async.emulator.audio import render_audio
from stableaudio_async.providers import ADAPTERS

from conftest import TEST_KEY, fast_config, write_settings
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


async def test_three_hundred_jobs_over_all_six_providers(tmp_path: Path) -> None:
    """300+ jobs, 50 per provider plus local-file audio-to-audio: all complete exactly once."""
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
    async with Emulator(fast_config()) as emu:
        config = write_settings(emu.client_settings(), tmp_path / "providers.toml")
        batch = write_jsonl(tmp_path / "batch.jsonl", rows)
        env = {adapter_env: TEST_KEY for adapter_env in (
            "PIXAZO_API_KEY", "STABILITY_API_KEY", "WAVESPEED_API_KEY", "AIMLAPI_API_KEY",
            "FAL_KEY", "REPLICATE_API_TOKEN")}
        code, _, stderr = await run_cli("run", str(batch), "--out", str(tmp_path / "out"),
                                        "--config", str(config), "--log-level", "warning",
                                        env=env)
        stats = dict(emu.stats)
    assert code == 0, stderr[-3000:]
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
        data = Path(entry["path"]).read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        assert digest == entry["sha256"] == stats[entry["provider"]].served[entry["request_id"]]
