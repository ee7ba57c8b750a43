"""One request pipeline for every provider route: count the request, check its key, admit it
against the rate limit, read its body; each provider module plugs its own contract into it.

A provider module declares a :class:`Contract` (how its key is carried, and what it answers
at each refusal) and mounts its routes with :class:`Routes`. Each request to one of them goes,
in this order:

1. counted: ``requests``, plus ``submits`` or ``polls`` on a submit or poll route;
2. its key, read by :attr:`Contract.key` and compared to the emulator's (else
   :attr:`Contract.unauthorized`, 401);
3. the rate limit, ``Emulator.admit`` (else :attr:`Contract.throttled`, 429);
4. the provider's handler, given a :class:`Call`. Its checks come in the provider's own order:
   a JSON body is read when it asks (:meth:`Call.json`, refused by
   :attr:`Contract.invalid_json` or :attr:`Contract.not_object`), a job looked up likewise
   (:meth:`Call.job`, :attr:`Contract.not_found`).

An error reply made with :meth:`Call.error` is counted in ``ProviderStats.errors``; a handler
may raise :class:`Refusal` to answer one at once. Faults are injected around all of this, by
the faults' middleware (:mod:`.faults`), which counts an injected reply as the route's kind
says: so each route's declared kind must be the one the faults see (checked at mount).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import BodyPartReader, web

from stableaudio_async.emulator.config import Reading
from stableaudio_async.emulator.faults import route_kind
from stableaudio_async.emulator.server import Emulator
from stableaudio_async.emulator.state import EmulatedJob, retry_after_header

__all__ = ["Call", "Contract", "Refusal", "Routes", "TooLarge", "authorization", "form_parts",
           "header"]

#: What a route is to the counters and the faults: a submit, a poll, or anything else.
Kind = Literal["submit", "poll", "other"]
#: Reads a request's key in a provider's scheme; None when the request does not follow it.
KeyReader = Callable[[web.Request], str | None]
CallHandler = Callable[["Call"], Awaitable[web.StreamResponse]]


def authorization(scheme: str) -> KeyReader:
    """Reads ``Authorization: <scheme> <key>`` (the scheme in any case; the key stripped)."""

    def read(request: web.Request) -> str | None:
        given, _, key = request.headers.get("Authorization", "").partition(" ")
        return key.strip() if given.lower() == scheme.lower() else None

    return read


def header(name: str) -> KeyReader:
    """Reads the whole of header ``name`` as the key (empty when it is absent)."""

    def read(request: web.Request) -> str:
        return request.headers.get(name, "")

    return read


@dataclass(frozen=True)
class Contract:
    """What one provider's pipeline needs to know: its name, its key scheme, its refusals.

    Each refusal builds the provider's own reply with :meth:`Call.error` (so it is counted).
    """

    provider: str
    key: KeyReader
    #: The 401 for a key that is missing, in another scheme, or not the emulator's
    #: (:attr:`Call.key` holds what :attr:`key` read).
    unauthorized: Callable[[Call], web.Response]
    #: The 429 for a request refused by the rate limit, given the wait in real seconds.
    throttled: Callable[[Call, float], web.Response]
    #: For :meth:`Call.json`: a body that is not JSON, and one that is not a JSON object.
    invalid_json: Callable[[Call], web.Response] | None = None
    not_object: Callable[[Call], web.Response] | None = None
    #: For :meth:`Call.job`: no such job of this provider.
    not_found: Callable[[Call], web.Response] | None = None


class Refusal(Exception):
    """Raised by a handler (or :class:`Call`) to answer ``response`` at once."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


