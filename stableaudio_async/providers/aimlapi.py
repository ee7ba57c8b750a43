"""AI/ML API: Stable Audio Open queued at ``/v2/generate/audio``, polled by ``generation_id``."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import quote

from stableaudio_async.errors import (
    InsufficientBalanceError,
    JobIssue,
    ProviderError,
    ProviderUnavailableError,
)
from stableaudio_async.models import (
    AudioURL,
    Failed,
    Job,
    Queued,
    RemoteHandle,
    RemoteStatus,
    Running,
    Succeeded,
    Task,
)
from stableaudio_async.providers.base import (
    Adapter,
    HttpReply,
    HttpRequest,
    ModelSpec,
    Range,
    check_job,
    error_from_reply,
)

__all__ = ["AimlapiAdapter"]

#: Stable Audio Open's limit: no clip starts after, or lasts longer than, 47 seconds.
MAX_SECONDS = 47

# Stable Audio Open renders WAV and the API has no format field, so only "wav" names the
# file truthfully; the contract lists no negative prompt, guidance, seed or input audio, so
# check_job refuses those unified fields.
_STABLE_AUDIO = ModelSpec(
    tasks=frozenset({Task.TEXT_TO_AUDIO}),
    ranges={
        "duration": Range(1, MAX_SECONDS, integer=True),
        "steps": Range(1, 1000, integer=True),
    },
    formats=frozenset({"wav"}),
)

# Body keys the adapter writes from the job's own fields; `options` may add others.
_RESERVED = frozenset({"model", "prompt", "seconds_total", "steps"})
#: The one documented body field with no unified counterpart, taken from ``options``.
_SECONDS_START = "seconds_start"
# A 403 is either a key problem or an empty account ("e.g. no credits"); only the words tell.
_BALANCE_WORDS = ("credit", "balance")


class AimlapiAdapter(Adapter):
    """Stable Audio Open (``stable-audio``, text-to-audio up to 47 s) on ``api.aimlapi.com``."""

    name = "aimlapi"
    default_model = "stable-audio"
    models: ClassVar[Mapping[str, ModelSpec]] = {default_model: _STABLE_AUDIO}

    @classmethod
    def check(cls, job: Job, spec: ModelSpec) -> list[JobIssue]:
        """The model's ranges, WAV output, and ``options.seconds_start`` as a whole 1–47."""
        issues = [
            JobIssue(f"{job.output_format!r}: {cls.name}'s stable-audio returns WAV only "
                     "(set output_format to \"wav\")", job_id=job.id, field="output_format")
            if issue.field == "output_format" else issue
            for issue in check_job(job, spec, provider=cls.name, reserved=_RESERVED)
        ]
        start = job.options.get(_SECONDS_START)
        if start is not None and not _whole_in(start, 1, MAX_SECONDS):
            issues.append(JobIssue(f"must be a whole number in 1–{MAX_SECONDS}, got {start!r}",
                                   job_id=job.id, field=f"options.{_SECONDS_START}"))
        return issues

    def submit_request(self, job: Job, audio_url: str | None = None) -> HttpRequest:
        """POST the job as JSON; unset fields are left out for the API's defaults (30 s, 100 steps)."""
        body: dict[str, Any] = {"model": self.model_of(job), "prompt": job.prompt}
        if job.duration is not None:
            # Documented as an integer; check() has made sure it is a whole number.
            body["seconds_total"] = int(job.duration)
        if job.steps is not None:
            body["steps"] = job.steps
        body.update(job.options)
        headers = {"Authorization": f"Bearer {self._api_key}", "Content-Type": "application/json"}
        return HttpRequest("POST", f"{self.base_url}/v2/generate/audio", headers, body)

    def parse_submit(self, reply: HttpReply) -> RemoteHandle:
        """A 2xx holds the generation id (``…:stable-audio``) and its first status."""
        if not 200 <= reply.status < 300:
            raise self._error(reply, None)
        data = self.json_object(reply, None)
        generation_id = data.get("id")
        if not isinstance(generation_id, str) or not generation_id:
            raise ProviderUnavailableError("submit reply has no generation id",
                                           provider=self.name, status=reply.status)
        # The id holds a colon (and may hold more): quoted whole, it stays one query value.
        poll_url = f"{self.base_url}/v2/generate/audio?generation_id={quote(generation_id, safe='')}"
        return RemoteHandle(generation_id, poll_url, self._status(data, generation_id))

    def poll_request(self, handle: RemoteHandle) -> HttpRequest:
        """GET the generation's status by its id."""
        assert handle.poll_url is not None
        return HttpRequest("GET", handle.poll_url, {"Authorization": f"Bearer {self._api_key}"})

    def parse_poll(self, reply: HttpReply, handle: RemoteHandle) -> RemoteStatus:
        """Map the generation body onto the engine's status union."""
        if not 200 <= reply.status < 300:
            raise self._error(reply, handle.request_id)
        return self._status(self.json_object(reply, handle.request_id), handle.request_id)

    def _error(self, reply: HttpReply, request_id: str | None) -> ProviderError:
        """The engine's error for an error reply; a 403 about credits is an empty account."""
        data: Any = None
        with contextlib.suppress(ValueError):
            data = reply.json()
        if request_id is None and isinstance(data, dict) and isinstance(data.get("requestId"), str):
            # Before a generation id exists, the error's own request id is what support can trace.
            request_id = data["requestId"]
        error = error_from_reply(reply, provider=self.name, request_id=request_id)
        message = data.get("message") if isinstance(data, dict) else None
        if reply.status == 403 and isinstance(message, str) \
                and any(word in message.lower() for word in _BALANCE_WORDS):
            return InsufficientBalanceError(error.message, provider=self.name,
                                            request_id=request_id, status=reply.status)
        return error


    def _status(self, data: Mapping[str, Any], request_id: str | None) -> RemoteStatus:
        """The one place AI/ML API's status words become engine statuses."""
        word = str(data.get("status", "")).lower()
        if word == "queued":
            return Queued()
        if word == "generating":
            return Running()
        if word == "completed":
            audio = _audio_file(data.get("audio_file"))
            if audio is None:
                return Failed("provider reported completed without an audio_file url")
            return Succeeded((audio,))
        if word == "error":
            # Reported with HTTP 200: a final failure, not something to poll again.
            return Failed(_error_reason(data.get("error")))
        return self.unknown_status(word, request_id)


def _whole_in(value: Any, lo: int, hi: int) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return False
    return value == int(value) and lo <= value <= hi


def _audio_file(audio_file: Any) -> AudioURL | None:
    if not isinstance(audio_file, Mapping):
        return None
    url = audio_file.get("url")
    if not isinstance(url, str) or not url:
        return None
    content_type = audio_file.get("content_type")
    # Only an audio type describes the file; a generic one (octet-stream) is left for the
    # CDN's own Content-Type header to settle.
    if not isinstance(content_type, str) or not content_type.startswith("audio/"):
        content_type = None
    return AudioURL(url, content_type)


def _error_reason(error: Any) -> str:
    if isinstance(error, Mapping):
        parts = [str(error[key]) for key in ("name", "message") if error.get(key)]
        if parts:
            return ": ".join(parts)
    elif isinstance(error, str) and error:
        return error
    return "generation failed"
