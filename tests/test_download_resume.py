"""Interrupted downloads resume with Range; a server that ignores Range gets a clean restart."""

from __future__ import annotations

import hashlib
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from stableaudio_async.download import AtomicWriter, fetch_into
from stableaudio_async.errors import DownloadError
from stableaudio_async.models import AudioURL

pytestmark = pytest.mark.anyio

BODY = bytes(range(256)) * 4000  # ~1 MB, every offset distinguishable


async def serve(handler) -> tuple[web.AppRunner, str]:  # type: ignore[no-untyped-def]
    app = web.Application()
    app.router.add_get("/a.wav", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/a.wav"


async def test_broken_transfer_resumes_from_where_it_stopped(tmp_path: Path) -> None:
    """The second attempt asks for the rest with Range and the file comes out whole."""
    ranges: list[str | None] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        ranges.append(request.headers.get("Range"))
        if request.http_range.start:
            start = request.http_range.start
            response = web.StreamResponse(status=206, headers={
                "Content-Range": f"bytes {start}-{len(BODY) - 1}/{len(BODY)}"})
            response.content_length = len(BODY) - start
            await response.prepare(request)
            await response.write(BODY[start:])
            return response
        response = web.StreamResponse()
        response.content_length = len(BODY)
        await response.prepare(request)
        await response.write(BODY[:300_000])
        assert request.transport is not None
        request.transport.close()  # the connection drops mid-body
        return response

    runner, url = await serve(handler)
    try:
        async with aiohttp.ClientSession() as session, \
                AtomicWriter(tmp_path / "a.wav") as writer:
            with pytest.raises(DownloadError) as info:
                await fetch_into(session, AudioURL(url), writer, provider="p", chunk_size=65536)
            assert info.value.status is None and 0 < writer.size < len(BODY)
            kept = writer.size
            await fetch_into(session, AudioURL(url), writer, provider="p", chunk_size=65536)
            written = await writer.commit()
    finally:
        await runner.cleanup()
    assert ranges[0] is None
    assert ranges[1] == f"bytes={kept}-"
    assert (tmp_path / "a.wav").read_bytes() == BODY
    assert written.sha256 == hashlib.sha256(BODY).hexdigest() and written.size == len(BODY)


async def test_server_ignoring_range_gets_a_fresh_start(tmp_path: Path) -> None:
    """A 200 answer to a Range request restarts the file instead of appending to it."""
    calls = 0

    async def handler(request: web.Request) -> web.StreamResponse:
        nonlocal calls
        calls += 1
        response = web.StreamResponse()
        response.content_length = len(BODY)
        await response.prepare(request)
        if calls == 1:
            await response.write(BODY[:100_000])
            assert request.transport is not None
            request.transport.close()
            return response
        await response.write(BODY)
        return response

    runner, url = await serve(handler)
    try:
        async with aiohttp.ClientSession() as session, \
                AtomicWriter(tmp_path / "a.wav") as writer:
            with pytest.raises(DownloadError):
                await fetch_into(session, AudioURL(url), writer, provider="p")
            await fetch_into(session, AudioURL(url), writer, provider="p")
            written = await writer.commit()
    finally:
        await runner.cleanup()
    assert (tmp_path / "a.wav").read_bytes() == BODY
    assert written.sha256 == hashlib.sha256(BODY).hexdigest()


async def test_a_mismatched_content_range_is_not_appended(tmp_path: Path) -> None:
    """A 206 for the wrong offset is refused and the partial file discarded, never spliced."""
    async def handler(request: web.Request) -> web.StreamResponse:
        if request.http_range.start:
            response = web.StreamResponse(status=206, headers={
                "Content-Range": f"bytes 0-{len(BODY) - 1}/{len(BODY)}"})
            response.content_length = len(BODY)
            await response.prepare(request)
            await response.write(BODY)
            return response
        response = web.StreamResponse()
        response.content_length = len(BODY)
        await response.prepare(request)
        await response.write(BODY[:50_000])
        assert request.transport is not None
        request.transport.close()
        return response

    runner, url = await serve(handler)
    try:
        async with aiohttp.ClientSession() as session, \
                AtomicWriter(tmp_path / "a.wav") as writer:
            with pytest.raises(DownloadError):
                await fetch_into(session, AudioURL(url), writer, provider="p")
            with pytest.raises(DownloadError, match="Content-Range"):
                await fetch_into(session, AudioURL(url), writer, provider="p")
            assert writer.size == 0
    finally:
        await runner.cleanup()
    assert not (tmp_path / "a.wav").exists()
