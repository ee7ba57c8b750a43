"""fal's contract: ``queue.fal.run`` submit routes, request status/response/cancel, ``detail`` errors.

Wire facts from the official client, ``fal-client`` 1.0.3 (``tests/test_official_fal.py``
drives it, unmodified, against this module served over TLS; ``Emulator(ssl_context=…)``):

* Submit is ``POST https://{FAL_QUEUE_RUN_HOST}/{app}`` — always https; the host comes from
  the environment once, at import (default ``queue.fal.run``) — with ``Authorization: Key
  <key>`` and the arguments as the JSON body. The reply must hold ``request_id``,
  ``status_url``, ``response_url`` and ``cancel_url``: the client uses those URLs from then on.
* Status is ``GET status_url?logs=true|false``; any 2xx is read (202 while pending is fine:
  this module answers 202 while pending in its ``strict`` reading, the default, and 200 in
  its ``loose`` one).
  ``IN_QUEUE`` needs ``queue_position``, ``IN_PROGRESS`` and ``COMPLETED`` need a ``logs`` key
  (null allowed); ``COMPLETED`` may carry ``metrics``, ``error`` and ``error_type``. Any other
  status word raises ``ValueError``.
* Result is ``GET response_url`` once the status is ``COMPLETED``; cancel is ``PUT
  cancel_url`` (any 2xx). Any 4xx/5xx raises ``FalClientHTTPError`` whose message is the body's
  ``detail`` (a list for 422s) and whose ``error_type`` is the body's ``error_type``, else the
  ``X-Fal-Error-Type`` header.
* Retries (every call, the submit POST included): 408, 409 and 429 always, up to 10 attempts,
  0.1 s × 2ⁿ with jitter (at most 30 s); ``Retry-After`` is not read. 502/503/504 are retried
  only when they look like the ingress's (no ``x-fal-request-id`` header, ``nginx`` in the
  body), and never a 504 carrying ``X-Fal-Request-Timeout-Type``.
"""

from __future__ import annotations

import base64
import binascii
import random
import uuid
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from stableaudio_async.emulator.pipeline import Call, Contract, Routes, authorization
from stableaudio_async.emulator.server import Emulator
from stableaudio_async.emulator.state import EmulatedJob

__all__ = ["add_routes"]

PROVIDER = "fal"
SA25 = "fal-ai/stable-audio-25"
SA_OPEN = "fal-ai/stable-audio"
TASKS = ("text-to-audio", "audio-to-audio", "inpaint")
MAX_SEED = 2**32 - 1
#: Every Stable Audio model on fal returns a WAV file.
FORMAT = "wav"
CONTENT_TYPE = "audio/wav"

_BALANCE_DETAIL = ("User is locked. Reason: Exhausted balance. Top up your balance at "
                   "fal.ai/dashboard/billing.")


class _Queue:
    """fal's queue in front of a limited number of runners: first come, first served.

    Without a concurrency limit configured every job starts after the emulator's queue time;
    with one, a job waits until one of that many runners is free.
    """

    def __init__(self, emu: Emulator) -> None:
        self.emu = emu
        limit = emu.config.concurrency.get(PROVIDER)
        #: When each runner is next free (real monotonic seconds); None: unlimited.
        self.free_at: list[float] | None = [0.0] * limit if limit else None
        self.order: list[EmulatedJob] = []

    def schedule(self, job: EmulatedJob) -> None:
        """Move the job's start (and end) back until a runner is free for it."""
        self.order.append(job)
        if self.free_at is None:
            return
        runner = min(range(len(self.free_at)), key=self.free_at.__getitem__)
        start = max(job.queued_until, self.free_at[runner])
        job.done_at += start - job.queued_until
        job.queued_until = start
        self.free_at[runner] = job.done_at

    def release(self, job: EmulatedJob) -> None:
        """A cancelled job gives its runner back, when no later job was scheduled behind it."""
        if self.free_at is None:
            return
        for runner, free_at in enumerate(self.free_at):
            if free_at == job.done_at:
                self.free_at[runner] = max(self.emu.now(), job.queued_until)
                return

    def position(self, job: EmulatedJob) -> int:
        """How many jobs ahead of this one still wait for a runner (0 without a limit)."""
        if self.free_at is None:
            return 0
        now = self.emu.now()
        ahead = 0
        for other in self.order:
            if other is job:
                break
            if other.cancelled_at is None and other.queued_until > now:
                ahead += 1
        return ahead


