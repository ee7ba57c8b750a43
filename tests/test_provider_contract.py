"""The provider contract every adapter meets: documented replies in, typed results out.

One :class:`Contract` row per provider (``CONTRACTS``) holds what providers.md and the
providers' own clients show that provider answering, and the engine type each answer must
become; the tests at the bottom are generic and run every row. A new provider is a new row
here, not a new test file: its adapter file keeps only what has no generic form (how its
fields are named in a body, its validation ranges, its quirks).

The adapter files build their adapters, jobs and replies from these rows too, so that a
provider's key, base URL and request id are written down once.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar
from urllib.parse import urlsplit

import pytest

from stableaudio_async.config import ProviderSettings
from stableaudio_async.errors import (
    AuthenticationError,
    ContentRejectedError,
    InsufficientBalanceError,
    InvalidRequestError,
    ProviderError,
    ProviderUnavailableError,
    RateLimitedError,
)
from stableaudio_async.http import HttpReply, HttpRequest
from stableaudio_async.models import (
    AudioURL,
    Failed,
    InlineAudio,
    Job,
    Queued,
    Ready,
    RemoteHandle,
    RemoteStatus,
    Running,
    Succeeded,
)
from stableaudio_async.providers import ADAPTERS, Adapter
from stableaudio_async.providers.aimlapi import AimlapiAdapter
from stableaudio_async.providers.fal import FalAdapter
from stableaudio_async.providers.pixazo import PixazoAdapter
from stableaudio_async.providers.replicate import ReplicateAdapter
from stableaudio_async.providers.stability import StabilityAdapter
from stableaudio_async.providers.wavespeed import WaveSpeedAdapter

from conftest import capture_logs

JSON_HEADERS: Mapping[str, str] = {"content-type": "application/json"}


def reply(status: int, body: bytes, headers: Mapping[str, str] | None = None,
          url: str = "") -> HttpReply:
    """A reply as the HTTP layer hands it to an adapter; JSON unless told otherwise."""
    return HttpReply(status, dict(headers if headers is not None else JSON_HEADERS), body, url)


def _json(data: Any) -> bytes:
    return json.dumps(data, indent=2).encode()


# ---- the rows' shapes --------------------------------------------------------------------------


@dataclass(frozen=True)
class Accepted:
    """A submit reply and the handle it must read as."""

    id: str
    body: bytes
    handle: RemoteHandle
    code: int = 200
    headers: Mapping[str, str] | None = None


@dataclass(frozen=True)
class Reported:
    """A status (or result) reply and the status it must read as.

    A ``Failed`` is matched by ``charged`` and by its reason holding the expected one as a
    fragment: the provider's own words where it gave some, else the gist of the adapter's.
    """

    id: str
    body: bytes
    status: RemoteStatus
    code: int = 200
    headers: Mapping[str, str] | None = None


@dataclass(frozen=True)
class Refused:
    """An error reply, the exception it must raise and the provider's words it must carry."""

    id: str
    code: int
    body: bytes
    error: type[ProviderError]
    words: tuple[str, ...]
    headers: Mapping[str, str] | None = None
    #: The request id the error names when no job id exists yet (submit, upload).
    request_id: str | None = None


def refused(id: str, code: int, body: bytes, error: type[ProviderError], *words: str,
            headers: Mapping[str, str] | None = None, request_id: str | None = None) -> Refused:
    return Refused(id, code, body, error, words, headers, request_id)


A = TypeVar("A", bound=Adapter)


@dataclass(frozen=True)
class Contract(Generic[A]):
    """One provider: how its adapter is built, what it declares, what it is sent and answers."""

    #: The provider's name in configs, jobs and the CLI.
    name: str
    cls: type[A]
    base_url: str
    api_key_env: str
    api_key: str
    # What the adapter class says about itself.
    default_model: str
    models: frozenset[str]
    synchronous: bool
    free_failures: bool
    local_audio: Literal["none", "multipart", "upload", "data_uri"]
    # The default job and its submit request.
    prompt: str
    submit_url: str
    submit_headers: Mapping[str, str]
    #: Documented submit replies; the first is the plain "accepted, queued" one.
    accepted: tuple[Accepted, ...]
    refusals: tuple[Refused, ...]
    #: 2xx submit bodies lacking what the contract promises (an id, the audio).
    submit_unusable: tuple[bytes, ...]
    job_defaults: Mapping[str, Any] = field(default_factory=dict)
    body: Literal["json", "form"] = "json"
    #: The status codes a success may come with.
    ok_codes: tuple[int, ...] = (200, 201, 202)
    # Polling; a synchronous provider has none of this.
    handle: RemoteHandle | None = None
    #: The headers of every follow-up request (poll, result, cancel): the key and no more.
    key_headers: Mapping[str, str] = field(default_factory=dict)
    #: Documented status replies; the first is the plain "queued" one.
    reported: tuple[Reported, ...] = ()
    #: For a provider with a separate result fetch (a ``Ready`` status): its replies.
    results: tuple[Reported, ...] = ()
    #: A status body whose word the contract does not list, and that word as logged.
    unknown_word: str = ""
    unknown_status: bytes = b""
    missing_status: bytes = b""
    #: 2xx status bodies that are JSON but not a readable status.
    status_unusable: tuple[bytes, ...] = ()
    cancel_method: str | None = None
    #: A 429 without Retry-After: the pause the adapter still reads from the body, if any.
    retry_after_default: float | None = None
    #: What the default job costs, where the provider publishes it.
    cost: tuple[float, str] | None = None

    def build(self, base_url: str | None = None) -> A:
        """The adapter, as the engine would make it from settings and the key."""
        settings = ProviderSettings(base_url=base_url or self.base_url, api_key_env=self.api_key_env)
        return self.cls(settings, self.api_key)

    def job(self, **fields: Any) -> Job:
        """A job for this provider: ``job-1``, the row's prompt and defaults, then ``fields``."""
        values: dict[str, Any] = {"id": "job-1", "provider": self.name, "prompt": self.prompt,
                                  **self.job_defaults}
        return Job(**{**values, **fields})

    def poll_handle(self) -> RemoteHandle:
        assert self.handle is not None, f"{self.name} has no status to poll"
        return self.handle

    def phases(self) -> tuple[str, ...]:
        """The replies an error may answer: the submit, a poll, an upload."""
        return ("submit",) + (("poll",) if self.handle else ()) \
            + (("upload",) if self.local_audio == "upload" else ())

    def refusal(self, key: int | str) -> Refused:
        """The error row with status code ``key`` (the first such), or with id ``key``."""
        return next(r for r in self.refusals if key in (r.code, r.id))

    def reply_body(self, id: str) -> bytes:
        """The documented reply body of the submit, status or result row named ``id``."""
        rows: tuple[Accepted | Reported, ...] = (*self.accepted, *self.reported, *self.results)
        return next(r.body for r in rows if r.id == id)


# ---- AI/ML API: queue, polled by generation_id ------------------------------------------------

