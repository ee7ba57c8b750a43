"""Where bytes hit the disk: CDN URLs, inline bytes and data URIs, all through one atomic writer.

Audio is written to a hidden temporary file in the output folder while its sha256 is computed,
then fsynced and renamed to its final name, so a final name only ever holds a whole file.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self
from urllib.parse import unquote_to_bytes

import aiohttp
import anyio
from anyio.abc import AsyncResource

from stableaudio_async.errors import DownloadError, ProviderUnavailableError
from stableaudio_async.http import translate_errors
from stableaudio_async.models import AudioSource, AudioURL, InlineAudio

__all__ = [
    "TEMP_SUFFIX",
    "AtomicWriter",
    "WrittenFile",
    "decode_data_uri",
    "fetch_audio",
    "fetch_into",
    "write_body",
]

TEMP_SUFFIX = ".part"


@dataclass(frozen=True, slots=True)
class WrittenFile:
    """A file that is complete on disk under its final name."""

    path: Path
    sha256: str
    size: int
    content_type: str | None = None


def decode_data_uri(uri: str) -> tuple[bytes, str | None]:
    """Decode an RFC 2397 ``data:`` URI into its bytes and media type.

    Raises :class:`ValueError` for anything that is not a well-formed data URI.
    """
    if not uri.startswith("data:") or "," not in uri:
        raise ValueError("not a data: URI")
    header, _, payload = uri[5:].partition(",")
    params = header.split(";")
    media_type = params[0] or None
    if "base64" in params[1:]:
        try:
            return base64.b64decode(payload, validate=True), media_type
        except binascii.Error as exc:
            raise ValueError(f"bad base64 in data URI: {exc}") from exc
    return unquote_to_bytes(payload), media_type


class AtomicWriter(AsyncResource):
    """Writes one file atomically: a temporary file, hashed as it grows, then renamed.

    Use as ``async with AtomicWriter(path) as w: await w.write(...); await w.commit()``.
    Leaving the block without :meth:`commit` (an error, a cancellation) deletes the temporary
    file, so nothing partial ever appears under ``path``. Writes gather in memory up to
    ``buffer_limit`` bytes and go to a worker thread together (written and hashed there, off
    the event loop): a small file costs one trip (write, fsync, rename) rather than one per
    step, a large one a trip per ``buffer_limit`` rather than per network read, and memory
    stays bounded whatever the file's size.
    """

    def __init__(self, path: Path, *, content_type: str | None = None,
                 buffer_limit: int = 512 * 1024) -> None:
        self.path = path
        self.content_type = content_type
        self.temp_path = path.with_name(f".{path.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
        self.buffer_limit = buffer_limit
        self._hash = hashlib.sha256()
        self._size = 0
        self._held: list[bytes] = []
        self._held_size = 0
        self._entered = False
        self._file: IO[bytes] | None = None
        self._closed = False
        self._result: WrittenFile | None = None

    async def __aenter__(self) -> Self:
        self._entered = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def size(self) -> int:
        """Bytes written so far."""
        return self._size

    async def write(self, chunk: bytes) -> None:
        """Append ``chunk`` to the file."""
        assert self._entered, "AtomicWriter used outside `async with`"
        self._held.append(chunk)
        self._held_size += len(chunk)
        self._size += len(chunk)
        if self._held_size > self.buffer_limit:
            # The chunks as they came, never joined: no copy on the way to the disk.
            held, self._held, self._held_size = self._held, [], 0
            self._file = await anyio.to_thread.run_sync(_append, self._file, self.temp_path,
                                                        held, self._hash)

    async def restart(self) -> None:
        """Throw away what was written so far (the server would not resume it)."""
        assert self._entered, "AtomicWriter used outside `async with`"
        self._held, self._held_size = [], 0
        if self._file is not None:
            await anyio.to_thread.run_sync(_truncate, self._file)
        self._hash = hashlib.sha256()
        self._size = 0

    async def commit(self) -> WrittenFile:
        """Make the data durable (fsync), then rename it into place (and fsync the folder)."""
        assert self._entered, "AtomicWriter used outside `async with`"
        held, self._held, self._held_size = self._held, [], 0
        await anyio.to_thread.run_sync(_finish, self._file, self.temp_path, self.path, held,
                                       self._hash)
        self._closed = True
        self._result = WrittenFile(self.path, self._hash.hexdigest(), self._size,
                                   self.content_type)
        return self._result

    async def aclose(self) -> None:
        """Close, and delete the temporary file unless it was committed."""
        self._held, self._held_size = [], 0
        if not self._closed:
            self._closed = True
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(_discard, self._file, self.temp_path)


def _append(fh: IO[bytes] | None, temp: Path, chunks: list[bytes], digest: Any) -> IO[bytes]:
    """Write and hash ``chunks`` at the end of ``fh``, opening ``temp`` first if need be."""
    opened = fh is None
    if fh is None:
        fh = open(temp, "wb")  # noqa: SIM115 - closed by _finish or _discard
    try:
        for chunk in chunks:
            fh.write(chunk)
            digest.update(chunk)
    except BaseException:
        if opened:  # the caller never got it, so cannot close it
            fh.close()
        raise
    return fh


def _truncate(fh: IO[bytes]) -> None:
    fh.seek(0)
    fh.truncate()


def _finish(fh: IO[bytes] | None, temp: Path, dest: Path, chunks: list[bytes], digest: Any) -> None:
    """Write the rest, fsync, close and rename into place; on failure leave no temp file."""
    try:
        fh = _append(fh, temp, chunks, digest)
        with fh:
            fh.flush()
            os.fsync(fh.fileno())
        _replace_durably(temp, dest)
    except BaseException:
        if fh is not None:
            fh.close()
        temp.unlink(missing_ok=True)
        raise


def _discard(fh: IO[bytes] | None, temp: Path) -> None:
    if fh is not None:
        fh.close()
    # Also without a handle: the write that would have handed it over may have failed.
    temp.unlink(missing_ok=True)


def _replace_durably(src: Path, dst: Path) -> None:
    os.replace(src, dst)
    fd = os.open(dst.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


async def fetch_audio(
    session: aiohttp.ClientSession,
    source: AudioSource,
    dest: Path,
    *,
    provider: str,
    headers: Mapping[str, str] | None = None,
    chunk_size: int = 256 * 1024,
    total_timeout: float = 300.0,
) -> WrittenFile:
    """Write ``source`` to ``dest`` atomically in one attempt (see :func:`fetch_into`)."""
    try:
        async with AtomicWriter(dest) as writer:
            await fetch_into(session, source, writer, provider=provider, headers=headers,
                             chunk_size=chunk_size, total_timeout=total_timeout)
            return await writer.commit()
    except OSError as exc:
        raise DownloadError(f"cannot write {dest}: {exc.strerror or exc}", provider=provider,
                            status=None) from exc


_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


async def fetch_into(
    session: aiohttp.ClientSession,
    source: AudioSource,
    writer: AtomicWriter,
    *,
    provider: str,
    headers: Mapping[str, str] | None = None,
    chunk_size: int = 256 * 1024,
    total_timeout: float = 300.0,
) -> None:
    """Bring ``writer`` to hold all of ``source``: inline bytes at once, a URL streamed.

    When ``writer`` already holds the start of the file (an earlier attempt broke off), the
    rest is asked for with ``Range``; a server that answers 200 instead gets a fresh start.
    The body is checked against Content-Length / Content-Range. Raises :class:`DownloadError`
    (``status`` set for HTTP errors, ``None`` for broken or short transfers, which leave what
    arrived in ``writer`` for the next attempt to resume).
    """
    if isinstance(source, InlineAudio):
        await writer.restart()
        writer.content_type = source.content_type
        await writer.write(source.data)
        return
    offset = writer.size
    # Audio does not compress, and the lengths must describe the bytes we store.
    request_headers = {**(headers or {}), "Accept-Encoding": "identity"}
    if offset:
        request_headers["Range"] = f"bytes={offset}-"
    try:
        with translate_errors(provider, what=f"download {source.url}"):
            async with session.get(
                source.url, headers=request_headers,
                timeout=aiohttp.ClientTimeout(total=total_timeout,
                                              sock_read=min(total_timeout, 60.0)),
            ) as response:
                expected = await _expected_size(response, writer, offset, provider, source)
                writer.content_type = source.content_type or response.headers.get("Content-Type")
                await _stream(response, writer, expected, provider=provider,
                              chunk_size=chunk_size)
    except ProviderUnavailableError as exc:
        raise DownloadError(f"{exc.message} (kept {writer.size} bytes to resume from)",
                            provider=provider, status=exc.status) from exc


def _declared_length(response: aiohttp.ClientResponse) -> int | None:
    """Content-Length, when it describes the bytes we store (not a compressed encoding)."""
    encoded = response.headers.get("Content-Encoding", "identity") != "identity"
    return None if encoded else response.content_length


async def _stream(response: aiohttp.ClientResponse, writer: AtomicWriter, expected: int | None,
                  *, provider: str, chunk_size: int) -> None:
    """Append the reply's body to ``writer`` a chunk at a time, then check it is all there."""
    async for chunk in response.content.iter_chunked(chunk_size):
        await writer.write(chunk)
    if expected is not None and writer.size != expected:
        raise DownloadError(f"truncated body: {writer.size} of {expected} bytes from "
                            f"{response.url}", provider=provider)
    if writer.size == 0:
        raise DownloadError(f"empty body from {response.url}", provider=provider)


