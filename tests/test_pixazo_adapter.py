"""Tests for the Pixazo adapter against the reply bodies documented in providers.md."""

from __future__ import annotations

from typing import Any

import pytest
import structlog
import structlog.testing
from pydantic import ValidationError

from stableaudio_async.config import ProviderSettings
from stableaudio_async.errors import (
    AuthenticationError,
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
    InlineAudio,
    Job,
    Queued,
    RemoteHandle,
    Running,
    Succeeded,
    Task,
)
from stableaudio_async.providers.pixazo import PixazoAdapter

API_KEY = "test-key-123"
BASE = "https://gateway.pixazo.ai"
REQUEST_ID = "stable-audio-3-small-music_6f1c2a9e-3b7d-4e51-9a0c-2d8e4f7b1a35"
POLLING_URL = f"{BASE}/v2/requests/status/{REQUEST_ID}"
TEXT_ROUTE = (
    f"{BASE}/stable-audio-3-small-music-text-to-audio/v1/"
    "stable-audio-3-small-music-text-to-audio-request"
)
AUDIO_ROUTE = (
    f"{BASE}/stable-audio-3-small-music-audio-to-audio/v1/"
    "stable-audio-3-small-music-audio-to-audio-request"
)
CDN_URL = "https://cdn.pixazo.ai/outputs/6f1c2a9e-3b7d-4e51-9a0c-2d8e4f7b1a35.mp3"

# ---- Reply bodies, written out as the documentation gives them. -------------------------------

SUBMIT_202 = b"""{
  "request_id": "stable-audio-3-small-music_6f1c2a9e-3b7d-4e51-9a0c-2d8e4f7b1a35",
  "status": "QUEUED",
  "polling_url": "https://gateway.pixazo.ai/v2/requests/status/stable-audio-3-small-music_6f1c2a9e-3b7d-4e51-9a0c-2d8e4f7b1a35"
}"""

SUBMIT_202_NO_POLLING_URL = b"""{
  "request_id": "stable-audio-3-small-music_6f1c2a9e-3b7d-4e51-9a0c-2d8e4f7b1a35",
  "status": "QUEUED"
}"""

# sync_mode: true answers with the finished status body, the audio inline as a data URI.
SYNC_AUDIO = b"ID3\x04\x00\x00\x00\x00\x00\x00\xff\xfb\x90\x64\x00\x0f"
SUBMIT_SYNC = b"""{
  "request_id": "stable-audio-3-small-music_6f1c2a9e-3b7d-4e51-9a0c-2d8e4f7b1a35",
  "status": "COMPLETED",
  "model_id": "stable-audio-3-small-music",
  "error": null,
  "output": {
    "media_url": ["data:audio/mpeg;base64,SUQzBAAAAAAAAP/7kGQADw=="],
    "media_type": "audio/mpeg"
  },
  "created_at": "2025-06-01T12:00:00Z",
  "updated_at": "2025-06-01T12:00:09Z",
  "completed_at": "2025-06-01T12:00:09Z"
}"""

SUBMIT_200_NO_ID = b"""{"status": "QUEUED", "polling_url": "https://gateway.pixazo.ai/v2/requests/status/x"}"""

STATUS_QUEUED = b"""{
  "request_id": "stable-audio-3-small-music_6f1c2a9e-3b7d-4e51-9a0c-2d8e4f7b1a35",
  "status": "QUEUED",
  "model_id": "stable-audio-3-small-music",
  "error": null,
  "output": null,
  "created_at": "2025-06-01T12:00:00Z",
  "updated_at": "2025-06-01T12:00:00Z",
  "completed_at": null
}"""

STATUS_PROCESSING = b"""{
  "request_id": "stable-audio-3-small-music_6f1c2a9e-3b7d-4e51-9a0c-2d8e4f7b1a35",
  "status": "PROCESSING",
  "model_id": "stable-audio-3-small-music",
  "error": null,
  "output": null,
  "created_at": "2025-06-01T12:00:00Z",
  "updated_at": "2025-06-01T12:00:04Z",
  "completed_at": null
}"""