AIMLAPI_BASE = "https://api.aimlapi.com"
AIMLAPI_ROUTE = f"{AIMLAPI_BASE}/v2/generate/audio"
AIMLAPI_ID = "1f7c9e0a-2b4d-4c6e-8a1b-3d5f7a9c0e2b:stable-audio"
AIMLAPI_POLL_URL = f"{AIMLAPI_ROUTE}?generation_id=1f7c9e0a-2b4d-4c6e-8a1b-3d5f7a9c0e2b%3Astable-audio"
AIMLAPI_CDN = "https://cdn.aimlapi.com/generations/1f7c9e0a-2b4d-4c6e-8a1b-3d5f7a9c0e2b.wav"
AIMLAPI_ERROR_ID = "6b1e0c52-93d4-4f0a-b7c8-2e4d6f8a0b1c"
AIMLAPI_KEY = "aiml-test-key-5d2e"


def _aimlapi(status: str, audio_type: str | None = None, error: Any = None) -> bytes:
    audio = None if audio_type is None else {
        "url": AIMLAPI_CDN, "content_type": audio_type,
        "file_name": "1f7c9e0a-2b4d-4c6e-8a1b-3d5f7a9c0e2b.wav", "file_size": 8294444}
    return _json({"id": AIMLAPI_ID, "status": status, "audio_file": audio, "error": error})


def _aimlapi_error(code: int, message: str) -> bytes:
    return _json({"message": message, "path": "/v2/generate/audio", "requestId": AIMLAPI_ERROR_ID,
                  "statusCode": code, "timestamp": "2025-06-01T12:00:00.000Z"})


AIMLAPI = Contract(
    name="aimlapi", cls=AimlapiAdapter, base_url=AIMLAPI_BASE, api_key_env="AIMLAPI_API_KEY",
    api_key=AIMLAPI_KEY,
    default_model="stable-audio", models=frozenset({"stable-audio"}), synchronous=False,
    free_failures=False, local_audio="none",
    prompt="rain on a tin roof, distant thunder", job_defaults={"output_format": "wav"},
    submit_url=AIMLAPI_ROUTE,
    submit_headers={"Authorization": f"Bearer {AIMLAPI_KEY}", "Content-Type": "application/json"},
    accepted=(
        Accepted("queued", _json({"id": AIMLAPI_ID, "status": "queued"}),
                 RemoteHandle(AIMLAPI_ID, AIMLAPI_POLL_URL, Queued())),
    ),
    submit_unusable=(b'{"status": "queued"}', b'{"id": "", "status": "queued"}',
                     b'{"id": 42, "status": "queued"}'),
    handle=RemoteHandle(AIMLAPI_ID, AIMLAPI_POLL_URL, Queued()),
    key_headers={"Authorization": f"Bearer {AIMLAPI_KEY}"},
    reported=(
        Reported("queued", _aimlapi("queued"), Queued()),
        Reported("generating", _aimlapi("generating"), Running()),
        Reported("completed", _aimlapi("completed", "audio/wav"),
                 Succeeded((AudioURL(AIMLAPI_CDN, "audio/wav"),))),
        # Only an audio type describes the file: the CDN's own Content-Type settles the rest.
        Reported("completed-octet-stream", _aimlapi("completed", "application/octet-stream"),
                 Succeeded((AudioURL(AIMLAPI_CDN, None),))),
        Reported("completed-no-file", _aimlapi("completed"),
                 Failed("provider reported completed without an audio_file url")),
        Reported("error", _aimlapi("error", error={
            "name": "GenerationError", "message": "The model could not generate audio"}),
                 Failed("GenerationError: The model could not generate audio")),
        Reported("error-no-detail", _aimlapi("error"), Failed("generation failed")),
    ),
    unknown_word="dreaming", unknown_status=_aimlapi("dreaming"), missing_status=b'{"id": "x"}',
    refusals=(
        refused("400", 400, _aimlapi_error(400, "seconds_total must not be greater than 47"),
                InvalidRequestError, "must not be greater than 47", request_id=AIMLAPI_ERROR_ID),
        refused("401", 401, _aimlapi_error(401, "Unauthorized"), AuthenticationError,
                "Unauthorized", request_id=AIMLAPI_ERROR_ID),
        refused("403-forbidden", 403, _aimlapi_error(403, "Forbidden resource"),
                AuthenticationError, "Forbidden resource", request_id=AIMLAPI_ERROR_ID),
        # "403 (e.g. no credits)": only the words tell an empty account from a key problem.
        refused("403-credits", 403,
                _aimlapi_error(403, "You do not have enough credits to run this model"),
                InsufficientBalanceError, "enough credits", request_id=AIMLAPI_ERROR_ID),
        refused("403-balance", 403, _aimlapi_error(403, "Insufficient balance: top up to continue"),
                InsufficientBalanceError, "Insufficient balance", request_id=AIMLAPI_ERROR_ID),
        refused("403-moderation", 403, _aimlapi_error(403, "Prompt blocked by content moderation"),
                ContentRejectedError, "moderation", request_id=AIMLAPI_ERROR_ID),
        refused("404", 404, _aimlapi_error(404, "Generation not found"), InvalidRequestError,
                "Generation not found", request_id=AIMLAPI_ERROR_ID),
        refused("429", 429, _aimlapi_error(429, "Too many requests"), RateLimitedError,
                "Too many requests", request_id=AIMLAPI_ERROR_ID),
        refused("500", 500, _aimlapi_error(500, "Internal server error"),
                ProviderUnavailableError, "Internal server error", request_id=AIMLAPI_ERROR_ID),
        refused("502-plain", 502, b"Bad Gateway", ProviderUnavailableError, "Bad Gateway",
                headers={"content-type": "text/plain"}),
    ),
)


# ---- Pixazo: gateway queue, polled at the polling_url it hands back ---------------------------

PIXAZO_BASE = "https://gateway.pixazo.ai"
PIXAZO_ID = "stable-audio-3-small-music_6f1c2a9e-3b7d-4e51-9a0c-2d8e4f7b1a35"
PIXAZO_POLL_URL = f"{PIXAZO_BASE}/v2/requests/status/{PIXAZO_ID}"
PIXAZO_CDN = "https://cdn.pixazo.ai/outputs/6f1c2a9e-3b7d-4e51-9a0c-2d8e4f7b1a35.mp3"
PIXAZO_KEY = "test-key-123"
#: The bytes behind ``data:audio/mpeg;base64,SUQzBAAAAAAAAP/7kGQADw==``.
MP3_BYTES = b"ID3\x04\x00\x00\x00\x00\x00\x00\xff\xfb\x90\x64\x00\x0f"
MP3_DATA_URI = "data:audio/mpeg;base64,SUQzBAAAAAAAAP/7kGQADw=="


def _pixazo(status: str, media_url: Any = None, error: str | None = None) -> bytes:
    output = None if media_url is None else {"media_url": media_url, "media_type": "audio/mpeg"}
    done = status in ("COMPLETED", "FAILED", "ERROR")
    return _json({
        "request_id": PIXAZO_ID, "status": status, "model_id": "stable-audio-3-small-music",
        "error": error, "output": output, "created_at": "2025-06-01T12:00:00Z",
        "updated_at": "2025-06-01T12:00:11Z",
        "completed_at": "2025-06-01T12:00:11Z" if done else None,
    })


def _pixazo_error(error: str, message: str) -> bytes:
    return _json({"error": error, "message": message})


