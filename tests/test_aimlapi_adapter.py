"""Tests for the AI/ML API adapter against the reply bodies documented in providers.md."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import structlog
import structlog.testing

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
from stableaudio_async.http import HttpReply
from stableaudio_async.models import (
    AudioURL,
    Failed,
    Job,
    Queued,
    RemoteHandle,
    Running,
    Succeeded,
    Task,
)
from stableaudio_async.providers import ADAPTERS
from stableaudio_async.providers.aimlapi import AimlapiAdapter

API_KEY = "aiml-test-key-5d2e"
BASE = "https://api.aimlapi.com"
ROUTE = f"{BASE}/v2/generate/audio"
GENERATION_ID = "1f7c9e0a-2b4d-4c6e-8a1b-3d5f7a9c0e2b:stable-audio"
POLL_URL = f"{ROUTE}?generation_id=1f7c9e0a-2b4d-4c6e-8a1b-3d5f7a9c0e2b%3Astable-audio"
CDN_URL = "https://cdn.aimlapi.com/generations/1f7c9e0a-2b4d-4c6e-8a1b-3d5f7a9c0e2b.wav"
ERROR_REQUEST_ID = "6b1e0c52-93d4-4f0a-b7c8-2e4d6f8a0b1c"

# ---- Reply bodies, written out as the documentation gives them. -------------------------------

SUBMIT_QUEUED = b"""{
  "id": "1f7c9e0a-2b4d-4c6e-8a1b-3d5f7a9c0e2b:stable-audio",
  "status": "queued"
}"""

STATUS_QUEUED = b"""{
  "id": "1f7c9e0a-2b4d-4c6e-8a1b-3d5f7a9c0e2b:stable-audio",
  "status": "queued",
  "audio_file": null,
  "error": null
}"""

STATUS_GENERATING = b"""{
  "id": "1f7c9e0a-2b4d-4c6e-8a1b-3d5f7a9c0e2b:stable-audio",
  "status": "generating",
  "audio_file": null,
  "error": null
}"""

STATUS_COMPLETED = b"""{
  "id": "1f7c9e0a-2b4d-4c6e-8a1b-3d5f7a9c0e2b:stable-audio",
  "status": "completed",
  "audio_file": {
    "url": "https://cdn.aimlapi.com/generations/1f7c9e0a-2b4d-4c6e-8a1b-3d5f7a9c0e2b.wav",
    "content_type": "audio/wav",
    "file_name": "1f7c9e0a-2b4d-4c6e-8a1b-3d5f7a9c0e2b.wav",
    "file_size": 8294444
  },
  "error": null
}"""

STATUS_COMPLETED_OCTET_STREAM = b"""{
  "id": "1f7c9e0a-2b4d-4c6e-8a1b-3d5f7a9c0e2b:stable-audio",
  "status": "completed",
  "audio_file": {
    "url": "https://cdn.aimlapi.com/generations/1f7c9e0a-2b4d-4c6e-8a1b-3d5f7a9c0e2b.wav",
    "content_type": "application/octet-stream",
    "file_name": "1f7c9e0a-2b4d-4c6e-8a1b-3d5f7a9c0e2b.wav",
    "file_size": 8294444
  },
  "error": null
}"""

STATUS_COMPLETED_NO_FILE = b"""{
  "id": "1f7c9e0a-2b4d-4c6e-8a1b-3d5f7a9c0e2b:stable-audio",
  "status": "completed",
  "audio_file": null,
  "error": null
}"""

STATUS_ERROR = b"""{
  "id": "1f7c9e0a-2b4d-4c6e-8a1b-3d5f7a9c0e2b:stable-audio",
  "status": "error",
  "audio_file": null,
  "error": {"name": "GenerationError", "message": "The model could not generate audio"}
}"""

STATUS_ERROR_NO_DETAIL = b"""{
  "id": "1f7c9e0a-2b4d-4c6e-8a1b-3d5f7a9c0e2b:stable-audio",
  "status": "error",
  "audio_file": null,
  "error": null
}"""

STATUS_UNKNOWN_WORD = b"""{
  "id": "1f7c9e0a-2b4d-4c6e-8a1b-3d5f7a9c0e2b:stable-audio",
  "status": "dreaming",
  "audio_file": null,
  "error": null
}"""


def error_body(status: int, message: str) -> bytes:
    return (
        b'{"message": "%s", "path": "/v2/generate/audio", "requestId": "%s",'
        b' "statusCode": %d, "timestamp": "2025-06-01T12:00:00.000Z"}'
        % (message.encode(), ERROR_REQUEST_ID.encode(), status)
    )


ERROR_400 = error_body(400, "seconds_total must not be greater than 47")
ERROR_401 = error_body(401, "Unauthorized")
ERROR_403_FORBIDDEN = error_body(403, "Forbidden resource")
ERROR_403_CREDITS = error_body(403, "You do not have enough credits to run this model")
ERROR_403_BALANCE = error_body(403, "Insufficient balance: top up to continue")
ERROR_403_MODERATION = error_body(403, "Prompt blocked by content moderation")
ERROR_404 = error_body(404, "Generation not found")
ERROR_429 = error_body(429, "Too many requests")
ERROR_500 = error_body(500, "Internal server error")

JSON_HEADERS = {"content-type": "application/json"}


@pytest.fixture
def adapter() -> AimlapiAdapter:
    return AimlapiAdapter(ProviderSettings(base_url=BASE, api_key_env="AIMLAPI_API_KEY"), API_KEY)


@pytest.fixture
def handle() -> RemoteHandle:
    return RemoteHandle(GENERATION_ID, POLL_URL, Queued())


def reply(status: int, body: bytes, headers: dict[str, str] | None = None) -> HttpReply:
    return HttpReply(status, headers if headers is not None else JSON_HEADERS, body)


def job(**fields: Any) -> Job:
    fields.setdefault("id", "job-1")
    fields.setdefault("provider", "aimlapi")
    fields.setdefault("prompt", "rain on a tin roof, distant thunder")
    fields.setdefault("output_format", "wav")
    return Job(**fields)


# ---- the adapter's place ---------------------------------------------------------------------


def test_adapter_is_registered_as_a_text_only_queue_provider() -> None:
    """The registry finds it as "aimlapi": queued, no local files, no cancel, no price."""
    assert ADAPTERS["aimlapi"] is AimlapiAdapter
    assert AimlapiAdapter.default_model == "stable-audio"
    assert set(AimlapiAdapter.models) == {"stable-audio"}
    assert not AimlapiAdapter.synchronous and not AimlapiAdapter.free_failures
    assert AimlapiAdapter.local_audio == "none"


def test_no_cancel_and_no_published_price(adapter: AimlapiAdapter, handle: RemoteHandle) -> None:
    """The API has no cancel route and publishes no price: both are None."""
    assert adapter.cancel_request(handle) is None
    assert adapter.cost(job()) is None


# ---- submit_request --------------------------------------------------------------------------


def test_submit_posts_json_with_bearer_key(adapter: AimlapiAdapter) -> None:
    """The submit is a JSON POST to /v2/generate/audio with Authorization: Bearer KEY."""
    request = adapter.submit_request(job())
    assert (request.method, request.url) == ("POST", ROUTE)
    assert dict(request.headers) == {"Authorization": f"Bearer {API_KEY}",
                                     "Content-Type": "application/json"}
    assert request.form is None


def test_submit_route_ignores_trailing_slash_in_base_url() -> None:
    """A base URL written with a trailing slash gives the same route (no double slash)."""
    adapter = AimlapiAdapter(
        ProviderSettings(base_url=BASE + "/", api_key_env="AIMLAPI_API_KEY"), API_KEY)
    assert adapter.submit_request(job()).url == ROUTE


@pytest.mark.parametrize(
    ("fields", "body_key", "sent"),
    [
        ({"duration": 30.0}, "seconds_total", 30),
        ({"duration": 47}, "seconds_total", 47),
        ({"duration": 1}, "seconds_total", 1),
        ({"steps": 100}, "steps", 100),
        ({"steps": 1000}, "steps", 1000),
        ({"prompt": "lo-fi piano"}, "prompt", "lo-fi piano"),
        ({"model": "stable-audio"}, "model", "stable-audio"),
        ({"options": {"seconds_start": 5}}, "seconds_start", 5),
    ],
    ids=["duration-30", "duration-47", "duration-1", "steps-100", "steps-1000", "prompt",
         "model", "options-seconds-start"],
)
def test_submit_maps_fields(
    adapter: AimlapiAdapter, fields: dict[str, Any], body_key: str, sent: Any
) -> None:
    """Each unified field lands in the body under AI/ML API's name, seconds as an integer."""
    body = adapter.submit_request(job(**fields)).json
    assert body[body_key] == sent
    assert type(body[body_key]) is type(sent)
    assert "duration" not in body


