"""Tests for the fal adapter against the reply bodies documented in providers.md."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import structlog
import structlog.testing

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
    Ready,
    RemoteHandle,
    Running,
    Succeeded,
    Task,
)
from stableaudio_async.providers import ADAPTERS
from stableaudio_async.providers.fal import MAX_LOCAL_AUDIO_BYTES, FalAdapter

API_KEY = "fal-key-id:fal-key-secret-0123"
BASE = "https://queue.fal.run"
REQUEST_ID = "764cabcf-b745-4b3e-ae38-1200304cf45b"
APP = f"{BASE}/fal-ai/stable-audio-25"
STATUS_URL = f"{APP}/requests/{REQUEST_ID}/status"
RESPONSE_URL = f"{APP}/requests/{REQUEST_ID}"
CANCEL_URL = f"{APP}/requests/{REQUEST_ID}/cancel"
CDN_URL = "https://v3.fal.media/files/koala/8teUPbRRMtAUTORDvqy0l.wav"

# ---- Reply bodies, written out as the documentation gives them. -------------------------------

SUBMIT_200 = b"""{
  "request_id": "764cabcf-b745-4b3e-ae38-1200304cf45b",
  "status": "IN_QUEUE",
  "queue_position": 0,
  "status_url": "https://queue.fal.run/fal-ai/stable-audio-25/requests/764cabcf-b745-4b3e-ae38-1200304cf45b/status",
  "response_url": "https://queue.fal.run/fal-ai/stable-audio-25/requests/764cabcf-b745-4b3e-ae38-1200304cf45b",
  "cancel_url": "https://queue.fal.run/fal-ai/stable-audio-25/requests/764cabcf-b745-4b3e-ae38-1200304cf45b/cancel"
}"""

SUBMIT_NO_URLS = b"""{"request_id": "764cabcf-b745-4b3e-ae38-1200304cf45b", "status": "IN_QUEUE",
  "queue_position": 3}"""

STATUS_IN_QUEUE = b"""{
  "status": "IN_QUEUE",
  "queue_position": 2,
  "response_url": "https://queue.fal.run/fal-ai/stable-audio-25/requests/764cabcf-b745-4b3e-ae38-1200304cf45b"
}"""

STATUS_IN_PROGRESS = b"""{
  "status": "IN_PROGRESS",
  "response_url": "https://queue.fal.run/fal-ai/stable-audio-25/requests/764cabcf-b745-4b3e-ae38-1200304cf45b",
  "logs": [{"message": "Generating audio", "level": "INFO", "source": "user",
            "timestamp": "2025-06-01T12:00:04.125Z"}]
}"""

STATUS_COMPLETED = b"""{
  "status": "COMPLETED",
  "response_url": "https://queue.fal.run/fal-ai/stable-audio-25/requests/764cabcf-b745-4b3e-ae38-1200304cf45b",
  "logs": null,
  "metrics": {"inference_time": 6.42}
}"""

STATUS_UNKNOWN = b"""{"status": "TELEPORTING"}"""

RESULT_SA25 = b"""{
  "audio": {
    "url": "https://v3.fal.media/files/koala/8teUPbRRMtAUTORDvqy0l.wav",
    "content_type": "audio/wav",
    "file_name": "8teUPbRRMtAUTORDvqy0l.wav",
    "file_size": 33554476
  },
  "seed": 1847530193
}"""

RESULT_OPEN = b"""{
  "audio_file": {
    "url": "https://v3.fal.media/files/koala/8teUPbRRMtAUTORDvqy0l.wav",
    "content_type": "audio/wav",
    "file_name": "8teUPbRRMtAUTORDvqy0l.wav",
    "file_size": 5292044
  }
}"""

# sync_mode: the same result with the audio inline as a data URI.
SYNC_AUDIO = b"RIFF$\x00\x00\x00WAVEfmt "
RESULT_SYNC = b"""{
  "audio": {
    "url": "data:audio/wav;base64,UklGRiQAAABXQVZFZm10IA==",
    "content_type": "audio/wav",
    "file_name": "audio.wav",
    "file_size": 16
  },
  "seed": 42
}"""

RESULT_BAD_DATA_URI = b"""{"audio": {"url": "data:audio/wav;base64,@@@not-base64@@@"}}"""
RESULT_NO_AUDIO = b"""{"seed": 42}"""

# A failed job: the response URL answers with an HTTP error and a `detail`.
ERROR_422_VALIDATION = b"""{"detail": [{"loc": ["body", "prompt"],
  "msg": "The prompt was flagged by the content checker", "type": "content_policy_violation",
  "input": "..."}]}"""
ERROR_400_DETAIL = b"""{"detail": "Audio file could not be decoded"}"""
ERROR_499_CANCELLED = b"""{"detail": "Request was cancelled by the client",
  "error_type": "client_cancelled"}"""
ERROR_504_STORED = b"""{"detail": "Request timed out", "error_type": "request_timeout"}"""
ERROR_401 = b"""{"detail": "No user found for Key ID and Secret"}"""
ERROR_403_BALANCE = (b'{"detail": "User is locked. Reason: Exhausted balance. '
                     b'Top up your balance at fal.ai/dashboard/billing."}')
ERROR_403 = b"""{"detail": "Forbidden: this key may not use fal-ai/stable-audio-25"}"""
ERROR_404 = b"""{"detail": "Request not found"}"""
ERROR_429 = b"""{"detail": "Rate limit exceeded"}"""
ERROR_500_BARE = b"""Internal Server Error"""
ERROR_502_HTML = b"""<html><body>502 Bad Gateway</body></html>"""

JSON = {"content-type": "application/json"}


@pytest.fixture
def adapter() -> FalAdapter:
    return FalAdapter(ProviderSettings(base_url=BASE, api_key_env="FAL_KEY"), API_KEY)


@pytest.fixture
def handle() -> RemoteHandle:
    return RemoteHandle(REQUEST_ID, STATUS_URL, Queued(0), result_url=RESPONSE_URL,
                        cancel_url=CANCEL_URL)


def reply(status: int, body: bytes, headers: dict[str, str] | None = None,
          url: str = "") -> HttpReply:
    return HttpReply(status, headers if headers is not None else JSON, body, url)


def job(**fields: Any) -> Job:
    fields.setdefault("id", "job-1")
    fields.setdefault("provider", "fal")
    fields.setdefault("prompt", "A beautiful piano arpeggio grows into a grand orchestral climax")
    fields.setdefault("output_format", "wav")
    return Job(**fields)


def issues_of(j: Job) -> dict[str | None, str]:
    return {issue.field: issue.message for issue in FalAdapter.validate(j)}


# ---- registry and submit_request -----------------------------------------------------------


def test_adapter_is_registered_as_fal() -> None:
    """The registry finds the adapter under the provider name `fal`."""
    assert ADAPTERS["fal"] is FalAdapter
    assert FalAdapter.default_model == "fal-ai/stable-audio-25"
    assert FalAdapter.local_audio == "data_uri"


@pytest.mark.parametrize(
    ("fields", "url"),
    [
        ({}, f"{APP}/text-to-audio"),
        ({"task": Task.AUDIO_TO_AUDIO, "audio": "https://example.com/in.wav"},
         f"{APP}/audio-to-audio"),
        ({"task": Task.INPAINT, "audio": "https://example.com/in.wav"}, f"{APP}/inpaint"),
        ({"model": "fal-ai/stable-audio"}, f"{BASE}/fal-ai/stable-audio"),
    ],
    ids=["text-to-audio", "audio-to-audio", "inpaint", "stable-audio-open"],
)
def test_submit_posts_to_the_model_route(adapter: FalAdapter, fields: dict[str, Any],
                                         url: str) -> None:
    """2.5 is POSTed to `{model}/{task}`; Stable Audio Open to its bare model id."""
    request = adapter.submit_request(job(**fields))
    assert (request.method, request.url) == ("POST", url)


def test_submit_sends_the_key_header_and_json(adapter: FalAdapter) -> None:
    """The submit carries `Authorization: Key KEY` and a JSON body, and never prints the key."""
    request = adapter.submit_request(job())
    assert dict(request.headers) == {"Authorization": f"Key {API_KEY}",
                                     "Content-Type": "application/json"}
    assert request.form is None and isinstance(request.json, dict)
    assert API_KEY not in repr(request) and API_KEY not in repr(adapter)


@pytest.mark.parametrize(
    ("task", "field", "value", "body_key", "sent"),
    [
        (Task.TEXT_TO_AUDIO, "duration", 45.0, "seconds_total", 45),
        (Task.TEXT_TO_AUDIO, "steps", 6, "num_inference_steps", 6),
        (Task.TEXT_TO_AUDIO, "guidance_scale", 7.0, "guidance_scale", 7),
        (Task.TEXT_TO_AUDIO, "seed", 1234, "seed", 1234),
        (Task.AUDIO_TO_AUDIO, "duration", 30.0, "total_seconds", 30),
        (Task.AUDIO_TO_AUDIO, "strength", 0.35, "strength", 0.35),
        (Task.AUDIO_TO_AUDIO, "audio", "https://example.com/in.wav", "audio_url",
         "https://example.com/in.wav"),
        (Task.AUDIO_TO_AUDIO, "steps", 4, "num_inference_steps", 4),
        (Task.INPAINT, "duration", 60.0, "seconds_total", 60),
        (Task.INPAINT, "mask_start", 10.0, "mask_start", 10),
        (Task.INPAINT, "mask_end", 20.5, "mask_end", 20.5),
        (Task.INPAINT, "audio", "https://example.com/in.wav", "audio_url",
         "https://example.com/in.wav"),
    ],
)
def test_submit_maps_unified_fields_to_fals_names(
    adapter: FalAdapter, task: Task, field: str, value: Any, body_key: str, sent: Any
) -> None:
    """Each unified field lands under fal's name; whole numbers go as integers."""
    fields: dict[str, Any] = {"task": task, field: value}
    if task is not Task.TEXT_TO_AUDIO:
        fields.setdefault("audio", "https://example.com/in.wav")
    body = adapter.submit_request(job(**fields)).json
    assert body[body_key] == sent and type(body[body_key]) is type(sent)
    if field != body_key:
        assert field not in body


