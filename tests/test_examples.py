"""The programs in examples/ run as a user runs them, against the emulator, and type-check under
``mypy --strict`` against the installed package."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from stableaudio_async.emulator import EmulatedLimit, Emulator
from stableaudio_async.models import Job

from conftest import TEST_KEY, HeldClock, fast_config, write_settings

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def example_env(**extra: str) -> dict[str, str]:
    """This environment without anything that would point the examples elsewhere, plus the
    emulator's key for every provider the tests use."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STABLEAUDIO_")}
    return env | {"PIXAZO_API_KEY": TEST_KEY, "STABILITY_API_KEY": TEST_KEY} | extra


def run_example(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(EXAMPLES / name), *args], env=example_env(),
                          capture_output=True, text=True, timeout=60, check=False)


def audio_format(data: bytes) -> str | None:
    """``wav`` or ``mp3`` by the file's magic bytes, else ``None``."""
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "wav"
    if data[:3] == b"ID3" or (len(data) > 1 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0):
        return "mp3"
    return None


def held_emulator(release: anyio.Event) -> Emulator:
    """An emulator whose clock stands still (every job stays queued) until ``release`` is set,
    with a Pixazo limit a frozen window cannot run out of."""
    config = fast_config(time_scale=0.05, limits={
        "pixazo": EmulatedLimit(requests=1000, period=10.0, counts="submits")})
    return Emulator(config, clock=HeldClock(release.is_set))


# -- batch.py ---------------------------------------------------------------------------------


def test_batch_writes_every_file_and_a_rerun_sends_nothing(tmp_path: Path) -> None:
    """batch.py --emulator writes a dozen audio files on two providers and exits 0; rerun on
    the same folder, every job is skipped."""
    out = tmp_path / "out"
    first = run_example("batch.py", "--emulator", "--out", str(out))
    assert first.returncode == 0, first.stdout + first.stderr
    done = [line.split() for line in first.stdout.splitlines() if line.startswith("completed")]
    assert len(done) == 12
    assert {provider for _, provider, *_ in done} == {"pixazo", "stability"}
    for *_, path in done:
        assert audio_format(Path(path).read_bytes()) == Path(path).suffix[1:]
    assert (out / "manifest.jsonl").is_file()

    again = run_example("batch.py", "--emulator", "--out", str(out))
    assert again.returncode == 0, again.stdout + again.stderr
    assert sum(line.startswith("skipped") for line in again.stdout.splitlines()) == 12


def test_batch_exits_1_when_a_job_fails(tmp_path: Path) -> None:
    """A failed job is printed as its line, the others complete, and the exit code is 1."""
    result = run_example("batch.py", "--emulator", "--out", str(tmp_path), "--provider", "pixazo",
                         "--seeds", "1", "a calm sea", "a storm emulator:fail")
    assert result.returncode == 1, result.stdout + result.stderr
    statuses = sorted(line.split()[0] for line in result.stdout.splitlines()[:2])
    assert statuses == ["completed", "failed"]
    assert "JobFailedError" in result.stdout