def test_submit_omits_unset_fields(adapter: AimlapiAdapter) -> None:
    """Only model and prompt are sent by default, so the API applies 30 s and 100 steps."""
    body = adapter.submit_request(job(prompt="ocean waves")).json
    assert body == {"model": "stable-audio", "prompt": "ocean waves"}


def test_submit_never_sends_an_output_format(adapter: AimlapiAdapter) -> None:
    """The API has no format field: the job's "wav" only names the file, it is not sent."""
    assert "output_format" not in adapter.submit_request(job(output_format="wav")).json


def test_submit_passes_options_through(adapter: AimlapiAdapter) -> None:
    """Options other than the mapped keys are copied into the body untouched."""
    body = adapter.submit_request(job(duration=10, options={"seconds_start": 2,
                                                            "future_flag": True})).json
    assert body == {"model": "stable-audio", "prompt": "rain on a tin roof, distant thunder",
                    "seconds_total": 10, "seconds_start": 2, "future_flag": True}


def test_requests_hide_the_api_key(adapter: AimlapiAdapter, handle: RemoteHandle) -> None:
    """Neither a request's repr nor the adapter's repr shows the API key."""
    for request in (adapter.submit_request(job()), adapter.poll_request(handle)):
        assert request.headers["Authorization"] == f"Bearer {API_KEY}"
        assert API_KEY not in repr(request) and API_KEY not in str(request)
    assert API_KEY not in repr(adapter)