def test_audio_to_audio_names_its_length_total_seconds(adapter: FalAdapter) -> None:
    """Audio-to-audio sends total_seconds (sic) and never seconds_total."""
    body = adapter.submit_request(job(task=Task.AUDIO_TO_AUDIO, duration=12,
                                      audio="https://example.com/in.wav")).json
    assert body["total_seconds"] == 12 and "seconds_total" not in body


def test_stable_audio_open_sends_its_own_field_names(adapter: FalAdapter) -> None:
    """Stable Audio Open takes seconds_total and `steps` (not num_inference_steps)."""
    body = adapter.submit_request(job(model="fal-ai/stable-audio", duration=20, steps=100)).json
    assert body == {"prompt": job().prompt, "seconds_total": 20, "steps": 100}


def test_submit_omits_unset_fields(adapter: FalAdapter) -> None:
    """Unset fields are not sent (fal applies its defaults); output_format is never sent."""
    body = adapter.submit_request(job(prompt="rain on a tin roof")).json
    assert body == {"prompt": "rain on a tin roof"}


def test_engine_resolved_audio_url_wins(adapter: FalAdapter) -> None:
    """The data URI the engine built from a local file is what goes out as audio_url."""
    data_uri = "data:audio/wav;base64,UklGRiQAAABXQVZFZm10IA=="
    request = adapter.submit_request(
        job(task=Task.AUDIO_TO_AUDIO, audio="/music/in.wav"), audio_url=data_uri)
    assert request.json["audio_url"] == data_uri


