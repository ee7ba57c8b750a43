"""Fault injection for the emulator: per-provider rates of the failures a client must survive.

Each provider may be given a :class:`FaultRates` (``EmulatorConfig.faults``, or a
``[faults.<provider>]`` table in the emulator's TOML; the class lives with the rest of the
configuration in :mod:`.config`). With none, the emulator is exactly the faithful one. Where
each fault strikes:

- ``submit_503``, ``submit_5xx``, ``poll_5xx``, ``burst_429``: an aiohttp middleware, before
  the provider's own handler runs, so an injected reply creates nothing, changes no job and
  counts against no rate-limit window. The reply is ``{"error": "injected fault", "message":
  …}`` with the fault's status; adapters map by status code.
- ``submit_lost_reply``: the same middleware, after the handler: a submit the provider
  accepted gets a 500 or 502 in place of its reply.
- ``cdn_reset``, ``cdn_truncate``, ``cdn_slow``: the same middleware, on the way out of every
  file route (the shared ``/cdn/…`` and the routes a provider module serves its own files on),
  which also answers ``Range: bytes=…`` with 206 there.
- ``url_expiry``: the shared CDN's URLs are signed with a deadline when they are handed out
  (:meth:`FaultInjector.signed_query`, from ``Cdn.url``); once it has passed the CDN
  answers 403, and a fresh status reply hands out a fresh URL. ``url_stale`` answers a file's
  first request so, whenever it comes.
- ``job_failed``, ``job_error``: ``Emulator.create_job`` (:meth:`FaultInjector.job_outcome`).

Decisions are drawn from random streams seeded by ``EmulatorConfig.fault_seed``: one stream per
provider and fault, drawn in request order, and, for a job's outcome, one draw per submitted
body and its repetition count — so a run that sends the same requests in the same order meets
the same faults.
"""

from __future__ import annotations

import hashlib
import hmac
import random
import re
import secrets
import socket
import struct
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlencode

import anyio
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware
from aiohttp.web_urldispatcher import AbstractRoute

from stableaudio_async.emulator.config import FaultRates
from stableaudio_async.emulator.state import EmulatorState, ProviderStats, retry_after_header

__all__ = ["FaultInjector", "FaultRates", "RangeNotSatisfiable", "parse_range", "route_kind"]

RouteKind = Literal["submit", "poll", "file", "other"]

#: Module constants naming the path prefix a provider module serves its own files under.
FILE_PREFIX_NAMES = ("MEDIA_PREFIX", "DELIVERY_PREFIX")
#: The shared CDN's prefix (:class:`.cdn.Cdn`).
CDN_PREFIX = "/cdn/"
#: A burst's Retry-After, in emulated seconds: a burst lasts a number of requests, not a time.
BURST_RETRY_AFTER = 1.0
#: A slow download comes in this many pieces, each after a pause of SLOW_PAUSE emulated seconds
#: (at most MAX_SLOW_PAUSE real ones: slow, but never more than 0.2 s slower in all).
SLOW_CHUNKS = 8
SLOW_PAUSE = 0.25
MAX_SLOW_PAUSE = 0.025

class RangeNotSatisfiable(ValueError):
    """A ``Range`` that starts past the end of the file (answered 416)."""