STATUS_COMPLETED = b"""{
  "request_id": "stable-audio-3-small-music_6f1c2a9e-3b7d-4e51-9a0c-2d8e4f7b1a35",
  "status": "COMPLETED",
  "model_id": "stable-audio-3-small-music",
  "error": null,
  "output": {
    "media_url": ["https://cdn.pixazo.ai/outputs/6f1c2a9e-3b7d-4e51-9a0c-2d8e4f7b1a35.mp3"],
    "media_type": "audio/mpeg"
  },
  "created_at": "2025-06-01T12:00:00Z",
  "updated_at": "2025-06-01T12:00:11Z",
  "completed_at": "2025-06-01T12:00:11Z"
}"""

STATUS_COMPLETED_URL_STRING = b"""{
  "request_id": "stable-audio-3-small-music_6f1c2a9e-3b7d-4e51-9a0c-2d8e4f7b1a35",
  "status": "COMPLETED",
  "model_id": "stable-audio-3-small-music",
  "error": null,
  "output": {
    "media_url": "https://cdn.pixazo.ai/outputs/6f1c2a9e-3b7d-4e51-9a0c-2d8e4f7b1a35.mp3",
    "media_type": "audio/mpeg"
  },
  "created_at": "2025-06-01T12:00:00Z",
  "updated_at": "2025-06-01T12:00:11Z",
  "completed_at": "2025-06-01T12:00:11Z"
}"""

STATUS_COMPLETED_NO_OUTPUT = b"""{
  "request_id": "stable-audio-3-small-music_6f1c2a9e-3b7d-4e51-9a0c-2d8e4f7b1a35",
  "status": "COMPLETED",
  "model_id": "stable-audio-3-small-music",
  "error": null,
  "output": null,
  "created_at": "2025-06-01T12:00:00Z",
  "updated_at": "2025-06-01T12:00:11Z",
  "completed_at": "2025-06-01T12:00:11Z"
}"""

STATUS_FAILED = b"""{
  "request_id": "stable-audio-3-small-music_6f1c2a9e-3b7d-4e51-9a0c-2d8e4f7b1a35",
  "status": "FAILED",
  "model_id": "stable-audio-3-small-music",
  "error": "Prompt rejected by safety checker",
  "output": null,
  "created_at": "2025-06-01T12:00:00Z",
  "updated_at": "2025-06-01T12:00:05Z",
  "completed_at": "2025-06-01T12:00:05Z"
}"""

STATUS_ERROR = b"""{
  "request_id": "stable-audio-3-small-music_6f1c2a9e-3b7d-4e51-9a0c-2d8e4f7b1a35",
  "status": "ERROR",
  "model_id": "stable-audio-3-small-music",
  "error": "Worker crashed: CUDA out of memory",
  "output": null,
  "created_at": "2025-06-01T12:00:00Z",
  "updated_at": "2025-06-01T12:00:05Z",
  "completed_at": "2025-06-01T12:00:05Z"
}"""

STATUS_UNKNOWN_WORD = b"""{
  "request_id": "stable-audio-3-small-music_6f1c2a9e-3b7d-4e51-9a0c-2d8e4f7b1a35",
  "status": "TELEPORTING",
  "model_id": "stable-audio-3-small-music",
  "error": null,
  "output": null,
  "created_at": "2025-06-01T12:00:00Z",
  "updated_at": "2025-06-01T12:00:05Z",
  "completed_at": null
}"""

ERROR_400 = b"""{
  "error": "Model not found",
  "message": "The requested model does not exist or is not available"
}"""
ERROR_401 = b"""{"error": "Unauthorized", "message": "Invalid subscription key"}"""
ERROR_402 = b"""{"error": "Insufficient Balance", "message": "Please top up your account to continue"}"""
ERROR_403 = b"""{"error": "Forbidden", "message": "Subscription is not allowed to use this API"}"""
ERROR_429 = b"""{"error": "Too Many Requests", "message": "Rate limit is exceeded"}"""
ERROR_500 = b"""{"error": "Internal Server Error", "message": "Something went wrong"}"""
ERROR_503 = b"""Service Unavailable"""

JSON_HEADERS = {"content-type": "application/json"}


