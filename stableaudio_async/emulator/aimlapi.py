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

import json
import math
import uuid
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from stableaudio_async.emulator.audio import CONTENT_TYPES
from stableaudio_async.emulator.server import EmulatedJob, Emulator

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


def add_routes(app: web.Application, emu: Emulator) -> None:
    """Mount AI/ML API's audio generation routes on ``app``."""
    # Bytes per finished generation, so a poll's file_size costs one render, not one each.
    sizes: dict[str, int] = {}

    async def submit(request: web.Request) -> web.StreamResponse:
        return await _submit(request, emu)

    async def status(request: web.Request) -> web.StreamResponse:
        return await _status(request, emu, sizes)

    app.router.add_post(ROUTE, submit)
    app.router.add_get(ROUTE, status)


def _error(request: web.Request, emu: Emulator, status: int, message: str) -> web.Response:
    """A reply in AI/ML API's error shape, counted by status."""
    emu.provider_stats(PROVIDER).errors[status] += 1
    return web.json_response({
        "message": message,
        "path": request.path,
        "requestId": str(uuid.uuid4()),
        "statusCode": status,
        "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }, status=status)


def _guard(request: web.Request, emu: Emulator, *, submit: bool) -> web.Response | None:
    """Key first, then the rate limit (every call counts)."""
    emu.provider_stats(PROVIDER).requests += 1
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or key != emu.config.api_key:
        return _error(request, emu, 401, "Unauthorized: invalid or missing API key")
    if emu.admit(PROVIDER, key, submit=submit) is not None:
        return _error(request, emu, 429, "Too many requests, please try again later")
    return None


def _validate(params: Any) -> str | None:
    if not isinstance(params, dict):
        return "request body must be a JSON object"
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


async def _submit(request: web.Request, emu: Emulator) -> web.StreamResponse:
    stats = emu.provider_stats(PROVIDER)
    stats.submits += 1
    refused = _guard(request, emu, submit=True)
    if refused is not None:
        return refused
    body = await request.read()
    try:
        params = json.loads(body)
    except ValueError:
        return _error(request, emu, 400, "request body is not valid JSON")
    problem = _validate(params)
    if problem is not None:
        return _error(request, emu, 400, problem)
    if not emu.has_balance(PROVIDER):
        return _error(request, emu, 403, "You do not have enough credits to run this model. "
                                         "Top up your balance to continue.")
    # Only the documented fields: anything else in the body is ignored, not rendered from.
    known = {name: int(params[name]) for name in _INTEGERS if params.get(name) is not None}
    job = emu.create_job(PROVIDER, MODEL, {
        "prompt": params["prompt"], **known,
        "duration": known.get("seconds_total", DEFAULT_SECONDS_TOTAL), "seed": None,
        "output_format": OUTPUT_FORMAT,
    }, body)
    # The shared store names jobs "<model>_<uuid>"; this API's ids are "<uuid>:<model>".
    del emu.jobs[job.request_id]
    job.request_id = f"{uuid.uuid4()}:{MODEL}"
    emu.jobs[job.request_id] = job
    return web.json_response({"id": job.request_id, "status": "queued"})


async def _status(request: web.Request, emu: Emulator, sizes: dict[str, int]
                  ) -> web.StreamResponse:
    stats = emu.provider_stats(PROVIDER)
    stats.polls += 1
    refused = _guard(request, emu, submit=False)
    if refused is not None:
        return refused
    generation_id = request.query.get("generation_id")
    if not generation_id:
        return _error(request, emu, 400, "generation_id must be a string")
    job = emu.jobs.get(generation_id)
    if job is None or job.provider != PROVIDER:
        return _error(request, emu, 404, f"Generation {generation_id} not found")
    emu.observe(job)
    return web.json_response(await _generation(request, emu, job, sizes))


async def _generation(request: web.Request, emu: Emulator, job: EmulatedJob,
                      sizes: dict[str, int]) -> dict[str, Any]:
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
            "url": emu.cdn_url(request, job),
            "content_type": CONTENT_TYPES[OUTPUT_FORMAT],
            "file_name": f"{job.request_id.partition(':')[0]}.{OUTPUT_FORMAT}",
            "file_size": size,
        }
    elif phase == "DONE":
        body["status"] = "error"
        body["error"] = _FAILURES[job.outcome]
    return body
