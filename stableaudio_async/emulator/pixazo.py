"""Pixazo's contract: gateway submit routes, ``/v2/requests/status/{id}``, and its error bodies.

Readings (``EmulatorConfig.readings["pixazo"]``): ``strict`` (the default) holds a
``sync_mode`` submit until the request is final and answers it with the status body, the audio
inline as a data URI, and lists ``output.media_url``; ``loose`` answers a ``sync_mode`` submit
202 like any other (the data URI then comes in the status body) and gives ``media_url`` as a
plain string.
"""

from __future__ import annotations

import base64
from typing import Any

from aiohttp import web

from stableaudio_async.emulator.audio import CONTENT_TYPES, SUPPORTED_FORMATS
from stableaudio_async.emulator.pipeline import Call, Contract, Routes, header
from stableaudio_async.emulator.server import Emulator
from stableaudio_async.emulator.state import EmulatedJob

__all__ = ["add_routes"]

PROVIDER = "pixazo"
MODEL = "stable-audio-3-small-music"
TASKS = ("text-to-audio", "audio-to-audio")
FORMATS = ("mp3", "wav", "flac", "ogg", "opus", "m4a", "aac")
KEY_HEADER = "Ocp-Apim-Subscription-Key"

_RANGES: dict[str, tuple[float, float]] = {
    "duration": (1, 120),
    "num_inference_steps": (1, 100),
    "guidance_scale": (0, 25),
    "init_noise_level": (0, 1),
}


def _bad_request(call: Call, message: str) -> web.Response:
    return call.error(400, {"error": "Bad Request", "message": message})


#: The gateway's checks, in its order: subscription key, then rate limit (with Retry-After).
CONTRACT = Contract(
    provider=PROVIDER,
    key=header(KEY_HEADER),
    unauthorized=lambda call: call.error(401, {
        "statusCode": 401,
        "message": "Access denied due to invalid subscription key. Make sure to provide a "
                   "valid key for an active subscription.",
    }),
    throttled=lambda call, wait: call.error(
        429, {"statusCode": 429, "message": "Rate limit is exceeded. Try again later."},
        headers=call.retry_after(wait)),
    invalid_json=lambda call: _bad_request(call, "request body is not valid JSON"),
    not_object=lambda call: _bad_request(call, "request body must be a JSON object"),
    not_found=lambda call: call.error(404, {"error": "Not Found", "message": "Request not found"}),
)


def add_routes(app: web.Application, emu: Emulator) -> None:
    """Mount Pixazo's routes on ``app``."""
    routes = Routes(app, emu, CONTRACT)
    for task in TASKS:
        route = f"{MODEL}-{task}"

        async def submit(call: Call, route: str = route, task: str = task
                         ) -> web.StreamResponse:
            return await _submit(call, route, task)

        routes.submit(f"/{route}/v1/{route}-request", submit)
    routes.poll("/v2/requests/status/{request_id}", _status)


def _validate(params: dict[str, Any], task: str) -> str | None:
    prompt = params.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        return "prompt is required"
    for name, (lo, hi) in _RANGES.items():
        value = params.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
            return f"{name} must be a number between {lo:g} and {hi:g}"
    steps = params.get("num_inference_steps")
    if steps is not None and steps != int(steps):
        return "num_inference_steps must be an integer"
    fmt = params.get("output_format", "mp3")
    if fmt not in FORMATS:
        return f"output_format must be one of {', '.join(FORMATS)}"
    if fmt not in SUPPORTED_FORMATS:
        return f"the emulator renders only {', '.join(sorted(SUPPORTED_FORMATS))}, not {fmt}"
    bitrate = params.get("bitrate")
    if bitrate is not None and not (isinstance(bitrate, str) and bitrate.rstrip("kK").isdigit()):
        return "bitrate must look like '192k'"
    seed = params.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        return "seed must be an integer"
    if task == "audio-to-audio":
        audio_url = params.get("audio_url")
        if not isinstance(audio_url, str) or not audio_url.startswith(("http://", "https://")):
            return "audio_url is required and must be an http(s) URL"
    return None


async def _submit(call: Call, route: str, task: str) -> web.StreamResponse:
    params = await call.json()
    problem = _validate(params, task)
    if problem is not None:
        return _bad_request(call, problem)
    emu = call.emu
    if not emu.has_balance(PROVIDER):
        return call.error(402, {"error": "Insufficient Balance",
                                "message": "Please top up your account."})
    params.setdefault("duration", 30)
    params.setdefault("output_format", "mp3")
    job = emu.create_job(PROVIDER, route, params, call.body)
    if params.get("sync_mode") and call.reading == "strict":
        # "true returns the audio inline": read strictly, in the submit's own reply. The
        # loose reading queues it as any other, the inline audio coming in the status body.
        await emu.wait_until_done(job)
        return web.json_response(_status_body(call, job), status=200)
    polling_url = f"{call.base_url}/v2/requests/status/{job.request_id}"
    return web.json_response(
        {"request_id": job.request_id, "status": "QUEUED", "polling_url": polling_url},
        status=202)


async def _status(call: Call) -> web.StreamResponse:
    job = call.job(call.request.match_info["request_id"])
    call.emu.observe(job)
    return web.json_response(_status_body(call, job))


def _status_body(call: Call, job: EmulatedJob) -> dict[str, Any]:
    emu = call.emu
    phase = emu.phase(job)
    status = job.outcome if phase == "DONE" else phase
    body: dict[str, Any] = {
        "request_id": job.request_id,
        "status": status,
        "model_id": job.model,
        "error": None,
        "output": None,
        "created_at": emu.wall_time(job.created),
        "updated_at": emu.wall_time(min(emu.now(), job.done_at)),
        "completed_at": emu.wall_time(job.done_at) if phase == "DONE" else None,
    }
    if status == "COMPLETED":
        if job.params.get("sync_mode"):
            data, content_type = emu.render(job)
            url = f"data:{content_type};base64,{base64.b64encode(data).decode()}"
        else:
            url = emu.cdn_url(call.request, job)
            content_type = CONTENT_TYPES[job.params["output_format"]]
        # A list, as documented; third-party clients have seen a plain string (loose).
        media: str | list[str] = [url] if call.reading == "strict" else url
        body["output"] = {"media_url": media, "media_type": content_type}
    elif status == "FAILED":
        body["error"] = "Generation failed: the model could not produce audio for this prompt"
    elif status == "ERROR":
        body["error"] = "Internal system error"
    return body
