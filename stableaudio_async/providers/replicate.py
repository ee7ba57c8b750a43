"""Replicate: create a prediction (optionally held open with ``Prefer: wait``), poll it, cancel it."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar
from urllib.parse import quote

from stableaudio_async.errors import (
    JobIssue,
    ProviderError,
    ProviderUnavailableError,
    RateLimitedError,
)
from stableaudio_async.models import (
    AudioSource,
    Failed,
    Job,
    Queued,
    RemoteHandle,
    RemoteStatus,
    Running,
    Task,
)
from stableaudio_async.providers.base import (
    Adapter,
    HttpReply,
    HttpRequest,
    Lookup,
    ModelSpec,
    Range,
    audio_source,
    check_job,
    completed,
    error_from_reply,
)
from stableaudio_async.retry import RETRY_AFTER_CAP

__all__ = ["MAX_WAIT", "ReplicateAdapter"]

#: The longest ``Prefer: wait=N`` Replicate honours, in seconds.
MAX_WAIT = 60

# Ranges as the model's published input schema gives them: duration and steps are integers
# there, so a fractional duration would be refused with a 422.
_SA25 = ModelSpec(
    tasks=frozenset({Task.TEXT_TO_AUDIO}),
    ranges={
        "duration": Range(1, 190, integer=True),
        "steps": Range(4, 8, integer=True),
        "guidance_scale": Range(1, 25),
    },
    # The output is a URL to one file; Replicate documents no format input for this model.
    formats=frozenset({"mp3"}),
    fields=frozenset({"seed"}),
)

# Input keys the adapter writes from the job's own fields; `options` may add others.
_RESERVED = frozenset({"prompt", "duration", "steps", "cfg_scale", "seed"})
#: The option that becomes the ``Prefer: wait=N`` header rather than an input field.
_WAIT_OPTION = "wait"
#: Options that belong beside ``input`` in the body, not inside it.
_TOP_LEVEL = frozenset({"webhook", "webhook_events_filter"})
# "Request was throttled. Your rate limit resets in ~30s."
_RESETS_IN = re.compile(r"resets in ~?(\d+(?:\.\d+)?)\s*s")


class ReplicateAdapter(Adapter):
    """Stable Audio 2.5 on Replicate's official-model predictions API (text-to-audio only)."""

    name = "replicate"
    default_model = "stability-ai/stable-audio-2.5"
    models: ClassVar[Mapping[str, ModelSpec]] = {default_model: _SA25}

    @classmethod
    def check(cls, job: Job, spec: ModelSpec) -> list[JobIssue]:
        """The model's ranges, plus ``options.wait``: a whole number of seconds, 1 to 60."""
        issues = check_job(job, spec, provider=cls.name, reserved=_RESERVED)
        wait = job.options.get(_WAIT_OPTION)
        # bool is an int to Python, but `true` is no number of seconds.
        if _WAIT_OPTION in job.options and (
                isinstance(wait, bool) or not isinstance(wait, int) or not 1 <= wait <= MAX_WAIT):
            issues.append(JobIssue(f"must be a whole number of seconds from 1 to {MAX_WAIT} "
                                   "(sent as the Prefer: wait header)",
                                   job_id=job.id, field=f"options.{_WAIT_OPTION}"))
        return issues

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"}

    def submit_request(self, job: Job, audio_url: str | None = None) -> HttpRequest:
        """POST ``{"input": {…}}`` to the model's predictions route; ``options.wait`` holds it."""
        inputs: dict[str, Any] = {"prompt": job.prompt}
        optional = {
            "duration": _whole(job.duration),
            "steps": job.steps,
            "cfg_scale": job.guidance_scale,
            "seed": job.seed,
        }
        inputs.update({k: v for k, v in optional.items() if v is not None})
        body: dict[str, Any] = {}
        headers = {**self._headers(), "Content-Type": "application/json"}
        for key, value in job.options.items():
            if key == _WAIT_OPTION:
                headers["Prefer"] = f"wait={value}"
            elif key in _TOP_LEVEL:
                body[key] = value
            else:
                inputs[key] = value
        body["input"] = inputs
        owner, _, model = self.model_of(job).partition("/")
        url = f"{self.base_url}/v1/models/{owner}/{model}/predictions"
        return HttpRequest("POST", url, headers, body)

    def parse_submit(self, reply: HttpReply) -> RemoteHandle:
        """A 201 holds the prediction: its id, its URLs and, after a hold, maybe its output."""
        if reply.status not in (200, 201, 202):
            raise self._error(reply)
        data = self.json_object(reply)
        request_id = data.get("id")
        if not isinstance(request_id, str) or not request_id:
            raise ProviderUnavailableError("prediction has no id", provider=self.name,
                                           status=reply.status)
        urls = data.get("urls")
        urls = urls if isinstance(urls, Mapping) else {}
        own = f"{self.base_url}/v1/predictions/{quote(request_id, safe='')}"
        return RemoteHandle(
            request_id,
            self._own_url(urls.get("get"), own),
            self._status(data, request_id),
            cancel_url=self._own_url(urls.get("cancel"), f"{own}/cancel"),
        )

    def _own_url(self, given: Any, fallback: str) -> str:
        # The key goes with every poll and cancel, so only ever to the API we submitted to.
        if self.on_own_origin(given):
            return given
        return fallback

    def poll_request(self, handle: RemoteHandle) -> HttpRequest:
        """GET the prediction, through the ``urls.get`` Replicate gave us."""
        assert handle.poll_url is not None
        return HttpRequest("GET", handle.poll_url, self._headers())

    def parse_poll(self, reply: HttpReply, handle: RemoteHandle) -> RemoteStatus:
        """Map the prediction onto the engine's status union."""
        if not 200 <= reply.status < 300:
            raise self._error(reply, handle.request_id)
        return self._status(self.json_object(reply, handle.request_id), handle.request_id)

    def cancel_request(self, handle: RemoteHandle) -> HttpRequest | None:
        """POST to the prediction's ``urls.cancel``."""
        url = handle.cancel_url
        if url is None:
            if handle.request_id is None:
                return None
            url = f"{self.base_url}/v1/predictions/{quote(handle.request_id, safe='')}/cancel"
        return HttpRequest("POST", url, self._headers())

    def lookup_request(self, page: str | None = None) -> HttpRequest | None:
        """``GET /v1/predictions``: the key's predictions, newest first, by pages."""
        url = page if self.on_own_origin(page) else f"{self.base_url}/v1/predictions"
        return HttpRequest("GET", url, self._headers())

    def parse_lookup(self, reply: HttpReply, submitted: HttpRequest, since: float) -> Lookup:
        """The predictions on the page with the submit's model and exactly its ``input``,
        created at or after ``since``; read on while the page reaches no older one."""
        if not 200 <= reply.status < 300:
            raise self._error(reply)
        data = self.json_object(reply)
        results = data.get("results")
        if not isinstance(results, list):
            raise ProviderUnavailableError("prediction list has no results",
                                           provider=self.name, status=reply.status)
        body = submitted.json if isinstance(submitted.json, Mapping) else {}
        model = _model_of_url(submitted.url)
        found: list[RemoteHandle] = []
        older = False
        for entry in results:
            if not isinstance(entry, Mapping):
                continue
            created = _epoch(entry.get("created_at"))
            if created is None or created < since:
                older = True
                continue
            if entry.get("input") == body.get("input") and entry.get("model") == model:
                reply_of_entry = HttpReply(201, {}, json.dumps(entry).encode(), reply.url)
                found.append(self.parse_submit(reply_of_entry))
        following = data.get("next")
        next_page = following if not older and self.on_own_origin(following) else None
        return Lookup(tuple(found), next_page)

    def _error(self, reply: HttpReply, request_id: str | None = None) -> ProviderError:
        error = error_from_reply(reply, provider=self.name, request_id=request_id)
        if isinstance(error, RateLimitedError) and error.retry_after is None:
            # Retry-After is optional; the 429's text still says when the window resets.
            found = _RESETS_IN.search(error.message)
            if found:
                error.retry_after = min(float(found.group(1)), RETRY_AFTER_CAP)
        return error


    def _status(self, data: Mapping[str, Any], request_id: str | None) -> RemoteStatus:
        """The one place Replicate's status words become engine statuses."""
        word = str(data.get("status", "")).lower()
        error = data.get("error")
        reason = str(error) if error else None
        if word == "starting":
            return Queued()
        if word == "processing":
            return Running()
        if word == "succeeded":
            if data.get("data_removed") is True:
                return Failed("output deleted: Replicate removes outputs an hour after "
                              "creation (data_removed)")
            return completed(lambda: _audio_from_output(data.get("output")),
                             "output deleted or missing: the prediction succeeded without an "
                             "output URL")
        if word == "failed":
            # Nothing published says a failed run of this model is free: assume it is billed.
            return Failed(reason or "prediction failed")
        if word == "canceled":
            # Billed for the time it ran, if it ran at all.
            return Failed(f"canceled: {reason}" if reason else "prediction canceled",
                          charged=data.get("started_at") is not None)
        if word == "aborted":
            # Ended before it started (e.g. a Cancel-After deadline): nothing ran.
            return Failed(f"aborted: {reason}" if reason else "prediction aborted before it started",
                          charged=False)
        return self.unknown_status(word, request_id)


def _whole(value: float | None) -> int | float | None:
    """``value`` as JSON integer when it is one: the schema types ``duration`` as integer."""
    if value is not None and float(value).is_integer():
        return int(value)
    return value



def _audio_from_output(output: Any) -> tuple[AudioSource, ...]:
    # A URL for this model; other models give a list of them, so accept both.
    items = [output] if isinstance(output, str) else output if isinstance(output, list) else []
    return tuple(audio_source(item) for item in items if isinstance(item, str) and item)


def _model_of_url(url: str) -> str | None:
    """``owner/name`` from a ``…/v1/models/{owner}/{name}/predictions`` URL."""
    found = re.search(r"/v1/models/([^/]+)/([^/]+)/predictions$", url)
    return f"{found.group(1)}/{found.group(2)}" if found else None


def _epoch(stamp: Any) -> float | None:
    """Seconds since the epoch of an ISO 8601 time (``Z`` allowed), or None."""
    if not isinstance(stamp, str):
        return None
    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.timestamp() if moment.tzinfo is not None else None
