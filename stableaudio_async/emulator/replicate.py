"""Replicate's contract: the official model's predictions route, prediction polling and cancel, its errors.

``POST /v1/models/stability-ai/stable-audio-2.5/predictions`` answers 201 with the prediction.
``Prefer: wait=N`` (1–60, bare ``wait`` meaning 60) holds that reply until the prediction is
final or N emulated seconds have passed, whichever comes first, and then answers with the
prediction as it stands, finished or not (one still running reads ``starting``; see below).
``GET /v1/predictions/{id}`` polls it and
``POST /v1/predictions/{id}/cancel`` cancels it (a final prediction is returned unchanged).

Status words: ``starting`` (queued) → ``processing`` → ``succeeded`` | ``failed`` |
``canceled``. The prompt markers end a prediction ``failed``: ``emulator:fail`` as a model
failure, ``emulator:error`` as Replicate's own interruption. Outputs are served from
``/replicate-delivery/…`` (standing in for ``replicate.delivery``) and removed
:data:`OUTPUT_RETENTION` emulated seconds after creation: the prediction then says
``data_removed: true`` with no output, and the file answers 404.

Checks run in this order: token (401), rate limit (429 with ``Retry-After``), body (400),
input against the model's schema (422 listing every invalid field), credit (402). Error
bodies are ``{"title", "detail", "status"}``. Creates count against one window (600 per
minute), every other call against another (3000 per minute), as :meth:`Emulator.admit` does.
Unknown input fields are refused; the real API's handling of them is unsure, and refusing
keeps every request the emulator accepts acceptable to Replicate.

Wire facts from the official client, ``replicate`` 1.0.7 (``tests/test_official_replicate.py``
drives it, unmodified, against this module):

* A prediction must carry ``id``, ``model``, ``version`` and ``status`` (its pydantic model
  requires them; ``version`` is a string even for official models, which are run by name).
  ``status`` must be one of ``starting processing succeeded failed canceled``: anything else
  (e.g. ``aborted``) fails the client's validation. The final three end ``wait()``.
* ``wait=True`` sends ``Prefer: wait``, ``wait=N`` sends ``Prefer: wait=N``, with a read
  timeout of N + 0.5 s (60.5 s for bare ``wait``). After a held create, ``run()`` polls only if
  the status is ``starting``; any other status is taken as final. So a hold that runs out
  before the prediction is final answers ``starting`` even while it is processing (the client
  says the API does so), or ``run()`` would return no output.
* Failure: ``status: failed`` with the message in ``error``; ``run()`` raises ``ModelError``
  with that message. Cancel: ``POST /v1/predictions/{id}/cancel`` answers the prediction,
  ``status: canceled``.
* Errors: any 4xx/5xx becomes ``ReplicateError`` reading ``type``, ``title``, ``detail`` and
  ``instance`` from the body (RFC 7807); the status comes from the HTTP status line.
* Retries: 429, 503 and 504 are retried (10 attempts) only for GET, HEAD, PUT, DELETE,
  OPTIONS and TRACE, never for the POSTs (create, cancel). ``Retry-After`` is read as whole
  seconds (digits only) or an ISO date; anything else (the fractional seconds this emulator
  sends on a scaled clock) falls back to 0.1 s × 2ⁿ backoff.
* ``predictions.list(cursor)`` is ``GET /v1/predictions`` (or the ``next``/``previous`` URL
  it was given): ``{previous, next, results}``, each result a prediction with its ``input``.
  This module lists the key's predictions newest first, :data:`PAGE_SIZE` per page, ``next``
  a ``?cursor=`` URL; the engine reads it to find a prediction whose create reply was lost.
* Output strings are wrapped as downloadable ``FileOutput`` only when they start ``https:``
  or ``data:``; the emulator's ``http://`` delivery URLs stay plain strings.
"""

from __future__ import annotations

import base64
import hashlib
import math
import uuid
from typing import Any

import anyio
from aiohttp import web

from stableaudio_async.emulator.pipeline import Call, Contract, Routes, authorization
from stableaudio_async.emulator.server import Emulator
from stableaudio_async.emulator.state import EmulatedJob

__all__ = ["DELIVERY_PREFIX", "OUTPUT_RETENTION", "add_routes"]