PIXAZO = Contract(
    name="pixazo", cls=PixazoAdapter, base_url=PIXAZO_BASE, api_key_env="PIXAZO_API_KEY", api_key=PIXAZO_KEY,
    default_model="stable-audio-3-small-music", models=frozenset({"stable-audio-3-small-music"}),
    synchronous=False, free_failures=False, local_audio="none",
    prompt="warm analog synth pads, slow tempo",
    submit_url=(f"{PIXAZO_BASE}/stable-audio-3-small-music-text-to-audio/v1/"
                "stable-audio-3-small-music-text-to-audio-request"),
    submit_headers={"Ocp-Apim-Subscription-Key": PIXAZO_KEY, "Content-Type": "application/json",
                    "Cache-Control": "no-cache"},
    accepted=(
        Accepted("queued", _json({"request_id": PIXAZO_ID, "status": "QUEUED",
                                  "polling_url": PIXAZO_POLL_URL}),
                 RemoteHandle(PIXAZO_ID, PIXAZO_POLL_URL, Queued()), code=202),
        # Without a polling_url, the documented status route for the id.
        Accepted("no-polling-url", _json({"request_id": PIXAZO_ID, "status": "QUEUED"}),
                 RemoteHandle(PIXAZO_ID, PIXAZO_POLL_URL, Queued()), code=202),
        # sync_mode: the finished status body, the audio inline as a data URI.
        Accepted("sync-mode", _pixazo("COMPLETED", [MP3_DATA_URI]),
                 RemoteHandle(PIXAZO_ID, PIXAZO_POLL_URL,
                              Succeeded((InlineAudio(MP3_BYTES, "audio/mpeg"),)))),
    ),
    submit_unusable=(
        _json({"status": "QUEUED", "polling_url": f"{PIXAZO_BASE}/v2/requests/status/x"}),
        b'{"request_id": "", "status": "QUEUED"}',
    ),
    handle=RemoteHandle(PIXAZO_ID, PIXAZO_POLL_URL, Queued()),
    key_headers={"Ocp-Apim-Subscription-Key": PIXAZO_KEY, "Cache-Control": "no-cache"},
    reported=(
        Reported("queued", _pixazo("QUEUED"), Queued()),
        Reported("processing", _pixazo("PROCESSING"), Running()),
        Reported("completed", _pixazo("COMPLETED", [PIXAZO_CDN]),
                 Succeeded((AudioURL(PIXAZO_CDN, "audio/mpeg"),))),
        # Third-party clients have seen media_url as a plain string.
        Reported("completed-url-string", _pixazo("COMPLETED", PIXAZO_CDN),
                 Succeeded((AudioURL(PIXAZO_CDN, "audio/mpeg"),))),
        Reported("completed-no-output", _pixazo("COMPLETED"), Failed("COMPLETED")),
        Reported("failed", _pixazo("FAILED", error="Prompt rejected by safety checker"),
                 Failed("Prompt rejected by safety checker", charged=True)),
        # ERROR is a system error, and not charged.
        Reported("error", _pixazo("ERROR", error="Worker crashed: CUDA out of memory"),
                 Failed("Worker crashed: CUDA out of memory", charged=False)),
    ),
    unknown_word="TELEPORTING", unknown_status=_pixazo("TELEPORTING"),
    missing_status=b'{"request_id": "x"}',
    refusals=(
        refused("400", 400, _pixazo_error(
            "Model not found", "The requested model does not exist or is not available"),
                InvalidRequestError, "Model not found", "does not exist or is not available"),
        refused("401", 401, _pixazo_error("Unauthorized", "Invalid subscription key"),
                AuthenticationError, "Invalid subscription key"),
        refused("402", 402, _pixazo_error("Insufficient Balance",
                                          "Please top up your account to continue"),
                InsufficientBalanceError, "Insufficient Balance"),
        refused("403", 403, _pixazo_error("Forbidden", "Subscription is not allowed to use this API"),
                AuthenticationError, "Forbidden"),
        refused("429", 429, _pixazo_error("Too Many Requests", "Rate limit is exceeded"),
                RateLimitedError, "Rate limit"),
        refused("500", 500, _pixazo_error("Internal Server Error", "Something went wrong"),
                ProviderUnavailableError, "Internal Server Error"),
        refused("503", 503, b"Service Unavailable", ProviderUnavailableError,
                "Service Unavailable", headers={"content-type": "text/plain"}),
    ),
)


# ---- WaveSpeed: enveloped replies, a failed job still answers HTTP 200 ------------------------

WAVESPEED_BASE = "https://api.wavespeed.ai"
WAVESPEED_ID = "9c3f2a1b7e6d4c5f8a0b1c2d3e4f5a6b"
WAVESPEED_RESULT_URL = f"{WAVESPEED_BASE}/api/v3/predictions/{WAVESPEED_ID}/result"
WAVESPEED_CDN = "https://d1q70pf5vjeyhc.cloudfront.net/predictions/9c3f2a1b/1.mp3"
WAVESPEED_KEY = "ws-test-key-9d41"


def _prediction(status: str, outputs: Iterable[str] = (), error: str = "",
                urls: bool = True) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": WAVESPEED_ID, "model": "stability-ai/stable-audio-3/music", "outputs": list(outputs),
        "urls": {"get": WAVESPEED_RESULT_URL}, "has_nsfw_contents": [], "status": status,
        "created_at": "2025-06-01T12:00:00.123456789Z", "error": error,
        "timings": {"inference": 8412 if status == "completed" else 0},
    }
    if not urls:
        del data["urls"]
    return data


def _envelope(data: Any, code: int = 200, message: str = "success") -> bytes:
    return _json({"code": code, "message": message, "data": data})