@pytest.fixture
def adapter() -> PixazoAdapter:
    return PixazoAdapter(
        ProviderSettings(base_url=BASE, api_key_env="PIXAZO_API_KEY"), API_KEY
    )


@pytest.fixture
def handle() -> RemoteHandle:
    return RemoteHandle(REQUEST_ID, POLLING_URL, Queued())


def reply(status: int, body: bytes, headers: dict[str, str] | None = None) -> HttpReply:
    return HttpReply(status, headers if headers is not None else JSON_HEADERS, body)


def job(**fields: Any) -> Job:
    fields.setdefault("id", "job-1")
    fields.setdefault("provider", "pixazo")
    fields.setdefault("prompt", "warm analog synth pads, slow tempo")
    return Job(**fields)


# ---- submit_request ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "extra", "url"),
    [
        (Task.TEXT_TO_AUDIO, {}, TEXT_ROUTE),
        (Task.AUDIO_TO_AUDIO, {"audio": "https://example.com/in.mp3"}, AUDIO_ROUTE),
    ],
)
def test_submit_posts_to_the_task_route(
    adapter: PixazoAdapter, task: Task, extra: dict[str, Any], url: str
) -> None:
    """Each task is POSTed to its documented gateway route."""
    request = adapter.submit_request(job(task=task, **extra))
    assert request.method == "POST"
    assert request.url == url


def test_submit_route_ignores_trailing_slash_in_base_url() -> None:
    """A base URL written with a trailing slash gives the same route (no double slash)."""
    adapter = PixazoAdapter(
        ProviderSettings(base_url=BASE + "/", api_key_env="PIXAZO_API_KEY"), API_KEY
    )
    assert adapter.submit_request(job()).url == TEXT_ROUTE


def test_submit_sends_the_documented_headers(adapter: PixazoAdapter) -> None:
    """The submit carries the subscription key, a JSON content type and no-cache."""
    request = adapter.submit_request(job())
    assert dict(request.headers) == {
        "Ocp-Apim-Subscription-Key": API_KEY,
        "Content-Type": "application/json",
        "Cache-Control": "no-cache",
    }


@pytest.mark.parametrize(
    ("field", "value", "body_key"),
    [
        ("steps", 8, "num_inference_steps"),
        ("guidance_scale", 2.5, "guidance_scale"),
        ("duration", 45.0, "duration"),
        ("seed", 1234, "seed"),
        ("negative_prompt", "vocals, distortion", "negative_prompt"),
        ("bitrate", "192k", "bitrate"),
        ("output_format", "wav", "output_format"),
    ],
)
def test_submit_maps_text_to_audio_fields(
    adapter: PixazoAdapter, field: str, value: Any, body_key: str
) -> None:
    """Each unified field lands in the body under Pixazo's name, with its value unchanged."""
    body = adapter.submit_request(job(**{field: value})).json
    assert body[body_key] == value
    if field != body_key:
        assert field not in body


@pytest.mark.parametrize(
    ("field", "value", "body_key"),
    [
        ("audio", "https://example.com/loops/in.wav", "audio_url"),
        ("strength", 0.35, "init_noise_level"),
    ],
)
def test_submit_maps_audio_to_audio_fields(
    adapter: PixazoAdapter, field: str, value: Any, body_key: str
) -> None:
    """Audio-to-audio sends the input as audio_url and strength as init_noise_level."""
    fields: dict[str, Any] = {"task": Task.AUDIO_TO_AUDIO, "audio": "https://example.com/a.mp3"}
    fields[field] = value
    body = adapter.submit_request(job(**fields)).json
    assert body[body_key] == value
    assert field not in body


def test_submit_omits_unset_fields(adapter: PixazoAdapter) -> None:
    """Fields left as None are not sent, so Pixazo applies its own defaults."""
    body = adapter.submit_request(job(prompt="rain on a tin roof")).json
    assert body == {"prompt": "rain on a tin roof", "output_format": "mp3"}


def test_submit_text_to_audio_never_sends_audio_keys(adapter: PixazoAdapter) -> None:
    """A text-to-audio body holds no audio_url or init_noise_level keys."""
    body = adapter.submit_request(job(prompt="rain")).json
    assert "audio_url" not in body
    assert "init_noise_level" not in body


