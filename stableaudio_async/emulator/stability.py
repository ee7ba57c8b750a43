"""Stability AI's contract: the synchronous Stable Audio 2 / 2.5 routes, their multipart bodies and errors.

Each generation holds its connection until the (time-scaled) generation time has passed and
then answers with the audio itself (``accept: audio/*``, the default) or with base64 JSON
(``accept: application/json``). Errors have Stability's shape
``{"id": "<hex>", "name": "<name>", "errors": ["<field>: <reason>", …]}``.

The checks run in the real API's order: key (401), rate limit (429), body (400, or 413 past
50 MB), fields (400, listing every problem), then the prompt's fault triggers.

Fault triggers — a prompt containing one of these is answered so:

- ``emulator:moderation``: 403 ``content_moderation``;
- ``emulator:unprocessable``: 422 ``invalid_language``;
- ``emulator:error``: 500 ``internal_error``, every time;
- ``emulator:flaky``: 500 ``internal_error`` the first time a request (its route and text
  fields) is seen, success when the same request is sent again.

None of these is charged: they do not count as accepted jobs. ``emulator:fail`` (the
emulator-wide failure marker) is different: the job is accepted and held for its generation
time like any other, then answered 500 ``internal_error``, as a generation failing midway.

Rate limit: every request with a valid key counts at arrival against a window of 150 requests
per 10 emulated seconds; the request that overflows it is answered 429 and locks the key out
for 60 emulated seconds, during which every request is answered 429 (see
:meth:`Emulator.admit`). No Retry-After header, as the real API documents none.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import re
import uuid
from typing import Any

from aiohttp import web

from stableaudio_async.emulator.pipeline import (
    Call,
    Contract,
    Routes,
    TooLarge,
    authorization,
    form_parts,
)
from stableaudio_async.emulator.server import Emulator
from stableaudio_async.emulator.state import ERROR_MARKER

__all__ = ["add_routes"]

PROVIDER = "stability"
ROUTE_PREFIX = "/v2beta/audio/stable-audio-2/"
TASKS = ("text-to-audio", "audio-to-audio", "inpaint")
MODELS = ("stable-audio-2", "stable-audio-2.5")
#: The real API's default, though every client should send the model explicitly.
DEFAULT_MODEL = "stable-audio-2"
#: Inpainting exists only on 2.5 and takes no ``model`` field.
INPAINT_MODEL = "stable-audio-2.5"
FORMATS = ("mp3", "wav")
#: The whole request, multipart framing included. "50 MB" read as decimal megabytes: the
#: stricter reading, so a client the emulator accepts is accepted by the real API either way.
MAX_REQUEST_BYTES = 50_000_000
MAX_PROMPT_CHARS = 10_000
MAX_SEED = 4_294_967_294
MAX_DURATION = 190.0
MAX_CLIENT_HEADER_CHARS = 256
CLIENT_HEADERS = ("stability-client-id", "stability-client-user-id", "stability-client-version")

MODERATION_MARKER = "emulator:moderation"
UNPROCESSABLE_MARKER = "emulator:unprocessable"
FLAKY_MARKER = "emulator:flaky"

#: Per model: (lowest, highest, default) steps.
_STEPS: dict[str, tuple[int, int, int]] = {"stable-audio-2": (30, 100, 50),
                                           "stable-audio-2.5": (4, 8, 8)}
_CFG_SCALE_DEFAULT: dict[str, float] = {"stable-audio-2": 7.0, "stable-audio-2.5": 1.0}
_CHUNK = 64 * 1024
# Form values are text: accept plain decimal notation only (no "nan", "inf", "1_0", spaces),
# so a client the emulator accepts does not rely on a lenient parser.
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_INTEGER = re.compile(r"[+-]?\d+")


def _error(call: Call, status: int, name: str, errors: list[str]) -> web.Response:
    """A reply in Stability's error shape."""
    return call.error(status, {"id": uuid.uuid4().hex, "name": name, "errors": errors})


def _rate_limit_message(call: Call) -> str:
    config = call.emu.config
    limit = config.limits[PROVIDER]
    message = (f"You have exceeded the rate limit of {limit.requests} requests within a "
               f"{limit.period:g} second period")
    lockout = config.lockouts.get(PROVIDER)
    if lockout is not None:
        message += f", and have been timed out for {lockout:g} seconds"
    return message + "."


#: Key, then rate limit (no Retry-After); the multipart body is each route's to read.
CONTRACT = Contract(
    provider=PROVIDER,
    key=authorization("Bearer"),
    unauthorized=lambda call: _error(call, 401, "unauthorized",
                                     ["authorization: invalid or missing header value"]),
    throttled=lambda call, wait: _error(call, 429, "rate_limit_exceeded",
                                        [_rate_limit_message(call)]),
)