_RANGE = re.compile(r"bytes=(\d*)-(\d*)", re.IGNORECASE)


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The ``[start, end)`` a ``Range`` header asks of ``size`` bytes; None to send them all.

    One range only (``bytes=N-``, ``bytes=N-M``, ``bytes=-K``). A header that does not parse
    is ignored, as RFC 9110 allows; one starting at or past the end raises
    :class:`RangeNotSatisfiable`.
    """
    match = _RANGE.fullmatch(header.strip()) if header else None
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first, last = match.groups()
    if not first:
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable(header)
        return max(0, size - suffix), size
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= size:
        raise RangeNotSatisfiable(header)
    return start, size if not last else min(int(last) + 1, size)


def route_kind(method: str, path: str, file_prefixes: Iterable[str]) -> RouteKind:
    """What a provider route is, from its method and path template.

    Submits are POSTs that create jobs (not cancels, not uploads); a GET is a file when it is
    under a file prefix, else a poll (a status or result fetch); anything else is ``other``.
    """
    if method == hdrs.METH_GET:
        return "file" if any(path.startswith(p) for p in file_prefixes) else "poll"
    if method == hdrs.METH_POST and not path.endswith("/cancel") and "/upload" not in path:
        return "submit"
    return "other"


@dataclass(frozen=True)
class _Route:
    #: None: the provider is the path's ``{provider}`` (the shared CDN).
    provider: str | None
    kind: RouteKind


class FaultInjector:
    """One emulator's faults: which route is what, the random streams, bursts under way."""

    def __init__(self, emu: EmulatorState) -> None:
        self._emu = emu
        self._routes: dict[AbstractRoute, _Route] = {}
        self._rngs: dict[tuple[str, str], random.Random] = {}
        #: 429s still to answer in each provider's current burst.
        self._bursts: Counter[str] = Counter()
        #: Resets and truncations injected so far, by file path.
        self._broken: Counter[str] = Counter()
        #: Shared-CDN files whose first request has been and gone (``url_stale``).
        self._requested: set[str] = set()
        self._secret = secrets.token_bytes(16)

    # -- set-up --------------------------------------------------------------------------

    def register(self, routes: Iterable[AbstractRoute], provider: str | None,
                 file_prefixes: Iterable[str]) -> None:
        """Record the provider and kind of routes just added to the app."""
        prefixes = (CDN_PREFIX, *file_prefixes)
        for route in routes:
            path = route.resource.canonical if route.resource is not None else ""
            self._routes[route] = _Route(provider, route_kind(route.method, path, prefixes))

    def middleware(self) -> Middleware:
        """The aiohttp middleware that injects the request-level and file faults."""

        @web.middleware
        async def inject(request: web.Request, handler: Handler) -> web.StreamResponse:
            route = self._routes.get(request.match_info.route)
            if route is None:
                return await handler(request)
            provider = route.provider or request.match_info.get("provider", "")
            rates = self._emu.config.faults.get(provider)
            if route.kind == "file":
                return await self._file(request, await handler(request), provider, rates)
            if rates is not None and route.kind != "other":
                refused = self._refuse(provider, route.kind, rates)
                if refused is not None:
                    return refused
            response = await handler(request)
            if rates is not None and route.kind == "submit" and 200 <= response.status < 300 \
                    and self._draw(provider, "submit_lost_reply", rates.submit_lost_reply):
                stats = self._emu.provider_stats(provider)
                stats.injected["submit_lost_reply"] += 1
                status = self._rng(provider, "submit_lost_reply").choice((500, 502))
                stats.errors[status] += 1  # the request itself the handler has counted
                return web.json_response({"error": "injected fault", "message": "internal "
                                          "error"}, status=status)
            return response

        return inject

    # -- decisions -----------------------------------------------------------------------

    def _draw(self, provider: str, fault: str, rate: float) -> bool:
        """Whether ``fault`` strikes now, from the provider's own stream for it."""
        if rate <= 0:
            return False
        return self._rng(provider, fault).random() < rate

    def _rng(self, provider: str, fault: str) -> random.Random:
        rng = self._rngs.get((provider, fault))
        if rng is None:
            # A str seed is hashed with SHA-512: the same on every run, whatever PYTHONHASHSEED.
            rng = self._rngs[(provider, fault)] = random.Random(
                f"{self._emu.config.fault_seed}:{provider}:{fault}")
        return rng

    def job_outcome(self, provider: str, body_digest: str, occurrence: int
                    ) -> Literal["FAILED", "ERROR"] | None:
        """The outcome forced on a job, if any: one draw per body and its repetition count.

        Seeded by the body (not the random request id), so a rerun meets the same failures,
        and by how often that body was accepted, so resubmitting a failed job is a new draw.
        """
        rates = self._emu.config.faults.get(provider)
        if rates is None or rates.job_failed + rates.job_error <= 0:
            return None
        draw = random.Random(f"{self._emu.config.fault_seed}:{provider}:job:{body_digest}:"
                             f"{occurrence}").random()
        if draw < rates.job_failed:
            return "FAILED"
        if draw < rates.job_failed + rates.job_error:
            return "ERROR"
        return None

    # -- request-level faults ------------------------------------------------------------

    def _refuse(self, provider: str, kind: RouteKind, rates: FaultRates) -> web.Response | None:
        """An injected 429, 503 or 500 for a submit or poll, or None to let it through."""
        stats = self._emu.provider_stats(provider)
        if not self._bursts[provider] and self._draw(provider, "burst_429", rates.burst_429):
            stats.injected["burst_429"] += 1
            self._bursts[provider] = rates.burst_length
        if self._bursts[provider]:
            self._bursts[provider] -= 1
            stats.injected_429 += 1
            headers = None
            if rates.burst_retry_after:
                scale = self._emu.config.time_scale
                headers = {"Retry-After": retry_after_header(BURST_RETRY_AFTER * scale, scale)}
            return self._reply(stats, kind, 429, "too many requests (an injected burst)",
                               headers)
        if kind == "submit" and self._draw(provider, "submit_503", rates.submit_503):
            stats.injected["submit_503"] += 1
            return self._reply(stats, kind, 503, "service unavailable; the job was not accepted")
        if kind == "submit" and self._draw(provider, "submit_5xx", rates.submit_5xx):
            stats.injected["submit_5xx"] += 1
            status = self._rng(provider, "submit_5xx").choice((500, 502))
            return self._reply(stats, kind, status, "internal error")
        if kind == "poll" and self._draw(provider, "poll_5xx", rates.poll_5xx):
            stats.injected["poll_5xx"] += 1
            status = self._rng(provider, "poll_5xx").choice((500, 503))
            return self._reply(stats, kind, status, "the status is unavailable; the job is not "
                                                    "affected")
        return None

    @staticmethod
    def _reply(stats: ProviderStats, kind: RouteKind, status: int, message: str,
               headers: dict[str, str] | None = None) -> web.Response:
        """An injected error reply, counted as the provider's handler would have counted it."""
        stats.requests += 1
        if kind == "submit":
            stats.submits += 1
        else:
            stats.polls += 1
        stats.errors[status] += 1
        return web.json_response({"error": "injected fault", "message": message},
                                 status=status, headers=headers)

    # -- files ---------------------------------------------------------------------------

    async def _file(self, request: web.Request, response: web.StreamResponse, provider: str,
                    rates: FaultRates | None) -> web.StreamResponse:
        """Serve a file route's reply: whole or a Range of it, with a download fault, if any."""
        body = response.body if isinstance(response, web.Response) else None
        if response.status != 200 or not isinstance(body, bytes | bytearray):
            return response  # an error (or a streamed reply): left as it is
        size = len(body)
        try:
            span = parse_range(request.headers.get(hdrs.RANGE), size)
        except RangeNotSatisfiable:
            return web.Response(status=416, headers={hdrs.CONTENT_RANGE: f"bytes */{size}"})
        fault = self._file_fault(provider, request.path, rates)
        if span is None and fault is None:
            return response
        start, end = span or (0, size)
        reply = web.StreamResponse(status=200 if span is None else 206)
        for name, value in response.headers.items():
            if name not in (hdrs.CONTENT_LENGTH, hdrs.CONTENT_TYPE):
                reply.headers.add(name, value)
        reply.content_type = response.content_type
        reply.content_length = end - start
        if span is not None:
            reply.headers[hdrs.CONTENT_RANGE] = f"bytes {start}-{end - 1}/{size}"
        part = memoryview(body)[start:end]
        try:
            if fault == "cdn_truncate":
                reply.force_close()  # so the client sees the end before Content-Length's
                await reply.prepare(request)
                await reply.write(part[:len(part) // 2])
                await reply.write_eof()
            elif fault == "cdn_reset":
                await reply.prepare(request)
                await reply.write(part[:len(part) // 2])
                _reset(request)
            elif fault == "cdn_slow":
                await reply.prepare(request)
                step = -(-len(part) // SLOW_CHUNKS) or 1
                pause = min(SLOW_PAUSE * self._emu.config.time_scale, MAX_SLOW_PAUSE)
                for offset in range(0, len(part), step):
                    if offset:
                        await anyio.sleep(pause)
                    await reply.write(part[offset:offset + step])
                await reply.write_eof()
            else:
                await reply.prepare(request)
                await reply.write(part)
                await reply.write_eof()
        except ConnectionResetError:
            pass  # the client hung up mid-body, as a client may; nothing to clean up
        return reply

    def _file_fault(self, provider: str, path: str, rates: FaultRates | None) -> str | None:
        """The download fault to inject on this request of ``path``, if any."""
        if rates is None:
            return None
        capped = self._broken[path] >= rates.cdn_faults_per_file
        for fault, rate, breaks in (("cdn_reset", rates.cdn_reset, True),
                                    ("cdn_truncate", rates.cdn_truncate, True),
                                    ("cdn_slow", rates.cdn_slow, False)):
            if (breaks and capped) or not self._draw(provider, fault, rate):
                continue
            if breaks:
                self._broken[path] += 1
            self._emu.provider_stats(provider).injected[fault] += 1
            return fault
        return None

    # -- expiring URLs -------------------------------------------------------------------

    def _signature(self, name: str, expires: str) -> str:
        return hmac.new(self._secret, f"{name}\0{expires}".encode(), hashlib.sha256
                        ).hexdigest()[:32]

    def signed_query(self, provider: str, name: str) -> str | None:
        """``expires=…&sig=…`` for a CDN file handed out now, or None if URLs never expire.

        ``expires`` is the deadline on the emulator's clock, in real seconds. URLs that only go
        stale (``url_stale``) are signed too, with a nonce and no deadline, so that the URL a
        fresh status reply hands out differs from the stale one, as a re-signed URL would.
        """
        rates = self._emu.config.faults.get(provider)
        if rates is None or (rates.url_expiry is None and not rates.url_stale):
            return None
        if rates.url_expiry is None:
            expires = f"never.{secrets.token_hex(4)}"
        else:
            expires = f"{self._emu.now() + rates.url_expiry * self._emu.config.time_scale:.6f}"
        return urlencode({"expires": expires, "sig": self._signature(f"{provider}/{name}",
                                                                     expires)})

    def url_expired(self, provider: str, name: str, request: web.Request) -> bool:
        """Whether a CDN request must be refused: its URL's deadline passed, or it is unsigned,
        or it is the file's first request and ``url_stale`` strikes."""
        rates = self._emu.config.faults.get(provider)
        if rates is None or (rates.url_expiry is None and not rates.url_stale):
            return False
        expires = request.query.get("expires", "")
        signature = self._signature(f"{provider}/{name}", expires)
        if not hmac.compare_digest(request.query.get("sig", ""), signature):
            return True
        first = name not in self._requested
        self._requested.add(name)
        if first and self._draw(provider, "url_stale", rates.url_stale):
            return True
        return not expires.startswith("never.") and self._emu.now() >= float(expires)


def _reset(request: web.Request) -> None:
    """Reset the connection (RST, not a FIN): a zero linger time, then close it."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