def test_submit_passes_options_through(adapter: PixazoAdapter) -> None:
    """Keys in options are copied into the body untouched."""
    options = {"sync_mode": True, "enable_safety_checker": False, "enable_prompt_expansion": True}
    body = adapter.submit_request(job(options=options, seed=7)).json
    for key, value in options.items():
        assert body[key] is value
    assert body["seed"] == 7


def test_submit_request_repr_hides_api_key(adapter: PixazoAdapter) -> None:
    """Neither the request's repr/str nor the adapter's repr shows the API key."""
    request = adapter.submit_request(job())
    assert API_KEY in request.headers.values()  # the key is there, just not printed
    assert API_KEY not in repr(request)
    assert API_KEY not in str(request)
    assert API_KEY not in repr(adapter)


# ---- parse_submit --------------------------------------------------------------------------


def test_parse_submit_reads_queued_reply(adapter: PixazoAdapter) -> None:
    """A 202 gives the request id, the polling URL from the reply, and a Queued status."""
    handle = adapter.parse_submit(reply(202, SUBMIT_202))
    assert handle == RemoteHandle(REQUEST_ID, POLLING_URL, Queued())


def test_parse_submit_uses_polling_url_from_reply_verbatim(adapter: PixazoAdapter) -> None:
    """A polling_url on the gateway is used exactly as given, query string included."""
    body = (
        b'{"request_id": "m_1", "status": "QUEUED",'
        b' "polling_url": "https://gateway.pixazo.ai/v2/requests/status/m_1?sig=abc"}'
    )
    handle = adapter.parse_submit(reply(202, body))
    assert handle.poll_url == "https://gateway.pixazo.ai/v2/requests/status/m_1?sig=abc"


@pytest.mark.parametrize(
    "polling_url",
    [
        "https://evil.example.com/v2/requests/status/m_1",
        "http://gateway.pixazo.ai/v2/requests/status/m_1",
        "https://gateway.pixazo.ai:8443/v2/requests/status/m_1",
    ],
    ids=["other-host", "plain-http", "other-port"],
)
def test_parse_submit_ignores_off_gateway_polling_url(
    adapter: PixazoAdapter, polling_url: str
) -> None:
    """A polling_url off the gateway's origin is replaced, so the key is never sent elsewhere."""
    body = b'{"request_id": "m_1", "status": "QUEUED", "polling_url": "%s"}' % polling_url.encode()
    handle = adapter.parse_submit(reply(202, body))
    assert handle.poll_url == f"{BASE}/v2/requests/status/m_1"
    assert adapter.poll_request(handle).url.startswith(BASE + "/")


def test_parse_submit_falls_back_to_status_route(adapter: PixazoAdapter) -> None:
    """Without a polling_url, the handle polls the documented status route for the id."""
    handle = adapter.parse_submit(reply(202, SUBMIT_202_NO_POLLING_URL))
    assert handle.request_id == REQUEST_ID
    assert handle.poll_url == f"{BASE}/v2/requests/status/{REQUEST_ID}"
    assert handle.status == Queued()


def test_parse_submit_sync_mode_decodes_inline_audio(adapter: PixazoAdapter) -> None:
    """A sync_mode reply is Succeeded with the data URI's bytes decoded exactly."""
    handle = adapter.parse_submit(reply(200, SUBMIT_SYNC))
    assert handle.request_id == REQUEST_ID
    assert handle.status == Succeeded((InlineAudio(SYNC_AUDIO, "audio/mpeg"),))
    (audio,) = handle.status.audio
    assert isinstance(audio, InlineAudio)
    assert audio.data == SYNC_AUDIO


@pytest.mark.parametrize("body", [SUBMIT_200_NO_ID, b'{"request_id": "", "status": "QUEUED"}'])
def test_parse_submit_without_request_id_is_unavailable(
    adapter: PixazoAdapter, body: bytes
) -> None:
    """A success reply with no (or an empty) request_id is a ProviderUnavailableError."""
    with pytest.raises(ProviderUnavailableError) as info:
        adapter.parse_submit(reply(200, body))
    assert info.value.provider == "pixazo"
    assert info.value.status == 200