def add_routes(app: web.Application, emu: Emulator) -> None:
    """Mount Stability's Stable Audio 2 routes on ``app``."""
    # Keys of the emulator:flaky requests already failed once; per app, so per emulator.
    flaky_seen: set[str] = set()
    routes = Routes(app, emu, CONTRACT)
    for task in TASKS:

        async def generate(call: Call, task: str = task) -> web.StreamResponse:
            return await _generate(call, task, flaky_seen)

        routes.submit(ROUTE_PREFIX + task, generate)


async def _generate(call: Call, task: str, flaky_seen: set[str]) -> web.StreamResponse:
    request, emu = call.request, call.emu
    if request.content_type != "multipart/form-data":
        return _error(call, 400, "bad_request", [
            f"content-type: must be multipart/form-data, not {request.content_type or 'absent'}"])
    if (request.content_length or 0) > MAX_REQUEST_BYTES:
        # Refused before reading a byte of it; a chunked body is measured as it streams in.
        return _error_413(call)
    try:
        fields, audio = await _read_form(request)
    except TooLarge:
        return _error_413(call)
    except (ValueError, LookupError, RuntimeError):
        # aiohttp's multipart reader reports malformed framing as these; a field that is not
        # valid text in its charset is a UnicodeDecodeError (a ValueError) or LookupError.
        return _error(call, 400, "bad_request", ["body: malformed multipart/form-data"])

    params, problems = _validate(task, fields, audio, request)
    if problems:
        return _error(call, 400, "bad_request", problems)

    prompt = params["prompt"]
    if MODERATION_MARKER in prompt:
        return _error(call, 403, "content_moderation", [
            "Your request was flagged by our content moderation system, as a result your "
            "request was denied and you were not charged."])
    if UNPROCESSABLE_MARKER in prompt:
        return _error(call, 422, "invalid_language", ["English is the only supported language."])
    if ERROR_MARKER in prompt:
        return _internal_error(call)
    text_key = hashlib.sha256(
        json.dumps([task, sorted(fields.items())]).encode()).hexdigest()
    if FLAKY_MARKER in prompt and text_key not in flaky_seen:
        flaky_seen.add(text_key)
        return _internal_error(call)

    if params["seed"] == 0:
        params["seed"] = random.randint(1, MAX_SEED)
    # Duplicate detection is on what the client sent (text fields and audio), not on the
    # seed drawn for it.
    body = text_key.encode() + b"\0" + (audio or b"")
    job = emu.create_job(PROVIDER, params["model"], params, body)
    await emu.wait_until_done(job)
    if job.outcome != "COMPLETED":
        return _internal_error(call)
    if request.transport is None or request.transport.is_closing():
        # The client gave up during the hold: nothing to render or serve (aiohttp does not
        # cancel handlers on disconnect).
        return web.Response(status=499)
    # Rendered off the event loop, as the CDN does, so held requests are not delayed by it.
    data, content_type = await emu.render_off_loop(job)
    seed = int(params["seed"])
    if _wants_json(request.headers.get("accept", "")):
        return web.json_response(
            {"audio": base64.b64encode(data).decode(), "seed": seed, "finish_reason": "SUCCESS"},
            headers={"x-request-id": job.request_id})
    response = web.StreamResponse(status=200, headers={
        "finish-reason": "SUCCESS", "seed": str(seed), "x-request-id": job.request_id})
    response.content_type = content_type
    response.content_length = len(data)
    view = memoryview(data)
    try:
        await response.prepare(request)
        for start in range(0, len(data), _CHUNK):
            await response.write(view[start:start + _CHUNK])
        await response.write_eof()
    except ConnectionResetError:
        pass  # the client hung up mid-body, as a client may; nothing to clean up
    return response


def _error_413(call: Call) -> web.Response:
    return _error(call, 413, "payload_too_large", [
        f"body: payloads cannot be larger than {MAX_REQUEST_BYTES // 1_000_000}MB in size"])


def _internal_error(call: Call) -> web.Response:
    return _error(call, 500, "internal_error", [
        "An unexpected server error has occurred, please try again later."])


def _wants_json(accept: str) -> bool:
    """``application/json`` asked for, and no audio type: anything else gets the audio."""
    types = {part.split(";")[0].strip().lower() for part in accept.split(",")}
    return "application/json" in types and not any(t.startswith("audio/") for t in types)