PROVIDER = "replicate"
MODEL = "stability-ai/stable-audio-2.5"
#: Emulated seconds from creation until a prediction's input and output are deleted.
OUTPUT_RETENTION = 3600.0
#: Where outputs are served: the emulator's stand-in for ``https://replicate.delivery``.
DELIVERY_PREFIX = "/replicate-delivery"
MAX_WAIT = 60
#: Predictions per page of ``GET /v1/predictions``.
PAGE_SIZE = 100
#: The prediction's ``version``: a stand-in in the documented 64-hex shape (official models are
#: run without naming one, and what Replicate reports for them is unconfirmed here).
VERSION = hashlib.sha256(MODEL.encode()).hexdigest()
FORMAT = "mp3"

#: The model's input schema: name → (JSON type, lowest, highest).
_SCHEMA: dict[str, tuple[str, float | None, float | None]] = {
    "prompt": ("string", None, None),
    "duration": ("integer", 1, 190),
    "steps": ("integer", 4, 8),
    "cfg_scale": ("number", 1, 25),
    "seed": ("integer", None, None),
}
_DEFAULTS: dict[str, Any] = {"duration": 190, "steps": 8, "cfg_scale": 1}
_WEBHOOK_EVENTS = frozenset({"start", "output", "logs", "completed"})
_TOP_LEVEL = frozenset({"input", "webhook", "webhook_events_filter", "stream"})

_FAILURE = "Prediction failed: the model could not generate audio for this prompt."
_INTERRUPTED = "Prediction interrupted; please retry (code: PA)"


def _error(call: Call, status: int, title: str, detail: str, *,
           headers: dict[str, str] | None = None, **extra: Any) -> web.Response:
    """A reply in Replicate's error shape."""
    return call.error(status, {"title": title, "detail": detail, "status": status, **extra},
                      headers=headers)


def _throttled(call: Call, wait: float) -> web.Response:
    resets = max(1, math.ceil(wait / call.emu.config.time_scale))
    return _error(call, 429, "Request was throttled",
                  f"Request was throttled. Your rate limit resets in ~{resets}s.",
                  headers=call.retry_after(wait))


#: The API's checks in its order: token, then rate limit (429 with Retry-After).
CONTRACT = Contract(
    provider=PROVIDER,
    key=authorization("Bearer"),
    unauthorized=lambda call: _error(
        call, 401, "Unauthenticated", "Invalid token." if "Authorization" in call.request.headers
        else "Authentication credentials were not provided."),
    throttled=_throttled,
    invalid_json=lambda call: _error(call, 400, "Bad request",
                                     "JSON parse error: the body is not valid JSON."),
    not_object=lambda call: _error(call, 400, "Bad request",
                                   "The request body must be a JSON object."),
    not_found=lambda call: _error(call, 404, "Not found", "Not found."),
)


def add_routes(app: web.Application, emu: Emulator) -> None:
    """Mount Replicate's prediction routes and its delivery CDN on ``app``."""
    api = _Replicate(emu)
    routes = Routes(app, emu, CONTRACT)
    routes.submit("/v1/models/{owner}/{name}/predictions", api.create)
    routes.poll("/v1/predictions", api.list)
    routes.poll("/v1/predictions/{id}", api.get)
    routes.add("POST", "/v1/predictions/{id}/cancel", api.cancel)
    app.router.add_get(DELIVERY_PREFIX + "/{id}/{name}", api.deliver)


def _prediction_id() -> str:
    # Replicate's ids are 26 lowercase base32 characters, e.g. "gm3qorzdhgbfurvjtvhg6dckhu".
    return base64.b32encode(uuid.uuid4().bytes).decode().rstrip("=").lower()


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


# A schema violation as (type, field, description), in JSON Schema validator wording.
_Problem = tuple[str, str, str]


def _input_problems(inputs: dict[str, Any]) -> list[_Problem]:
    """Every way ``inputs`` breaks the model's schema."""
    problems: list[_Problem] = []
    if "prompt" not in inputs:
        problems.append(("required", "input", "prompt is required"))
    for name, value in inputs.items():
        if name not in _SCHEMA:
            problems.append(("additional_property_not_allowed", "input",
                             f"Additional property {name} is not allowed"))
            continue
        kind, lo, hi = _SCHEMA[name]
        given = _type_name(value)
        field = f"input.{name}"
        # JSON Schema: an integer is also a number, a number with a fraction is not an integer.
        if given != kind and not (kind == "number" and given == "integer"):
            problems.append(("invalid_type", field,
                             f"Invalid type. Expected: {kind}, given: {given}"))
        elif lo is not None and value < lo:
            problems.append(("number_gte", field, f"Must be greater than or equal to {lo:g}"))
        elif hi is not None and value > hi:
            problems.append(("number_lte", field, f"Must be less than or equal to {hi:g}"))
    return problems