@pytest.mark.parametrize("body", [b"<html>Bad gateway</html>", b"[1, 2]", b""])
def test_parse_submit_unreadable_body_is_unavailable(adapter: PixazoAdapter, body: bytes) -> None:
    """A success status with a body that is not a JSON object is a ProviderUnavailableError."""
    with pytest.raises(ProviderUnavailableError):
        adapter.parse_submit(reply(202, body))


# ---- poll ----------------------------------------------------------------------------------


def test_poll_request_uses_handle_url_and_key(adapter: PixazoAdapter, handle: RemoteHandle) -> None:
    """Polling GETs the handle's polling URL with the subscription key and hides it in repr."""
    request = adapter.poll_request(handle)
    assert (request.method, request.url) == ("GET", POLLING_URL)
    assert request.headers["Ocp-Apim-Subscription-Key"] == API_KEY
    assert API_KEY not in repr(request)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (STATUS_QUEUED, Queued()),
        (STATUS_PROCESSING, Running()),
        (STATUS_COMPLETED, Succeeded((AudioURL(CDN_URL, "audio/mpeg"),))),
        (STATUS_COMPLETED_URL_STRING, Succeeded((AudioURL(CDN_URL, "audio/mpeg"),))),
        (STATUS_FAILED, Failed("Prompt rejected by safety checker", charged=True)),
        (STATUS_ERROR, Failed("Worker crashed: CUDA out of memory", charged=False)),
    ],
    ids=["queued", "processing", "completed", "completed-url-string", "failed", "error"],
)
def test_parse_poll_maps_status_words(
    adapter: PixazoAdapter, handle: RemoteHandle, body: bytes, expected: object
) -> None:
    """Each documented status word maps onto the engine's status union."""
    assert adapter.parse_poll(reply(200, body), handle) == expected


def test_parse_poll_completed_without_output_is_failed(
    adapter: PixazoAdapter, handle: RemoteHandle
) -> None:
    """COMPLETED with output null is a failure, not a success without audio."""
    status = adapter.parse_poll(reply(200, STATUS_COMPLETED_NO_OUTPUT), handle)
    assert isinstance(status, Failed)
    assert "COMPLETED" in status.reason


@pytest.mark.parametrize(
    "body",
    [b'{"request_id": "x"}'],
    ids=["missing-status"],
)
def test_parse_poll_unknown_status_is_unavailable(
    adapter: PixazoAdapter, handle: RemoteHandle, body: bytes
) -> None:
    """A missing status word is a ProviderUnavailableError carrying the request id."""
    with pytest.raises(ProviderUnavailableError) as info:
        adapter.parse_poll(reply(200, body), handle)
    assert info.value.provider == "pixazo"
    assert info.value.request_id == REQUEST_ID


def test_an_unknown_status_word_is_logged_and_taken_as_still_running(
    adapter: PixazoAdapter, handle: RemoteHandle
) -> None:
    """A word the contract does not list keeps the job polled until its deadline: Running,
    never success, with a warning naming it."""
    with structlog.testing.capture_logs() as logs:
        assert adapter.parse_poll(reply(200, STATUS_UNKNOWN_WORD), handle) == Running()
    assert [(e["event"], e["provider"]) for e in logs] == [("poll.unknown_status", "pixazo")]


@pytest.mark.parametrize("body", [b"<html>502 Bad Gateway</html>", b"null", b'"COMPLETED"'])
def test_parse_poll_non_json_body_is_unavailable(
    adapter: PixazoAdapter, handle: RemoteHandle, body: bytes
) -> None:
    """A 200 whose body is not a JSON object is a ProviderUnavailableError."""
    with pytest.raises(ProviderUnavailableError) as info:
        adapter.parse_poll(reply(200, body, {"content-type": "text/html"}), handle)
    assert info.value.request_id == REQUEST_ID
    assert info.value.status == 200


# ---- error replies -------------------------------------------------------------------------