async def _read_form(request: web.Request) -> tuple[dict[str, str], bytes | None]:
    """The text fields and the ``audio`` file part, read as a stream with the size capped."""
    fields: dict[str, str] = {}
    audio: bytes | None = None
    # Capped on the raw body, so multipart framing and ignored parts count too.
    async for part, data in form_parts(request, chunk_size=_CHUNK, max_body=MAX_REQUEST_BYTES):
        if part.name == "audio":
            audio = bytes(data)
        elif part.name and part.filename is None:
            fields[part.name] = data.decode(part.get_charset(default="utf-8"))
        # Other file parts (such as the ``files={"none": ""}`` trick some clients use to force
        # multipart) are ignored.
    return fields, audio


def _audio_format(data: bytes) -> str | None:
    """``wav`` or ``mp3`` by magic bytes, or None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "wav"
    if data[:3] == b"ID3" or (len(data) >= 2 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0):
        return "mp3"
    return None


class _Fields:
    """Parses form fields into typed values, collecting a ``<field>: <reason>`` per problem."""

    def __init__(self, fields: dict[str, str]) -> None:
        self.fields = fields
        self.problems: list[str] = []

    def refuse(self, name: str) -> None:
        if name in self.fields:
            self.problems.append(f"{name}: is not accepted on this route")

    def number(self, name: str, lo: float, hi: float, default: float) -> float | None:
        raw = self.fields.get(name)
        if raw is None:
            return default
        if not _NUMBER.fullmatch(raw):
            self.problems.append(f"{name}: must be a number")
            return None
        return self._in_range(name, float(raw), lo, hi)

    def integer(self, name: str, lo: int, hi: int, default: int) -> int | None:
        raw = self.fields.get(name)
        if raw is None:
            return default
        if not _INTEGER.fullmatch(raw):
            self.problems.append(f"{name}: must be an integer")
            return None
        value = self._in_range(name, int(raw), lo, hi)
        return None if value is None else int(value)

    def _in_range(self, name: str, value: float, lo: float, hi: float) -> float | None:
        if not lo <= value <= hi:
            self.problems.append(f"{name}: must be between {lo:g} and {hi:g}")
            return None
        return value


def _validate(task: str, fields: dict[str, str], audio: bytes | None, request: web.Request
              ) -> tuple[dict[str, Any], list[str]]:
    """The job's typed parameters (defaults filled in) and every problem found."""
    f = _Fields(fields)
    for header in CLIENT_HEADERS:
        if len(request.headers.get(header, "")) > MAX_CLIENT_HEADER_CHARS:
            f.problems.append(f"{header}: must be at most {MAX_CLIENT_HEADER_CHARS} characters")

    prompt = fields.get("prompt", "")
    if not prompt.strip():
        f.problems.append("prompt: is required")
    elif len(prompt) > MAX_PROMPT_CHARS:
        f.problems.append(f"prompt: must be at most {MAX_PROMPT_CHARS} characters")

    model: str | None = INPAINT_MODEL
    if task == "inpaint":
        f.refuse("model")
        f.refuse("cfg_scale")
    else:
        model = fields.get("model", DEFAULT_MODEL)
        if model not in MODELS:
            f.problems.append(f"model: must be one of {', '.join(MODELS)}")
            model = None  # the model-dependent ranges below cannot be judged

    params: dict[str, Any] = {
        "prompt": prompt,
        "model": model,
        "duration": f.number("duration", 1, MAX_DURATION, MAX_DURATION),
        "seed": f.integer("seed", 0, MAX_SEED, 0),
    }
    if model is not None:
        lo, hi, default = _STEPS[model]
        params["steps"] = f.integer("steps", lo, hi, default)
        if task != "inpaint":
            params["cfg_scale"] = f.number("cfg_scale", 1, 25, _CFG_SCALE_DEFAULT[model])
    output_format = fields.get("output_format", "mp3")
    if output_format not in FORMATS:
        f.problems.append(f"output_format: must be one of {', '.join(FORMATS)}")
    params["output_format"] = output_format

    if task in ("audio-to-audio", "inpaint"):
        if not audio:
            f.problems.append("audio: is required")
        elif _audio_format(audio) is None:
            f.problems.append("audio: must be an mp3 or wav file")
    if task == "audio-to-audio" and model is not None:
        params["strength"] = f.number(
            "strength", 0.01 if model == "stable-audio-2.5" else 0, 1, 1)
    if task == "inpaint":
        start = params["mask_start"] = f.number("mask_start", 0, MAX_DURATION, 30)
        end = params["mask_end"] = f.number("mask_end", 0, MAX_DURATION, MAX_DURATION)
        if start is not None and end is not None and start >= end:
            f.problems.append("mask_end: must be greater than mask_start")
    return params, f.problems
