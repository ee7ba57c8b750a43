"""The engine against careless and hostile use of its output folder, through the CLI."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import pytest
from aiohttp import web
from test_resume import cli_env, start_cli, wait_for

from stableaudio_async.cli import main
from stableaudio_async.emulator import Emulator
from stableaudio_async.journal import JOURNAL_NAME

from conftest import TEST_KEY, fast_config, write_settings
from test_cli_e2e import run_cli, write_jsonl

pytestmark = pytest.mark.anyio

ENV = {"PIXAZO_API_KEY": TEST_KEY}

Cli = Callable[..., Awaitable[tuple[int, str, str]]]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
        ) -> Callable[..., Awaitable[tuple[int, str, str]]]:
    """The CLI's ``main`` in this process (for what is refused before anything is sent: no
    interpreter start per case); like ``run_cli``, its exit code, stdout and stderr."""

    async def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
        for name, value in (env or {}).items():
            monkeypatch.setenv(name, value)
        capsys.readouterr()
        code = main(list(args))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


async def one_job_into(out: Path, tmp_path: Path) -> tuple[int, str]:
    """A one-job batch run into ``out`` against the emulator, which must see no request (the
    folder is refused first); the exit code and stderr."""
    batch = write_jsonl(tmp_path / "batch.jsonl",
                        [{"provider": "pixazo", "prompt": "x", "duration": 1}])
    async with Emulator(fast_config()) as emu:
        config = write_settings(emu.client_settings(), tmp_path / "providers.toml")
        code, _, stderr = await run_cli("run", str(batch), "--out", str(out), "--config",
                                        str(config), env=ENV)
        assert not emu.stats
    return code, stderr


async def test_a_second_run_on_the_same_folder_exits_2_naming_the_first(tmp_path: Path) -> None:
    """Two runs on one batch and one --out (two CI steps, a double-click): the second is
    refused before it sends anything, naming the PID holding the folder; the first completes
    every job, and the emulator accepts each once."""
    rows = [{"provider": "pixazo", "prompt": f"twice {i}", "seed": i, "duration": 1}
            for i in range(10)]
    out = tmp_path / "out"
    async with Emulator(fast_config(generation_time=300.0)) as emu:
        config = write_settings(emu.client_settings(), tmp_path / "providers.toml")
        batch = write_jsonl(tmp_path / "batch.jsonl", rows)
        args = ("run", str(batch), "--out", str(out), "--config", str(config))
        first = await start_cli(*args, "--log-level", "warning")
        await wait_for(lambda: emu.stats.get("pixazo") is not None
                       and emu.stats["pixazo"].accepted == 10)
        code, _, stderr = await run_cli(*args, env=ENV)
        assert code == 2, stderr[-2000:]
        assert f"in use by another run (process {first.pid})" in stderr
        # The refused run sent nothing (the first one only polls meanwhile).
        assert emu.stats["pixazo"].submits == 10
        # Let the first one finish: end the generations now.
        for job in emu.jobs.values():
            job.done_at = job.queued_until = emu.now()
        with anyio.fail_after(30):
            await first.wait()
        assert first.returncode == 0
        stats = emu.stats["pixazo"]
    assert stats.accepted == 10 and stats.duplicate_submissions == 0
    # Once it has ended, the folder is free again: a rerun skips every job.
    async with Emulator(fast_config()) as emu:
        config = write_settings(emu.client_settings(), tmp_path / "providers.toml")
        code, _, stderr = await run_cli("run", str(batch), "--out", str(out), "--config",
                                        str(config), env=ENV)
    assert code == 0 and "10 already done" in stderr, stderr[-2000:]


async def test_the_lock_file_is_never_followed_as_a_symlink(tmp_path: Path) -> None:
    """A symlink planted where the lock file goes is refused (exit 2), its target untouched."""
    out = tmp_path / "out"
    out.mkdir()
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    os.symlink(target, out / ".stableaudio.lock")
    code, stderr = await one_job_into(out, tmp_path)
    assert code == 2 and "symlink" in stderr, stderr[-2000:]
    assert target.read_text() == "keep me"


async def cli_in(cwd: Path, *args: str) -> tuple[int, str]:
    """The CLI run from working directory ``cwd``; its exit code and stderr."""
    env = {**cli_env(), **ENV}
    result = await anyio.run_process([sys.executable, "-m", "stableaudio_async", *args],
                                     cwd=cwd, env=env, check=False)
    return result.returncode, result.stderr.decode()


async def test_resume_from_another_directory_and_after_the_folder_moved(tmp_path: Path) -> None:
    """Paths in the manifest and journal are relative to the output folder: a rerun from
    another working directory (absolute --out), and one after `mv out out2`, skip every
    finished job rather than pay for it again."""
    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    here.mkdir()
    elsewhere.mkdir()
    rows = [{"provider": "pixazo", "prompt": f"moved {i}", "seed": i, "duration": 1}
            for i in range(4)]
    async with Emulator(fast_config()) as emu:
        config = write_settings(emu.client_settings(), tmp_path / "providers.toml")
        batch = write_jsonl(tmp_path / "batch.jsonl", rows)
        run = ("run", str(batch), "--config", str(config))
        code, stderr = await cli_in(here, *run, "--out", "out_c")
        assert code == 0, stderr[-2000:]
        entries = [json.loads(line) for line in (here / "out_c" / "manifest.jsonl")
                   .read_text().splitlines()]
        assert {e["path"] for e in entries} == {f"{e['id']}.mp3" for e in entries}
        code, stderr = await cli_in(elsewhere, *run, "--out", str(here / "out_c"))
        assert code == 0 and "4 already done" in stderr, stderr[-2000:]
        (here / "out_c").rename(here / "out2")
        code, stderr = await cli_in(here, *run, "--out", "out2")
        assert code == 0 and "4 already done" in stderr, stderr[-2000:]
        assert emu.stats["pixazo"].accepted == 4


@pytest.mark.parametrize("damage", ["deleted", "emptied"])
async def test_a_lost_journal_is_recovered_from_the_manifest(tmp_path: Path, damage: str) -> None:
    """journal.sqlite3 deleted or truncated to 0 bytes, files and manifest intact: every job
    whose file matches its manifest sha256 is done (nothing submitted, nothing overwritten),
    said once; a job whose file was damaged too (emptied case) is the only one run again."""
    rows = [{"provider": "pixazo", "prompt": f"lost {i}", "seed": i, "duration": 1}
            for i in range(4)]
    out = tmp_path / "out"
    async with Emulator(fast_config()) as emu:
        config = write_settings(emu.client_settings(), tmp_path / "providers.toml")
        batch = write_jsonl(tmp_path / "batch.jsonl", rows)
        args = ("run", str(batch), "--out", str(out), "--config", str(config))
        assert (await run_cli(*args, env=ENV))[0] == 0
        entries = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
        for suffix in ("", "-wal", "-shm"):
            journal = out / f"journal.sqlite3{suffix}"
            if damage == "deleted" or suffix:
                journal.unlink(missing_ok=True)
            else:
                journal.write_bytes(b"")
        # Emptied: one file is damaged too, so that job alone must be generated again.
        damaged = entries[:1] if damage == "emptied" else []
        for entry in damaged:
            (out / entry["path"]).write_bytes(b"not the audio")
        intact = entries[len(damaged):]
        before = {e["id"]: (out / e["path"]).stat().st_mtime_ns for e in intact}
        code, _, stderr = await run_cli(*args, "--log-format", "json", env=ENV)
        assert code == 0, stderr[-2000:]
        # Accepted submissions equal jobs, plus the one whose file was destroyed.
        assert emu.stats["pixazo"].accepted == 4 + len(damaged)
    events = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert [e["jobs"] for e in events if e["event"] == "journal.recovering"] == [4]
    assert sorted(e["job_id"] for e in events if e["event"] == "job.recovered") == sorted(before)
    assert {e["id"]: (out / e["path"]).stat().st_mtime_ns for e in intact} == before
    # The journal knows them again: a third run sends nothing and says so.
    async with Emulator(fast_config()) as emu:
        config = write_settings(emu.client_settings(), tmp_path / "providers.toml")
        code, _, stderr = await run_cli("run", str(batch), "--out", str(out), "--config",
                                        str(config), env=ENV)
        assert code == 0 and not emu.stats and "4 already done" in stderr, stderr[-2000:]


async def test_a_manifest_that_is_a_directory_is_a_clear_error(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "manifest.jsonl").mkdir(parents=True)
    code, stderr = await one_job_into(out, tmp_path)
    assert code == 2 and "is not a regular file" in stderr and "Traceback" not in stderr
    assert "Unclosed" not in stderr


@pytest.mark.parametrize(("line", "field"), [
    ('{"provider": "pixazo", "prompt": "x", "duration": true}', "duration"),
    ('{"provider": "pixazo", "prompt": "x", "seed": true}', "seed"),
    ('{"provider": "pixazo", "prompt": "x", "duration": "30"}', "duration"),
    ('{"provider": "pixazo", "prompt": "x", "steps": "8"}', "steps"),
    ('{"provider": "pixazo", "prompt": "x", "duration": NaN}', "duration"),
    ('{"provider": "pixazo", "prompt": "x", "options": {"x": NaN}}', "options"),
    ('{"provider": "pixazo", "prompt": "x", "options": {"y": [1, Infinity]}}', "options"),
])
async def test_numbers_are_taken_as_written_and_finite(cli: Cli, tmp_path: Path, line: str,
                                                       field: str) -> None:
    """A bool, a numeric string or a non-finite number is refused at validation, naming the
    line and the field, and nothing is sent: no paid 1-second track nobody asked for."""
    batch = tmp_path / "batch.jsonl"
    batch.write_text('{"provider": "pixazo", "prompt": "fine", "duration": 1}\n' + line + "\n")
    async with Emulator(fast_config()) as emu:
        config = write_settings(emu.client_settings(), tmp_path / "providers.toml")
        code, _, stderr = await cli("run", str(batch), "--out", str(tmp_path / "out"),
                                        "--config", str(config), env=ENV)
        assert not emu.stats
    assert code == 2, stderr[-2000:]
    assert f"batch.jsonl:2, field '{field}" in stderr, stderr[-2000:]


async def test_a_provider_echoing_the_key_never_gets_it_into_any_output(tmp_path: Path) -> None:
    """A stub Pixazo that echoes the key: in a 401's body and headers, and in a failed job's
    error. The key reaches neither stderr (console or JSON), nor the manifest, nor the
    journal, nor status --json."""
    key = TEST_KEY

    async def submit(request: web.Request) -> web.Response:
        given = request.headers.get("Ocp-Apim-Subscription-Key", "")
        body = await request.json()
        if "refused" in body["prompt"]:
            return web.json_response(
                {"statusCode": 401, "message": f"Access denied: key {given} is not valid"},
                status=401, headers={"X-Echo": f"key={given}"})
        host = f"http://{request.host}"
        return web.json_response({"request_id": "req-1", "status": "QUEUED",
                                  "polling_url": f"{host}/v2/requests/status/req-1"},
                                 status=202)

    async def status(request: web.Request) -> web.Response:
        given = request.headers.get("Ocp-Apim-Subscription-Key", "")
        return web.json_response({"request_id": "req-1", "status": "FAILED", "output": None,
                                  "error": f"worker crashed holding {given}\x1b[2J\nforged line"})

    app = web.Application()
    route = "stable-audio-3-small-music-text-to-audio"
    app.router.add_post(f"/{route}/v1/{route}-request", submit)
    app.router.add_get("/v2/requests/status/{id}", status)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        async with Emulator(fast_config()) as emu:
            settings = emu.client_settings()
        pixazo = settings.providers["pixazo"].model_copy(
            update={"base_url": f"http://127.0.0.1:{port}"})
        settings = settings.model_copy(update={"providers": {"pixazo": pixazo}})
        config = write_settings(settings, tmp_path / "providers.toml")
        out = tmp_path / "out"
        for fmt in ("console", "json"):
            batch = write_jsonl(tmp_path / f"batch-{fmt}.jsonl", [
                {"provider": "pixazo", "prompt": f"fails {fmt}", "duration": 1},
                {"provider": "pixazo", "prompt": f"refused {fmt}", "duration": 1}])
            code, stdout, stderr = await run_cli(
                "run", str(batch), "--out", str(out), "--config", str(config),
                "--log-format", fmt, "--log-level", "debug", env=ENV)
            assert code == 1, stderr[-2000:]
            assert "worker crashed holding" in stderr and "Access denied" in stderr
            assert key not in stdout + stderr
            # The provider's text cannot clear the screen or forge a line of the summary.
            assert "\x1b" not in stderr and "\nforged line" not in stderr
        code, stdout, _ = await run_cli("status", "--out", str(out), "--json", env=ENV)
        assert code == 1 and "[REDACTED]" in stdout and key not in stdout
    finally:
        await runner.cleanup()
    manifest_text = (out / "manifest.jsonl").read_text()
    assert "[REDACTED]" in manifest_text and key not in manifest_text
    for path in out.iterdir():
        if path.name.startswith(JOURNAL_NAME):
            assert key.encode() not in path.read_bytes(), path.name


@pytest.mark.parametrize(("setting", "words"), [
    ('base_url = "file:///etc/passwd"', "not an http(s) URL"),
    ('base_url = "not a url"', "not an http(s) URL"),
    ('base_url = "https://user:pw@gateway.pixazo.ai"', "user name or password"),
    ("rate_limit = {requests = 10, period = inf}", "finite"),
    ("price_usd = inf", "finite"),
    ("poll = {timeout = inf}", "finite"),
    ("poll = {initial = nan}", "finite"),
])
async def test_a_config_that_cannot_work_is_refused_at_load(cli: Cli, tmp_path: Path, setting: str,
                                                            words: str) -> None:
    """--dry-run too exits 2 on a base URL that is no http(s) URL or an infinite number,
    rather than printing $inf or failing every job at run time."""
    config = tmp_path / "providers.toml"
    config.write_text(f"[providers.pixazo]\n{setting}\n")
    batch = write_jsonl(tmp_path / "batch.jsonl",
                        [{"provider": "pixazo", "prompt": "x", "duration": 1}])
    code, stdout, stderr = await cli("run", str(batch), "--out", str(tmp_path / "out"),
                                         "--config", str(config), "--dry-run", env=ENV)
    assert code == 2 and words in stderr, stderr[-2000:]
    assert "$inf" not in stdout and "Traceback" not in stderr


@pytest.mark.parametrize("provider", ["fal", "wavespeed"])
@pytest.mark.parametrize("kind", ["text", "empty", "zeros", "shadow", "directory"])
async def test_a_local_input_that_is_not_audio_is_never_uploaded(cli: Cli,
        tmp_path: Path, provider: str, kind: str) -> None:
    """Audio-to-audio with a local "x.wav" that is text, empty, 9 MB of zeros, a symlink to
    /etc/shadow or a directory: refused at validation (exit 2), naming line and field, and
    no byte of it reaches the provider."""
    source = tmp_path / "x.wav"
    if kind == "text":
        source.write_text("dear diary\n" * 50)
    elif kind == "empty":
        source.write_bytes(b"")
    elif kind == "zeros":
        source.write_bytes(bytes(9_000_000))
    elif kind == "shadow":
        os.symlink("/etc/shadow", source)
    else:
        source.mkdir()
    batch = write_jsonl(tmp_path / "batch.jsonl", [
        {"provider": provider, "task": "audio-to-audio", "prompt": "remix", "duration": 2,
         "audio": str(source)}])
    async with Emulator(fast_config()) as emu:
        config = write_settings(emu.client_settings(), tmp_path / "providers.toml")
        env = {"FAL_KEY": TEST_KEY, "WAVESPEED_API_KEY": TEST_KEY}
        code, _, stderr = await cli("run", str(batch), "--out", str(tmp_path / "out"),
                                        "--config", str(config), env=env)
        assert not emu.stats
    assert code == 2, stderr[-2000:]
    assert "batch.jsonl:1, job" in stderr and "field 'audio'" in stderr, stderr
    assert "Traceback" not in stderr and "diary" not in stderr


def deep(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


@pytest.mark.parametrize("where", ["jsonl", "toml-batch", "config", "options"])
async def test_deep_nesting_is_a_clear_error_not_a_recursion_error(cli: Cli, tmp_path: Path,
                                                                   where: str) -> None:
    """100,000-deep nesting in a JSONL line, a TOML batch or --config: exit 2, named."""
    batch = tmp_path / "batch.jsonl"
    batch.write_text('{"provider": "pixazo", "prompt": "x", "duration": 1}\n')
    config = tmp_path / "providers.toml"
    config.write_text("")
    if where == "jsonl":
        batch.write_text(deep(100_000) + "\n")
    elif where == "toml-batch":
        batch = tmp_path / "batch.toml"
        batch.write_text("x = " + "[" * 100_000 + "]" * 100_000 + "\n")
    elif where == "config":
        config.write_text("x = " + "[" * 100_000 + "]" * 100_000 + "\n")
    else:  # deep, but shallow enough for the JSON parser: the job refuses it
        batch.write_text('{"provider": "pixazo", "prompt": "x", "options": ' + deep(200) + "}\n")
    code, _, stderr = await cli("run", str(batch), "--out", str(tmp_path / "out"),
                                    "--config", str(config), "--dry-run", env=ENV)
    assert code == 2, stderr[-2000:]
    assert "nested" in stderr and "Traceback" not in stderr and "RecursionError" not in stderr


@pytest.mark.parametrize(("toml", "words"), [
    ('defaults = "x"\n[[jobs]]\nprompt = "p"\nprovider = "pixazo"\n', "defaults must be a table"),
    ('matrix = "x"\n[defaults]\nprovider = "pixazo"\n', "matrix must be a table"),
    ('jobs = "notalist"\n', "jobs must be an array of tables"),
])
async def test_a_toml_batch_of_the_wrong_shape_is_one_clear_error(cli: Cli, tmp_path: Path, toml: str,
                                                                  words: str) -> None:
    batch = tmp_path / "batch.toml"
    batch.write_text(toml)
    code, _, stderr = await cli("run", str(batch), "--out", str(tmp_path / "out"),
                                    "--dry-run", env=ENV)
    assert code == 2 and words in stderr and "Traceback" not in stderr, stderr[-2000:]
    assert stderr.count(words) == 1


async def test_an_id_with_escapes_is_shown_escaped(cli: Cli, tmp_path: Path) -> None:
    """An id holding ANSI escapes or a newline cannot forge error lines or drive the terminal."""
    batch = tmp_path / "batch.jsonl"
    rows = ['{"id": "a\\u001b[31mred\\nerror: forged", "provider": "pixazo", "prompt": "x"}']
    batch.write_text("\n".join(rows) + "\n")
    code, _, stderr = await cli("run", str(batch), "--out", str(tmp_path / "out"),
                                    "--dry-run", env=ENV)
    assert code == 2
    assert "\x1b" not in stderr and "\nerror: forged" not in stderr
    assert "\\x1b[31mred\\nerror: forged" in stderr


async def test_a_matrix_over_the_job_cap_is_refused_before_it_is_expanded(cli: Cli, tmp_path: Path) -> None:
    """A 1.5 KB [matrix] of 100 × 100 × 100 names a million jobs: refused at once (exit 2),
    naming the count and --max-jobs, which raises or lowers the cap."""
    values = ", ".join(str(i + 1) for i in range(100))
    prompts = ", ".join(f'"p{i}"' for i in range(100))
    batch = tmp_path / "batch.toml"
    batch.write_text(f'[defaults]\nprovider = "pixazo"\n[matrix]\nprompts = [{prompts}]\n'
                     f"seeds = [{values}]\ndurations = [{values}]\n")
    with anyio.fail_after(30):  # a hang guard: refusing takes well under a second
        code, _, stderr = await cli("run", str(batch), "--out", str(tmp_path / "out"),
                                        "--dry-run", env=ENV)
    assert code == 2 and "1,000,000 jobs, over the limit of 100,000" in stderr, stderr[-2000:]
    jsonl = write_jsonl(tmp_path / "three.jsonl",
                        [{"provider": "pixazo", "prompt": f"p{i}", "duration": 1}
                         for i in range(3)])
    code, _, stderr = await cli("run", str(jsonl), "--out", str(tmp_path / "out"),
                                    "--dry-run", "--max-jobs", "2", env=ENV)
    assert code == 2 and "3 jobs, over the limit of 2 (--max-jobs)" in stderr, stderr[-2000:]


async def test_a_corrupt_journal_is_a_clear_error_with_nothing_left_open(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "journal.sqlite3").write_bytes(b"this is not a database" * 100)
    code, stderr = await one_job_into(out, tmp_path)
    assert code == 1 and "cannot open the journal" in stderr, stderr[-2000:]
    assert "Traceback" not in stderr and "Unclosed" not in stderr, stderr[-2000:]


async def test_a_pixazo_seed_past_32_bits_is_refused(cli: Cli, tmp_path: Path) -> None:
    """Pixazo documents no seed range: a seed of 1e29 is refused (0–4294967295, as `providers`
    says) rather than sent."""
    batch = write_jsonl(tmp_path / "batch.jsonl",
                        [{"provider": "pixazo", "prompt": "x", "seed": 10**29}])
    code, _, stderr = await cli("run", str(batch), "--out", str(tmp_path / "out"),
                                    "--dry-run", env=ENV)
    assert code == 2 and "field 'seed'" in stderr and "0–4294967295" in stderr, stderr
    code, stdout, _ = await cli("providers", env=ENV)
    assert "seed 0–4294967295" in stdout