# ---- parse_submit ----------------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 201, 202])
def test_parse_submit_reads_queued_reply(adapter: AimlapiAdapter, status: int) -> None:
    """A 2xx gives the generation id, its poll URL and a Queued status."""
    handle = adapter.parse_submit(reply(status, SUBMIT_QUEUED))
    assert handle == RemoteHandle(GENERATION_ID, POLL_URL, Queued())


@pytest.mark.parametrize("generation_id", [
    GENERATION_ID, "a:b:stable-audio", "x&y=1:stable-audio", "sp ace/slash?q#f:stable-audio"])
def test_poll_url_carries_the_id_as_one_encoded_query_value(
    adapter: AimlapiAdapter, generation_id: str
) -> None:
    """The id's colon and any other reserved character is encoded; decoding gives the id back."""
    body = b'{"id": "%s", "status": "queued"}' % generation_id.encode()
    handle = adapter.parse_submit(reply(200, body))
    request = adapter.poll_request(handle)
    parts = urlsplit(request.url)
    assert (request.method, f"{parts.scheme}://{parts.netloc}{parts.path}") == ("GET", ROUTE)
    assert ":" not in parts.query
    assert parse_qs(parts.query, strict_parsing=True) == {"generation_id": [generation_id]}


@pytest.mark.parametrize("body", [b'{"status": "queued"}', b'{"id": "", "status": "queued"}',
                                  b'{"id": 42, "status": "queued"}'])
def test_parse_submit_without_id_is_unavailable(adapter: AimlapiAdapter, body: bytes) -> None:
    """A success reply without a usable id is a ProviderUnavailableError."""
    with pytest.raises(ProviderUnavailableError) as info:
        adapter.parse_submit(reply(200, body))
    assert (info.value.provider, info.value.status) == ("aimlapi", 200)


@pytest.mark.parametrize("body", [b"<html>Bad gateway</html>", b"[1, 2]", b""])
def test_parse_submit_unreadable_body_is_unavailable(adapter: AimlapiAdapter, body: bytes) -> None:
    """A success status whose body is not a JSON object is a ProviderUnavailableError."""
    with pytest.raises(ProviderUnavailableError):
        adapter.parse_submit(reply(200, body))


# ---- poll ------------------------------------------------------------------------------------


