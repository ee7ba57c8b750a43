"""fal's official Python client (``fal-client`` 1.0.3), unmodified, against our emulator over TLS.

fal-client submits to ``https://{FAL_QUEUE_RUN_HOST}/{app}``, always https, and reads the host
from the environment once, when it is imported; the emulator's port is only known once it is
serving. So the emulator serves TLS with a ``trustme`` test CA, httpx is told to trust that CA
through ``SSL_CERT_FILE``, and ``fal_client.client.QUEUE_URL_FORMAT`` is set to exactly what
``FAL_QUEUE_RUN_HOST=127.0.0.1:<port>`` would have made it at import. Every later URL (status,
result, cancel) is the one the emulator's submit reply names, as the client takes them.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fal_client
import fal_client.client
import httpx
import pytest
import trustme

from stableaudio_async.audiocheck import check_audio
from stableaudio_async.emulator import Emulator
from stableaudio_async.emulator.server import ERROR_MARKER, FAIL_MARKER

from conftest import TEST_KEY, HandClock, emulator_process, fast_config

pytestmark = pytest.mark.anyio

APP = "fal-ai/stable-audio-25/text-to-audio"
POLL = 0.01  # the emulator runs 100× faster than real time


@dataclass
class Tls:
    server: ssl.SSLContext
    client: ssl.SSLContext


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls(ca: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Tls:
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    bundle = tmp_path / "test-ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    # fal-client builds its httpx clients itself (default verify, trust_env): they read this.
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    return Tls(server, client)


Factory = Callable[..., Any]


@pytest.fixture
async def serve(tls: Tls, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Factory]:
    """Start an emulator over TLS and point fal-client's queue host at it; closes what it made."""
    clients: list[fal_client.AsyncClient] = []

    @dataclass
    class Served:
        emu: Emulator
        fal: fal_client.AsyncClient

    emulators: list[Emulator] = []

    async def start(clock: Callable[[], float] | None = None, key: str = TEST_KEY) -> Served:
        extra: dict[str, Any] = {} if clock is None else {"clock": clock}
        emu = Emulator(fast_config(), ssl_context=tls.server, **extra)
        await emu.start()
        emulators.append(emu)
        monkeypatch.setattr(fal_client.client, "QUEUE_URL_FORMAT",
                            f"https://127.0.0.1:{emu.port}/")
        client = fal_client.AsyncClient(key=key)
        clients.append(client)
        return Served(emu, client)

    try:
        yield start
    finally:
        for client in clients:
            if "_client" in client.__dict__:  # built lazily, on first use
                # fal-client has no close(); its httpx client (a cached property) owns the
                # connections.
                await (await client._client).aclose()
        for emu in emulators:
            await emu.stop()


async def download_audio(url: str, tls: Tls, path: Path) -> None:
    async with httpx.AsyncClient(verify=tls.client) as http:
        reply = await http.get(url)
    assert reply.status_code == 200
    path.write_bytes(reply.content)
    assert check_audio(path, expected_format="wav", expected_duration=5) is None


async def test_submit_poll_and_result_give_downloadable_audio(
        serve: Factory, tls: Tls, tmp_path: Path) -> None:
    served = await serve()
    handle = await served.fal.submit(APP, {"prompt": "birdsong at dawn", "seconds_total": 5})
    assert handle.request_id in served.emu.jobs
    assert handle.status_url.startswith(f"{served.emu.url}/fal-ai/stable-audio-25/requests/")

    seen = [type(status) async for status in handle.iter_events(with_logs=True, interval=POLL)]
    assert seen[-1] is fal_client.Completed
    assert set(seen) <= {fal_client.Queued, fal_client.InProgress, fal_client.Completed}
    final = await handle.status()
    assert isinstance(final, fal_client.Completed) and final.error is None

    result = await handle.get(interval=POLL)
    assert result["audio"]["content_type"] == "audio/wav"
    assert isinstance(result["seed"], int)
    await download_audio(result["audio"]["url"], tls, tmp_path / "out.wav")

    again = await served.fal.result("fal-ai/stable-audio-25", handle.request_id)
    assert again == result


async def test_subscribe_runs_to_the_result(serve: Factory) -> None:
    served = await serve()
    updates: list[object] = []
    result = await served.fal.subscribe(APP, {"prompt": "a creaking door", "seconds_total": 5},
                                        interval=POLL, on_queue_update=updates.append)
    assert isinstance(updates[-1], fal_client.Completed)
    assert result["audio"]["url"].startswith(served.emu.url)


async def test_a_failed_generation_raises_with_its_detail(serve: Factory) -> None:
    served = await serve()
    handle = await served.fal.submit(APP, {"prompt": f"static {FAIL_MARKER}", "seconds_total": 5})
    with pytest.raises(fal_client.FalClientHTTPError) as raised:
        await handle.get(interval=POLL)
    assert raised.value.status_code == 422
    assert "Generation failed" in str(raised.value)

    handle = await served.fal.submit(APP, {"prompt": f"hum {ERROR_MARKER}", "seconds_total": 5})
    with pytest.raises(fal_client.FalClientHTTPError) as raised:
        await handle.get(interval=POLL)
    assert raised.value.status_code == 500
    assert raised.value.error_type == "runner_server_error"


async def test_cancel_ends_a_queued_request_cancelled(serve: Factory) -> None:
    served = await serve(clock=HandClock())  # never moved: the request stays queued
    handle = await served.fal.submit(APP, {"prompt": "an endless drone", "seconds_total": 190})
    status = await handle.status()
    assert isinstance(status, fal_client.Queued) and status.position == 0

    await handle.cancel()

    assert isinstance(await handle.status(), fal_client.Completed)
    with pytest.raises(fal_client.FalClientHTTPError) as raised:
        await handle.get(interval=POLL)
    assert raised.value.status_code == 499
    assert raised.value.error_type == "client_cancelled"
    with pytest.raises(fal_client.FalClientHTTPError) as raised:
        await handle.cancel()  # nothing left to cancel
    assert raised.value.status_code == 400


async def test_bad_key_and_bad_input_raise_with_the_http_status(serve: Factory) -> None:
    served = await serve(key="wrong-key")
    with pytest.raises(fal_client.FalClientHTTPError) as raised:
        await served.fal.submit(APP, {"prompt": "x"})
    assert raised.value.status_code == 401

    served = await serve()
    with pytest.raises(fal_client.FalClientHTTPError) as raised:
        await served.fal.submit(APP, {"prompt": "x", "seconds_total": 500})
    assert raised.value.status_code == 422
    assert served.emu.jobs == {}


async def test_the_emulator_command_serves_https_with_a_given_certificate(tmp_path: Path) -> None:
    """`stableaudio-async emulator --certfile --keyfile` serves TLS, for https-only clients."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    certfile, cafile = tmp_path / "cert.pem", tmp_path / "ca.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(certfile))
    ca.cert_pem.write_to_path(str(cafile))
    async with emulator_process("--time-scale", "0.01", "--certfile", str(certfile)) as url:
        assert url.startswith("https://127.0.0.1:")
        async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=str(cafile))) \
                as http:
            reply = await http.get(f"{url}/_emulator/stats")
    assert reply.status_code == 200 and reply.json() == {}