def _top_level_problems(body: dict[str, Any]) -> list[_Problem]:
    problems: list[_Problem] = []
    for name in sorted(body.keys() - _TOP_LEVEL):
        problems.append(("additional_property_not_allowed", "(root)",
                         f"Additional property {name} is not allowed"))
    if "input" not in body:
        problems.append(("required", "(root)", "input is required"))
    elif not isinstance(body["input"], dict):
        problems.append(("invalid_type", "input", "Invalid type. Expected: object, given: "
                                                  f"{_type_name(body['input'])}"))
    webhook = body.get("webhook")
    if webhook is not None and not (isinstance(webhook, str)
                                    and webhook.startswith(("http://", "https://"))):
        problems.append(("format", "webhook", "Does not match format 'uri'"))
    events = body.get("webhook_events_filter")
    if events is not None and not (isinstance(events, list)
                                   and all(e in _WEBHOOK_EVENTS for e in events)):
        problems.append(("enum", "webhook_events_filter",
                         f"Must be a list of {', '.join(sorted(_WEBHOOK_EVENTS))}"))
    return problems


def _prefer_wait(header: str | None) -> int | str | None:
    """Seconds to hold from a ``Prefer`` header (``None``: no hold), or why it is invalid."""
    if header is None:
        return None
    for preference in header.split(","):
        token, _, value = preference.strip().partition("=")
        if token.strip().lower() != "wait":
            continue
        value = value.strip()
        if not value:
            return MAX_WAIT
        if not value.isdigit() or not 1 <= int(value) <= MAX_WAIT:
            return f"Prefer: wait must be a whole number of seconds from 1 to {MAX_WAIT}"
        return int(value)
    return None