class Call:
    """One request to a provider route: the request, its emulator, contract, stats and key."""

    def __init__(self, request: web.Request, emu: Emulator, contract: Contract) -> None:
        self.request = request
        self.emu = emu
        self.contract = contract
        self.stats = emu.provider_stats(contract.provider)
        #: The key as :attr:`Contract.key` read it (None on a route that takes none).
        self.key: str | None = None
        #: The raw body, once :meth:`json` has read it.
        self.body = b""

    @property
    def base_url(self) -> str:
        """``scheme://host`` as the client addressed this emulator."""
        return f"{self.request.scheme}://{self.request.host}"

    @property
    def reading(self) -> Reading:
        """The reading this provider is served in (``EmulatorConfig.readings``)."""
        return self.emu.config.reading(self.contract.provider)

    def error(self, status: int, body: dict[str, Any], *,
              headers: dict[str, str] | None = None) -> web.Response:
        """An error reply with ``body`` as JSON, counted by status."""
        self.stats.errors[status] += 1
        return web.json_response(body, status=status, headers=headers)

    def retry_after(self, wait: float) -> dict[str, str]:
        """A ``Retry-After`` header for ``wait`` real seconds, on the emulator's time scale."""
        return {"Retry-After": retry_after_header(wait, self.emu.config.time_scale)}

    async def json(self) -> dict[str, Any]:
        """The body as a JSON object (the raw bytes kept in :attr:`body`), or a refusal."""
        contract = self.contract
        if contract.invalid_json is None or contract.not_object is None:
            raise TypeError(f"{contract.provider}'s contract declares no JSON bodies")
        self.body = await self.request.read()
        try:
            params = json.loads(self.body)
        except ValueError:
            raise Refusal(contract.invalid_json(self)) from None
        if not isinstance(params, dict):
            raise Refusal(contract.not_object(self))
        return params

    def find(self, request_id: str, *, model: str | None = None) -> EmulatedJob | None:
        """This provider's job ``request_id`` (of ``model``, if given), or None."""
        job = self.emu.jobs.get(request_id)
        if job is None or job.provider != self.contract.provider \
                or (model is not None and job.model != model):
            return None
        return job

    def job(self, request_id: str, *, model: str | None = None) -> EmulatedJob:
        """As :meth:`find`, refused with :attr:`Contract.not_found` when there is none."""
        job = self.find(request_id, model=model)
        if job is None:
            if self.contract.not_found is None:
                raise TypeError(f"{self.contract.provider}'s contract declares no 404")
            raise Refusal(self.contract.not_found(self))
        return job


class Routes:
    """Mounts one provider's routes on the app, each behind the pipeline."""

    def __init__(self, app: web.Application, emu: Emulator, contract: Contract) -> None:
        self.app = app
        self.emu = emu
        self.contract = contract

    def submit(self, path: str, handler: CallHandler) -> None:
        """A ``POST`` that creates a job: counted as a submit, and as one by the rate limit."""
        self.add("POST", path, handler, kind="submit")

    def poll(self, path: str, handler: CallHandler) -> None:
        """A ``GET`` of a job's status or result: counted as a poll."""
        self.add("GET", path, handler, kind="poll")

    def add(self, method: str, path: str, handler: CallHandler, *, kind: Kind = "other",
            keyed: bool = True) -> None:
        """Any route. ``keyed=False``: counted, but neither the key nor the rate limit checked."""
        if route_kind(method, path, ()) != kind:
            raise ValueError(f"{method} {path} is a {route_kind(method, path, ())} route to the "
                             f"faults, not a {kind}")
        emu, contract = self.emu, self.contract

        async def handle(request: web.Request) -> web.StreamResponse:
            call = Call(request, emu, contract)
            call.stats.requests += 1
            if kind == "submit":
                call.stats.submits += 1
            elif kind == "poll":
                call.stats.polls += 1
            if keyed:
                call.key = key = contract.key(request)
                if key is None or key != emu.config.api_key:
                    return contract.unauthorized(call)
                wait = emu.admit(contract.provider, key, submit=kind == "submit")
                if wait is not None:
                    return contract.throttled(call, wait)
            try:
                return await handler(call)
            except Refusal as refusal:
                return refusal.response

        self.app.router.add_route(method, path, handle)


class TooLarge(Exception):
    """A multipart body outgrew a limit given to :func:`form_parts`."""


async def form_parts(request: web.Request, *, chunk_size: int, max_body: int | None = None,
                     max_part: int | None = None
                     ) -> AsyncIterator[tuple[BodyPartReader, bytearray]]:
    """Each part of a ``multipart/form-data`` body with its bytes, read as a stream.

    Raises :class:`TooLarge` once the raw body (multipart framing and every part included)
    passes ``max_body``, or one part passes ``max_part``; malformed framing surfaces as
    aiohttp's reader reports it (``ValueError``, ``LookupError`` or ``RuntimeError``).
    """
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            raise ValueError("nested multipart bodies are not form fields")
        data = bytearray()
        while chunk := await part.read_chunk(chunk_size):
            data += chunk
            if max_body is not None and request.content.total_bytes > max_body:
                raise TooLarge
            if max_part is not None and len(data) > max_part:
                raise TooLarge
        yield part, data
    if max_body is not None and request.content.total_bytes > max_body:
        raise TooLarge