def test_text_to_audio_never_sends_audio_keys(adapter: FalAdapter) -> None:
    """A text-to-audio body holds no audio_url, strength, total_seconds or mask keys."""
    body = adapter.submit_request(job(duration=10)).json
    assert not body.keys() & {"audio_url", "strength", "total_seconds", "mask_start", "mask_end"}


def test_submit_passes_options_through(adapter: FalAdapter) -> None:
    """Option keys (sync_mode and the like) are copied into the body untouched."""
    body = adapter.submit_request(job(options={"sync_mode": True}, seed=7)).json
    assert body["sync_mode"] is True and body["seed"] == 7


# ---- validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"duration": 191}, "duration"),
        ({"duration": 12.5}, "duration"),
        ({"steps": 3}, "steps"),
        ({"steps": 9}, "steps"),
        ({"guidance_scale": 2.5}, "guidance_scale"),
        ({"guidance_scale": 0.0}, "guidance_scale"),
        ({"guidance_scale": 26.0}, "guidance_scale"),
        ({"output_format": "mp3"}, "output_format"),
        ({"negative_prompt": "vocals"}, "negative_prompt"),
        ({"bitrate": "192k"}, "bitrate"),
        ({"task": Task.AUDIO_TO_AUDIO, "audio": "https://e.com/a.wav", "strength": 0.0},
         "strength"),
        ({"task": Task.AUDIO_TO_AUDIO}, "audio"),
        ({"task": Task.INPAINT, "audio": "https://e.com/a.wav", "mask_start": 20,
          "mask_end": 10}, "mask_end"),
        ({"task": Task.INPAINT, "audio": "https://e.com/a.wav", "mask_end": 191}, "mask_end"),
        ({"strength": 0.5}, "strength"),
        ({"options": {"seconds_total": 30}}, "options.seconds_total"),
        ({"options": {"audio_url": "https://e.com/a.wav"}}, "options.audio_url"),
        ({"model": "fal-ai/stable-audio", "duration": 48}, "duration"),
        ({"model": "fal-ai/stable-audio", "seed": 1}, "seed"),
        ({"model": "fal-ai/stable-audio", "task": Task.INPAINT,
          "audio": "https://e.com/a.wav"}, "task"),
        ({"model": "fal-ai/flux/dev"}, "model"),
    ],
    ids=lambda v: str(v) if not isinstance(v, dict) else "-".join(map(str, v.values())),
)
def test_validation_refuses_what_fal_cannot_run(fields: dict[str, Any], field: str) -> None:
    """A job outside fal's contract is refused, naming the job id and the field."""
    issues = FalAdapter.validate(job(**fields))
    assert field in {i.field for i in issues}, issues
    assert all(i.job_id == "job-1" for i in issues)