WAVESPEED = Contract(
    name="wavespeed", cls=WaveSpeedAdapter, base_url=WAVESPEED_BASE, api_key_env="WAVESPEED_API_KEY",
    api_key=WAVESPEED_KEY, default_model="stable-audio-3",
    models=frozenset({"stable-audio-3", "stable-audio-3/music", "stable-audio-3/text-to-audio",
                      "stable-audio-3/audio-to-audio", "stable-audio-3/audio-inpainting"}),
    synchronous=False, free_failures=False, local_audio="upload",
    prompt="warm analog synth pads, slow tempo",
    submit_url=f"{WAVESPEED_BASE}/api/v3/stability-ai/stable-audio-3/music",
    submit_headers={"Authorization": f"Bearer {WAVESPEED_KEY}", "Content-Type": "application/json"},
    accepted=(
        Accepted("created", _envelope(_prediction("created")),
                 RemoteHandle(WAVESPEED_ID, WAVESPEED_RESULT_URL, Queued())),
        # Without urls.get: /api/v3/predictions/{id}/result.
        Accepted("no-urls", _envelope(_prediction("created", urls=False)),
                 RemoteHandle(WAVESPEED_ID, WAVESPEED_RESULT_URL, Queued())),
        # enable_sync_mode: the submit answers with the finished prediction.
        Accepted("sync-completed", _envelope(_prediction("completed", [WAVESPEED_CDN])),
                 RemoteHandle(WAVESPEED_ID, WAVESPEED_RESULT_URL,
                              Succeeded((AudioURL(WAVESPEED_CDN),)))),
    ),
    submit_unusable=(
        _envelope({"status": "created"}), _envelope({"id": "", "status": "created"}),
        _envelope(None), b'{"code": 200, "message": "success"}',
    ),
    handle=RemoteHandle(WAVESPEED_ID, WAVESPEED_RESULT_URL, Queued()),
    key_headers={"Authorization": f"Bearer {WAVESPEED_KEY}"},
    reported=(
        Reported("created", _envelope(_prediction("created")), Queued()),
        Reported("processing", _envelope(_prediction("processing")), Running()),
        Reported("completed", _envelope(_prediction("completed", [WAVESPEED_CDN])),
                 Succeeded((AudioURL(WAVESPEED_CDN),))),
        # enable_base64_output: raw base64, no data: prefix.
        Reported("completed-base64", _envelope(_prediction("completed", ["SUQzBAAAAAAAAP/7kGQADw=="])),
                 Succeeded((InlineAudio(MP3_BYTES),))),
        Reported("completed-data-uri", _envelope(_prediction("completed", [MP3_DATA_URI])),
                 Succeeded((InlineAudio(MP3_BYTES, "audio/mpeg"),))),
        Reported("completed-no-outputs", _envelope(_prediction("completed")),
                 Failed("without any outputs")),
        Reported("completed-garbage", _envelope(_prediction("completed", ["not base64 at all!"])),
                 Failed("unreadable")),
        # A failed job answers HTTP 200: final, never polled again.
        Reported("failed-under-200", _envelope(_prediction(
            "failed", error="inference failed: audio generation error")),
                 Failed("inference failed: audio generation error")),
        Reported("failed-without-error", _envelope(_prediction("failed")), Failed("failed")),
    ),
    unknown_word="teleporting", unknown_status=_envelope({"id": WAVESPEED_ID, "outputs": [],
                                                          "status": "teleporting"}),
    missing_status=_envelope({"id": "x"}),
    status_unusable=(_envelope("completed"), _envelope(None)),
    refusals=(
        refused("400", 400, _envelope(None, 400, "duration: must be a number between 1 and 120"),
                InvalidRequestError, "duration"),
        refused("401", 401, _envelope(None, 401, "Unauthorized"), AuthenticationError,
                "Unauthorized"),
        refused("402", 402, _envelope(None, 402, "Insufficient balance"),
                InsufficientBalanceError, "Insufficient balance"),
        refused("403", 403, _envelope(None, 403, "Forbidden: model not enabled for this account"),
                AuthenticationError, "Forbidden"),
        refused("404", 404, _envelope(None, 404, "prediction not found"), InvalidRequestError,
                "prediction not found"),
        refused("429", 429, _envelope(None, 429, "Too Many Requests"), RateLimitedError,
                "Too Many Requests"),
        refused("500", 500, _envelope(None, 500, "Internal Server Error"),
                ProviderUnavailableError, "Internal Server Error"),
        refused("502", 502, b"Bad Gateway", ProviderUnavailableError, "Bad Gateway",
                headers={"content-type": "text/plain"}),
    ),
    cost=(0.0217, "usd"),
)


# ---- fal: queue; the status says finished, the response_url says how --------------------------

FAL_BASE = "https://queue.fal.run"
FAL_APP = f"{FAL_BASE}/fal-ai/stable-audio-25"
FAL_ID = "764cabcf-b745-4b3e-ae38-1200304cf45b"
FAL_STATUS_URL = f"{FAL_APP}/requests/{FAL_ID}/status"
FAL_RESPONSE_URL = f"{FAL_APP}/requests/{FAL_ID}"
FAL_CANCEL_URL = f"{FAL_APP}/requests/{FAL_ID}/cancel"
FAL_CDN = "https://v3.fal.media/files/koala/8teUPbRRMtAUTORDvqy0l.wav"
FAL_KEY = "fal-key-id:fal-key-secret-0123"
#: The bytes behind ``data:audio/wav;base64,UklGRiQAAABXQVZFZm10IA==``.
WAV_BYTES = b"RIFF$\x00\x00\x00WAVEfmt "


def _fal_file(url: str, size: int) -> dict[str, Any]:
    return {"url": url, "content_type": "audio/wav", "file_name": "8teUPbRRMtAUTORDvqy0l.wav",
            "file_size": size}


def _fal_failure(status: int, body: bytes, reason: str, error_type: str | None = None) -> Reported:
    """A failed job: the response URL answers an HTTP error with a ``detail``; fal bills none."""
    headers = {**JSON_HEADERS, "x-fal-error-type": error_type} if error_type else None
    return Reported(f"{status}-failed", body, Failed(reason, charged=False), status, headers)


FAL_HANDLE = RemoteHandle(FAL_ID, FAL_STATUS_URL, Queued(0), result_url=FAL_RESPONSE_URL,
                          cancel_url=FAL_CANCEL_URL)

