"""WaveSpeed's contract: the Stable Audio 3 routes under ``/api/v3/``, enveloped predictions and media upload.

Every reply, errors included, is an envelope ``{"code": <status>, "message": "…", "data": …}``
(``data`` null on an error). The contract documents the envelope for successes only; error
envelopes carry the HTTP status as ``code`` and a short reason as ``message``.

Routes:

- ``POST /api/v3/stability-ai/stable-audio-3/{music,text-to-audio,audio-to-audio,
  audio-inpainting}``: the prediction, ``status: "created"``;
- ``GET /api/v3/predictions/{id}/result`` (what ``urls.get`` names) and its newer spelling
  ``GET /api/v3/predictions/{id}``: the prediction, ``created`` → ``processing`` →
  ``completed`` | ``failed`` on the scaled clock. A failed job still answers HTTP 200, with
  ``data.status: "failed"`` and ``data.error`` (prompts holding ``emulator:fail`` or
  ``emulator:error``); in the ``loose`` reading (``EmulatorConfig.readings``) it answers
  HTTP 500, envelope ``code`` 500, the failed prediction still in ``data``;
- ``POST /api/v3/media/upload/binary`` (multipart field ``file``, ≤ 50 MB): the bytes are kept
  and served back at ``data.download_url``, ``GET /wavespeed-media/{name}`` on this host;
  audio-to-audio and inpainting take such URLs (an unknown one is a 400) or any other http(s)
  URL.

Checks, in order: key (401), rate limit (429: every request counts; no Retry-After, as the
contract names none), body and fields (400), balance (402). With ``concurrency["wavespeed"]``
set, jobs beyond that many stay ``created`` until a running one finishes, as a tier's
concurrency cap does. ``enable_sync_mode`` holds the submit until the job is final (a prompt holding
``emulator:sync-timeout`` gets the documented 504 instead, its envelope naming the prediction,
which carries on); ``enable_base64_output`` puts raw base64 (no ``data:`` prefix) in
``outputs``.

Wire facts from the official SDK, ``wavespeed`` 2.0.5 (``tests/test_official_wavespeed.py``
drives it, unmodified, against this module):

* ``Client(api_key=…, base_url=…)`` (or ``wavespeed.config.api``); every request carries
  ``Authorization: Bearer``, ``Content-Type: application/json`` and ``X-Client-Name``,
  ``X-Client-Version``, ``X-Client-OS``. Submit is ``POST {base}/api/v3/{model}`` with the
  input as the JSON body (``enable_sync_mode: true`` added for sync mode); anything but HTTP
  200 is a failed submission, never retried. The id is read from ``data.id``.
* Polling is ``GET /api/v3/predictions/{id}/result`` only; ``data.status`` ``completed``
  ends it with ``data.outputs``; ``failed``, ``cancelled``, ``timeout`` and ``deleted`` end
  it with ``data.error`` (``Prediction <status> (task_id: <id>): <error>``); any other word
  keeps polling. Result GETs answering 429 or 5xx are retried (``retry_interval`` × attempt).
* Sync mode: a 200 whose ``data.status`` is not ``completed`` is an error; the SDK reads
  ``data.code == 5004``, or ``status: processing`` with ``Sync mode timed out`` in
  ``data.error``, as the server's sync wait running out. The 504 this module answers instead
  is taken, by ``run_no_throw``, as the same (its text holds "sync mode timed out"), but with
  task id ``unknown``.
* Upload is ticketed, not multipart: ``POST /api/v3/media/uploads`` with JSON ``{filename,
  size, content_type?}`` must answer an envelope with ``code: 200`` and ``data.upload``
  ``{method: "PUT", url, headers}`` plus ``data.download_url``; the file is then PUT to
  ``upload.url`` with those headers (any 2xx), and ``download_url`` is what it returns. This
  module serves that too: the PUT goes to ``/wavespeed-upload/{name}`` on this host, with no
  key (it stands in for a presigned storage URL) and a body of exactly ``size`` bytes.
* There is no cancel in the SDK.
"""

from __future__ import annotations

import base64
import heapq
import re
import uuid
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from stableaudio_async.emulator.audio import SUPPORTED_FORMATS
from stableaudio_async.emulator.pipeline import (
    Call,
    Contract,
    Routes,
    TooLarge,
    authorization,
    form_parts,
)
from stableaudio_async.emulator.server import Emulator
from stableaudio_async.emulator.state import EmulatedJob

__all__ = ["add_routes"]

