"""The command line in this process: secret redaction, logging, exit codes, the emulator
command, and runs against an emulator in a thread (JSON output, --max-cost, status, dry run)."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from anyio.from_thread import start_blocking_portal

from stableaudio_async.cli import main
from stableaudio_async.cli_logging import (
    HANDLER_NAME,
    REDACTED,
    SecretRedactor,
    configure_logging,
    reset_logging,
)
from stableaudio_async.emulator import Emulator
from stableaudio_async.logs import ROOT, get_logger

from conftest import TEST_KEY, emulator_process, fast_config, write_settings


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
    assert sa2["ranges"]["steps"] == {"min": 30, "max": 100} and "inpaint" not in sa2["tasks"]
    assert listed["aimlapi"]["models"]["stable-audio"]["ranges"]["duration"] == {"min": 1,
                                                                                "max": 47}
    assert "k-123456" not in json.dumps(listed)
    assert main(["providers"]) == 0
    text = capsys.readouterr().out
    assert "stability: key STABILITY_API_KEY NOT set" in text
    assert "steps 30–100" in text  # the text keeps the dash


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


# -- in-process runs against an emulator in a thread of its own ------------------------------


@pytest.fixture
def served() -> Iterator[Emulator]:
    """A time-scaled emulator serving from its own thread, so that ``main`` (which runs its
    own event loop) can run batches against it in this process."""
    with start_blocking_portal() as portal:
        emu = Emulator(fast_config())
        portal.call(emu.start)
        try:
            yield emu
        finally:
            portal.call(emu.stop)


Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def run(served: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> Run:
    """``main`` on a batch of ``rows`` against :func:`served`; its exit code, stdout, stderr.
    ``args`` come after the command (``run``, ``status``); ``{out}`` is the output folder."""
    config = write_settings(served.client_settings(), tmp_path / "providers.toml")
    out = tmp_path / "out"
    for name in ("PIXAZO_API_KEY", "STABILITY_API_KEY", "FAL_API_KEY"):
        monkeypatch.setenv(name, TEST_KEY)

    def call(command: str, rows: list[dict[str, object]] | None = None,
             *args: str) -> tuple[int, str, str]:
        argv = [command]
        if rows is not None:
            batch = tmp_path / "batch.jsonl"
            batch.write_text("".join(json.dumps(row) + "\n" for row in rows))
            argv += [str(batch), "--config", str(config)]
        capsys.readouterr()
        code = main([*argv, "--out", str(out), *args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return call


def json_lines(text: str) -> list[dict[str, object]]:
    """Every line of ``text`` as JSON: any line that is not is a failure."""
    return [json.loads(line) for line in text.splitlines()]


def test_json_stderr_is_json_lines_ending_with_the_run_summary(run: Run) -> None:
    """--log-format json: stderr holds JSON lines only, the last the run's summary, with its
    counts, the failed job and its error type, the output folder and the exit code."""
    rows: list[dict[str, object]] = [{"id": f"ok{i}", "provider": "pixazo", "prompt": f"p{i}",
                                      "duration": 1} for i in range(3)]
    rows.append({"id": "bad", "provider": "pixazo", "prompt": "x emulator:fail", "duration": 1})
    code, stdout, stderr = run("run", rows, "--log-format", "json")
    assert code == 1 and stdout == ""
    events = json_lines(stderr)
    assert {"job.completed", "job.failed"} <= {e["event"] for e in events}
    summary = events[-1]
    assert summary["event"] == "run.summary" and summary["level"] == "info"
    assert (summary["jobs"], summary["completed"], summary["failed"], summary["skipped"],
            summary["pending"], summary["exit_code"]) == (4, 3, 1, 0, 0, 1)
    assert summary["failed_jobs"] == [{"id": "bad", "provider": "pixazo",
                                       "error_type": "JobFailedError", "http_status": None}]
    assert str(summary["out_dir"]).endswith("out") and summary["max_cost_usd"] is None
    assert TEST_KEY not in stderr


def test_json_stderr_reports_an_invalid_batch_as_json(run: Run) -> None:
    """A refused batch in JSON mode: one JSON error event naming each issue, exit 2."""
    code, _, stderr = run("run", [{"provider": "pixazo", "prompt": "x", "duration": 500}],
                          "--log-format", "json")
    assert code == 2
    (event,) = json_lines(stderr)
    assert event["event"] == "run.error" and event["error_type"] == "InvalidBatchError"
    assert event["exit_code"] == 2
    assert [(i["line"], i["field"]) for i in event["issues"]] == [(1, "duration")]  # type: ignore[attr-defined]


def test_max_cost_summary_says_what_was_spent_and_what_the_budget_held(run: Run) -> None:
    """Under --max-cost the summary gives the spent total against the cap, and names the jobs
    the cap held back "held (budget)", in text and in JSON."""
    rows: list[dict[str, object]] = [{"provider": "stability", "prompt": f"cap {i}",
                                      "duration": 1} for i in range(4)]
    code, _, stderr = run("run", rows, "--max-cost", "0.5", "--log-level", "warning")
    assert code == 1
    assert "2 job(s) held (budget): not submitted" in stderr
    assert "spent $0.4000 of --max-cost $0.50 in this output folder ($0.1000 left)" in stderr
    code, _, stderr = run("run", rows, "--max-cost", "0.5", "--log-format", "json")
    summary = json_lines(stderr)[-1]
    assert code == 1 and summary["event"] == "run.summary"
    assert (summary["skipped"], summary["pending"], summary["held"]) == (2, 2, {"max_cost": 2})
    assert (summary["max_cost_usd"], summary["spent_usd"]) == (0.5, pytest.approx(0.4))


def test_status_exits_1_while_jobs_failed_or_pending_and_0_when_all_completed(run: Run) -> None:
    """`status` exits like `run`: 1 with a failed or unfinished job (never saying "all
    finished"), 0 once every job is completed; --json gives every job and the totals."""
    rows: list[dict[str, object]] = [{"id": "good", "provider": "pixazo", "prompt": "p",
                                      "duration": 1},
                                     {"id": "bad", "provider": "pixazo",
                                      "prompt": "x emulator:fail", "duration": 1}]
    assert run("run", rows, "--log-level", "error")[0] == 1
    code, stdout, _ = run("status")
    assert code == 1
    assert "2 job(s): 1 failed" in stdout and "all" not in stdout.splitlines()[-1]
    code, stdout, _ = run("status", None, "--json")
    document = json.loads(stdout)
    assert code == 1 and document["all_completed"] is False
    assert {j["id"]: (j["state"], j["error_type"]) for j in document["jobs"]} == {
        "good": ("completed", None), "bad": ("failed", "JobFailedError")}
    totals = document["totals"]
    assert (totals["jobs"], totals["completed"], totals["failed"], totals["unfinished"]) == (
        2, 1, 1, 0)
    assert totals["by_provider"]["pixazo"]["failed"] == 1
    assert run("run", rows[:1], "--log-level", "error")[0] == 0
    code, stdout, _ = run("status", None, "--json")
    assert code == 1  # the failed job is still in the journal


def test_status_of_a_completed_batch_exits_0(run: Run) -> None:
    """Every job completed: exit 0, "all completed"."""
    assert run("run", [{"provider": "pixazo", "prompt": "p", "duration": 1}],
               "--log-level", "error")[0] == 0
    code, stdout, _ = run("status")
    assert code == 0 and stdout.splitlines()[-1] == "1 job(s), all completed"
    assert json.loads(run("status", None, "--json")[1])["all_completed"] is True


def test_dry_run_columns_show_the_model_run_duration_seed_and_prompt(run: Run) -> None:
    """--dry-run: a header, then per job its resolved model (the provider's default when it
    names none), duration, seed, price and the prompt's start, escaped and ellipsised."""
    rows: list[dict[str, object]] = [
        {"id": "one", "provider": "stability", "prompt": "short", "duration": 5, "seed": 42},
        {"id": "two", "provider": "stability", "model": "stable-audio-2", "steps": 30,
         "prompt": "a\x1b[31m red " + "very long " * 10, "duration": 1.5}]
    code, stdout, _ = run("run", rows, "--dry-run")
    assert code == 0
    header, one, two = stdout.splitlines()[:3]
    assert header.split() == ["id", "provider", "model", "task", "duration", "seed", "price",
                              "prompt"]
    assert one.split() == ["one", "stability", "stable-audio-2.5", "text-to-audio", "5", "42",
                           "$0.2000", "short"]
    assert two.split()[:7] == ["two", "stability", "stable-audio-2", "text-to-audio", "1.5",
                               "-", "$0.1880"]
    assert "\x1b" not in stdout and two.endswith("…")
    assert "a\\x1b[31m red very long" in two
    assert len(two) - two.index("a\\x1b") == 40


def test_logging_is_one_replaced_handler_and_main_leaves_none(
        capsys: pytest.CaptureFixture[str]) -> None:
    """configure_logging twice installs one handler, not two, on the package's logger, which
    stops propagating; main takes it off again on its way out."""
    logger = logging.getLogger(ROOT)
    before = (list(logger.handlers), logger.level, logger.propagate)
    try:
        for fmt in ("console", "json"):
            configure_logging(fmt=fmt, level=logging.INFO, secrets=["sk-secret-123"],
                              stream=sys.stderr)
        mine = [h for h in logger.handlers if h.get_name() == HANDLER_NAME]
        assert len(mine) == 1 and logger.propagate is False
        get_logger("stableaudio_async.somewhere").warning("x.happened", key="sk-secret-123")
        get_logger("stableaudio_async.somewhere").debug("x.detail")
        logging.getLogger("stableaudio_async.plain").warning("plain %s", "words")
        lines = json_lines(capsys.readouterr().err)
        assert [(e["event"], e["level"]) for e in lines] == [("x.happened", "warning"),
                                                            ("plain words", "warning")]
        assert lines[0]["key"] == REDACTED
    finally:
        reset_logging()
    assert (logger.handlers, logger.level, logger.propagate) == before
    assert main(["providers", "--json"]) == 0
    assert (logger.handlers, logger.level, logger.propagate) == before