def test_mp3_is_refused_with_a_hint() -> None:
    """fal returns WAV only, so the default mp3 is refused with a hint to ask for wav."""
    assert "WAV only" in issues_of(job(output_format="mp3"))["output_format"]


def test_non_integer_guidance_scale_is_refused_as_such() -> None:
    """guidance_scale is an integer on fal: 2.5 is refused as not a whole number, 2.0 passes."""
    assert "whole number" in issues_of(job(guidance_scale=2.5))["guidance_scale"]
    assert FalAdapter.validate(job(guidance_scale=2.0)) == []


def test_valid_jobs_pass_for_every_task(tmp_path: Path) -> None:
    """In-range jobs of every task and both models validate clean."""
    source = tmp_path / "in.wav"
    source.write_bytes(b"RIFF" + b"\0" * 100)
    good = [
        job(duration=190, steps=8, guidance_scale=25, seed=0),
        job(task=Task.AUDIO_TO_AUDIO, audio=str(source), strength=0.01, duration=1),
        job(task=Task.AUDIO_TO_AUDIO, audio="data:audio/wav;base64,UklGRg==", strength=1),
        job(task=Task.INPAINT, audio="https://e.com/a.mp3", mask_start=0, mask_end=190),
        job(model="fal-ai/stable-audio", duration=47, steps=1000),
    ]
    for j in good:
        assert FalAdapter.validate(j) == [], j


def test_local_file_is_checked(tmp_path: Path) -> None:
    """A local input must exist, be audio by suffix, and stay under the data-URI size limit."""
    missing = issues_of(job(task=Task.AUDIO_TO_AUDIO, audio=str(tmp_path / "gone.wav")))
    assert "cannot read" in missing["audio"]
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    assert "must be one of" in issues_of(job(task=Task.AUDIO_TO_AUDIO, audio=str(text)))["audio"]
    big = tmp_path / "big.wav"
    with big.open("wb") as f:
        f.truncate(MAX_LOCAL_AUDIO_BYTES + 1)
    assert "limit is 10 MB" in issues_of(job(task=Task.INPAINT, audio=str(big)))["audio"]


# ---- parse_submit --------------------------------------------------------------------------


