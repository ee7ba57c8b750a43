"""Tests for download.py: data URIs, the atomic writer, and streaming audio from a real server."""

from __future__ import annotations

import gzip
import hashlib
import random
import socket
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from aiohttp import web

from stableaudio_async.download import AtomicWriter, decode_data_uri, fetch_audio
from stableaudio_async.errors import DownloadError
from stableaudio_async.models import AudioURL, InlineAudio

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def leftovers(folder: Path) -> list[str]:
    """Names of temporary writer files left in ``folder``."""
    return sorted(p.name for p in folder.glob(".*.part"))


# ---- decode_data_uri -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "data", "media_type"),
    [
        pytest.param("data:audio/mpeg;base64,SUQzBAAAAAAAAP/7kGQADw==",
                     b"ID3\x04\x00\x00\x00\x00\x00\x00\xff\xfb\x90\x64\x00\x0f", "audio/mpeg",
                     id="base64"),
        pytest.param("data:audio/wav;base64,UklGRg==", b"RIFF", "audio/wav", id="base64-wav"),
        pytest.param("data:audio/mpeg;name=take1.mp3;base64,AAEC", b"\x00\x01\x02",
                     "audio/mpeg", id="base64-with-parameter"),
        pytest.param("data:text/plain,hello%20world%21", b"hello world!", "text/plain",
                     id="percent-encoded"),
        pytest.param("data:application/octet-stream,%00%FF%10", b"\x00\xff\x10",
                     "application/octet-stream", id="percent-encoded-binary"),
        pytest.param("data:text/plain;charset=utf-8,caf%C3%A9", "café".encode(), "text/plain",
                     id="charset-parameter-dropped"),
        pytest.param("data:,plain", b"plain", None, id="no-media-type"),
        pytest.param("data:;base64,AAEC", b"\x00\x01\x02", None, id="base64-no-media-type"),
        pytest.param("data:audio/mpeg;base64,", b"", "audio/mpeg", id="empty-payload"),
    ],
)
def test_decode_data_uri(uri: str, data: bytes, media_type: str | None) -> None:
    """A well-formed data URI decodes to its exact bytes and its media type (without parameters)."""
    assert decode_data_uri(uri) == (data, media_type)


@pytest.mark.parametrize(
    "uri",
    [
        pytest.param("data:audio/mpeg;base64SUQz", id="no-comma"),
        pytest.param("https://cdn.example.com/a.mp3", id="not-data-scheme"),
        pytest.param("audio/mpeg;base64,SUQz", id="missing-scheme"),
        pytest.param("data:audio/mpeg;base64,SUQz!!!!", id="bad-base64-chars"),
        pytest.param("data:audio/mpeg;base64,SUQzB", id="bad-base64-padding"),
        pytest.param("", id="empty"),
    ],
)
def test_decode_data_uri_rejects_malformed(uri: str) -> None:
    """Anything that is not a well-formed data URI raises ValueError."""
    with pytest.raises(ValueError):
        decode_data_uri(uri)


# ---- AtomicWriter --------------------------------------------------------------------------