PROVIDER = "wavespeed"
FAMILY = "stability-ai/stable-audio-3"
ROUTES = ("music", "text-to-audio", "audio-to-audio", "audio-inpainting")
FORMATS = ("mp3", "wav", "flac", "ogg", "opus", "m4a", "aac")
#: "audio ≤ 50 MB", read as decimal megabytes.
MAX_UPLOAD_BYTES = 50_000_000
MEDIA_PREFIX = "/wavespeed-media/"
#: Where a ticketed upload's bytes are PUT: the emulator's stand-in for a presigned storage URL.
UPLOAD_PREFIX = "/wavespeed-upload/"
#: With ``enable_sync_mode``, a prompt holding this is answered 504 at once, the job running on.
SYNC_TIMEOUT_MARKER = "emulator:sync-timeout"

_RANGES: dict[str, tuple[float, float]] = {
    "duration": (1, 120),
    "num_inference_steps": (1, 100),
    "guidance_scale": (0, 25),
}
_DEFAULTS: dict[str, Any] = {"duration": 30, "num_inference_steps": 8, "guidance_scale": 1,
                             "output_format": "mp3"}
_CHUNK = 64 * 1024
_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,8}")


@dataclass
class _State:
    """What one emulator's WaveSpeed keeps besides its jobs: uploaded media, and job routes."""

    #: Uploaded files by the name they are served under: (bytes, content type).
    media: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    #: The route each job was submitted to, by request id.
    routes: dict[str, str] = field(default_factory=dict)
    #: Upload tickets not yet used, by the name their file will have: (size, content type).
    tickets: dict[str, tuple[int, str]] = field(default_factory=dict)


def _error(call: Call, status: int, message: str) -> web.Response:
    """An error in the envelope's shape."""
    return call.error(status, {"code": status, "message": message, "data": None})


#: Key, then rate limit (no Retry-After); bodies are checked by each route.
CONTRACT = Contract(
    provider=PROVIDER,
    key=authorization("Bearer"),
    unauthorized=lambda call: _error(call, 401, "Unauthorized"),
    throttled=lambda call, wait: _error(
        call, 429, "Too Many Requests: rate limit exceeded for your account tier"),
    invalid_json=lambda call: _error(call, 400, "request body is not valid JSON"),
    not_object=lambda call: _error(call, 400, "request body must be a JSON object"),
    not_found=lambda call: _error(call, 404, "prediction not found"),
)


def add_routes(app: web.Application, emu: Emulator) -> None:
    """Mount WaveSpeed's routes on ``app``."""
    state = _State()
    routes = Routes(app, emu, CONTRACT)
    for route in ROUTES:

        async def submit(call: Call, route: str = route) -> web.StreamResponse:
            return await _submit(call, state, route)

        routes.submit(f"/api/v3/{FAMILY}/{route}", submit)

    async def result(call: Call) -> web.StreamResponse:
        return await _result(call, state)

    async def upload(call: Call) -> web.StreamResponse:
        return await _upload(call, state)

    async def ticket(call: Call) -> web.StreamResponse:
        return await _ticket(call, state)

    async def put(request: web.Request) -> web.StreamResponse:
        return await _put(request, state)

    async def media(request: web.Request) -> web.StreamResponse:
        stored = state.media.get(request.match_info["name"])
        if stored is None:
            return web.Response(status=404, text="Not Found")
        return web.Response(body=stored[0], content_type=stored[1])

    async def unknown(call: Call) -> web.StreamResponse:
        return _error(call, 404, f"model or route not found: {call.request.path}")

    routes.poll("/api/v3/predictions/{request_id}/result", result)
    routes.poll("/api/v3/predictions/{request_id}", result)
    routes.add("POST", "/api/v3/media/upload/binary", upload)
    routes.add("POST", "/api/v3/media/uploads", ticket)
    # The presigned PUT and the files are storage, not the API: no key, nothing counted.
    app.router.add_put(UPLOAD_PREFIX + "{name}", put)
    app.router.add_get(MEDIA_PREFIX + "{name}", media)
    # Registered last, so only paths no route above claims reach it.
    routes.add("*", "/api/v3/{tail:.*}", unknown, keyed=False)


def _envelope(data: dict[str, Any]) -> web.Response:
    return web.json_response({"code": 200, "message": "success", "data": data})


def _reply(call: Call, prediction: dict[str, Any]) -> web.Response:
    """A prediction in its envelope: HTTP 200 even when it failed, as documented (``strict``);
    the ``loose`` reading answers a failed one HTTP 500, the failed prediction still in
    ``data``."""
    if prediction["status"] == "failed" and call.reading == "loose":
        return call.error(500, {"code": 500, "message": prediction["error"], "data": prediction})
    return _envelope(prediction)