def test_parse_submit_keeps_the_three_urls(adapter: FalAdapter) -> None:
    """The receipt's status, response and cancel URLs go into the handle as given."""
    handle = adapter.parse_submit(reply(200, SUBMIT_200, url=f"{APP}/text-to-audio"))
    assert handle == RemoteHandle(REQUEST_ID, STATUS_URL, Queued(0), result_url=RESPONSE_URL,
                                  cancel_url=CANCEL_URL)


@pytest.mark.parametrize(
    "foreign",
    ["https://evil.example.com", "http://queue.fal.run", "https://queue.fal.run:8443"],
    ids=["other-host", "plain-http", "other-port"],
)
def test_parse_submit_never_trusts_urls_off_the_queue(adapter: FalAdapter, foreign: str) -> None:
    """URLs off base_url's origin are rebuilt on the queue, without the task sub-path."""
    body = SUBMIT_200.replace(b"https://queue.fal.run", foreign.encode())
    handle = adapter.parse_submit(reply(200, body, url=f"{APP}/audio-to-audio"))
    assert (handle.poll_url, handle.result_url, handle.cancel_url) == (
        STATUS_URL, RESPONSE_URL, CANCEL_URL)
    for request in (adapter.poll_request(handle), adapter.result_request(handle),
                    adapter.cancel_request(handle)):
        assert request is not None and request.url.startswith(BASE + "/")


def test_parse_submit_rebuilds_missing_urls_and_reads_position(adapter: FalAdapter) -> None:
    """Without URLs the documented queue routes are used; queue_position is kept."""
    handle = adapter.parse_submit(reply(200, SUBMIT_NO_URLS, url=f"{APP}/inpaint"))
    assert handle == RemoteHandle(REQUEST_ID, STATUS_URL, Queued(3), result_url=RESPONSE_URL,
                                  cancel_url=CANCEL_URL)


def test_parse_submit_without_any_usable_url_is_unavailable(adapter: FalAdapter) -> None:
    """No URLs and no submit URL to rebuild them from: a ProviderUnavailableError."""
    with pytest.raises(ProviderUnavailableError, match="status_url"):
        adapter.parse_submit(reply(200, SUBMIT_NO_URLS))


@pytest.mark.parametrize("body", [b'{"status": "IN_QUEUE"}', b'{"request_id": ""}',
                                  b"<html>oops</html>", b"[]"])
def test_parse_submit_unreadable_receipt_is_unavailable(adapter: FalAdapter, body: bytes) -> None:
    """A 200 without a request id, or not a JSON object, is a ProviderUnavailableError."""
    with pytest.raises(ProviderUnavailableError):
        adapter.parse_submit(reply(200, body, url=f"{APP}/text-to-audio"))


# ---- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "kind", "words"),
    [
        (401, ERROR_401, AuthenticationError, "No user found"),
        (403, ERROR_403, AuthenticationError, "Forbidden"),
        (403, ERROR_403_BALANCE, InsufficientBalanceError, "Exhausted balance"),
        (422, ERROR_422_VALIDATION, InvalidRequestError, "prompt: The prompt was flagged"),
        (400, ERROR_400_DETAIL, InvalidRequestError, "could not be decoded"),
        (429, ERROR_429, RateLimitedError, "Rate limit exceeded"),
        (500, ERROR_500_BARE, ProviderUnavailableError, "Internal Server Error"),
        (502, ERROR_502_HTML, ProviderUnavailableError, "502"),
    ],
)
def test_submit_errors_map_onto_the_exception_tree(
    adapter: FalAdapter, status: int, body: bytes, kind: type[ProviderError], words: str
) -> None:
    """Each error status becomes its exception with fal's own words, and never the key."""
    with pytest.raises(kind) as info:
        adapter.parse_submit(reply(status, body))
    error = info.value
    assert type(error) is kind
    assert (error.provider, error.status) == ("fal", status)
    assert words in error.message and API_KEY not in str(error)


def test_429_keeps_retry_after(adapter: FalAdapter) -> None:
    """A 429 carries the Retry-After fal sent, should it send one."""
    with pytest.raises(RateLimitedError) as info:
        adapter.parse_submit(reply(429, ERROR_429, {**JSON, "retry-after": "7"}))
    assert info.value.retry_after == 7