@pytest.mark.anyio
async def test_atomic_writer_commit_writes_final_file(tmp_path: Path) -> None:
    """Committing renames a whole, hashed file into place and leaves no temporary file."""
    dest = tmp_path / "job-1.mp3"
    chunks = [b"ID3", b"\x00" * 1000, b"tail"]
    async with AtomicWriter(dest, content_type="audio/mpeg", buffer_limit=0) as writer:
        for chunk in chunks:
            await writer.write(chunk)
        assert not dest.exists()
        assert leftovers(tmp_path) == [writer.temp_path.name]
        written = await writer.commit()
    data = b"".join(chunks)
    assert dest.read_bytes() == data
    assert written.path == dest
    assert written.sha256 == hashlib.sha256(data).hexdigest()
    assert written.size == len(data)
    assert written.content_type == "audio/mpeg"
    assert leftovers(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job-1.mp3"]


@pytest.mark.anyio
async def test_atomic_writer_replaces_existing_file(tmp_path: Path) -> None:
    """A commit atomically replaces an older file of the same name."""
    dest = tmp_path / "job-1.mp3"
    dest.write_bytes(b"old contents")
    async with AtomicWriter(dest) as writer:
        await writer.write(b"new")
        assert dest.read_bytes() == b"old contents"
        await writer.commit()
    assert dest.read_bytes() == b"new"
    assert leftovers(tmp_path) == []


@pytest.mark.anyio
async def test_atomic_writer_error_leaves_nothing(tmp_path: Path) -> None:
    """An exception inside the block before commit leaves neither final nor temporary file."""
    dest = tmp_path / "job-1.mp3"

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with AtomicWriter(dest, buffer_limit=0) as writer:
            await writer.write(b"partial audio")
            assert writer.temp_path.exists()
            raise Boom
    assert not dest.exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.anyio
async def test_atomic_writer_error_keeps_older_file(tmp_path: Path) -> None:
    """A failed write leaves an existing file of the same name untouched."""
    dest = tmp_path / "job-1.mp3"
    dest.write_bytes(b"previous run")
    with pytest.raises(RuntimeError):
        async with AtomicWriter(dest) as writer:
            await writer.write(b"partial")
            raise RuntimeError("network dropped")
    assert dest.read_bytes() == b"previous run"
    assert leftovers(tmp_path) == []


@pytest.mark.anyio
async def test_atomic_writer_cancellation_leaves_nothing(tmp_path: Path) -> None:
    """Cancelling the task inside the block leaves neither final nor temporary file."""
    dest = tmp_path / "job-1.mp3"
    with anyio.CancelScope() as scope:
        async with AtomicWriter(dest, buffer_limit=0) as writer:
            await writer.write(b"partial audio")
            assert writer.temp_path.exists()
            scope.cancel()
            await anyio.sleep_forever()
    assert scope.cancelled_caught
    assert not dest.exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.anyio
async def test_atomic_writer_small_file_stays_in_memory_until_commit(tmp_path: Path) -> None:
    """A file within the buffer touches the disk only at commit, then exactly as written."""
    dest = tmp_path / "job-1.mp3"
    async with AtomicWriter(dest, buffer_limit=100) as writer:
        await writer.write(b"a" * 60)
        await writer.restart()
        await writer.write(b"b" * 40)
        await writer.write(b"c" * 60)
        assert list(tmp_path.iterdir()) == []
        written = await writer.commit()
    assert dest.read_bytes() == b"b" * 40 + b"c" * 60
    assert written.sha256 == hashlib.sha256(b"b" * 40 + b"c" * 60).hexdigest()
    assert leftovers(tmp_path) == []


@pytest.mark.anyio
async def test_atomic_writer_streams_past_the_buffer(tmp_path: Path) -> None:
    """Past ``buffer_limit`` the file goes to disk with what was held, and streams on; a
    restart then empties the file itself."""
    dest = tmp_path / "job-1.wav"
    async with AtomicWriter(dest, buffer_limit=100) as writer:
        for chunk in (b"a" * 80, b"b" * 80, b"c" * 80):
            await writer.write(chunk)
        await writer.commit()
    assert dest.read_bytes() == b"a" * 80 + b"b" * 80 + b"c" * 80
    async with AtomicWriter(dest, buffer_limit=100) as writer:
        await writer.write(b"a" * 80)
        assert not writer.temp_path.exists()
        await writer.write(b"b" * 80)
        assert writer.temp_path.exists()
        assert writer.size == 160
        await writer.restart()
        await writer.write(b"c" * 30)
        written = await writer.commit()
    assert dest.read_bytes() == b"c" * 30
    assert written.size == 30
    assert leftovers(tmp_path) == []


@pytest.mark.anyio
async def test_atomic_writer_failed_first_flush_leaves_nothing(tmp_path: Path) -> None:
    """A write that fails right after the temporary file was opened still leaves no file."""
    dest = tmp_path / "job-1.wav"
    with pytest.raises(TypeError):
        async with AtomicWriter(dest, buffer_limit=0) as writer:
            await writer.write("not bytes")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


# ---- fetch_audio against a real loopback server -------------------------------------------


@asynccontextmanager
async def serve(routes: dict[str, Handler]) -> AsyncIterator[str]:
    """Run an aiohttp.web app on 127.0.0.1 (free port); yield its base URL."""
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_get(path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


def stream_handler(
    pieces: Callable[[], Any], length: int | None, content_type: str = "audio/mpeg"
) -> Handler:
    """A handler streaming the byte strings from ``pieces()`` with an optional Content-Length."""

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": content_type})
        if length is not None:
            response.content_length = length
        await response.prepare(request)
        for piece in pieces():
            await response.write(piece)
        await response.write_eof()
        return response

    return handler


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.anyio
async def test_fetch_streams_large_body_exactly(tmp_path: Path) -> None:
    """A 3 MB body sent in small pieces is written byte for byte, with the right hash and size."""
    body = random.Random(20250601).randbytes(3 * 1024 * 1024)
    pieces = lambda: (body[i:i + 10_000] for i in range(0, len(body), 10_000))  # noqa: E731
    dest = tmp_path / "job-1.mp3"
    handler = stream_handler(pieces, len(body))
    async with serve({"/a.mp3": handler}) as base, aiohttp.ClientSession() as session:
        written = await fetch_audio(session, AudioURL(f"{base}/a.mp3"), dest,
                                    provider="pixazo", chunk_size=65536)
    assert dest.read_bytes() == body
    assert written.sha256 == hashlib.sha256(body).hexdigest()
    assert written.size == len(body)
    assert written.path == dest
    assert written.content_type == "audio/mpeg"
    assert leftovers(tmp_path) == []


@pytest.mark.anyio
async def test_fetch_without_content_length_writes_whole_body(tmp_path: Path) -> None:
    """A chunked reply without Content-Length is written whole."""
    body = b"RIFF" + bytes(range(256)) * 400
    pieces = lambda: (body[i:i + 4096] for i in range(0, len(body), 4096))  # noqa: E731
    dest = tmp_path / "job-1.wav"
    handler = stream_handler(pieces, None, "audio/wav")
    async with serve({"/a.wav": handler}) as base, aiohttp.ClientSession() as session:
        written = await fetch_audio(session, AudioURL(f"{base}/a.wav", "audio/x-wav"), dest,
                                    provider="pixazo")
    assert dest.read_bytes() == body
    assert written.size == len(body)
    assert written.content_type == "audio/x-wav"  # the provider's type wins over the CDN's


@pytest.mark.anyio
async def test_fetch_truncated_body_is_download_error(tmp_path: Path) -> None:
    """A server that promises more bytes than it sends, then hangs up, gives DownloadError."""

    async def truncated(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "audio/mpeg"})
        response.content_length = 1_000_000
        await response.prepare(request)
        await response.write(b"\xff\xfb" * 50_000)
        assert request.transport is not None
        request.transport.close()
        return response

    dest = tmp_path / "job-1.mp3"
    async with serve({"/a.mp3": truncated}) as base, aiohttp.ClientSession() as session:
        with pytest.raises(DownloadError) as info:
            await fetch_audio(session, AudioURL(f"{base}/a.mp3"), dest, provider="pixazo")
    assert info.value.provider == "pixazo"
    assert info.value.status is None
    assert not dest.exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.anyio
@pytest.mark.parametrize("status", [404, 403, 500])
async def test_fetch_http_error_is_download_error(tmp_path: Path, status: int) -> None:
    """A non-200 CDN reply is a DownloadError with that status, and nothing is written."""

    async def refuse(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, text="nope")

    dest = tmp_path / "job-1.mp3"
    async with serve({"/a.mp3": refuse}) as base, aiohttp.ClientSession() as session:
        with pytest.raises(DownloadError) as info:
            await fetch_audio(session, AudioURL(f"{base}/a.mp3"), dest, provider="pixazo")
    assert info.value.status == status
    assert info.value.provider == "pixazo"
    assert str(status) in str(info.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.anyio
async def test_fetch_empty_body_is_download_error(tmp_path: Path) -> None:
    """A 200 with an empty body is a DownloadError, and nothing is written."""

    async def empty(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b"", content_type="audio/mpeg")

    dest = tmp_path / "job-1.mp3"
    async with serve({"/a.mp3": empty}) as base, aiohttp.ClientSession() as session:
        with pytest.raises(DownloadError):
            await fetch_audio(session, AudioURL(f"{base}/a.mp3"), dest, provider="pixazo")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.anyio
async def test_fetch_connection_refused_is_download_error(tmp_path: Path) -> None:
    """A CDN that refuses the connection gives a DownloadError without a status."""
    dest = tmp_path / "job-1.mp3"
    url = f"http://127.0.0.1:{unused_port()}/a.mp3"
    async with aiohttp.ClientSession() as session:
        with pytest.raises(DownloadError) as info:
            await fetch_audio(session, AudioURL(url), dest, provider="pixazo")
    assert info.value.status is None
    assert info.value.provider == "pixazo"
    assert list(tmp_path.iterdir()) == []


class NoHttp:
    """A stand-in session that fails the test if anything tries to use it."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"InlineAudio must not touch the HTTP session (used .{name})")


@pytest.mark.anyio
async def test_fetch_inline_audio_writes_without_http(tmp_path: Path) -> None:
    """InlineAudio bytes are written straight to disk, with no HTTP at all."""
    data = b"ID3\x04" + bytes(range(256)) * 10
    dest = tmp_path / "job-1.mp3"
    written = await fetch_audio(NoHttp(), InlineAudio(data, "audio/mpeg"), dest,  # type: ignore[arg-type]
                                provider="pixazo")
    assert dest.read_bytes() == data
    assert written.sha256 == hashlib.sha256(data).hexdigest()
    assert written.size == len(data)
    assert written.content_type == "audio/mpeg"
    assert leftovers(tmp_path) == []


@pytest.mark.anyio
async def test_fetch_gzip_encoded_body_is_not_truncated(tmp_path: Path) -> None:
    """A CDN reply with Content-Encoding: gzip is written whole, not refused as truncated."""
    audio = b"RIFF" + b"\x00" * 200_000
    packed = gzip.compress(audio)

    async def gzipped(request: web.Request) -> web.StreamResponse:
        return web.Response(body=packed, headers={"Content-Type": "audio/wav",
                                                  "Content-Encoding": "gzip"})

    dest = tmp_path / "job-1.wav"
    async with serve({"/a.wav": gzipped}) as base, aiohttp.ClientSession() as session:
        written = await fetch_audio(session, AudioURL(f"{base}/a.wav"), dest,
                                    provider="pixazo")
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == written.sha256
    assert dest.read_bytes() in (audio, packed)


@pytest.mark.anyio
async def test_fetch_memory_stays_bounded(tmp_path: Path) -> None:
    """Downloading ~50 MB never holds more than a few MB in memory at once."""
    piece = random.Random(7).randbytes(64 * 1024)
    count = 800  # 800 × 64 KiB = 50 MiB
    size = len(piece) * count
    expected = hashlib.sha256()
    for _ in range(count):
        expected.update(piece)
    dest = tmp_path / "big.mp3"
    # The server re-sends the same piece object, so its own allocations stay tiny too.
    handler = stream_handler(lambda: (piece for _ in range(count)), size)
    async with serve({"/big.mp3": handler}) as base, aiohttp.ClientSession() as session:
        tracemalloc.start()
        try:
            written = await fetch_audio(session, AudioURL(f"{base}/big.mp3"), dest,
                                        provider="pixazo", chunk_size=65536)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert written.size == size
    assert dest.stat().st_size == size
    assert written.sha256 == expected.hexdigest()
    assert peak < 10 * 1024 * 1024, f"peak traced memory {peak / 2**20:.1f} MiB"