async def _expected_size(response: aiohttp.ClientResponse, writer: AtomicWriter, offset: int,
                         provider: str, source: AudioURL) -> int | None:
    """The file's full size as this reply states it, restarting ``writer`` if it must."""
    if response.status == 206 and offset:
        found = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
        if found is None or int(found.group(1)) != offset:
            await writer.restart()
            raise DownloadError(f"unusable Content-Range from {source.url}", provider=provider)
        return None if found.group(3) == "*" else int(found.group(3))
    if response.status == 200:
        if offset:
            await writer.restart()  # the server ignored Range: start over
        return _declared_length(response)
    raise DownloadError(f"CDN answered HTTP {response.status} for {source.url}",
                        provider=provider, status=response.status)


async def write_body(
    response: aiohttp.ClientResponse,
    dest: Path,
    *,
    provider: str,
    chunk_size: int = 256 * 1024,
    content_type: str | None = None,
) -> WrittenFile:
    """Stream a reply's body to ``dest`` atomically, checking it against Content-Length.

    Memory stays at one chunk whatever the body's size. Raises :class:`DownloadError` for a
    short or empty body; transfer errors surface as aiohttp's (the caller translates them).
    """
    content_type = content_type or response.headers.get("Content-Type")
    async with AtomicWriter(dest, content_type=content_type) as writer:
        await _stream(response, writer, _declared_length(response), provider=provider,
                      chunk_size=chunk_size)
        return await writer.commit()