ERROR_CASES = [
    pytest.param(400, ERROR_400, {}, InvalidRequestError, "Model not found", id="400"),
    pytest.param(401, ERROR_401, {}, AuthenticationError, "Invalid subscription key", id="401"),
    pytest.param(402, ERROR_402, {}, InsufficientBalanceError, "Insufficient Balance", id="402"),
    pytest.param(403, ERROR_403, {}, AuthenticationError, "Forbidden", id="403"),
    pytest.param(429, ERROR_429, {"retry-after": "7"}, RateLimitedError, "Rate limit", id="429"),
    pytest.param(500, ERROR_500, {}, ProviderUnavailableError, "Internal Server Error", id="500"),
    pytest.param(503, ERROR_503, {"content-type": "text/plain"}, ProviderUnavailableError,
                 "Service Unavailable", id="503"),
]


def _parse(adapter: PixazoAdapter, phase: str, r: HttpReply, handle: RemoteHandle) -> object:
    if phase == "submit":
        return adapter.parse_submit(r)
    return adapter.parse_poll(r, handle)


@pytest.mark.parametrize("phase", ["submit", "poll"])
@pytest.mark.parametrize(("status", "body", "headers", "error_type", "words"), ERROR_CASES)
def test_error_replies_become_typed_errors(
    adapter: PixazoAdapter,
    handle: RemoteHandle,
    phase: str,
    status: int,
    body: bytes,
    headers: dict[str, str],
    error_type: type[ProviderError],
    words: str,
) -> None:
    """Each documented error status raises its error type with the provider's own words."""
    with pytest.raises(error_type) as info:
        _parse(adapter, phase, reply(status, body, headers), handle)
    error = info.value
    assert type(error) is error_type
    assert error.provider == "pixazo"
    assert error.status == status
    assert words in error.message
    assert words in str(error)
    if phase == "poll":
        assert error.request_id == REQUEST_ID


def test_bad_request_message_includes_both_error_and_message(adapter: PixazoAdapter) -> None:
    """A 400's message holds both the error name and Pixazo's explanation."""
    with pytest.raises(InvalidRequestError) as info:
        adapter.parse_submit(reply(400, ERROR_400))
    assert "Model not found" in str(info.value)
    assert "does not exist or is not available" in str(info.value)


@pytest.mark.parametrize("phase", ["submit", "poll"])
@pytest.mark.parametrize("header", ["retry-after", "Retry-After"])
def test_rate_limited_carries_retry_after(
    adapter: PixazoAdapter, handle: RemoteHandle, phase: str, header: str
) -> None:
    """A 429 with Retry-After: 7 gives RateLimitedError(retry_after=7.0)."""
    with pytest.raises(RateLimitedError) as info:
        _parse(adapter, phase, reply(429, ERROR_429, {header: "7"}), handle)
    assert info.value.retry_after == 7.0


def test_rate_limited_without_retry_after_has_none(adapter: PixazoAdapter) -> None:
    """A 429 without Retry-After leaves retry_after unset for the engine's own backoff."""
    with pytest.raises(RateLimitedError) as info:
        adapter.parse_submit(reply(429, ERROR_429))
    assert info.value.retry_after is None