FAL = Contract(
    name="fal", cls=FalAdapter, base_url=FAL_BASE, api_key_env="FAL_KEY", api_key=FAL_KEY,
    default_model="fal-ai/stable-audio-25",
    models=frozenset({"fal-ai/stable-audio-25", "fal-ai/stable-audio"}),
    synchronous=False, free_failures=False, local_audio="data_uri",
    prompt="A beautiful piano arpeggio grows into a grand orchestral climax",
    job_defaults={"output_format": "wav"},
    submit_url=f"{FAL_APP}/text-to-audio",
    submit_headers={"Authorization": f"Key {FAL_KEY}", "Content-Type": "application/json"},
    accepted=(
        Accepted("in-queue", _json({
            "request_id": FAL_ID, "status": "IN_QUEUE", "queue_position": 0,
            "status_url": FAL_STATUS_URL, "response_url": FAL_RESPONSE_URL,
            "cancel_url": FAL_CANCEL_URL}), FAL_HANDLE),
        # Without URLs: the queue routes under the model id, without the task sub-path.
        Accepted("no-urls", _json({"request_id": FAL_ID, "status": "IN_QUEUE", "queue_position": 3}),
                 replace(FAL_HANDLE, status=Queued(3))),
    ),
    submit_unusable=(b'{"status": "IN_QUEUE"}', b'{"request_id": ""}'),
    handle=FAL_HANDLE,
    key_headers={"Authorization": f"Key {FAL_KEY}"},
    reported=(
        Reported("in-queue", _json({"status": "IN_QUEUE", "queue_position": 2,
                                    "response_url": FAL_RESPONSE_URL}), Queued(2)),
        Reported("in-progress", _json({
            "status": "IN_PROGRESS", "response_url": FAL_RESPONSE_URL,
            "logs": [{"message": "Generating audio", "level": "INFO", "source": "user",
                      "timestamp": "2025-06-01T12:00:04.125Z"}]}), Running()),
        # Finished, well or not: only the response_url says which.
        Reported("completed", _json({"status": "COMPLETED", "response_url": FAL_RESPONSE_URL,
                                     "logs": None, "metrics": {"inference_time": 6.42}}), Ready()),
        *(Reported(word.lower(), _json({"status": word, "response_url": FAL_RESPONSE_URL}), Ready())
          for word in ("FAILED", "CANCELED", "CANCELLED")),
    ),
    results=(
        Reported("audio", _json({"audio": _fal_file(FAL_CDN, 33554476), "seed": 1847530193}),
                 Succeeded((AudioURL(FAL_CDN, "audio/wav"),), seed=1847530193)),
        # fal-ai/stable-audio (Open) names it audio_file.
        Reported("audio-file", _json({"audio_file": _fal_file(FAL_CDN, 5292044)}),
                 Succeeded((AudioURL(FAL_CDN, "audio/wav"),))),
        Reported("sync-mode-data-uri", _json({
            "audio": _fal_file("data:audio/wav;base64,UklGRiQAAABXQVZFZm10IA==", 16), "seed": 42}),
                 Succeeded((InlineAudio(WAV_BYTES, "audio/wav"),), seed=42)),
        Reported("bad-data-uri", b'{"audio": {"url": "data:audio/wav;base64,@@@not-base64@@@"}}',
                 Failed("unreadable inline audio", charged=False)),
        Reported("no-audio", b'{"seed": 42}', Failed("without any audio", charged=False)),
        _fal_failure(422, _json({"detail": [{
            "loc": ["body", "prompt"], "msg": "The prompt was flagged by the content checker",
            "type": "content_policy_violation", "input": "..."}]}),
                     "prompt: The prompt was flagged by the content checker"),
        _fal_failure(400, b'{"detail": "Audio file could not be decoded"}',
                     "Audio file could not be decoded"),
        _fal_failure(404, b'{"detail": "Request not found"}', "Request not found"),
        _fal_failure(499, b'{"detail": "Request was cancelled by the client", '
                          b'"error_type": "client_cancelled"}',
                     "Request was cancelled by the client (client_cancelled)", "client_cancelled"),
        # A 5xx carrying fal's error_type is the stored outcome of a finished job.
        _fal_failure(504, b'{"detail": "Request timed out", "error_type": "request_timeout"}',
                     "Request timed out (request_timeout)"),
        _fal_failure(500, b'{"detail": "Runner crashed"}', "Runner crashed (runner_server_error)",
                     "runner_server_error"),
    ),
    unknown_word="TELEPORTING", unknown_status=b'{"status": "TELEPORTING"}',
    missing_status=b'{"queue_position": 1}',
    refusals=(
        refused("401", 401, b'{"detail": "No user found for Key ID and Secret"}',
                AuthenticationError, "No user found"),
        refused("403", 403, b'{"detail": "Forbidden: this key may not use fal-ai/stable-audio-25"}',
                AuthenticationError, "Forbidden"),
        refused("403-balance", 403, b'{"detail": "User is locked. Reason: Exhausted balance. '
                                    b'Top up your balance at fal.ai/dashboard/billing."}',
                InsufficientBalanceError, "Exhausted balance"),
        refused("422", 422, _json({"detail": [{
            "loc": ["body", "prompt"], "msg": "The prompt was flagged by the content checker",
            "type": "content_policy_violation"}]}),
                InvalidRequestError, "prompt: The prompt was flagged"),
        refused("400", 400, b'{"detail": "Audio file could not be decoded"}', InvalidRequestError,
                "could not be decoded"),
        refused("404", 404, b'{"detail": "Request not found"}', InvalidRequestError,
                "Request not found"),
        refused("429", 429, b'{"detail": "Rate limit exceeded"}', RateLimitedError,
                "Rate limit exceeded"),
        refused("500-bare", 500, b"Internal Server Error", ProviderUnavailableError,
                "Internal Server Error"),
        refused("502-html", 502, b"<html><body>502 Bad Gateway</body></html>",
                ProviderUnavailableError, "502"),
        refused("503-bare", 503, b"Service Unavailable", ProviderUnavailableError,
                "Service Unavailable"),
    ),
    cancel_method="PUT",
    cost=(0.20, "usd"),
)


# ---- Replicate: a prediction, created (maybe held open), polled, cancelled --------------------

REPLICATE_BASE = "https://api.replicate.com"
REPLICATE_ID = "gm3qorzdhgbfurvjtvhg6dckhu"
REPLICATE_GET_URL = f"{REPLICATE_BASE}/v1/predictions/{REPLICATE_ID}"
REPLICATE_CANCEL_URL = f"{REPLICATE_GET_URL}/cancel"
REPLICATE_OUTPUT = "https://replicate.delivery/xezq/Hj3kLmN0pQ/output.mp3"
REPLICATE_KEY = "r8_test-KEY-4c2e9a7f1d"


def _replicate(status: str, output: Any = None, error: str | None = None, *, started: bool = True,
               data_removed: bool = False, urls: bool = True) -> bytes:
    finished = status in ("succeeded", "failed", "canceled", "aborted")
    body: dict[str, Any] = {
        "id": REPLICATE_ID, "model": "stability-ai/stable-audio-2.5",
        "input": {} if data_removed else {"prompt": "warm analog synth pads, slow tempo"},
        "logs": "", "output": output, "data_removed": data_removed, "error": error,
        "status": status, "created_at": "2025-06-01T12:00:00.000000Z",
        "started_at": "2025-06-01T12:00:00.812000Z" if started else None,
        "completed_at": "2025-06-01T12:00:06.240000Z" if finished else None,
        "urls": {"cancel": REPLICATE_CANCEL_URL, "get": REPLICATE_GET_URL,
                 "stream": "https://stream.replicate.com/v1/files/qoxq-abcdefghijklmnop",
                 "web": f"https://replicate.com/p/{REPLICATE_ID}"},
        "metrics": {"predict_time": 5.428} if finished and started else {},
    }
    if not urls:
        del body["urls"]
    return _json(body)


def _replicate_error(code: int, title: str, detail: str) -> bytes:
    return _json({"title": title, "detail": detail, "status": code})


REPLICATE_HANDLE = RemoteHandle(REPLICATE_ID, REPLICATE_GET_URL, Queued(),
                                cancel_url=REPLICATE_CANCEL_URL)