def test_poll_request_sends_only_the_key(adapter: AimlapiAdapter, handle: RemoteHandle) -> None:
    """Polling GETs the handle's URL with the bearer key and no body."""
    request = adapter.poll_request(handle)
    assert (request.method, request.url, request.json) == ("GET", POLL_URL, None)
    assert dict(request.headers) == {"Authorization": f"Bearer {API_KEY}"}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (STATUS_QUEUED, Queued()),
        (STATUS_GENERATING, Running()),
        (STATUS_COMPLETED, Succeeded((AudioURL(CDN_URL, "audio/wav"),))),
        (STATUS_COMPLETED_OCTET_STREAM, Succeeded((AudioURL(CDN_URL, None),))),
        (STATUS_COMPLETED_NO_FILE,
         Failed("provider reported completed without an audio_file url")),
        (STATUS_ERROR, Failed("GenerationError: The model could not generate audio")),
        (STATUS_ERROR_NO_DETAIL, Failed("generation failed")),
    ],
    ids=["queued", "generating", "completed", "completed-octet-stream", "completed-no-file",
         "error", "error-no-detail"],
)
def test_parse_poll_maps_status_words(
    adapter: AimlapiAdapter, handle: RemoteHandle, body: bytes, expected: object
) -> None:
    """Each documented status word maps onto the engine's status union; error is final."""
    assert adapter.parse_poll(reply(200, body), handle) == expected


def test_status_words_are_read_case_insensitively(
    adapter: AimlapiAdapter, handle: RemoteHandle
) -> None:
    """"COMPLETED" reads as completed: the word's case is not part of the contract's meaning."""
    body = STATUS_COMPLETED.replace(b'"completed"', b'"COMPLETED"')
    assert isinstance(adapter.parse_poll(reply(200, body), handle), Succeeded)


@pytest.mark.parametrize("body", [b'{"id": "x"}'], ids=["missing-status"])
def test_parse_poll_unknown_status_is_unavailable(
    adapter: AimlapiAdapter, handle: RemoteHandle, body: bytes
) -> None:
    """A missing status word is a ProviderUnavailableError carrying the id."""
    with pytest.raises(ProviderUnavailableError) as info:
        adapter.parse_poll(reply(200, body), handle)
    assert (info.value.provider, info.value.request_id) == ("aimlapi", GENERATION_ID)


def test_an_unknown_status_word_is_logged_and_taken_as_still_running(
    adapter: AimlapiAdapter, handle: RemoteHandle
) -> None:
    """A word the contract does not list keeps the job polled until its deadline: Running,
    never success, with a warning naming it."""
    with structlog.testing.capture_logs() as logs:
        assert adapter.parse_poll(reply(200, STATUS_UNKNOWN_WORD), handle) == Running()
    assert [(e["event"], e["provider"]) for e in logs] == [("poll.unknown_status", "aimlapi")]


@pytest.mark.parametrize("body", [b"<html>502 Bad Gateway</html>", b"null", b'"completed"'])
def test_parse_poll_non_json_body_is_unavailable(
    adapter: AimlapiAdapter, handle: RemoteHandle, body: bytes
) -> None:
    """A 200 whose body is not a JSON object is a ProviderUnavailableError."""
    with pytest.raises(ProviderUnavailableError) as info:
        adapter.parse_poll(reply(200, body, {"content-type": "text/html"}), handle)
    assert (info.value.request_id, info.value.status) == (GENERATION_ID, 200)


# ---- error replies ---------------------------------------------------------------------------

ERROR_CASES = [
    pytest.param(400, ERROR_400, {}, InvalidRequestError, "must not be greater than 47",
                 id="400"),
    pytest.param(401, ERROR_401, {}, AuthenticationError, "Unauthorized", id="401"),
    pytest.param(403, ERROR_403_FORBIDDEN, {}, AuthenticationError, "Forbidden resource",
                 id="403-forbidden"),
    pytest.param(403, ERROR_403_CREDITS, {}, InsufficientBalanceError, "enough credits",
                 id="403-credits"),
    pytest.param(403, ERROR_403_BALANCE, {}, InsufficientBalanceError, "Insufficient balance",
                 id="403-balance"),
    pytest.param(403, ERROR_403_MODERATION, {}, ContentRejectedError, "moderation",
                 id="403-moderation"),
    pytest.param(404, ERROR_404, {}, InvalidRequestError, "Generation not found", id="404"),
    pytest.param(429, ERROR_429, {}, RateLimitedError, "Too many requests", id="429"),
    pytest.param(500, ERROR_500, {}, ProviderUnavailableError, "Internal server error",
                 id="500"),
    pytest.param(502, b"Bad Gateway", {"content-type": "text/plain"}, ProviderUnavailableError,
                 "Bad Gateway", id="502-plain"),
]