async def _submit(call: Call, state: _State, route: str) -> web.StreamResponse:
    params = await call.json()
    problem = _validate(params, route, call.request, state)
    if problem is not None:
        return _error(call, 400, problem)
    emu = call.emu
    if not emu.has_balance(PROVIDER):
        return _error(call, 402, "Insufficient balance: please top up your account")
    for name, value in _DEFAULTS.items():
        params.setdefault(name, value)
    if route == "audio-to-audio":
        params.setdefault("init_noise_level", 0.9)
    # The emulator builds request ids from the model name, which must not hold slashes.
    job = emu.create_job(PROVIDER, f"stable-audio-3-{route}", params, call.body)
    state.routes[job.request_id] = route
    _hold_for_concurrency(emu, job)
    if params.get("enable_sync_mode"):
        if SYNC_TIMEOUT_MARKER in job.prompt:
            # The documented quirk: the wait gives up with a 504 while the job carries on.
            return call.error(504, {"code": 504,
                                    "message": "sync mode timed out, poll the prediction",
                                    "data": await _prediction(call, state, job)})
        await emu.wait_until_done(job)
    return _reply(call, await _prediction(call, state, job))


def _hold_for_concurrency(emu: Emulator, job: EmulatedJob) -> None:
    """Delay ``job`` until one of the provider's concurrency slots is free (first in, first out).

    Jobs start in the order they arrive, so the new one starts once all but ``limit - 1`` of
    the earlier ones have finished: at the ``limit``-th latest of their end times.
    """
    limit = emu.config.concurrency.get(PROVIDER)
    if not limit:
        return
    ends = heapq.nlargest(limit, (j.done_at for j in emu.jobs.values()
                                  if j.provider == PROVIDER and j is not job))
    if len(ends) < limit or ends[-1] <= job.queued_until:
        return
    shift = ends[-1] - job.queued_until
    job.queued_until += shift
    job.done_at += shift


def _number(params: dict[str, Any], name: str) -> float | None:
    value = params.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _validate(params: dict[str, Any], route: str, request: web.Request, state: _State
              ) -> str | None:
    """The first problem with a submit body (a JSON object), worded ``<field>: <reason>``."""
    prompt = params.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        return "prompt: is required"
    negative = params.get("negative_prompt")
    if negative is not None and not isinstance(negative, str):
        return "negative_prompt: must be a string"
    ranges = dict(_RANGES)
    if route == "audio-to-audio":
        ranges["init_noise_level"] = (0, 1)
    for name, (lo, hi) in ranges.items():
        if name not in params:
            continue
        value = _number(params, name)
        if value is None or not lo <= value <= hi:
            return f"{name}: must be a number between {lo:g} and {hi:g}"
    steps = params.get("num_inference_steps")
    if steps is not None and steps != int(steps):
        return "num_inference_steps: must be an integer"
    fmt = params.get("output_format", "mp3")
    if fmt not in FORMATS:
        return f"output_format: must be one of {', '.join(FORMATS)}"
    if fmt not in SUPPORTED_FORMATS:
        return f"output_format: the emulator renders only {', '.join(sorted(SUPPORTED_FORMATS))}"
    seed = params.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        return "seed: must be an integer"
    takes_audio = route in ("audio-to-audio", "audio-inpainting")
    for name, used_by in (("audio", takes_audio),
                          ("init_noise_level", route == "audio-to-audio"),
                          ("mask_start_seconds", route == "audio-inpainting"),
                          ("mask_end_seconds", route == "audio-inpainting")):
        if name in params and not used_by:
            return f"{name}: is not accepted by {FAMILY}/{route}"
    if takes_audio:
        problem = _audio_problem(params.get("audio"), request, state)
        if problem is not None:
            return problem
    if route == "audio-inpainting":
        start = _number(params, "mask_start_seconds")
        end = _number(params, "mask_end_seconds")
        if start is None or start < 0:
            return "mask_start_seconds: is required, a number of seconds >= 0"
        if end is None or end < 0:
            return "mask_end_seconds: is required, a number of seconds >= 0"
        if end <= start:
            return "mask_end_seconds: must be greater than mask_start_seconds"
    return None


def _audio_problem(audio: Any, request: web.Request, state: _State) -> str | None:
    """Why ``audio`` is not an input the model can fetch: not a URL, or an unknown upload."""
    if not isinstance(audio, str) or not audio.startswith(("http://", "https://")):
        return "audio: is required, an http(s) URL"
    parts = urlsplit(audio)
    if parts.netloc == request.host and parts.path.startswith(MEDIA_PREFIX) \
            and parts.path[len(MEDIA_PREFIX):] not in state.media:
        return f"audio: no uploaded file at {audio}"
    return None


async def _result(call: Call, state: _State) -> web.StreamResponse:
    job = call.job(call.request.match_info["request_id"])
    call.emu.observe(job)
    return _reply(call, await _prediction(call, state, job))


