"""The emulator's two readings of what the providers' documentation leaves open, on the wire.

``strict`` (the default) follows the documentation's letter and the official clients;
``loose`` is the other reading. The engine's own tests run under both (their modules
parametrize conftest's ``reading``); these check that each reading says what it promises.
"""

from __future__ import annotations

import base64

import aiohttp
import anyio
import pydantic
import pytest

from stableaudio_async.emulator import Emulator, EmulatorConfig, Reading

from conftest import TEST_KEY, HandClock, fast_config, when

pytestmark = pytest.mark.anyio

FAL_SUBMIT = "/fal-ai/stable-audio-25/text-to-audio"
FAL_AUTH = {"Authorization": f"Key {TEST_KEY}"}
PIXAZO_SUBMIT = ("/stable-audio-3-small-music-text-to-audio/v1/"
                 "stable-audio-3-small-music-text-to-audio-request")
PIXAZO_AUTH = {"Ocp-Apim-Subscription-Key": TEST_KEY, "Cache-Control": "no-cache"}
WAVESPEED_SUBMIT = "/api/v3/stability-ai/stable-audio-3/music"
WAVESPEED_AUTH = {"Authorization": f"Bearer {TEST_KEY}"}


def test_readings_name_known_providers_or_every_one() -> None:
    config = EmulatorConfig(readings={"*": "loose", "fal": "strict"})
    assert config.reading("fal") == "strict" and config.reading("pixazo") == "loose"
    assert EmulatorConfig().reading("wavespeed") == "strict"
    with pytest.raises(pydantic.ValidationError, match="no emulated provider named nope"):
        EmulatorConfig(readings={"nope": "loose"})
    with pytest.raises(pydantic.ValidationError):
        EmulatorConfig(readings={"fal": "lax"})  # type: ignore[dict-item]
    with pytest.raises(pydantic.ValidationError, match="no emulated provider named"):
        EmulatorConfig(faults={"*": {}})  # "*" is for readings only


@pytest.mark.parametrize(("reading", "pending"), [("strict", 202), ("loose", 200)])
async def test_fal_pending_status_code(reading: Reading, pending: int) -> None:
    clock = HandClock()
    async with Emulator(fast_config(readings={"fal": reading}), clock=clock) as emu, \
            aiohttp.ClientSession() as http:
        async with http.post(emu.url + FAL_SUBMIT, headers=FAL_AUTH, json={"prompt": "p"}) as r:
            submitted = await r.json()
        job = emu.jobs[submitted["request_id"]]
        codes = []
        for moment in (None, job.queued_until, job.done_at):
            if moment is not None:
                clock.move_past(moment)
            async with http.get(submitted["status_url"], headers=FAL_AUTH) as r:
                codes.append((r.status, (await r.json())["status"]))
    assert codes == [(pending, "IN_QUEUE"), (pending, "IN_PROGRESS"), (200, "COMPLETED")]


@pytest.mark.parametrize("reading", ["strict", "loose"])
async def test_pixazo_sync_mode_and_media_url(reading: Reading) -> None:
    clock = HandClock()
    async with Emulator(fast_config(readings={"pixazo": reading}), clock=clock) as emu, \
            aiohttp.ClientSession() as http:
        body = {"prompt": "p", "duration": 1, "sync_mode": True}
        if reading == "strict":
            # Held until done: the clock must move while the submit waits, so it is sent
            # as a task and the clock moved once the job exists.
            replies: list[tuple[int, dict[str, object]]] = []

            async def send() -> None:
                async with http.post(emu.url + PIXAZO_SUBMIT, headers=PIXAZO_AUTH,
                                     json=body) as r:
                    replies.append((r.status, await r.json()))

            async with anyio.create_task_group() as tg:
                tg.start_soon(send)
                await when(lambda: bool(emu.jobs))
                clock.move_past(next(iter(emu.jobs.values())).done_at)
            ((status, final),) = replies
            assert status == 200 and final["status"] == "COMPLETED"
            (uri,) = final["output"]["media_url"]  # type: ignore[index]
        else:
            async with http.post(emu.url + PIXAZO_SUBMIT, headers=PIXAZO_AUTH, json=body) as r:
                assert r.status == 202
                queued = await r.json()
            assert queued["status"] == "QUEUED"
            clock.move_past(emu.jobs[queued["request_id"]].done_at)
            async with http.get(queued["polling_url"], headers=PIXAZO_AUTH) as r:
                final = await r.json()
            assert final["status"] == "COMPLETED"
            uri = final["output"]["media_url"]
            assert isinstance(uri, str)
    header, _, payload = str(uri).partition(",")
    assert header == "data:audio/mpeg;base64" and len(base64.b64decode(payload)) > 1000
    assert emu.stats["pixazo"].downloads == 0


@pytest.mark.parametrize(("reading", "code"), [("strict", 200), ("loose", 500)])
async def test_wavespeed_failed_prediction(reading: Reading, code: int) -> None:
    clock = HandClock()
    async with Emulator(fast_config(readings={"wavespeed": reading}), clock=clock) as emu, \
            aiohttp.ClientSession() as http:
        async with http.post(emu.url + WAVESPEED_SUBMIT, headers=WAVESPEED_AUTH,
                             json={"prompt": "emulator:fail"}) as r:
            created = (await r.json())["data"]
        clock.move_past(emu.jobs[created["id"]].done_at)
        async with http.get(created["urls"]["get"], headers=WAVESPEED_AUTH) as r:
            status, envelope = r.status, await r.json()
    assert status == envelope["code"] == code
    data = envelope["data"]
    assert data["id"] == created["id"] and data["status"] == "failed" and data["error"]