def _parse(adapter: AimlapiAdapter, phase: str, r: HttpReply, handle: RemoteHandle) -> object:
    if phase == "submit":
        return adapter.parse_submit(r)
    return adapter.parse_poll(r, handle)


@pytest.mark.parametrize("phase", ["submit", "poll"])
@pytest.mark.parametrize(("status", "body", "headers", "error_type", "words"), ERROR_CASES)
def test_error_replies_become_typed_errors(
    adapter: AimlapiAdapter,
    handle: RemoteHandle,
    phase: str,
    status: int,
    body: bytes,
    headers: dict[str, str],
    error_type: type[ProviderError],
    words: str,
) -> None:
    """Each error status raises its type with the provider's words, status and a request id."""
    with pytest.raises(error_type) as info:
        _parse(adapter, phase, reply(status, body, headers), handle)
    error = info.value
    assert type(error) is error_type
    assert (error.provider, error.status) == ("aimlapi", status)
    assert words in error.message and words in str(error)
    if phase == "poll":
        assert error.request_id == GENERATION_ID
    elif body.startswith(b"{"):
        # No generation id exists yet: the error body's requestId is the one to trace.
        assert error.request_id == ERROR_REQUEST_ID
    else:
        assert error.request_id is None


def test_rate_limited_honours_a_retry_after_if_one_comes(adapter: AimlapiAdapter) -> None:
    """None is documented, but a Retry-After on a 429 is still read; without one it is None."""
    with pytest.raises(RateLimitedError) as info:
        adapter.parse_submit(reply(429, ERROR_429, {"retry-after": "3"}))
    assert info.value.retry_after == 3.0
    with pytest.raises(RateLimitedError) as info:
        adapter.parse_submit(reply(429, ERROR_429))
    assert info.value.retry_after is None


@pytest.mark.parametrize("phase", ["submit", "poll"])
@pytest.mark.parametrize(("status", "body", "headers", "error_type", "words"), ERROR_CASES)
def test_errors_never_contain_api_key(
    adapter: AimlapiAdapter,
    handle: RemoteHandle,
    phase: str,
    status: int,
    body: bytes,
    headers: dict[str, str],
    error_type: type[ProviderError],
    words: str,
) -> None:
    """Neither str() nor repr() of an error reply's exception holds the API key."""
    with pytest.raises(ProviderError) as info:
        _parse(adapter, phase, reply(status, body, headers), handle)
    assert API_KEY not in str(info.value) and API_KEY not in repr(info.value)


