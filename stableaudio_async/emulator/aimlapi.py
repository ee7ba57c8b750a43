"""AI/ML API's contract: ``POST`` and ``GET /v2/generate/audio`` for Stable Audio Open, and its error bodies.

A submit answers ``{"id": "<uuid>:stable-audio", "status": "queued"}``; polling
``GET /v2/generate/audio?generation_id=<id>`` walks ``queued`` → ``generating`` →
``completed`` (with ``audio_file``, a WAV on the CDN) or ``error`` (with ``error: {name,
message}``, still HTTP 200) over the scaled clock. Both ``emulator:fail`` and
``emulator:error`` end in ``error``, the only failure word the API has.

Errors have the shape ``{"message", "path", "requestId", "statusCode", "timestamp"}``. The
checks run in this order: key (401), rate limit (429, no Retry-After: the API documents
none), body (400), credits (403 "no credits"). No webhooks and no cancel route exist.
"""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from stableaudio_async.emulator.audio import CONTENT_TYPES
from stableaudio_async.emulator.pipeline import Call, Contract, Routes, authorization
from stableaudio_async.emulator.server import Emulator
from stableaudio_async.emulator.state import EmulatedJob

__all__ = ["add_routes"]

PROVIDER = "aimlapi"
MODEL = "stable-audio"
ROUTE = "/v2/generate/audio"
#: Stable Audio Open renders WAV; the API has no field to ask for anything else.
OUTPUT_FORMAT = "wav"
DEFAULT_SECONDS_TOTAL = 30
#: Documented integer fields: (lowest, highest).
_INTEGERS: dict[str, tuple[int, int]] = {
    "seconds_start": (1, 47),
    "seconds_total": (1, 47),
    "steps": (1, 1000),
}
_FAILURES = {
    "FAILED": {"name": "GenerationError",
               "message": "The model could not generate audio for this prompt"},
    "ERROR": {"name": "InternalServerError", "message": "Internal system error"},
}


def _error(call: Call, status: int, message: str) -> web.Response:
    """A reply in AI/ML API's error shape."""
    return call.error(status, {
        "message": message,
        "path": call.request.path,
        "requestId": str(uuid.uuid4()),
        "statusCode": status,
        "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    })


#: Key first, then the rate limit (every call counts).
CONTRACT = Contract(
    provider=PROVIDER,
    key=authorization("Bearer"),
    unauthorized=lambda call: _error(call, 401, "Unauthorized: invalid or missing API key"),
    throttled=lambda call, wait: _error(call, 429, "Too many requests, please try again later"),
    invalid_json=lambda call: _error(call, 400, "request body is not valid JSON"),
    not_object=lambda call: _error(call, 400, "request body must be a JSON object"),
)


def add_routes(app: web.Application, emu: Emulator) -> None:
    """Mount AI/ML API's audio generation routes on ``app``."""
    # Bytes per finished generation, so a poll's file_size costs one render, not one each.
    sizes: dict[str, int] = {}

    async def status(call: Call) -> web.StreamResponse:
        return await _status(call, sizes)

    routes = Routes(app, emu, CONTRACT)
    routes.submit(ROUTE, _submit)
    routes.poll(ROUTE, status)


def _validate(params: dict[str, Any]) -> str | None:
    if params.get("model") != MODEL:
        return f"model must be one of the following values: {MODEL}"
    prompt = params.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        return "prompt must be a non-empty string"
    for name, (lo, hi) in _INTEGERS.items():
        value = params.get(name)
        if value is None:
            continue
        # JSON has one number type: 30.0 is the integer 30 to a JavaScript server.
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or not math.isfinite(value) or value != int(value):
            return f"{name} must be an integer number"
        if not lo <= value <= hi:
            return f"{name} must not be less than {lo} and not greater than {hi}"
    return None


async def _submit(call: Call) -> web.StreamResponse:
    params = await call.json()
    problem = _validate(params)
    if problem is not None:
        return _error(call, 400, problem)
    emu = call.emu
    if not emu.has_balance(PROVIDER):
        return _error(call, 403, "You do not have enough credits to run this model. "
                                 "Top up your balance to continue.")
    # Only the documented fields: anything else in the body is ignored, not rendered from.
    known = {name: int(params[name]) for name in _INTEGERS if params.get(name) is not None}
    job = emu.create_job(PROVIDER, MODEL, {
        "prompt": params["prompt"], **known,
        "duration": known.get("seconds_total", DEFAULT_SECONDS_TOTAL), "seed": None,
        "output_format": OUTPUT_FORMAT,
    }, call.body, request_id=f"{uuid.uuid4()}:{MODEL}")
    return web.json_response({"id": job.request_id, "status": "queued"})


async def _status(call: Call, sizes: dict[str, int]) -> web.StreamResponse:
    generation_id = call.request.query.get("generation_id")
    if not generation_id:
        return _error(call, 400, "generation_id must be a string")
    job = call.find(generation_id)
    if job is None:
        return _error(call, 404, f"Generation {generation_id} not found")
    call.emu.observe(job)
    return web.json_response(await _generation(call, job, sizes))


async def _generation(call: Call, job: EmulatedJob, sizes: dict[str, int]) -> dict[str, Any]:
    emu = call.emu
    phase = emu.phase(job)
    body: dict[str, Any] = {"id": job.request_id, "status": "queued", "audio_file": None,
                            "error": None}
    if phase == "PROCESSING":
        body["status"] = "generating"
    elif phase == "DONE" and job.outcome == "COMPLETED":
        size = sizes.get(job.request_id)
        if size is None:
            # Rendered as the CDN will render it, but not through emu.render: nothing has been
            # served yet. Off the event loop, so other requests are not held up.
            data, _ = await emu.audio_off_loop(job)
            size = sizes[job.request_id] = len(data)
        body["status"] = "completed"
        body["audio_file"] = {
            "url": emu.cdn_url(call.request, job),
            "content_type": CONTENT_TYPES[OUTPUT_FORMAT],
            "file_name": f"{job.request_id.partition(':')[0]}.{OUTPUT_FORMAT}",
            "file_size": size,
        }
    elif phase == "DONE":
        body["status"] = "error"
        body["error"] = _FAILURES[job.outcome]
    return body