# -- service.py -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@asynccontextmanager
async def service(log: Path, *args: str) -> AsyncIterator[str]:
    """examples/service.py on a free loopback port, its output in ``log``; yields its URL once
    it accepts connections, then stops it by its PID (SIGTERM) and checks it exited cleanly."""
    port = free_port()
    command = [sys.executable, str(EXAMPLES / "service.py"), "--port", str(port), *args]
    with log.open("ab") as sink:
        process = await anyio.open_process(command, stdout=sink, stderr=sink, env=example_env())
    try:
        await wait_for_port(port, process, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        with anyio.fail_after(15):
            await process.wait()
    assert process.returncode == 0, log.read_text()


async def wait_for_port(port: int, process: Process, log: Path) -> None:
    with anyio.fail_after(20):  # a hang guard: it listens within a second
        while True:
            assert process.returncode is None, f"service exited:\n{log.read_text()}"
            try:
                stream = await anyio.connect_tcp("127.0.0.1", port)
            except OSError:
                await anyio.sleep(0.02)  # not listening yet: try again
                continue
            await stream.aclose()
            return


async def get_json(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with http.get(url) as reply:
        return reply.status, await reply.json()


@pytest.mark.anyio
async def test_service_accepts_a_track_serves_its_audio_and_rejoins_it_after_a_restart(
        tmp_path: Path) -> None:
    """POST /tracks answers 202 with the job id and request id; GET answers 202 with its status
    while it runs. Restarted on the same folder, the service attaches to the job from the
    journal and serves its audio: the provider saw exactly one submission."""
    release = anyio.Event()
    log = tmp_path / "service.log"
    async with held_emulator(release) as emu:
        settings = write_settings(emu.client_settings(), tmp_path / "providers.toml")
        args = ("--config", str(settings), "--out", str(tmp_path / "tracks"))
        track = {"prompt": "rain on a tin roof", "duration": 5, "provider": "pixazo"}
        async with service(log, *args) as url, aiohttp.ClientSession() as http:
            async with http.post(f"{url}/tracks", json=track) as reply:
                assert reply.status == 202, await reply.text()
                body = await reply.json()
                assert reply.headers["Location"] == f"/tracks/{body['job_id']}"
            assert body["job_id"] == Job.model_validate(track).id
            assert body["request_id"]
            status, running = await get_json(http, f"{url}/tracks/{body['job_id']}")
            assert (status, running["status"]) == (202, "submitted")  # queued: the clock stands
            async with http.post(f"{url}/tracks", json={**track, "duration": -1}) as reply:
                assert reply.status == 400
                assert (await reply.json())["fields"] == ["duration"]
            assert (await get_json(http, f"{url}/tracks/no-such-job"))[0] == 404

        async with service(log, *args) as url, aiohttp.ClientSession() as http:
            status, running = await get_json(http, f"{url}/tracks/{body['job_id']}")
            assert status == 202  # rejoined from the journal, still queued
            release.set()
            with anyio.fail_after(20):
                while True:
                    async with http.get(f"{url}/tracks/{body['job_id']}") as reply:
                        if reply.status == 200:
                            data, content_type = await reply.read(), reply.content_type
                            break
                        assert reply.status == 202, await reply.text()
                    await anyio.sleep(0.02)  # the job is generating: ask again
        assert (audio_format(data), content_type) in {("mp3", "audio/mpeg"), ("wav", "audio/wav")}
        stats = emu.provider_stats("pixazo")
        assert (stats.accepted, stats.duplicate_submissions) == (1, 0)


# -- cancel_resume.py -------------------------------------------------------------------------


SECOND_RUN = re.compile(r"second run: (?P<skipped>\d+) skipped, (?P<resumed>\d+) resumed, "
                        r"(?P<submitted>\d+) submitted, (?P<failed>\d+) not done; "
                        r"(?P<resubmitted>\d+) resubmitted")


@pytest.mark.anyio
async def test_cancel_resume_follows_every_accepted_job_and_resubmits_none(tmp_path: Path) -> None:
    """The first run, cut short while every accepted job is still queued (the emulator's clock
    stands), leaves their request ids in the journal; the second follows each of them, sends
    only the jobs never accepted, and the provider sees no submission twice."""
    release = anyio.Event()
    jobs, out = 8, tmp_path / "out"
    async with held_emulator(release) as emu:
        settings = write_settings(emu.client_settings(), tmp_path / "providers.toml")
        command = [sys.executable, str(EXAMPLES / "cancel_resume.py"), "--config", str(settings),
                   "--out", str(out), "--jobs", str(jobs), "--cut", "0.5"]
        stats = emu.provider_stats("pixazo")
        lines: list[str] = []
        with (tmp_path / "stderr").open("wb") as stderr:
            process = await anyio.open_process(command, stderr=stderr, env=example_env())
        async with process:
            assert process.stdout is not None
            stdout = BufferedByteReceiveStream(process.stdout)
            with anyio.fail_after(30):  # a hang guard: it takes about two seconds
                first = (await stdout.receive_until(b"\n", 10_000)).decode()
                assert first.startswith("first run: cut short"), first
                accepted_at_cut = stats.accepted
                release.set()
                while True:
                    try:
                        lines.append((await stdout.receive_until(b"\n", 10_000)).decode())
                    except (anyio.IncompleteRead, anyio.EndOfStream):
                        break
                await process.wait()
        assert process.returncode == 0, "\n".join(lines) + (tmp_path / "stderr").read_text()
        found = SECOND_RUN.match(lines[-1])
        assert found is not None, lines
        counts = {name: int(n) for name, n in found.groupdict().items()}
        assert counts["resubmitted"] == 0
        assert accepted_at_cut >= 1
        assert counts == {"skipped": 0, "resumed": accepted_at_cut,
                          "submitted": jobs - accepted_at_cut, "failed": 0, "resubmitted": 0}
        assert (stats.accepted, stats.duplicate_submissions) == (jobs, 0)
    files = sorted(out.glob("*.mp3"))
    assert len(files) == jobs
    assert all(audio_format(path.read_bytes()) == "mp3" for path in files)


# -- types ------------------------------------------------------------------------------------


def test_examples_type_check_strictly_against_the_installed_package(tmp_path: Path) -> None:
    """``mypy --strict examples/`` passes, run from outside the repository so that the package
    it checks against is the installed one."""
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / "cache"),
         str(EXAMPLES)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