# ---- poll ----------------------------------------------------------------------------------


def test_poll_request_gets_the_status_url_with_the_key(adapter: FalAdapter,
                                                       handle: RemoteHandle) -> None:
    """Polling GETs the status_url with the Key header."""
    request = adapter.poll_request(handle)
    assert (request.method, request.url) == ("GET", STATUS_URL)
    assert request.headers == {"Authorization": f"Key {API_KEY}"}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (STATUS_IN_QUEUE, Queued(2)),
        (STATUS_IN_PROGRESS, Running()),
        (STATUS_COMPLETED, Ready()),
    ],
    ids=["in-queue", "in-progress", "completed"],
)
@pytest.mark.parametrize("http_status", [200, 202])
def test_parse_poll_maps_status_words(adapter: FalAdapter, handle: RemoteHandle, body: bytes,
                                      expected: object, http_status: int) -> None:
    """IN_QUEUE, IN_PROGRESS and COMPLETED map onto Queued(position), Running and Ready,
    whether the status URL answers 202 while pending (as fal does) or 200."""
    assert adapter.parse_poll(reply(http_status, body), handle) == expected


def test_unknown_status_word_is_logged_and_taken_as_still_running(
        adapter: FalAdapter, handle: RemoteHandle) -> None:
    """An undocumented status word keeps the job polled (Running, never success), logged."""
    with structlog.testing.capture_logs() as logs:
        assert adapter.parse_poll(reply(200, STATUS_UNKNOWN), handle) == Running()
    assert [(e["event"], e["status"]) for e in logs] == [("poll.unknown_status", "TELEPORTING")]


@pytest.mark.parametrize("word", ["FAILED", "CANCELED", "CANCELLED"])
def test_failed_or_cancelled_is_finished_and_the_result_says_how(
        adapter: FalAdapter, handle: RemoteHandle, word: str) -> None:
    """FAILED and CANCELED are final: the result URL is fetched for the outcome and its detail."""
    body = json.dumps({"status": word, "response_url": "https://queue.fal.run/x"}).encode()
    assert adapter.parse_poll(reply(200, body), handle) == Ready()


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [(401, ERROR_401, AuthenticationError), (404, ERROR_404, InvalidRequestError),
     (429, ERROR_429, RateLimitedError), (503, ERROR_500_BARE, ProviderUnavailableError)],
)
def test_poll_errors_raise_with_the_request_id(adapter: FalAdapter, handle: RemoteHandle,
                                               status: int, body: bytes,
                                               kind: type[ProviderError]) -> None:
    """An error reply to a status poll raises its exception, naming the request."""
    with pytest.raises(kind) as info:
        adapter.parse_poll(reply(status, body), handle)
    assert (info.value.request_id, info.value.status) == (REQUEST_ID, status)


# ---- result --------------------------------------------------------------------------------


def test_result_request_gets_the_response_url(adapter: FalAdapter, handle: RemoteHandle) -> None:
    """After Ready, the result is a GET of the response_url with the Key header."""
    request = adapter.result_request(handle)
    assert (request.method, request.url) == ("GET", RESPONSE_URL)
    assert request.headers == {"Authorization": f"Key {API_KEY}"}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (RESULT_SA25, Succeeded((AudioURL(CDN_URL, "audio/wav"),), seed=1847530193)),
        (RESULT_OPEN, Succeeded((AudioURL(CDN_URL, "audio/wav"),))),
        (RESULT_SYNC, Succeeded((InlineAudio(SYNC_AUDIO, "audio/wav"),), seed=42)),
    ],
    ids=["audio", "audio_file", "sync-mode-data-uri"],
)
def test_parse_result_reads_the_audio(adapter: FalAdapter, handle: RemoteHandle, body: bytes,
                                      expected: Succeeded) -> None:
    """`audio` (2.5) and `audio_file` (Open) give the CDN URL; a data URI is decoded exactly."""
    assert adapter.parse_result(reply(200, body), handle) == expected


def test_inline_audio_bytes_match(adapter: FalAdapter, handle: RemoteHandle) -> None:
    """The sync_mode data URI decodes to exactly the base64 payload's bytes."""
    result = adapter.parse_result(reply(200, RESULT_SYNC), handle)
    assert isinstance(result, Succeeded)
    (audio,) = result.audio
    assert isinstance(audio, InlineAudio)
    assert audio.data == base64.b64decode("UklGRiQAAABXQVZFZm10IA==") == SYNC_AUDIO