REPLICATE = Contract(
    name="replicate", cls=ReplicateAdapter, base_url=REPLICATE_BASE, api_key_env="REPLICATE_API_TOKEN",
    api_key=REPLICATE_KEY, default_model="stability-ai/stable-audio-2.5",
    models=frozenset({"stability-ai/stable-audio-2.5"}), synchronous=False, free_failures=False,
    local_audio="none", prompt="warm analog synth pads, slow tempo",
    submit_url=f"{REPLICATE_BASE}/v1/models/stability-ai/stable-audio-2.5/predictions",
    submit_headers={"Authorization": f"Bearer {REPLICATE_KEY}", "Content-Type": "application/json"},
    accepted=(
        Accepted("starting", _replicate("starting", started=False), REPLICATE_HANDLE, code=201),
        # Prefer: wait held the request until the prediction finished…
        Accepted("held-succeeded", _replicate("succeeded", REPLICATE_OUTPUT),
                 replace(REPLICATE_HANDLE, status=Succeeded((AudioURL(REPLICATE_OUTPUT),))),
                 code=201),
        # …or ran out first.
        Accepted("held-processing", _replicate("processing"),
                 replace(REPLICATE_HANDLE, status=Running()), code=201),
        Accepted("no-urls", _replicate("starting", started=False, urls=False), REPLICATE_HANDLE,
                 code=201),
    ),
    submit_unusable=(b'{"status": "starting", "output": null, "urls": {}}',
                     b'{"id": "", "status": "starting"}'),
    handle=REPLICATE_HANDLE,
    key_headers={"Authorization": f"Bearer {REPLICATE_KEY}"},
    reported=(
        Reported("starting", _replicate("starting", started=False), Queued()),
        Reported("processing", _replicate("processing"), Running()),
        Reported("succeeded", _replicate("succeeded", REPLICATE_OUTPUT),
                 Succeeded((AudioURL(REPLICATE_OUTPUT),))),
        Reported("output-list", _replicate("succeeded", [REPLICATE_OUTPUT]),
                 Succeeded((AudioURL(REPLICATE_OUTPUT),))),
        Reported("output-data-uri", _replicate("succeeded", MP3_DATA_URI),
                 Succeeded((InlineAudio(MP3_BYTES, "audio/mpeg"),))),
        Reported("output-bad-data-uri", _replicate("succeeded", "data:audio/mpeg;base64,@@@not base64@@@"),
                 Failed("inline audio")),
        # Outputs are deleted an hour after creation.
        Reported("data-removed", _replicate("succeeded", data_removed=True), Failed("output deleted")),
        Reported("data-removed-output-left", _replicate("succeeded", REPLICATE_OUTPUT,
                                                        data_removed=True), Failed("data_removed")),
        Reported("succeeded-no-output", _replicate("succeeded"), Failed("output deleted")),
        Reported("failed", _replicate(
            "failed", error="Prediction failed: the model could not generate audio for this prompt."),
                 Failed("Prediction failed: the model could not generate audio for this prompt.",
                        charged=True)),
        # Canceled is billed for the time it ran, if it ran at all.
        Reported("canceled-running", _replicate("canceled"), Failed("canceled", charged=True)),
        Reported("canceled-queued", _replicate("canceled", started=False),
                 Failed("canceled", charged=False)),
        Reported("aborted", _replicate(
            "aborted", error="Prediction deadline exceeded before it started (Cancel-After: 1m)",
            started=False),
                 Failed("aborted: Prediction deadline exceeded before it started (Cancel-After: 1m)",
                        charged=False)),
    ),
    unknown_word="teleporting", unknown_status=_replicate("teleporting"),
    missing_status=_json({"id": REPLICATE_ID, "output": None}),
    refusals=(
        refused("401", 401, _replicate_error(401, "Unauthenticated", "Invalid token."),
                AuthenticationError, "Invalid token."),
        refused("402", 402, _replicate_error(
            402, "Insufficient credit", "You have insufficient credit to run this model. Go to "
            "https://replicate.com/account/billing#billing to purchase credit."),
                InsufficientBalanceError, "insufficient credit"),
        refused("404", 404, _replicate_error(404, "Not found", "Not found."), InvalidRequestError,
                "Not found."),
        refused("422", 422, _json({
            "title": "Input validation failed",
            "detail": "- input.duration: Must be less than or equal to 190\n", "status": 422,
            "invalid_fields": [{"type": "number_lte", "field": "input.duration",
                                "description": "Must be less than or equal to 190"}]}),
                InvalidRequestError, "input.duration: Must be less than or equal to 190"),
        refused("429", 429, b'{"detail": "Request was throttled. Your rate limit resets in ~30s.",'
                            b' "status": 429}', RateLimitedError, "Request was throttled"),
        refused("500", 500, _replicate_error(500, "Internal Server Error", "Something went wrong."),
                ProviderUnavailableError, "Something went wrong."),
        refused("503", 503, b"Service Unavailable", ProviderUnavailableError, "Service Unavailable"),
    ),
    cancel_method="POST",
    # "Your rate limit resets in ~30s": the pause when Retry-After is not sent.
    retry_after_default=30.0,
)


# ---- Stability AI: synchronous, the audio in the submit reply --------------------------------

STABILITY_BASE = "https://api.stability.ai"
STABILITY_REQUEST_ID = "d5a1e4c3b2f6a7089e1d2c3b4a5f6e7d"
STABILITY_KEY = "sk-test-stab-123"
_WITH_ID = {**JSON_HEADERS, "x-request-id": STABILITY_REQUEST_ID}


def _stability_error(id: str, name: str, *errors: str) -> bytes:
    return _json({"id": id, "name": name, "errors": list(errors)})


def _stability_bad_base64(audio: str) -> Accepted:
    """A JSON success whose audio does not decode: a failed job, not a crash."""
    body = _json({"audio": audio, "seed": 1, "finish_reason": "SUCCESS"})
    return Accepted(f"base64-{audio}", body,
                    RemoteHandle(STABILITY_REQUEST_ID, None, Failed("base64")), headers=_WITH_ID)


STABILITY = Contract(
    name="stability", cls=StabilityAdapter, base_url=STABILITY_BASE, api_key_env="STABILITY_API_KEY",
    api_key=STABILITY_KEY, default_model="stable-audio-2.5",
    models=frozenset({"stable-audio-2", "stable-audio-2.5"}), synchronous=True,
    # "Failed generations are not charged."
    free_failures=True, local_audio="multipart", prompt="warm analog synth pads, slow tempo",
    submit_url=f"{STABILITY_BASE}/v2beta/audio/stable-audio-2/text-to-audio",
    submit_headers={"authorization": f"Bearer {STABILITY_KEY}", "accept": "audio/*"},
    body="form", ok_codes=(200,),
    accepted=(
        # accept: application/json: the audio as base64, with its seed and finish reason.
        Accepted("json-audio", _json({"audio": "SUQzBAAAAAAAAP/7kGQADw==", "seed": 123,
                                      "finish_reason": "SUCCESS"}),
                 RemoteHandle(STABILITY_REQUEST_ID, None, Succeeded(
                     (InlineAudio(MP3_BYTES),), seed=123, finish_reason="SUCCESS")),
                 headers=_WITH_ID),
        Accepted("json-audio-only", b'{"audio": "SUQzBAAAAAAAAP/7kGQADw=="}',
                 RemoteHandle(None, None, Succeeded((InlineAudio(MP3_BYTES),)))),
        *(_stability_bad_base64(audio) for audio in ("not base64!!", "SUQzBA=", "SU=Q", "SUQzB")),
        Accepted("base64-non-ascii",
                 '{"audio": "SUQz\u00e9AAAA", "seed": 1, "finish_reason": "SUCCESS"}'.encode(),
                 RemoteHandle(None, None, Failed("base64"))),
    ),
    submit_unusable=(
        b'{"seed": 123, "finish_reason": "SUCCESS"}', b'{"audio": null, "seed": 123}',
        b'{"audio": 42}', b'{"audio": ["SUQz"]}',
        b'{"audio": "", "seed": 1, "finish_reason": "SUCCESS"}',
    ),
    refusals=(
        # The body's id is what support can trace when no x-request-id header came.
        refused("400-bad_request", 400, _stability_error(
            "a3f4c2e1b9d8e7f6a5b4c3d2e1f0a9b8", "bad_request", "prompt: cannot be empty"),
                InvalidRequestError, "bad_request", "prompt: cannot be empty",
                request_id="a3f4c2e1b9d8e7f6a5b4c3d2e1f0a9b8"),
        # A key problem gives 401 (not listed in the spec).
        refused("401", 401, _stability_error(
            "b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6", "unauthorized",
            "authorization: invalid or missing API key"),
                AuthenticationError, "invalid or missing API key",
                request_id="b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6"),
        refused("403-content_moderation", 403, _stability_error(
            "c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7", "content_moderation",
            "Your request was flagged by our content moderation system, as a result your "
            "request was denied and you were not charged."),
                ContentRejectedError, "content moderation system",
                request_id="c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7"),
        # A 403 that is not moderation speaks about the key.
        refused("403-forbidden", 403, _stability_error("x1", "forbidden", "key not allowed"),
                AuthenticationError, "key not allowed", request_id="x1"),
        refused("422-invalid_language", 422, _stability_error(
            "d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8", "invalid_language",
            "English is the only supported language for this service."),
                InvalidRequestError, "English is the only supported language",
                request_id="d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8"),
        refused("429-rate_limit_exceeded", 429, _stability_error(
            "e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9", "rate_limit_exceeded",
            "You have exceeded the rate limit of 150 requests within a 10 second period, and "
            "have been timed out for 60 seconds."),
                RateLimitedError, "exceeded the rate limit",
                request_id="e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9"),
        refused("500-internal_error", 500, _stability_error(
            "f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0", "internal_error",
            "An unexpected server error has occurred, please try again later."),
                ProviderUnavailableError, "unexpected server error",
                request_id="f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0"),
        refused("502-html", 502, b"<html>502 Bad Gateway</html>", ProviderUnavailableError,
                "502 Bad Gateway", headers={"content-type": "text/html"}),
    ),
    # 2.5 is a flat 20 credits.
    cost=(20.0, "credits"),
)


