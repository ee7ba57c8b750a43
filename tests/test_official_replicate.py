"""Replicate's official Python client (``replicate`` 1.0.7), unmodified, against our emulator.

The client is the oracle: whatever it sends must be accepted, and whatever the emulator answers
must parse into its models and drive its waiting logic to the right end.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import replicate
from replicate.exceptions import ModelError, ReplicateError

from stableaudio_async.audiocheck import check_audio
from stableaudio_async.emulator import Emulator
from stableaudio_async.emulator.replicate import PAGE_SIZE
from stableaudio_async.emulator.server import FAIL_MARKER

from conftest import TEST_KEY, HandClock, emulator_process, fast_config

pytestmark = pytest.mark.anyio

MODEL = "stability-ai/stable-audio-2.5"


@contextlib.asynccontextmanager
async def client_for(emu: Emulator, token: str = TEST_KEY) -> AsyncIterator[replicate.Client]:
    """The official client on ``emu``, its connections closed afterwards.

    ``replicate.Client`` has no close method; it wraps a transport handed to it (a documented
    httpx keyword it passes on), so the test owns that transport and closes it.
    """
    transport = httpx.AsyncHTTPTransport()
    client = replicate.Client(api_token=token, base_url=emu.url, transport=transport)
    client.poll_interval = 0.01  # the emulator runs 100× faster than real time
    try:
        yield client
    finally:
        await transport.aclose()


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(fast_config()) as emulator:
        yield emulator


async def download_audio(url: str, tmp_path: Path) -> None:
    async with httpx.AsyncClient() as http:
        reply = await http.get(url)
    assert reply.status_code == 200
    path = tmp_path / "output.mp3"
    path.write_bytes(reply.content)
    assert check_audio(path, expected_format="mp3", expected_duration=5) is None


async def test_prediction_runs_to_completion_and_its_output_is_audio(
        emu: Emulator, tmp_path: Path) -> None:
    async with client_for(emu) as client:
        prediction = await client.models.predictions.async_create(
            model=MODEL, input={"prompt": "warm analog synth pads", "duration": 5, "steps": 8})
        await prediction.async_wait()
        again = await client.predictions.async_get(prediction.id)
    assert prediction.status == "succeeded"
    assert prediction.model == MODEL
    assert prediction.input == {"prompt": "warm analog synth pads", "duration": 5, "steps": 8}
    assert prediction.urls is not None and prediction.urls["get"].endswith(prediction.id)
    assert prediction.error is None
    assert prediction.started_at is not None and prediction.completed_at is not None
    assert isinstance(prediction.output, str)
    await download_audio(prediction.output, tmp_path)
    assert again.status == "succeeded" and again.output == prediction.output


async def test_async_run_holds_with_prefer_wait_and_returns_the_output(
        emu: Emulator, tmp_path: Path) -> None:
    async with client_for(emu) as client:
        output = await client.async_run(
            MODEL, input={"prompt": "rain on a tin roof", "duration": 5}, use_file_output=False)
    assert isinstance(output, str)
    await download_audio(output, tmp_path)


async def test_a_hold_that_times_out_reports_starting_so_the_client_polls() -> None:
    # replicate.run treats any status but "starting" after a Prefer: wait as final; the API
    # answers "starting" when the hold ends first, even for a prediction already processing.
    clock = HandClock()
    config = fast_config(queue_time=0.0, generation_time=1000.0)
    async with Emulator(config, clock=clock) as emu, client_for(emu) as client:
        prediction = await client.models.predictions.async_create(
            model=MODEL, input={"prompt": "slow strings", "duration": 5}, wait=1)
        assert emu.phase(emu.jobs[prediction.id]) == "PROCESSING"
        assert prediction.status == "starting"
        assert prediction.output is None
        await prediction.async_reload()
        assert prediction.status == "processing"
        clock.move_to(clock.time + 1001.0)
        await prediction.async_wait()
        assert prediction.status == "succeeded"


async def test_failed_prediction_ends_failed_with_its_error(emu: Emulator) -> None:
    async with client_for(emu) as client:
        prediction = await client.models.predictions.async_create(
            model=MODEL, input={"prompt": f"a drone {FAIL_MARKER}", "duration": 5})
        await prediction.async_wait()
        with pytest.raises(ModelError) as raised:
            await client.async_run(MODEL, input={"prompt": f"again {FAIL_MARKER}", "duration": 5})
    assert prediction.status == "failed"
    assert prediction.error
    assert prediction.output is None
    assert raised.value.prediction.status == "failed"
    assert str(raised.value) == raised.value.prediction.error


async def test_cancel_ends_a_long_prediction_canceled() -> None:
    clock = HandClock()  # never moved: the prediction stays queued until canceled
    async with Emulator(fast_config(), clock=clock) as emu, client_for(emu) as client:
        prediction = await client.models.predictions.async_create(
            model=MODEL, input={"prompt": "an endless drone", "duration": 190})
        assert prediction.status == "starting"
        await prediction.async_cancel()
        assert prediction.status == "canceled"
        assert prediction.output is None
        reloaded = await client.predictions.async_get(prediction.id)
        assert reloaded.status == "canceled"
        await reloaded.async_wait()  # final: returns at once
        assert reloaded.completed_at is not None


async def test_api_errors_raise_replicate_error_with_the_problem_details(emu: Emulator) -> None:
    async with client_for(emu, token="r8_wrong") as client:
        with pytest.raises(ReplicateError) as raised:
            await client.models.predictions.async_create(model=MODEL, input={"prompt": "x"})
    assert raised.value.status == 401
    assert raised.value.title == "Unauthenticated"

    async with client_for(emu) as client:
        with pytest.raises(ReplicateError) as raised:
            await client.models.predictions.async_create(
                model=MODEL, input={"prompt": "x", "duration": 500})
    assert raised.value.status == 422
    assert raised.value.detail is not None and "input.duration" in raised.value.detail


async def test_predictions_list_pages_newest_first(emu: Emulator) -> None:
    """``predictions.list``: the key's predictions newest first with their input, and the
    ``next`` cursor the client follows to older pages (what the engine reads to find a
    prediction whose create reply was lost)."""
    async with client_for(emu) as client:
        made = [await client.models.predictions.async_create(
            model=MODEL, input={"prompt": f"cue {i}", "duration": 1}) for i in range(PAGE_SIZE + 3)]
        first = await client.predictions.async_list()
        assert first.next is not None and first.previous is None
        second = await client.predictions.async_list(first.next)
    listed = [p.id for p in first.results] + [p.id for p in second.results]
    assert listed == [p.id for p in reversed(made)] and second.next is None
    assert first.results[0].input == {"prompt": f"cue {PAGE_SIZE + 2}", "duration": 1}


async def test_the_client_runs_against_the_emulator_command(tmp_path: Path) -> None:
    """What a user's CI does: `stableaudio-async emulator` in its own process, the client
    pointed at it (``base_url``) with the emulator's default key."""
    async with emulator_process("--time-scale", "0.01") as url:
        transport = httpx.AsyncHTTPTransport()
        client = replicate.Client(api_token="emulator-key", base_url=url, transport=transport)
        client.poll_interval = 0.01
        try:
            prediction = await client.models.predictions.async_create(
                model=MODEL, input={"prompt": "a marching band", "duration": 5})
            await prediction.async_wait()
        finally:
            await transport.aclose()
        assert prediction.status == "succeeded" and isinstance(prediction.output, str)
        await download_audio(prediction.output, tmp_path)