class _Replicate:
    """The routes, sharing the emulator and the events that wake held requests on cancel."""

    def __init__(self, emu: Emulator) -> None:
        self.emu = emu
        self.cancelled: dict[str, anyio.Event] = {}
        #: Each prediction's input as sent (the job's params also hold the defaults).
        self.inputs: dict[str, dict[str, Any]] = {}

    # -- routes --------------------------------------------------------------------------

    async def create(self, call: Call) -> web.StreamResponse:
        emu = self.emu
        model = f"{call.request.match_info['owner']}/{call.request.match_info['name']}"
        if model != MODEL:
            return _error(call, 404, "Not found", f"Model {model} not found.")
        hold = _prefer_wait(call.request.headers.get("Prefer"))
        if isinstance(hold, str):
            return _error(call, 400, "Invalid Prefer header", hold)
        body = await call.json()
        problems = _top_level_problems(body)
        if not problems:
            problems = _input_problems(body["input"])
        if problems:
            detail = "".join(f"- {name}: {text}\n" for _, name, text in problems)
            return _error(call, 422, "Input validation failed", detail, invalid_fields=[
                {"type": kind, "field": name, "description": text}
                for kind, name, text in problems])
        if not emu.has_balance(PROVIDER):
            return _error(
                call, 402, "Insufficient credit",
                "You have insufficient credit to run this model. Go to "
                "https://replicate.com/account/billing#billing to purchase credit. Once you "
                "purchase credit, please wait a few minutes before trying again.")
        inputs = {**_DEFAULTS, **body["input"]}
        params = {**inputs, "output_format": FORMAT}
        job = emu.create_job(PROVIDER, MODEL, params, call.body, request_id=_prediction_id())
        self.inputs[job.request_id] = body["input"]
        event = self.cancelled[job.request_id] = anyio.Event()
        if hold is None:
            return web.json_response(self.prediction(call, job), status=201)
        timeout = min(hold * emu.config.time_scale, max(0.0, job.done_at - emu.now()))
        with anyio.move_on_after(timeout):
            await event.wait()
        prediction = self.prediction(call, job)
        if prediction["status"] == "processing":
            # The hold ran out first: Replicate answers "starting" then, even for a running
            # prediction, and replicate-python's run() polls only on "starting".
            prediction["status"] = "starting"
        return web.json_response(prediction, status=201)

    async def get(self, call: Call) -> web.StreamResponse:
        job = call.job(call.request.match_info["id"])
        self.emu.observe(job)
        return web.json_response(self.prediction(call, job))

    async def list(self, call: Call) -> web.StreamResponse:
        """The key's predictions, newest first, a page of :data:`PAGE_SIZE` at a time."""
        cursor = call.request.query.get("cursor", "0")
        if not cursor.isdigit():
            return _error(call, 400, "Bad request", "Invalid cursor.")
        start = int(cursor)
        newest = [job for job in reversed(self.emu.jobs.values()) if job.provider == PROVIDER]
        page = newest[start:start + PAGE_SIZE]
        api = f"{call.base_url}/v1/predictions"
        following = start + PAGE_SIZE
        return web.json_response({
            "previous": f"{api}?cursor={max(0, start - PAGE_SIZE)}" if start else None,
            "next": f"{api}?cursor={following}" if following < len(newest) else None,
            "results": [self.prediction(call, job) for job in page],
        })

    async def cancel(self, call: Call) -> web.StreamResponse:
        job = call.job(call.request.match_info["id"])
        if job.cancelled_at is None and self.emu.phase(job) != "DONE":
            job.cancelled_at = self.emu.now()
            call.stats.cancelled += 1
            self.cancelled[job.request_id].set()
        # A prediction already final is returned as it is: there is nothing left to cancel.
        return web.json_response(self.prediction(call, job))

    async def deliver(self, request: web.Request) -> web.StreamResponse:
        job = self.emu.jobs.get(request.match_info["id"])
        if job is None or job.provider != PROVIDER or self.status(job) != "succeeded" \
                or self.removed(job) or request.match_info["name"] != f"output.{FORMAT}":
            return web.Response(status=404, text="Not Found")
        self.emu.provider_stats(PROVIDER).downloads += 1
        # Rendered off the loop, as the shared CDN does, so request stamps are not delayed.
        data, content_type = await self.emu.render_off_loop(job)
        return web.Response(body=data, content_type=content_type)

    # -- the prediction ------------------------------------------------------------------

    def status(self, job: EmulatedJob) -> str:
        """The prediction's status word now, on the scaled clock."""
        if job.cancelled_at is not None:
            return "canceled"
        phase = self.emu.phase(job)
        if phase == "QUEUED":
            return "starting"
        if phase == "PROCESSING":
            return "processing"
        return "succeeded" if job.outcome == "COMPLETED" else "failed"

    def removed(self, job: EmulatedJob) -> bool:
        """Whether the prediction's data has been deleted (only ever once it is final)."""
        final = job.cancelled_at is not None or self.emu.phase(job) == "DONE"
        expiry = job.created + OUTPUT_RETENTION * self.emu.config.time_scale
        return final and self.emu.now() >= expiry

    def prediction(self, call: Call, job: EmulatedJob) -> dict[str, Any]:
        emu = self.emu
        scale = emu.config.time_scale
        now = emu.now()
        status = self.status(job)
        ended = job.cancelled_at if job.cancelled_at is not None else job.done_at
        started = job.queued_until if min(now, ended) >= job.queued_until else None
        final = status in ("succeeded", "failed", "canceled")
        removed = self.removed(job)
        api = f"{call.base_url}/v1/predictions/{job.request_id}"
        body: dict[str, Any] = {
            "id": job.request_id,
            "model": job.model,
            "version": VERSION,
            "input": {} if removed else self.inputs.get(job.request_id, {}),
            "logs": "",
            "output": None,
            "data_removed": removed,
            "error": None,
            "status": status,
            "created_at": emu.wall_time(job.created),
            "started_at": emu.wall_time(started) if started is not None else None,
            "completed_at": emu.wall_time(ended) if final else None,
            "urls": {"get": api, "cancel": f"{api}/cancel"},
            "metrics": {},
        }
        if final and started is not None:
            body["metrics"] = {"predict_time": round((ended - started) / scale, 3),
                               "total_time": round((ended - job.created) / scale, 3)}
        if status == "succeeded" and not removed:
            body["output"] = f"{call.base_url}{DELIVERY_PREFIX}/{job.request_id}/output.{FORMAT}"
        elif status == "failed":
            body["error"] = _FAILURE if job.outcome == "FAILED" else _INTERRUPTED
        return body