#: Every provider's row, by name.
CONTRACTS: tuple[Contract[Any], ...] = (AIMLAPI, FAL, PIXAZO, REPLICATE, STABILITY, WAVESPEED)

#: 2xx bodies that are not a JSON object at all, by name.
NOT_JSON: Mapping[str, bytes] = {"html": b"<html>502 Bad Gateway</html>", "array": b"[1, 2]",
                                 "empty": b"", "null": b"null", "string": b'"completed"'}


def _unusable(contract: Contract[Any]) -> list[tuple[str, str, bytes]]:
    """(phase, label, body): 2xx replies to a submit or a poll that hold no usable answer."""
    cases: list[tuple[str, str, bytes]] = []
    for phase, bodies in (("submit", contract.submit_unusable), ("poll", contract.status_unusable)):
        if phase == "poll" and contract.handle is None:
            continue
        cases += [(phase, label, body) for label, body in NOT_JSON.items()]
        cases += [(phase, f"unusable-{i}", body) for i, body in enumerate(bodies)]
    return cases


R = TypeVar("R")


def each(rows: Callable[[Contract[Any]], Iterable[R]], name: Callable[[R], str]) -> list[Any]:
    """``(contract, row)`` for every row of every provider, with ids ``provider-row``."""
    return [pytest.param(c, row, id=f"{c.name}-{name(row)}") for c in CONTRACTS for row in rows(c)]


def _row_id(row: Accepted | Reported | Refused) -> str:
    return row.id


def reads_as(actual: object, expected: RemoteStatus) -> bool:
    """Whether ``actual`` is ``expected`` (a ``Failed`` by fragment: see :class:`Reported`)."""
    if isinstance(expected, Failed):
        return isinstance(actual, Failed) and expected.reason in actual.reason \
            and actual.charged == expected.charged
    return actual == expected


def assert_handle(actual: RemoteHandle, expected: RemoteHandle) -> None:
    assert replace(actual, status=expected.status) == expected
    assert reads_as(actual.status, expected.status), actual.status


def parse(contract: Contract[Any], adapter: Adapter, phase: str, r: HttpReply) -> object:
    """Hand ``r`` to the adapter as the answer to a submit, a poll or an upload."""
    if phase == "submit":
        return adapter.parse_submit(replace(r, url=contract.submit_url))
    if phase == "poll":
        return adapter.parse_poll(r, contract.poll_handle())
    return adapter.parse_upload(r)


def _polled() -> list[Contract[Any]]:
    return [c for c in CONTRACTS if c.handle is not None]


def _by_name(contracts: Iterable[Contract[Any]]) -> list[Any]:
    return [pytest.param(c, id=c.name) for c in contracts]


# ---- what each adapter declares --------------------------------------------------------------


def test_every_registered_provider_has_a_contract_row() -> None:
    """The registry and the table name the same providers: a new adapter needs its row."""
    assert sorted(ADAPTERS) == sorted(c.name for c in CONTRACTS)


@pytest.mark.parametrize("contract", _by_name(CONTRACTS))
def test_adapter_declares_its_provider(contract: Contract[Any]) -> None:
    """The registry finds the adapter by name; its models, shape and billing are the row's."""
    cls = contract.cls
    assert (cls.name, ADAPTERS[contract.name]) == (contract.name, cls)
    assert (cls.default_model, frozenset(cls.models)) == (contract.default_model, contract.models)
    assert (cls.synchronous, cls.free_failures, cls.local_audio) == (
        contract.synchronous, contract.free_failures, contract.local_audio)


def _audio_urls(contract: Contract[Any]) -> list[str]:
    statuses = [row.handle.status for row in contract.accepted] \
        + [row.status for row in (*contract.reported, *contract.results)]
    return [audio.url for status in statuses if isinstance(status, Succeeded)
            for audio in status.audio if isinstance(audio, AudioURL)]


@pytest.mark.parametrize("contract", _by_name(CONTRACTS))
def test_default_job_cost_and_download_headers(contract: Contract[Any]) -> None:
    """The default job costs the published price (or None); the audio URLs the provider
    hands back are fetched without the key."""
    adapter = contract.build()
    assert adapter.cost(contract.job()) == contract.cost
    for url in _audio_urls(contract):
        assert adapter.download_headers(url) == {}


# ---- the requests ----------------------------------------------------------------------------


@pytest.mark.parametrize("contract", _by_name(CONTRACTS))
def test_submit_posts_to_the_documented_route_with_the_key(contract: Contract[Any]) -> None:
    """The default job is POSTed to its route with the documented headers and body kind; a
    base URL written with a trailing slash gives the same route."""
    request = contract.build().submit_request(contract.job())
    assert (request.method, request.url) == ("POST", contract.submit_url)
    assert dict(request.headers) == contract.submit_headers
    if contract.body == "json":
        assert request.form is None and isinstance(request.json, dict)
    else:
        assert request.json is None and request.form
    slashed = contract.build(contract.base_url + "/")
    assert slashed.submit_request(contract.job()).url == contract.submit_url


@pytest.mark.parametrize("contract", _by_name(_polled()))
def test_follow_up_requests_carry_only_the_key(contract: Contract[Any]) -> None:
    """Poll and result are bodiless GETs of the handle's URLs, cancel its documented method
    (or nothing), an upload a POST: each with the key header alone."""
    adapter, handle = contract.build(), contract.poll_handle()
    sent = [("GET", handle.poll_url, adapter.poll_request(handle))]
    if handle.result_url is not None:
        sent.append(("GET", handle.result_url, adapter.result_request(handle)))
    cancel = adapter.cancel_request(handle)
    if contract.cancel_method is None:
        assert cancel is None
    else:
        assert cancel is not None
        sent.append((contract.cancel_method, handle.cancel_url, cancel))
    for method, url, request in sent:
        assert (request.method, request.url, request.json, request.form) == (method, url, None, None)
        assert dict(request.headers) == contract.key_headers
    if contract.local_audio == "upload":
        # A multipart body: the HTTP client writes its content type with the boundary.
        upload = adapter.upload_request(Path("in.wav"))
        assert (upload.method, dict(upload.headers)) == ("POST", contract.key_headers)