def _error(call: Call, status: int, body: dict[str, Any], error_type: str | None = None
           ) -> web.Response:
    """An error reply; one with an ``error_type`` names it in the body and a header too."""
    if error_type is None:
        return call.error(status, body)
    return call.error(status, {**body, "error_type": error_type},
                      headers={"X-Fal-Error-Type": error_type})


def _key(request: web.Request) -> str | None:
    """``Authorization: Key <key>``; None when absent, in another scheme, or empty."""
    return authorization("Key")(request) or None


def _unprocessable(call: Call, msg: str, kind: str) -> web.Response:
    """A 422 for the body as a whole, in FastAPI's shape."""
    return _error(call, 422, {"detail": [{"loc": ["body"], "msg": msg, "type": kind}]})


#: fal's checks, in order: the ``Key`` authorization, then a rate limit if one is set (fal
#: limits concurrency, not rate; a limit configured for tests still answers 429).
CONTRACT = Contract(
    provider=PROVIDER,
    key=_key,
    unauthorized=lambda call: _error(call, 401, {
        "detail": "No user found for Key ID and Secret" if call.key
        else "Authentication is required to access this application."}),
    throttled=lambda call, wait: _error(call, 429, {"detail": "Rate limit exceeded"}),
    invalid_json=lambda call: _unprocessable(call, "JSON decode error", "json_invalid"),
    not_object=lambda call: _unprocessable(call, "Input should be a valid dictionary",
                                           "dict_type"),
    not_found=lambda call: _error(call, 404, {"detail": "Request not found"}),
)


def add_routes(app: web.Application, emu: Emulator) -> None:
    """Mount fal's queue routes for Stable Audio 2.5 and Stable Audio Open on ``app``."""
    queue = _Queue(emu)
    routes = Routes(app, emu, CONTRACT)
    for task in TASKS:

        async def submit(call: Call, task: str = task) -> web.StreamResponse:
            return await _submit(call, queue, SA25, task)

        routes.submit(f"/{SA25}/{task}", submit)

    async def submit_open(call: Call) -> web.StreamResponse:
        return await _submit(call, queue, SA_OPEN, "text-to-audio")

    routes.submit(f"/{SA_OPEN}", submit_open)

    # Status, result and cancel live under the model id alone, never under a task sub-path.
    for model in (SA25, SA_OPEN):

        async def status(call: Call, model: str = model) -> web.StreamResponse:
            return await _status(call, queue, model)

        async def response(call: Call, model: str = model) -> web.StreamResponse:
            return await _response(call, model)

        async def cancel(call: Call, model: str = model) -> web.StreamResponse:
            return await _cancel(call, queue, model)

        routes.poll(f"/{model}/requests/{{request_id}}/status", status)
        routes.poll(f"/{model}/requests/{{request_id}}", response)
        routes.add("PUT", f"/{model}/requests/{{request_id}}/cancel", cancel)


