"""The command line end to end: real subprocesses against the emulator over loopback HTTP."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import wave
from pathlib import Path

import anyio
import pytest

from stableaudio_async.emulator import Emulator

from conftest import TEST_KEY, fast_config, write_settings

pytestmark = pytest.mark.anyio


async def run_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run ``python -m stableaudio_async ARGS``; return exit code, stdout and stderr."""
    full_env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    full_env.update(env or {})
    result = await anyio.run_process([sys.executable, "-m", "stableaudio_async", *args],
                                     env=full_env, check=False)
    return result.returncode, result.stdout.decode(), result.stderr.decode()


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


async def test_two_hundred_jobs_through_the_cli(tmp_path: Path) -> None:
    """200 jobs complete with files byte-identical to what was served, no duplicates, no 429s."""
    async with Emulator(fast_config()) as emu:
        config = write_settings(emu.client_settings(), tmp_path / "providers.toml")
        rows = [{"provider": "pixazo", "prompt": f"track {i}", "seed": i, "duration": 2,
                 "output_format": "wav" if i % 4 == 0 else "mp3"} for i in range(200)]
        batch = write_jsonl(tmp_path / "batch.jsonl", rows)
        out = tmp_path / "out"
        code, _, stderr = await run_cli(
            "run", str(batch), "--out", str(out), "--config", str(config),
            "--log-format", "json", "--log-level", "debug",
            env={"PIXAZO_API_KEY": TEST_KEY})
        stats = emu.stats["pixazo"]
    assert code == 0, stderr[-3000:]
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(manifest) == 200
    assert {m["status"] for m in manifest} == {"completed"}
    assert stats.accepted == 200
    assert stats.duplicate_submissions == 0
    assert stats.rate_limited == 0
    # The emulator's limit was binding: without pacing, 200 submits would burst past 50.
    assert stats.requests > 50
    for entry in manifest:
        data = (out / entry["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"] == stats.served[entry["request_id"]]
        assert len(data) == entry["bytes"]
    assert not list(out.glob(".*.part"))
    wav = next(out / m["path"] for m in manifest if m["path"].endswith(".wav"))
    with wave.open(str(wav)) as w:
        assert abs(w.getnframes() / w.getframerate() - 2.0) < 0.01
    # Every job event is structured and names its job and provider.
    events = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    completed = [e for e in events if e["event"] == "job.completed"]
    assert len(completed) == 200
    assert all(e["job_id"] and e["provider"] == "pixazo" and e["request_id"] for e in completed)


async def test_api_key_never_appears_in_output(tmp_path: Path) -> None:
    """The key is absent from logs (debug, JSON and console), manifest and output files."""
    async with Emulator(fast_config()) as emu:
        config = write_settings(emu.client_settings(), tmp_path / "providers.toml")
        rows = [{"provider": "pixazo", "prompt": f"k {i}", "duration": 1} for i in range(5)]
        rows.append({"provider": "pixazo", "prompt": "bad emulator:fail", "duration": 1})
        batch = write_jsonl(tmp_path / "batch.jsonl", rows)
        outputs = []
        for fmt in ("json", "console"):
            out = tmp_path / f"out-{fmt}"
            code, stdout, stderr = await run_cli(
                "run", str(batch), "--out", str(out), "--config", str(config),
                "--log-format", fmt, "--log-level", "debug", env={"PIXAZO_API_KEY": TEST_KEY})
            assert code == 1  # the emulator:fail job
            outputs += [stdout, stderr]
            outputs += [p.read_bytes().decode("latin-1") for p in out.iterdir()]
        # A wrong key is rejected; the error must not echo the key either.
        code, stdout, stderr = await run_cli(
            "run", str(batch), "--out", str(tmp_path / "out-bad"), "--config", str(config),
            env={"PIXAZO_API_KEY": "sk-wrong-KEY-0000aaaa"})
        outputs += [stdout, stderr, (tmp_path / "out-bad" / "manifest.jsonl").read_text()]
    assert code == 1
    assert "AuthenticationError" in outputs[-1]
    assert all(TEST_KEY not in text for text in outputs)
    assert all("sk-wrong-KEY-0000aaaa" not in text for text in outputs)


async def test_invalid_batch_exits_2_and_sends_nothing(tmp_path: Path) -> None:
    """Every bad line is named in one report, and nothing reaches the emulator."""
    async with Emulator(fast_config()) as emu:
        config = write_settings(emu.client_settings(), tmp_path / "providers.toml")
        batch = write_jsonl(tmp_path / "batch.jsonl", [
            {"provider": "pixazo", "prompt": "fine", "duration": 5},
            {"provider": "pixazo", "prompt": "too long", "duration": 500},
            {"provider": "nosuch", "prompt": "who"},
            {"provider": "pixazo", "duration": 5},
            '{"provider": "pixazo", "prompt": "broken"',
            {"provider": "pixazo", "prompt": "fine too", "duration": 6},
        ])
        code, _, stderr = await run_cli(
            "run", str(batch), "--out", str(tmp_path / "out"), "--config", str(config),
            env={"PIXAZO_API_KEY": TEST_KEY})
        requests = emu.stats.get("pixazo")
    assert code == 2, stderr
    assert requests is None or requests.requests == 0
    assert "4 invalid job(s), nothing was submitted" in stderr
    for line, field in ((2, "duration"), (3, "provider"), (4, "prompt")):
        report = next(r for r in stderr.splitlines() if f"batch.jsonl:{line}" in r)
        assert f"field '{field}'" in report
    assert "1–120" in stderr
    assert "batch.jsonl:5" in stderr and "malformed JSON" in stderr
    for line in (1, 6):
        assert f"batch.jsonl:{line}," not in stderr
    assert not (tmp_path / "out" / "manifest.jsonl").exists()


async def test_missing_key_is_a_config_error(tmp_path: Path) -> None:
    """Without the key in the environment the run exits 2, naming the variable."""
    batch = write_jsonl(tmp_path / "b.jsonl", [{"provider": "pixazo", "prompt": "x"}])
    code, _, stderr = await run_cli("run", str(batch), "--out", str(tmp_path / "o"))
    assert code == 2
    assert "PIXAZO_API_KEY" in stderr


async def test_toml_matrix_batch(tmp_path: Path) -> None:
    """A TOML batch with defaults, jobs and a matrix runs every expanded job."""
    async with Emulator(fast_config()) as emu:
        config = write_settings(emu.client_settings(), tmp_path / "providers.toml")
        batch = tmp_path / "batch.toml"
        batch.write_text(
            '[defaults]\nprovider = "pixazo"\nduration = 1\n'
            '[[jobs]]\nid = "one"\nprompt = "single"\noutput_format = "wav"\n'
            '[matrix]\nprompts = ["a", "b"]\nseeds = [1, 2, 3]\n')
        code, _, stderr = await run_cli("run", str(batch), "--out", str(tmp_path / "out"),
                                        "--config", str(config),
                                        env={"PIXAZO_API_KEY": TEST_KEY})
        accepted = emu.stats["pixazo"].accepted
    assert code == 0, stderr
    assert accepted == 7
    assert (tmp_path / "out" / "one.wav").exists()
    assert len(list((tmp_path / "out").glob("*.mp3"))) == 6


async def test_demo_writes_real_audio(tmp_path: Path) -> None:
    """`stableaudio-async demo` needs no key or network and leaves playable audio behind."""
    out = tmp_path / "out"
    code, _, stderr = await run_cli("demo", "--out", str(out), "--time-scale", "0.02")
    assert code == 0, stderr
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(manifest) >= 10 and all(m["status"] == "completed" for m in manifest)
    with wave.open(str(out / "title-theme.wav")) as w:
        assert abs(w.getnframes() / w.getframerate() - 12.0) < 0.01
    mp3 = (out / "victory-sting.mp3").read_bytes()
    assert mp3[:3] == b"ID3" or (mp3[0] == 0xFF and mp3[1] & 0xE0 == 0xE0)


async def test_drop_unsupported_runs_a_mixed_batch_and_names_what_it_left_out(
        tmp_path: Path) -> None:
    """--drop-unsupported: AI/ML API jobs lose the seed it does not take; the summary says so."""
    rows = [{"provider": "aimlapi", "prompt": f"open {i}", "seed": i + 1, "duration": 1,
             "output_format": "wav"} for i in range(2)]
    rows += [{"provider": "pixazo", "prompt": "seeded", "seed": 9, "duration": 1}]
    env = {"AIMLAPI_API_KEY": TEST_KEY, "PIXAZO_API_KEY": TEST_KEY}
    async with Emulator(fast_config()) as emu:
        config = write_settings(emu.client_settings(), tmp_path / "providers.toml")
        batch = write_jsonl(tmp_path / "batch.jsonl", rows)
        args = ("run", str(batch), "--out", str(tmp_path / "out"), "--config", str(config))
        code, _, stderr = await run_cli(*args, env=env)
        assert code == 2 and "field 'seed': not supported by aimlapi" in stderr
        assert "aimlapi" not in emu.stats  # refused before anything was sent
        code, _, stderr = await run_cli(*args, "--drop-unsupported", env=env)
        bodies = [job.params for job in emu.jobs.values()]
    assert code == 0, stderr[-2000:]
    assert "left out, as aimlapi does not take them: seed (2 jobs)" in stderr
    # Left out of AI/ML API's jobs only: Pixazo's job kept its seed.
    assert sorted(str(p.get("seed")) for p in bodies) == ["9", "None", "None"]
