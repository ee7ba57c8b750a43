"""WaveSpeed's official Python SDK (``wavespeed`` 2.0.5), unmodified, against our emulator.

The SDK is synchronous (``requests``), so each call runs in a worker thread while the emulator
serves from the test's event loop. It has no cancel call, so none is tested here.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import wavespeed

from stableaudio_async.audiocheck import check_audio
from stableaudio_async.emulator import Emulator
from stableaudio_async.emulator.server import FAIL_MARKER
from stableaudio_async.emulator.wavespeed import SYNC_TIMEOUT_MARKER

from conftest import TEST_KEY, emulator_process, fast_config

pytestmark = pytest.mark.anyio

FAMILY = "stability-ai/stable-audio-3"
POLL = 0.01  # the emulator runs 100× faster than real time


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(fast_config()) as emulator:
        yield emulator


def client_for(emu: Emulator, key: str = TEST_KEY) -> wavespeed.Client:
    # No retries, so a wrong answer shows at once rather than after the SDK's backoff.
    return wavespeed.Client(api_key=key, base_url=emu.url, max_retries=0,
                            max_connection_retries=0)


async def in_thread(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return await anyio.to_thread.run_sync(functools.partial(call, *args, **kwargs))


async def download_audio(url: str, path: Path, fmt: str = "mp3") -> Path:
    async with httpx.AsyncClient() as http:
        reply = await http.get(url)
    assert reply.status_code == 200
    path.write_bytes(reply.content)
    assert check_audio(path, expected_format=fmt, expected_duration=5) is None
    return path


async def test_text_to_audio_runs_to_completion_and_its_output_is_audio(
        emu: Emulator, tmp_path: Path) -> None:
    client = client_for(emu)
    result = await in_thread(client.run, f"{FAMILY}/text-to-audio",
                             {"prompt": "a thunderstorm rolling in", "duration": 5},
                             poll_interval=POLL)
    assert list(result) == ["outputs"]
    [url] = result["outputs"]
    await download_audio(url, tmp_path / "out.mp3")
    [job] = emu.jobs.values()
    assert job.polls >= 1  # it polled GET /api/v3/predictions/{id}/result to the end

    state = await in_thread(client.get_result, job.request_id)
    assert state["code"] == 200
    assert state["data"]["status"] == "completed" and state["data"]["outputs"] == [url]


async def test_sync_mode_answers_with_the_outputs_in_one_request(
        emu: Emulator, tmp_path: Path) -> None:
    result = await in_thread(client_for(emu).run, f"{FAMILY}/music",
                             {"prompt": "lofi beat", "duration": 5}, enable_sync_mode=True)
    [url] = result["outputs"]
    await download_audio(url, tmp_path / "out.mp3")
    [job] = emu.jobs.values()
    assert job.polls == 0


async def test_audio_to_audio_takes_a_file_uploaded_by_the_sdk(
        emu: Emulator, tmp_path: Path) -> None:
    client = client_for(emu)
    first = await in_thread(client.run, f"{FAMILY}/text-to-audio",
                            {"prompt": "a plucked guitar", "duration": 5}, poll_interval=POLL)
    source = await download_audio(first["outputs"][0], tmp_path / "source.mp3")

    url = await in_thread(client.upload, str(source))
    async with httpx.AsyncClient() as http:
        stored = await http.get(url)
    assert stored.content == source.read_bytes()

    result = await in_thread(client.run, f"{FAMILY}/audio-to-audio",
                             {"prompt": "the same, on a piano", "audio": url, "duration": 5,
                              "init_noise_level": 0.5}, poll_interval=POLL)
    await download_audio(result["outputs"][0], tmp_path / "out.mp3")
    assert [job.params.get("audio") for job in emu.jobs.values()] == [None, url]


async def test_failed_prediction_raises_with_its_error(emu: Emulator) -> None:
    client = client_for(emu)
    with pytest.raises(RuntimeError, match=r"^Prediction failed \(task_id: ") as raised:
        await in_thread(client.run, f"{FAMILY}/music",
                        {"prompt": f"noise {FAIL_MARKER}", "duration": 5}, poll_interval=POLL)
    [job] = emu.jobs.values()
    assert job.request_id in str(raised.value)
    assert "Generation failed" in str(raised.value)

    outcome = await in_thread(client.run_no_throw, f"{FAMILY}/music",
                              {"prompt": f"again {FAIL_MARKER}", "duration": 5},
                              poll_interval=POLL)
    assert outcome["status"] == "failed" and outcome["outputs"] is None
    assert outcome["task_id"] in emu.jobs
    assert "Generation failed" in outcome["error"]


async def test_sync_mode_timeout_is_reported_as_still_processing(emu: Emulator) -> None:
    outcome = await in_thread(client_for(emu).run_no_throw, f"{FAMILY}/music",
                              {"prompt": f"long {SYNC_TIMEOUT_MARKER}", "duration": 5},
                              enable_sync_mode=True)
    assert outcome["status"] == "processing" and outcome["outputs"] is None
    assert "HTTP 504" in outcome["error"]


async def test_api_errors_raise_with_the_http_status(emu: Emulator) -> None:
    with pytest.raises(RuntimeError, match="HTTP 401"):
        await in_thread(client_for(emu, key="wrong-key").run, f"{FAMILY}/music",
                        {"prompt": "x"}, poll_interval=POLL)
    with pytest.raises(RuntimeError, match=r"HTTP 400.*duration"):
        await in_thread(client_for(emu).run, f"{FAMILY}/music",
                        {"prompt": "x", "duration": 500}, poll_interval=POLL)
    assert emu.jobs == {}


async def test_the_sdk_runs_against_the_emulator_command(tmp_path: Path) -> None:
    """What a user's CI does: `stableaudio-async emulator` in its own process, the SDK pointed
    at it with the emulator's default key."""
    async with emulator_process("--time-scale", "0.01") as url:
        client = wavespeed.Client(api_key="emulator-key", base_url=url, max_retries=0,
                                  max_connection_retries=0)
        result = await in_thread(client.run, f"{FAMILY}/music",
                                 {"prompt": "a marching band", "duration": 5},
                                 poll_interval=POLL)
        [output] = result["outputs"]
        await download_audio(output, tmp_path / "out.mp3")