@pytest.mark.parametrize(
    ("body", "reason"),
    [(RESULT_BAD_DATA_URI, "unreadable inline audio"), (RESULT_NO_AUDIO, "without any audio")],
)
def test_result_without_usable_audio_fails(adapter: FalAdapter, handle: RemoteHandle,
                                           body: bytes, reason: str) -> None:
    """A 200 result with no audio or a broken data URI ends Failed, not polled forever."""
    result = adapter.parse_result(reply(200, body), handle)
    assert isinstance(result, Failed) and reason in result.reason


@pytest.mark.parametrize(
    ("status", "body", "headers", "reason"),
    [
        (422, ERROR_422_VALIDATION, JSON, "prompt: The prompt was flagged by the content checker"),
        (400, ERROR_400_DETAIL, JSON, "Audio file could not be decoded"),
        (404, ERROR_404, JSON, "Request not found"),
        (499, ERROR_499_CANCELLED, {**JSON, "x-fal-error-type": "client_cancelled"},
         "Request was cancelled by the client (client_cancelled)"),
        (504, ERROR_504_STORED, JSON, "Request timed out (request_timeout)"),
        (500, b'{"detail": "Runner crashed"}', {**JSON, "x-fal-error-type": "runner_server_error"},
         "Runner crashed (runner_server_error)"),
    ],
    ids=["422-validation", "400-detail", "404", "499-cancelled", "504-stored", "500-header"],
)
def test_failed_job_at_the_response_url_is_failed(
    adapter: FalAdapter, handle: RemoteHandle, status: int, body: bytes,
    headers: dict[str, str], reason: str
) -> None:
    """fal's failure shapes at the response URL end the job Failed with its detail, unbilled."""
    assert adapter.parse_result(reply(status, body, headers), handle) == Failed(
        reason, charged=False)


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (429, ERROR_429, RateLimitedError),
        (500, ERROR_500_BARE, ProviderUnavailableError),
        (502, ERROR_502_HTML, ProviderUnavailableError),
        (503, b'{"detail": "Service Unavailable"}', ProviderUnavailableError),
        (401, ERROR_401, AuthenticationError),
        (403, ERROR_403_BALANCE, InsufficientBalanceError),
    ],
)
def test_transient_or_key_errors_at_the_response_url_raise(
    adapter: FalAdapter, handle: RemoteHandle, status: int, body: bytes,
    kind: type[ProviderError]
) -> None:
    """429 and a bare 5xx are raised (retried); a key problem is raised, not the job's failure."""
    with pytest.raises(kind) as info:
        adapter.parse_result(reply(status, body), handle)
    assert (info.value.request_id, info.value.status) == (REQUEST_ID, status)


# ---- cancel and cost -----------------------------------------------------------------------


def test_cancel_request_puts_the_cancel_url(adapter: FalAdapter, handle: RemoteHandle) -> None:
    """Cancelling is a PUT of the cancel_url with the Key header."""
    request = adapter.cancel_request(handle)
    assert request is not None
    assert (request.method, request.url) == ("PUT", CANCEL_URL)
    assert request.headers == {"Authorization": f"Key {API_KEY}"}


def test_no_cancel_url_means_no_cancel(adapter: FalAdapter) -> None:
    """A handle without a cancel_url cannot be cancelled."""
    assert adapter.cancel_request(RemoteHandle(REQUEST_ID, STATUS_URL, Queued())) is None


@pytest.mark.parametrize(
    ("fields", "price"),
    [({}, (0.20, "usd")),
     ({"task": Task.INPAINT, "audio": "https://e.com/a.wav"}, (0.20, "usd")),
     ({"model": "fal-ai/stable-audio"}, None)],
)
def test_cost_is_the_published_price(adapter: FalAdapter, fields: dict[str, Any],
                                     price: tuple[float, str] | None) -> None:
    """Stable Audio 2.5 costs $0.20 per audio; Stable Audio Open has no published price."""
    assert adapter.cost(job(**fields)) == price