class _Checker:
    """Collects validation errors in FastAPI's ``{loc, msg, type}`` shape, as fal returns them."""

    def __init__(self, params: dict[str, Any]) -> None:
        self.params = params
        self.errors: list[dict[str, Any]] = []

    def fail(self, name: str, msg: str, kind: str, **ctx: Any) -> None:
        error: dict[str, Any] = {"loc": ["body", name], "msg": msg, "type": kind}
        if name in self.params:
            error["input"] = self.params[name]
        if ctx:
            error["ctx"] = ctx
        self.errors.append(error)

    def number(self, name: str, lo: float, hi: float, *, integer: bool = False) -> None:
        value = self.params.get(name)
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, int | float):
            kind = "int" if integer else "float"
            self.fail(name, f"Input should be a valid {'integer' if integer else 'number'}",
                      f"{kind}_type")
            return
        if integer and value != int(value):
            self.fail(name, "Input should be a valid integer, got a number with a fractional "
                            "part", "int_from_float")
            return
        if value < lo:
            self.fail(name, f"Input should be greater than or equal to {lo:g}",
                      "greater_than_equal", ge=lo)
        elif value > hi:
            self.fail(name, f"Input should be less than or equal to {hi:g}",
                      "less_than_equal", le=hi)

    def boolean(self, name: str) -> None:
        value = self.params.get(name)
        if value is not None and not isinstance(value, bool):
            self.fail(name, "Input should be a valid boolean", "bool_type")

    def prompt(self) -> None:
        value = self.params.get("prompt")
        if value is None:
            self.fail("prompt", "Field required", "missing")
        elif not isinstance(value, str):
            self.fail("prompt", "Input should be a valid string", "string_type")
        elif not value.strip():
            self.fail("prompt", "String should have at least 1 character", "string_too_short")

    def audio_url(self) -> None:
        value = self.params.get("audio_url")
        if value is None:
            self.fail("audio_url", "Field required", "missing")
        elif not isinstance(value, str):
            self.fail("audio_url", "Input should be a valid string", "string_type")
        elif value.startswith("data:"):
            header, _, payload = value[5:].partition(",")
            try:
                data = base64.b64decode(payload, validate=True) \
                    if header.endswith(";base64") else payload.encode()
            except binascii.Error:
                data = b""
            if not data:
                self.fail("audio_url", "Invalid data URI: expected base64-encoded audio",
                          "value_error")
        elif not value.startswith(("http://", "https://")):
            self.fail("audio_url", "Input should be a valid URL or a data URI", "url_parsing")