async def _prediction(call: Call, state: _State, job: EmulatedJob) -> dict[str, Any]:
    """The prediction object: the envelope's ``data``."""
    emu = call.emu
    phase = emu.phase(job)
    base = call.base_url
    data: dict[str, Any] = {
        "id": job.request_id,
        "model": f"{FAMILY}/{state.routes.get(job.request_id, 'music')}",
        "status": {"QUEUED": "created", "PROCESSING": "processing"}.get(phase, "completed"),
        "outputs": [],
        "urls": {"get": f"{base}/api/v3/predictions/{job.request_id}/result"},
        "error": "",
        "has_nsfw_contents": [],
        "timings": {"inference": 0},
        "created_at": emu.wall_time(job.created),
    }
    if phase != "DONE":
        return data
    # Emulated milliseconds, as the real service would report them.
    data["timings"]["inference"] = round(
        (job.done_at - job.queued_until) / emu.config.time_scale * 1000)
    if job.outcome == "FAILED":
        data["status"] = "failed"
        data["error"] = "Generation failed: the model could not produce audio for this prompt"
    elif job.outcome == "ERROR":
        data["status"] = "failed"
        data["error"] = "Internal server error: the worker stopped unexpectedly"
    elif job.params.get("enable_base64_output"):
        audio, _ = await emu.render_off_loop(job)
        data["outputs"] = [base64.b64encode(audio).decode()]
        data["has_nsfw_contents"] = [False]
    else:
        data["outputs"] = [emu.cdn_url(call.request, job)]
        data["has_nsfw_contents"] = [False]
    return data


async def _upload(call: Call, state: _State) -> web.StreamResponse:
    request = call.request
    if request.content_type != "multipart/form-data":
        return _error(call, 400, "file: send a multipart/form-data body with a file field")
    too_large = f"file: larger than {MAX_UPLOAD_BYTES // 1_000_000} MB"
    if (request.content_length or 0) > MAX_UPLOAD_BYTES + _CHUNK:
        return _error(call, 400, too_large)
    file: tuple[bytes, str, str] | None = None
    try:
        async for part, data in form_parts(request, chunk_size=_CHUNK,
                                           max_part=MAX_UPLOAD_BYTES):
            if part.name == "file" and part.filename is not None:
                content_type = part.headers.get("Content-Type", "application/octet-stream")
                file = (bytes(data), part.filename, content_type)
    except TooLarge:
        return _error(call, 400, too_large)
    except (ValueError, LookupError, RuntimeError):
        return _error(call, 400, "body: malformed multipart/form-data")
    if file is None or not file[0]:
        return _error(call, 400, "file: is required")
    data_bytes, filename, content_type = file
    name = _stored_name(filename)
    state.media[name] = (data_bytes, content_type)
    return _envelope({
        "type": content_type.split("/")[0],
        "download_url": f"{call.base_url}{MEDIA_PREFIX}{name}",
        "filename": filename,
        "size": len(data_bytes),
    })


def _stored_name(filename: str) -> str:
    suffix = PurePosixPath(filename).suffix
    return uuid.uuid4().hex + (suffix.lower() if _SUFFIX.fullmatch(suffix) else "")


async def _ticket(call: Call, state: _State) -> web.StreamResponse:
    """``POST /api/v3/media/uploads``: a ticket to PUT one file, as ``wavespeed`` 2.0.5 asks."""
    body = await call.json()
    filename, size = body.get("filename"), body.get("size")
    content_type = body.get("content_type", "application/octet-stream")
    if not isinstance(filename, str) or not filename:
        return _error(call, 400, "filename: is required")
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        return _error(call, 400, "size: is required, a positive number of bytes")
    if size > MAX_UPLOAD_BYTES:
        return _error(call, 400, f"size: larger than {MAX_UPLOAD_BYTES // 1_000_000} MB")
    if not isinstance(content_type, str) or not content_type:
        return _error(call, 400, "content_type: must be a MIME type")
    name = _stored_name(filename)
    state.tickets[name] = (size, content_type)
    base = call.base_url
    return _envelope({
        "upload": {"method": "PUT", "url": f"{base}{UPLOAD_PREFIX}{name}",
                   "headers": {"Content-Type": content_type}},
        "download_url": f"{base}{MEDIA_PREFIX}{name}",
        "filename": filename,
        "size": size,
    })


async def _put(request: web.Request, state: _State) -> web.StreamResponse:
    """The ticket's PUT: presigned, so no key; the body must be the size the ticket declared."""
    name = request.match_info["name"]
    ticket = state.tickets.get(name)
    if ticket is None:
        return web.Response(status=404, text="NoSuchUpload")
    size, content_type = ticket
    if request.content_length is not None and request.content_length != size:
        return web.Response(status=400, text=f"expected {size} bytes, got {request.content_length}")
    data = await request.read()
    if len(data) != size:
        return web.Response(status=400, text=f"expected {size} bytes, got {len(data)}")
    del state.tickets[name]
    state.media[name] = (data, content_type)
    return web.Response(status=200)