@pytest.mark.parametrize("contract", _by_name(CONTRACTS))
def test_no_request_shows_the_key(contract: Contract[Any]) -> None:
    """The key is in every request's headers but in no request's repr or str, nor the adapter's."""
    adapter = contract.build()
    requests: list[HttpRequest | None] = [adapter.submit_request(contract.job())]
    if contract.handle is not None:
        requests += [adapter.poll_request(contract.handle), adapter.cancel_request(contract.handle)]
        if contract.handle.result_url is not None:
            requests.append(adapter.result_request(contract.handle))
    if contract.local_audio == "upload":
        requests.append(adapter.upload_request(Path("in.wav")))
    for request in filter(None, requests):
        assert any(contract.api_key in value for value in request.headers.values())
        assert contract.api_key not in repr(request) and contract.api_key not in str(request)
    assert contract.api_key not in repr(adapter)


# ---- successful replies ----------------------------------------------------------------------


def codes(contract: Contract[Any], row: Accepted | Reported) -> tuple[int, ...]:
    """A success body is read alike under every success code; any other under its own."""
    return contract.ok_codes if row.code in contract.ok_codes else (row.code,)


@pytest.mark.parametrize(("contract", "row"), each(lambda c: c.accepted, _row_id))
def test_submit_reply_reads_as_its_handle(contract: Contract[Any], row: Accepted) -> None:
    """Each documented submit reply, under any success code, gives its request id, follow-up
    URLs and first status."""
    for code in codes(contract, row):
        handle = parse(contract, contract.build(), "submit", reply(code, row.body, row.headers))
        assert isinstance(handle, RemoteHandle), code
        assert_handle(handle, row.handle)


@pytest.mark.parametrize(("contract", "row"), each(lambda c: c.reported, _row_id))
def test_status_reply_reads_as_its_status(contract: Contract[Any], row: Reported) -> None:
    """Each documented status word (and body) maps onto one engine status, whichever success
    code it comes with (fal answers 202 while pending)."""
    for code in codes(contract, row):
        status = contract.build().parse_poll(reply(code, row.body, row.headers),
                                             contract.poll_handle())
        assert reads_as(status, row.status), (code, status)


@pytest.mark.parametrize(("contract", "row"), each(lambda c: c.results, _row_id))
def test_result_reply_reads_as_its_outcome(contract: Contract[Any], row: Reported) -> None:
    """After Ready, the result reply is the audio, or the job's final failure (not an error)."""
    outcome = contract.build().parse_result(reply(row.code, row.body, row.headers),
                                            contract.poll_handle())
    assert reads_as(outcome, row.status), outcome


@pytest.mark.parametrize("contract", _by_name(_polled()))
def test_unknown_status_word_is_running_and_logged(contract: Contract[Any]) -> None:
    """A word the contract does not list keeps the job polled until its deadline: Running,
    never success, with one warning naming provider, request and word."""
    handle = contract.poll_handle()
    with capture_logs() as logs:
        status = contract.build().parse_poll(reply(200, contract.unknown_status), handle)
    assert status == Running()
    assert [(e["event"], e["provider"], e["request_id"], e["status"]) for e in logs] == [
        ("poll.unknown_status", contract.name, handle.request_id, contract.unknown_word)]


@pytest.mark.parametrize("contract", _by_name(_polled()))
def test_missing_status_word_is_unavailable(contract: Contract[Any]) -> None:
    """A status reply without a status word is no status at all: ProviderUnavailableError."""
    with pytest.raises(ProviderUnavailableError) as info:
        contract.build().parse_poll(reply(200, contract.missing_status), contract.poll_handle())
    assert (info.value.provider, info.value.request_id) == (
        contract.name, contract.poll_handle().request_id)


@pytest.mark.parametrize(
    ("contract", "case"),
    each(_unusable, lambda case: f"{case[0]}-{case[1]}"),
)
def test_unusable_success_is_unavailable(contract: Contract[Any],
                                         case: tuple[str, str, bytes]) -> None:
    """A 2xx that is not JSON, or lacks what the contract promises, is ProviderUnavailableError."""
    phase, _, body = case
    code = contract.accepted[0].code if phase == "submit" else 200
    with pytest.raises(ProviderUnavailableError) as info:
        parse(contract, contract.build(), phase, reply(code, body))
    assert (info.value.provider, info.value.status) == (contract.name, code)
    if phase == "poll":
        assert info.value.request_id == contract.poll_handle().request_id


# ---- error replies ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("contract", "case"),
    each(lambda c: [(row, phase) for row in c.refusals for phase in c.phases()],
         lambda case: f"{case[0].id}-{case[1]}"),
)
def test_error_reply_raises_its_type_with_the_providers_words(
    contract: Contract[Any], case: tuple[Refused, str]
) -> None:
    """Each error reply raises its exception type with the provider's words, its status and
    the request id (the job's when polling), and never the key."""
    row, phase = case
    with pytest.raises(ProviderError) as info:
        parse(contract, contract.build(), phase, reply(row.code, row.body, row.headers))
    error = info.value
    assert type(error) is row.error
    assert (error.provider, error.status) == (contract.name, row.code)
    for words in row.words:
        assert words in error.message and words in str(error)
    expected_id = contract.poll_handle().request_id if phase == "poll" else row.request_id
    assert error.request_id == expected_id
    assert contract.api_key not in str(error) and contract.api_key not in repr(error)


@pytest.mark.parametrize(
    ("contract", "case"),
    each(lambda c: [(phase, headers) for phase in c.phases()
                    for headers in ({}, {"retry-after": "7"}, {"Retry-After": "7"},
                                    {"retry-after": "0.25"})],
         lambda case: f"{case[0]}-{'-'.join(f'{k}:{v}' for k, v in case[1].items()) or 'none'}"),
)
def test_rate_limited_carries_the_pause(contract: Contract[Any],
                                        case: tuple[str, dict[str, str]]) -> None:
    """A 429's Retry-After (any case, whole or fractional seconds) is the pause; without one,
    only what the provider's body says, else None for the engine's own backoff."""
    phase, headers = case
    row = contract.refusal(429)
    with pytest.raises(RateLimitedError) as info:
        parse(contract, contract.build(), phase, reply(429, row.body, {**JSON_HEADERS, **headers}))
    expected = float(next(iter(headers.values()))) if headers else contract.retry_after_default
    assert info.value.retry_after == expected


# ---- where the key may go --------------------------------------------------------------------


def _foreign_origins(contract: Contract[Any]) -> list[tuple[str, str]]:
    """(label, origin) to move the first submit reply's URLs to, where it names any."""
    if contract.base_url.encode() not in contract.accepted[0].body:
        return []
    netloc = urlsplit(contract.base_url).netloc
    return [("other-host", "https://evil.example.com"), ("plain-http", f"http://{netloc}"),
            ("other-port", f"https://{netloc}:8443")]


@pytest.mark.parametrize(("contract", "case"), each(_foreign_origins, lambda case: case[0]))
def test_urls_off_the_api_origin_are_never_followed(contract: Contract[Any],
                                                    case: tuple[str, str]) -> None:
    """Follow-up URLs in a submit reply on another host, scheme or port are replaced by the
    documented routes, so the key is never sent anywhere else."""
    row = contract.accepted[0]
    body = row.body.replace(contract.base_url.encode(), case[1].encode())
    handle = parse(contract, contract.build(), "submit", reply(row.code, body, row.headers))
    assert isinstance(handle, RemoteHandle)
    assert_handle(handle, row.handle)
