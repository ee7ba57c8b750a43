"""Command-line pieces that need no server: secret redaction, the emulator command, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stableaudio_async.cli import REDACTED, SecretRedactor, main

from conftest import emulator_process


def test_redactor_blanks_secret_values_everywhere() -> None:
    """A known key is blanked inside strings, nested mappings and lists, tracebacks included."""
    redact = SecretRedactor(["sk-live-abcdef123"])
    event = redact(None, "info", {
        "event": "job.failed",
        "error": "HTTP 401 for key sk-live-abcdef123 (provider=pixazo)",
        "nested": {"headers": ["Bearer sk-live-abcdef123"]},
        "exception": "Traceback ... sk-live-abcdef123 ...",
        "count": 3,
    })
    assert "sk-live-abcdef123" not in json.dumps(event)
    assert event["error"] == f"HTTP 401 for key {REDACTED} (provider=pixazo)"
    assert event["count"] == 3


def test_redactor_blanks_fields_named_like_secrets() -> None:
    """Fields such as api_key or Authorization are blanked whatever they hold."""
    event = SecretRedactor([])(None, "info", {"event": "x", "api_key": "anything",
                                              "Authorization": "Key abc", "job_id": "j1"})
    assert event["api_key"] == event["Authorization"] == REDACTED
    assert event["job_id"] == "j1"


def test_redactor_ignores_trivially_short_secrets() -> None:
    """A one- or two-character 'key' would blank every word containing it; it is skipped."""
    event = SecretRedactor(["a"])(None, "info", {"event": "a cat"})
    assert event["event"] == "a cat"


def test_config_error_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A broken --config file is reported with its path and exit code 2."""
    bad = tmp_path / "bad.toml"
    bad.write_text("[providers.pixazo]\nmax_in_flight = 0\n")
    batch = tmp_path / "b.jsonl"
    batch.write_text('{"provider": "pixazo", "prompt": "x"}\n')
    assert main(["run", str(batch), "--config", str(bad), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "max_in_flight" in err and str(bad) in err


@pytest.mark.anyio
async def test_emulator_command_serves_until_stopped() -> None:
    """`stableaudio-async emulator --port 0` prints its URL and answers Pixazo requests."""
    import aiohttp

    async with emulator_process("--time-scale", "0.01") as url, aiohttp.ClientSession() as http, http.get(
            f"{url}/v2/requests/status/nope",
            headers={"Ocp-Apim-Subscription-Key": "emulator-key"}) as reply:
        assert reply.status == 404
        assert (await reply.json())["message"] == "Request not found"


def test_providers_command_lists_every_provider(capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """`providers --json` names each provider's models, ranges, limit and whether its key is set."""
    from stableaudio_async.providers import ADAPTERS

    monkeypatch.setenv("PIXAZO_API_KEY", "k-123456")
    monkeypatch.delenv("STABILITY_API_KEY", raising=False)
    assert main(["providers", "--json"]) == 0
    listed = {p["name"]: p for p in json.loads(capsys.readouterr().out)}
    assert set(listed) == set(ADAPTERS)
    assert listed["pixazo"]["key_set"] is True and listed["stability"]["key_set"] is False
    assert listed["stability"]["rate_limit"] == "150 submits / 10 s, lockout 60 s"
    sa2 = listed["stability"]["models"]["stable-audio-2"]
    assert sa2["ranges"]["steps"] == "30–100" and "inpaint" not in sa2["tasks"]
    assert "k-123456" not in json.dumps(listed)
    assert main(["providers"]) == 0
    text = capsys.readouterr().out
    assert "stability: key STABILITY_API_KEY NOT set" in text


def test_emulator_reading_flags(capsys: pytest.CaptureFixture[str]) -> None:
    """``--reading loose`` serves every provider loosely, ``--reading fal=strict`` one of them;
    a word that is no reading is a config error, exit 2, before anything is served."""
    from stableaudio_async.cli import _emulator_config, build_parser

    args = build_parser().parse_args(["emulator", "--reading", "loose",
                                      "--reading", "fal=strict"])
    config = _emulator_config(args)
    assert (config.reading("fal"), config.reading("wavespeed")) == ("strict", "loose")
    assert main(["emulator", "--port", "0", "--reading", "fal=lax"]) == 2
    assert "readings.fal" in capsys.readouterr().err