def _validate(model: str, task: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    check = _Checker(params)
    check.prompt()
    check.number("seed", 0, MAX_SEED, integer=True)
    check.boolean("sync_mode")
    if model == SA_OPEN:
        check.number("seconds_total", 1, 47, integer=True)
        check.number("seconds_start", 0, 47, integer=True)
        check.number("steps", 1, 1000, integer=True)
        return check.errors
    check.number("num_inference_steps", 4, 8, integer=True)
    check.number("guidance_scale", 1, 25, integer=True)
    if task == "audio-to-audio":
        check.audio_url()
        check.number("strength", 0.01, 1)
        check.number("total_seconds", 1, 190, integer=True)
    else:
        check.number("seconds_total", 1, 190, integer=True)
    if task == "inpaint":
        check.audio_url()
        check.number("mask_start", 0, 190)
        check.number("mask_end", 0, 190)
        # fal's defaults for a missing bound are not documented: only a pair is compared.
        start, end = params.get("mask_start"), params.get("mask_end")
        if not check.errors and start is not None and end is not None and start >= end:
            check.fail("mask_end", "mask_end must be greater than mask_start", "value_error")
    return check.errors


async def _submit(call: Call, queue: _Queue, model: str, task: str) -> web.StreamResponse:
    params = await call.json()
    errors = _validate(model, task, params)
    if errors:
        return _error(call, 422, {"detail": errors})
    emu = call.emu
    if not emu.has_balance(PROVIDER):
        return _error(call, 403, {"detail": _BALANCE_DETAIL})
    length_key = "total_seconds" if task == "audio-to-audio" else "seconds_total"
    default_length = 30 if model == SA_OPEN else 190
    job_params = {
        **params,
        "task": task,
        "duration": params.get(length_key) or default_length,
        "output_format": FORMAT,
        # The seed fal reports must be the one the audio was rendered with.
        "seed": params.get("seed") if params.get("seed") is not None
        else random.randint(0, MAX_SEED),
    }
    # fal's request ids are bare UUIDs (a `{model}_{uuid}` would hold slashes here).
    job = emu.create_job(PROVIDER, model, job_params, call.body, request_id=str(uuid.uuid4()))
    queue.schedule(job)
    base = f"{call.base_url}/{model}/requests/{job.request_id}"
    return web.json_response({
        "request_id": job.request_id,
        "status": "IN_QUEUE",
        "queue_position": queue.position(job),
        "status_url": f"{base}/status",
        "response_url": base,
        "cancel_url": f"{base}/cancel",
    })


async def _status(call: Call, queue: _Queue, model: str) -> web.StreamResponse:
    emu = call.emu
    job = call.job(call.request.match_info["request_id"], model=model)
    emu.observe(job)
    response_url = f"{call.base_url}/{model}/requests/{job.request_id}"
    want_logs = call.request.query.get("logs") in ("1", "true")
    phase = emu.phase(job)
    if job.cancelled_at is not None or phase == "DONE":
        # A cancelled request leaves the queue finished; its response_url says how.
        body: dict[str, Any] = {"status": "COMPLETED", "response_url": response_url,
                                "logs": [] if want_logs else None}
        if job.cancelled_at is None:
            scale = emu.config.time_scale
            body["metrics"] = {"inference_time": round((job.done_at - job.queued_until)
                                                       / scale, 3)}
        return web.json_response(body)
    # fal answers 202 Accepted while the request is still queued or running, and 200 only
    # once it is COMPLETED (as fal-client reads it: only 4xx/5xx are errors); the loose
    # reading answers 200 throughout, as the documentation's examples do not say.
    pending = 202 if call.reading == "strict" else 200
    if phase == "QUEUED":
        return web.json_response({"status": "IN_QUEUE", "queue_position": queue.position(job),
                                  "response_url": response_url}, status=pending)
    logs = [{"message": "Generating audio", "level": "INFO", "source": "user",
             "timestamp": datetime.now(UTC).isoformat()}] if want_logs else None
    return web.json_response({"status": "IN_PROGRESS", "response_url": response_url,
                              "logs": logs}, status=pending)


async def _response(call: Call, model: str) -> web.StreamResponse:
    emu = call.emu
    job = call.job(call.request.match_info["request_id"], model=model)
    if job.cancelled_at is not None:
        return _error(call, 499, {"detail": "Request was cancelled by the client"},
                      "client_cancelled")
    if emu.phase(job) != "DONE":
        return _error(call, 400, {"detail": "Request is still in progress"})
    if job.outcome == "FAILED":
        return _error(call, 422, {"detail": [{
            "loc": ["body", "prompt"],
            "msg": "Generation failed: the model could not produce audio for this prompt",
            "type": "generation_failed", "input": job.prompt}]})
    if job.outcome == "ERROR":
        # A runner that kept failing: fal re-queues it, then stores the error as the result.
        return _error(call, 500, {"detail": "Runner encountered an internal server error"},
                      "runner_server_error")
    # Rendered off the event loop, as the CDN does.
    data, content_type = await emu.render_off_loop(job)
    if job.params.get("sync_mode"):
        url = f"data:{content_type};base64,{base64.b64encode(data).decode()}"
    else:
        url = emu.cdn_url(call.request, job)
    audio = {"url": url, "content_type": content_type,
             "file_name": f"{job.request_id}.{FORMAT}", "file_size": len(data)}
    if model == SA_OPEN:
        return web.json_response({"audio_file": audio})
    return web.json_response({"audio": audio, "seed": job.params["seed"]})


async def _cancel(call: Call, queue: _Queue, model: str) -> web.StreamResponse:
    emu = call.emu
    job = call.find(call.request.match_info["request_id"], model=model)
    if job is None:
        return _error(call, 404, {"status": "NOT_FOUND"})
    if job.cancelled_at is not None or emu.phase(job) == "DONE":
        return _error(call, 400, {"status": "ALREADY_COMPLETED"})
    # Queued: dropped from the queue; running: the runner is told to stop, and does.
    job.cancelled_at = emu.now()
    call.stats.cancelled += 1
    queue.release(job)
    return web.json_response({"status": "CANCELLATION_REQUESTED"}, status=202)