# ---- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        pytest.param({"duration": 48}, "duration", "1–47", id="duration-48"),
        pytest.param({"duration": 0.5}, "duration", "1–47", id="duration-0.5"),
        pytest.param({"duration": 12.5}, "duration", "whole number", id="duration-12.5"),
        pytest.param({"steps": 1001}, "steps", "1–1000", id="steps-1001"),
        pytest.param({"guidance_scale": 7}, "guidance_scale", "not supported", id="guidance"),
        pytest.param({"negative_prompt": "drums"}, "negative_prompt", "not supported",
                     id="negative-prompt"),
        pytest.param({"seed": 42}, "seed", "not supported", id="seed"),
        pytest.param({"bitrate": "192k"}, "bitrate", "not supported", id="bitrate"),
        pytest.param({"output_format": "mp3"}, "output_format", "WAV only", id="format-mp3"),
        pytest.param({"task": Task.AUDIO_TO_AUDIO}, "task", "audio-to-audio", id="task-a2a"),
        pytest.param({"task": Task.INPAINT}, "task", "inpaint", id="task-inpaint"),
        pytest.param({"audio": "https://example.com/in.wav"}, "audio", "not supported",
                     id="input-audio"),
        pytest.param({"model": "stable-audio-2.5"}, "model", "stable-audio-2.5",
                     id="unknown-model"),
        pytest.param({"options": {"seconds_total": 5}}, "options.seconds_total", "options",
                     id="options-seconds-total"),
        pytest.param({"options": {"steps": 50}}, "options.steps", "options", id="options-steps"),
        pytest.param({"options": {"model": "x"}}, "options.model", "options", id="options-model"),
        pytest.param({"options": {"prompt": "x"}}, "options.prompt", "options",
                     id="options-prompt"),
        pytest.param({"options": {"seconds_start": 0}}, "options.seconds_start", "1–47",
                     id="seconds-start-0"),
        pytest.param({"options": {"seconds_start": 48}}, "options.seconds_start", "1–47",
                     id="seconds-start-48"),
        pytest.param({"options": {"seconds_start": 2.5}}, "options.seconds_start",
                     "whole number", id="seconds-start-2.5"),
        pytest.param({"options": {"seconds_start": "5"}}, "options.seconds_start", "'5'",
                     id="seconds-start-string"),
        pytest.param({"options": {"seconds_start": True}}, "options.seconds_start", "True",
                     id="seconds-start-bool"),
        pytest.param({"options": {"seconds_start": float("inf")}}, "options.seconds_start",
                     "inf", id="seconds-start-inf"),
        pytest.param({"options": {"seconds_start": float("nan")}}, "options.seconds_start",
                     "nan", id="seconds-start-nan"),
    ],
)
def test_validate_refuses(fields: dict[str, Any], field: str, words: str) -> None:
    """Each out-of-contract job is refused with one issue naming the field and the job id."""
    issues = AimlapiAdapter.validate(job(**fields))
    assert [i.field for i in issues] == [field], issues
    (issue,) = issues
    assert words in issue.message
    assert issue.job_id == "job-1"


@pytest.mark.parametrize("task", [Task.AUDIO_TO_AUDIO, Task.INPAINT])
def test_audio_tasks_are_refused_with_their_input(task: Task) -> None:
    """An audio-to-audio or inpaint job is refused for its task and its input audio alike."""
    issues = AimlapiAdapter.validate(job(task=task, audio="https://example.com/in.wav",
                                         strength=0.5 if task is Task.AUDIO_TO_AUDIO else None))
    assert {i.field for i in issues} >= {"task", "audio"}
    assert all(i.job_id == "job-1" for i in issues)


def test_mp3_is_refused_with_a_hint() -> None:
    """A job asking for mp3 is told to ask for wav, not silently misnamed."""
    (issue,) = AimlapiAdapter.validate(
        Job(id="j", provider="aimlapi", prompt="x", output_format="mp3"))
    assert issue.field == "output_format" and 'output_format to "wav"' in issue.message


def test_no_format_means_wav() -> None:
    """A job naming no format gets the provider's own, WAV, and a .wav file."""
    job = Job(id="j", provider="aimlapi", prompt="x")
    assert AimlapiAdapter.validate(job) == []
    assert AimlapiAdapter.output_format(job) == "wav"


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({}, id="defaults"),
        pytest.param({"duration": 1, "steps": 1}, id="lowest"),
        pytest.param({"duration": 47, "steps": 1000}, id="highest"),
        pytest.param({"duration": 30.0}, id="whole-float-duration"),
        pytest.param({"model": "stable-audio"}, id="explicit-model"),
        pytest.param({"options": {"seconds_start": 1}}, id="seconds-start-1"),
        pytest.param({"options": {"seconds_start": 47}}, id="seconds-start-47"),
        pytest.param({"options": {"seconds_start": 10.0}}, id="seconds-start-whole-float"),
        pytest.param({"options": {"future_flag": True}}, id="options-unmapped"),
    ],
)
def test_validate_accepts(fields: dict[str, Any]) -> None:
    """Jobs inside AI/ML API's documented ranges raise no issue."""
    assert AimlapiAdapter.validate(job(**fields)) == []


def test_validate_reports_every_issue_at_once() -> None:
    """Several problems in one job are all reported, each naming its field."""
    issues = AimlapiAdapter.validate(job(duration=60, steps=2000, seed=1, output_format="mp3",
                                         options={"seconds_start": 99}))
    assert {i.field for i in issues} == {"duration", "steps", "seed", "output_format",
                                         "options.seconds_start"}
    assert {i.job_id for i in issues} == {"job-1"}