@pytest.mark.parametrize("phase", ["submit", "poll"])
@pytest.mark.parametrize(("status", "body", "headers", "error_type", "words"), ERROR_CASES)
def test_errors_never_contain_api_key(
    adapter: PixazoAdapter,
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
    assert API_KEY not in str(info.value)
    assert API_KEY not in repr(info.value)


# ---- validation ----------------------------------------------------------------------------

A2A = {"task": Task.AUDIO_TO_AUDIO, "audio": "https://example.com/loops/in.mp3"}


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        pytest.param({"duration": 0.5}, "duration", "1–120", id="duration-0.5"),
        pytest.param({"duration": 121}, "duration", "1–120", id="duration-121"),
        pytest.param({"steps": 101}, "steps", "1–100", id="steps-101"),
        pytest.param({"guidance_scale": 26}, "guidance_scale", "0–25", id="guidance-26"),
        pytest.param({"output_format": "xyz"}, "output_format", "xyz", id="format-xyz"),
        pytest.param({"task": Task.INPAINT, "audio": "https://example.com/in.mp3"},
                     "task", "inpaint", id="task-inpaint"),
        pytest.param({"task": Task.AUDIO_TO_AUDIO}, "audio", "audio", id="a2a-no-audio"),
        pytest.param({"task": Task.AUDIO_TO_AUDIO, "audio": "/home/me/loops/in.wav"},
                     "audio", "URL", id="a2a-local-path"),
        pytest.param({"task": Task.AUDIO_TO_AUDIO, "audio": "file:///home/me/in.wav"},
                     "audio", "URL", id="a2a-file-uri"),
        pytest.param({"model": "stable-audio-9-huge"}, "model", "stable-audio-9-huge",
                     id="unknown-model"),
        pytest.param({"options": {"duration": 5}}, "options.duration", "options",
                     id="options-override-duration"),
        pytest.param({"options": {"num_inference_steps": 50}}, "options.num_inference_steps",
                     "options", id="options-override-steps"),
        pytest.param({"mask_start": 5.0}, "mask_start", "not supported", id="mask-start"),
        pytest.param({"mask_end": 9.0}, "mask_end", "not supported", id="mask-end"),
        pytest.param({"strength": 0.5}, "strength", "audio-to-audio", id="strength-t2a"),
    ],
)
def test_validate_refuses(fields: dict[str, Any], field: str, words: str) -> None:
    """Each out-of-contract job is refused with an issue naming the field and the job id."""
    issues = PixazoAdapter.validate(job(**fields))
    assert [i.field for i in issues] == [field], issues
    (issue,) = issues
    assert words in issue.message
    assert issue.job_id == "job-1"


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({}, id="defaults"),
        pytest.param({"duration": 120}, id="duration-120"),
        pytest.param({"duration": 1}, id="duration-1"),
        pytest.param({"steps": 1}, id="steps-1"),
        pytest.param({"steps": 100}, id="steps-100"),
        pytest.param({"guidance_scale": 0}, id="guidance-0"),
        pytest.param({"guidance_scale": 25}, id="guidance-25"),
        pytest.param({"seed": 0, "negative_prompt": "", "bitrate": "192k"}, id="misc"),
        pytest.param({"model": "stable-audio-3-small-music"}, id="explicit-model"),
        pytest.param({**A2A, "strength": 0.0}, id="a2a-https-strength-0"),
        pytest.param({**A2A, "strength": 1.0}, id="a2a-https-strength-1"),
        pytest.param({"task": Task.AUDIO_TO_AUDIO, "audio": "http://example.com/in.wav"},
                     id="a2a-http"),
        pytest.param({"options": {"sync_mode": True, "enable_safety_checker": False}},
                     id="options-unmapped"),
        *(pytest.param({"output_format": f}, id=f"format-{f}")
          for f in ("mp3", "wav", "flac", "ogg", "opus", "m4a", "aac")),
    ],
)
def test_validate_accepts(fields: dict[str, Any]) -> None:
    """Jobs inside Pixazo's documented ranges raise no issue."""
    assert PixazoAdapter.validate(job(**fields)) == []


def test_validate_reports_every_issue_at_once() -> None:
    """Several problems in one job are all reported, each naming its field."""
    issues = PixazoAdapter.validate(
        job(duration=500, steps=101, guidance_scale=30, output_format="xyz")
    )
    assert {i.field for i in issues} == {"duration", "steps", "guidance_scale", "output_format"}
    assert {i.job_id for i in issues} == {"job-1"}


def test_steps_zero_is_refused() -> None:
    """steps=0 is refused by the Job model, and the adapter's 1–100 range refuses it too."""
    with pytest.raises(ValidationError):
        job(steps=0)
    unchecked = Job.model_construct(id="job-1", provider="pixazo", prompt="rain", steps=0)
    issues = PixazoAdapter.validate(unchecked)
    assert [(i.field, i.job_id) for i in issues] == [("steps", "job-1")]
    assert "1–100" in issues[0].message


def test_validate_refuses_audio_on_text_to_audio() -> None:
    """An input audio on a text-to-audio job is refused, as strength is, not silently dropped."""
    issues = PixazoAdapter.validate(job(audio="https://example.com/in.mp3"))
    assert [i.field for i in issues] == ["audio"]
