"""Tests for the Replicate adapter against the prediction bodies documented in providers.md."""

from __future__ import annotations

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
    RemoteHandle,
    RemoteStatus,
    Running,
    Succeeded,
    Task,
)
from stableaudio_async.providers import ADAPTERS
from stableaudio_async.providers.replicate import ReplicateAdapter

API_KEY = "r8_test-KEY-4c2e9a7f1d"
BASE = "https://api.replicate.com"
MODEL_ROUTE = f"{BASE}/v1/models/stability-ai/stable-audio-2.5/predictions"
PREDICTION_ID = "gm3qorzdhgbfurvjtvhg6dckhu"
GET_URL = f"{BASE}/v1/predictions/{PREDICTION_ID}"
CANCEL_URL = f"{GET_URL}/cancel"
OUTPUT_URL = "https://replicate.delivery/xezq/Hj3kLmN0pQ/output.mp3"

# ---- Prediction bodies, written out as Replicate's API returns them. -------------------------

CREATED_STARTING = b"""{
  "id": "gm3qorzdhgbfurvjtvhg6dckhu",
  "model": "stability-ai/stable-audio-2.5",
  "input": {"prompt": "warm analog synth pads, slow tempo", "duration": 30},
  "logs": "",
  "output": null,
  "data_removed": false,
  "error": null,
  "status": "starting",
  "created_at": "2025-06-01T12:00:00.000000Z",
  "started_at": null,
  "completed_at": null,
  "urls": {
    "cancel": "https://api.replicate.com/v1/predictions/gm3qorzdhgbfurvjtvhg6dckhu/cancel",
    "get": "https://api.replicate.com/v1/predictions/gm3qorzdhgbfurvjtvhg6dckhu",
    "stream": "https://stream.replicate.com/v1/files/qoxq-abcdefghijklmnop",
    "web": "https://replicate.com/p/gm3qorzdhgbfurvjtvhg6dckhu"
  },
  "metrics": {}
}"""

# Prefer: wait held the request until the prediction finished.
CREATED_SUCCEEDED = b"""{
  "id": "gm3qorzdhgbfurvjtvhg6dckhu",
  "model": "stability-ai/stable-audio-2.5",
  "input": {"prompt": "warm analog synth pads, slow tempo", "duration": 30},
  "logs": "",
  "output": "https://replicate.delivery/xezq/Hj3kLmN0pQ/output.mp3",
  "data_removed": false,
  "error": null,
  "status": "succeeded",
  "created_at": "2025-06-01T12:00:00.000000Z",
  "started_at": "2025-06-01T12:00:00.812000Z",
  "completed_at": "2025-06-01T12:00:06.240000Z",
  "urls": {
    "cancel": "https://api.replicate.com/v1/predictions/gm3qorzdhgbfurvjtvhg6dckhu/cancel",
    "get": "https://api.replicate.com/v1/predictions/gm3qorzdhgbfurvjtvhg6dckhu"
  },
  "metrics": {"predict_time": 5.428, "total_time": 6.24}
}"""

# Prefer: wait ran out first: the prediction comes back unfinished.
CREATED_PROCESSING = b"""{
  "id": "gm3qorzdhgbfurvjtvhg6dckhu",
  "model": "stability-ai/stable-audio-2.5",
  "input": {"prompt": "warm analog synth pads, slow tempo"},
  "logs": "",
  "output": null,
  "data_removed": false,
  "error": null,
  "status": "processing",
  "created_at": "2025-06-01T12:00:00.000000Z",
  "started_at": "2025-06-01T12:00:00.812000Z",
  "completed_at": null,
  "urls": {
    "cancel": "https://api.replicate.com/v1/predictions/gm3qorzdhgbfurvjtvhg6dckhu/cancel",
    "get": "https://api.replicate.com/v1/predictions/gm3qorzdhgbfurvjtvhg6dckhu"
  },
  "metrics": {}
}"""

CREATED_WITHOUT_URLS = b"""{"id": "gm3qorzdhgbfurvjtvhg6dckhu", "status": "starting", "output": null}"""
CREATED_WITHOUT_ID = b"""{"status": "starting", "output": null, "urls": {}}"""

POLL_STARTING = CREATED_STARTING
POLL_PROCESSING = CREATED_PROCESSING
POLL_SUCCEEDED = CREATED_SUCCEEDED

# More than an hour after creation: input and output are gone.
POLL_DATA_REMOVED = b"""{
  "id": "gm3qorzdhgbfurvjtvhg6dckhu",
  "model": "stability-ai/stable-audio-2.5",
  "input": {},
  "logs": "",
  "output": null,
  "data_removed": true,
  "error": null,
  "status": "succeeded",
  "created_at": "2025-06-01T12:00:00.000000Z",
  "started_at": "2025-06-01T12:00:00.812000Z",
  "completed_at": "2025-06-01T12:00:06.240000Z",
  "urls": {
    "cancel": "https://api.replicate.com/v1/predictions/gm3qorzdhgbfurvjtvhg6dckhu/cancel",
    "get": "https://api.replicate.com/v1/predictions/gm3qorzdhgbfurvjtvhg6dckhu"
  },
  "metrics": {"predict_time": 5.428, "total_time": 6.24}
}"""

POLL_SUCCEEDED_NO_OUTPUT = b"""{
  "id": "gm3qorzdhgbfurvjtvhg6dckhu",
  "output": null,
  "data_removed": false,
  "error": null,
  "status": "succeeded",
  "started_at": "2025-06-01T12:00:00.812000Z"
}"""

POLL_FAILED = b"""{
  "id": "gm3qorzdhgbfurvjtvhg6dckhu",
  "model": "stability-ai/stable-audio-2.5",
  "input": {"prompt": "warm analog synth pads, slow tempo"},
  "logs": "Traceback (most recent call last): ...",
  "output": null,
  "data_removed": false,
  "error": "Prediction failed: the model could not generate audio for this prompt.",
  "status": "failed",
  "created_at": "2025-06-01T12:00:00.000000Z",
  "started_at": "2025-06-01T12:00:00.812000Z",
  "completed_at": "2025-06-01T12:00:03.100000Z",
  "urls": {
    "cancel": "https://api.replicate.com/v1/predictions/gm3qorzdhgbfurvjtvhg6dckhu/cancel",
    "get": "https://api.replicate.com/v1/predictions/gm3qorzdhgbfurvjtvhg6dckhu"
  },
  "metrics": {"predict_time": 2.288}
}"""

POLL_CANCELED_RUNNING = b"""{
  "id": "gm3qorzdhgbfurvjtvhg6dckhu",
  "output": null,
  "data_removed": false,
  "error": null,
  "status": "canceled",
  "created_at": "2025-06-01T12:00:00.000000Z",
  "started_at": "2025-06-01T12:00:00.812000Z",
  "completed_at": "2025-06-01T12:00:02.000000Z",
  "metrics": {"predict_time": 1.188}
}"""

POLL_CANCELED_QUEUED = b"""{
  "id": "gm3qorzdhgbfurvjtvhg6dckhu",
  "output": null,
  "data_removed": false,
  "error": null,
  "status": "canceled",
  "created_at": "2025-06-01T12:00:00.000000Z",
  "started_at": null,
  "completed_at": "2025-06-01T12:00:00.500000Z"
}"""

POLL_ABORTED = b"""{
  "id": "gm3qorzdhgbfurvjtvhg6dckhu",
  "output": null,
  "data_removed": false,
  "error": "Prediction deadline exceeded before it started (Cancel-After: 1m)",
  "status": "aborted",
  "created_at": "2025-06-01T12:00:00.000000Z",
  "started_at": null,
  "completed_at": "2025-06-01T12:01:00.000000Z"
}"""

POLL_OUTPUT_LIST = b"""{
  "id": "gm3qorzdhgbfurvjtvhg6dckhu",
  "status": "succeeded",
  "data_removed": false,
  "output": ["https://replicate.delivery/xezq/Hj3kLmN0pQ/output.mp3"]
}"""

INLINE_AUDIO = b"ID3\x04\x00\x00\x00\x00\x00\x00\xff\xfb\x90\x64\x00\x0f"
POLL_OUTPUT_DATA_URI = b"""{
  "id": "gm3qorzdhgbfurvjtvhg6dckhu",
  "status": "succeeded",
  "data_removed": false,
  "output": "data:audio/mpeg;base64,SUQzBAAAAAAAAP/7kGQADw=="
}"""

POLL_OUTPUT_BAD_DATA_URI = b"""{
  "id": "gm3qorzdhgbfurvjtvhg6dckhu",
  "status": "succeeded",
  "data_removed": false,
  "output": "data:audio/mpeg;base64,@@@not base64@@@"
}"""

POLL_UNKNOWN_WORD = b"""{"id": "gm3qorzdhgbfurvjtvhg6dckhu", "status": "teleporting", "output": null}"""

ERROR_401 = b"""{"title": "Unauthenticated", "detail": "Invalid token.", "status": 401}"""
ERROR_402 = (b'{"title": "Insufficient credit", "detail": "You have insufficient credit to run '
             b'this model. Go to https://replicate.com/account/billing#billing to purchase '
             b'credit.", "status": 402}')
ERROR_404 = b"""{"title": "Not found", "detail": "Not found.", "status": 404}"""
ERROR_422 = b"""{
  "title": "Input validation failed",
  "detail": "- input.duration: Must be less than or equal to 190\\n",
  "status": 422,
  "invalid_fields": [{"type": "number_lte", "field": "input.duration",
                      "description": "Must be less than or equal to 190"}]
}"""
ERROR_429 = b"""{"detail": "Request was throttled. Your rate limit resets in ~30s.", "status": 429}"""
ERROR_500 = b"""{"title": "Internal Server Error", "detail": "Something went wrong.", "status": 500}"""
ERROR_503 = b"""Service Unavailable"""

JSON_HEADERS = {"content-type": "application/json"}


@pytest.fixture
def adapter() -> ReplicateAdapter:
    return ReplicateAdapter(
        ProviderSettings(base_url=BASE, api_key_env="REPLICATE_API_TOKEN"), API_KEY)


@pytest.fixture
def handle() -> RemoteHandle:
    return RemoteHandle(PREDICTION_ID, GET_URL, Queued(), cancel_url=CANCEL_URL)


def reply(status: int, body: bytes, headers: dict[str, str] | None = None) -> HttpReply:
    return HttpReply(status, headers if headers is not None else JSON_HEADERS, body)


def job(**fields: Any) -> Job:
    fields.setdefault("id", "job-1")
    fields.setdefault("provider", "replicate")
    fields.setdefault("prompt", "warm analog synth pads, slow tempo")
    return Job(**fields)


# ---- the adapter's declarations ------------------------------------------------------------


def test_adapter_is_registered_with_its_model() -> None:
    """The registry finds the adapter; its one model is the official Stable Audio 2.5."""
    assert ADAPTERS["replicate"] is ReplicateAdapter
    assert ReplicateAdapter.default_model == "stability-ai/stable-audio-2.5"
    assert set(ReplicateAdapter.models) == {"stability-ai/stable-audio-2.5"}
    assert ReplicateAdapter.local_audio == "none"
    assert not ReplicateAdapter.synchronous


def test_no_published_price_and_no_key_to_the_cdn(adapter: ReplicateAdapter) -> None:
    """cost() is None (no published price); downloads from replicate.delivery carry no key."""
    assert adapter.cost(job()) is None
    assert adapter.download_headers(OUTPUT_URL) == {}


# ---- submit_request ------------------------------------------------------------------------


def test_submit_posts_to_the_official_model_route(adapter: ReplicateAdapter) -> None:
    """The job is POSTed to the model's predictions route with the bearer token and JSON."""
    request = adapter.submit_request(job())
    assert (request.method, request.url) == ("POST", MODEL_ROUTE)
    assert dict(request.headers) == {"Authorization": f"Bearer {API_KEY}",
                                     "Content-Type": "application/json"}
    assert request.form is None


def test_submit_route_ignores_trailing_slash_in_base_url() -> None:
    """A base URL written with a trailing slash gives the same route."""
    adapter = ReplicateAdapter(
        ProviderSettings(base_url=BASE + "/", api_key_env="REPLICATE_API_TOKEN"), API_KEY)
    assert adapter.submit_request(job()).url == MODEL_ROUTE


def test_submit_wraps_the_fields_in_input(adapter: ReplicateAdapter) -> None:
    """The body is {"input": {...}} holding every mapped field, and nothing else."""
    body = adapter.submit_request(job(duration=45, steps=6, guidance_scale=3.5, seed=77)).json
    assert body == {"input": {"prompt": "warm analog synth pads, slow tempo", "duration": 45,
                              "steps": 6, "cfg_scale": 3.5, "seed": 77}}


@pytest.mark.parametrize(
    ("field", "value", "input_key", "sent"),
    [
        ("duration", 45.0, "duration", 45),
        ("duration", 190, "duration", 190),
        ("steps", 4, "steps", 4),
        ("guidance_scale", 2.5, "cfg_scale", 2.5),
        ("guidance_scale", 25, "cfg_scale", 25),
        ("seed", 1234, "seed", 1234),
    ],
)
def test_submit_maps_fields_to_replicate_names(
    adapter: ReplicateAdapter, field: str, value: Any, input_key: str, sent: Any
) -> None:
    """Each unified field lands in input under Replicate's name, with its value."""
    inputs = adapter.submit_request(job(**{field: value})).json["input"]
    assert inputs[input_key] == sent
    if field != input_key:
        assert field not in inputs


def test_submit_sends_a_whole_duration_as_a_json_integer(adapter: ReplicateAdapter) -> None:
    """duration is typed integer in the model's schema, so 45.0 goes out as 45, not 45.0."""
    inputs = adapter.submit_request(job(duration=45.0)).json["input"]
    assert type(inputs["duration"]) is int


def test_submit_omits_unset_fields(adapter: ReplicateAdapter) -> None:
    """Fields left as None are not sent, so Replicate applies its defaults (190 s, 8 steps, cfg 1)."""
    body = adapter.submit_request(job(prompt="rain on a tin roof")).json
    assert body == {"input": {"prompt": "rain on a tin roof"}}


def test_submit_never_sends_output_format(adapter: ReplicateAdapter) -> None:
    """The model has no format input: output_format only names the file locally."""
    assert "output_format" not in adapter.submit_request(job(output_format="mp3")).json["input"]


@pytest.mark.parametrize("wait", [1, 30, 60])
def test_wait_option_becomes_the_prefer_header(adapter: ReplicateAdapter, wait: int) -> None:
    """options.wait is sent as `Prefer: wait=N`, not as an input field."""
    request = adapter.submit_request(job(options={"wait": wait}))
    assert request.headers["Prefer"] == f"wait={wait}"
    assert "wait" not in request.json["input"]
    assert "wait" not in request.json


def test_no_prefer_header_without_the_wait_option(adapter: ReplicateAdapter) -> None:
    """Without options.wait the create returns at once (no Prefer header)."""
    assert "Prefer" not in adapter.submit_request(job()).headers


def test_webhook_options_go_beside_input_others_inside(adapter: ReplicateAdapter) -> None:
    """webhook and webhook_events_filter are top-level keys; any other option is an input."""
    options = {"webhook": "https://example.com/hook", "webhook_events_filter": ["completed"],
               "some_new_input": True}
    body = adapter.submit_request(job(options=options, seed=7)).json
    assert body["webhook"] == "https://example.com/hook"
    assert body["webhook_events_filter"] == ["completed"]
    assert body["input"] == {"prompt": "warm analog synth pads, slow tempo", "seed": 7,
                             "some_new_input": True}


def test_requests_never_show_the_key(adapter: ReplicateAdapter, handle: RemoteHandle) -> None:
    """Neither a request's repr nor the adapter's shows the API key."""
    requests = [adapter.submit_request(job()), adapter.poll_request(handle),
                adapter.cancel_request(handle)]
    for request in requests:
        assert request is not None
        assert request.headers["Authorization"] == f"Bearer {API_KEY}"
        assert API_KEY not in repr(request) and API_KEY not in str(request)
    assert API_KEY not in repr(adapter)


# ---- parse_submit --------------------------------------------------------------------------


def test_parse_submit_reads_the_created_prediction(adapter: ReplicateAdapter) -> None:
    """A 201 gives the prediction id, urls.get to poll, urls.cancel to cancel, and Queued."""
    handle = adapter.parse_submit(reply(201, CREATED_STARTING))
    assert handle == RemoteHandle(PREDICTION_ID, GET_URL, Queued(), cancel_url=CANCEL_URL)


def test_parse_submit_of_a_held_request_can_be_final(adapter: ReplicateAdapter) -> None:
    """After Prefer: wait the 201 may already hold the output: Succeeded, nothing to poll."""
    handle = adapter.parse_submit(reply(201, CREATED_SUCCEEDED))
    assert handle.status == Succeeded((AudioURL(OUTPUT_URL),))
    assert handle.poll_url == GET_URL


def test_parse_submit_of_a_held_request_can_be_unfinished(adapter: ReplicateAdapter) -> None:
    """A hold that ran out returns the prediction still processing: Running, polled on."""
    handle = adapter.parse_submit(reply(201, CREATED_PROCESSING))
    assert handle.status == Running()
    assert handle.request_id == PREDICTION_ID


def test_parse_submit_without_urls_builds_them(adapter: ReplicateAdapter) -> None:
    """Without urls, the handle uses the documented get and cancel routes for the id."""
    handle = adapter.parse_submit(reply(201, CREATED_WITHOUT_URLS))
    assert (handle.poll_url, handle.cancel_url) == (GET_URL, CANCEL_URL)


@pytest.mark.parametrize(
    "other",
    ["https://evil.example.com", "http://api.replicate.com", "https://api.replicate.com:8443"],
    ids=["other-host", "plain-http", "other-port"],
)
def test_parse_submit_ignores_urls_off_the_api_origin(adapter: ReplicateAdapter, other: str) -> None:
    """urls.get / urls.cancel off base_url's origin are replaced: the key goes nowhere else."""
    body = (b'{"id": "%s", "status": "starting", "urls": {"get": "%s/v1/predictions/x", '
            b'"cancel": "%s/v1/predictions/x/cancel"}}'
            % (PREDICTION_ID.encode(), other.encode(), other.encode()))
    handle = adapter.parse_submit(reply(201, body))
    assert (handle.poll_url, handle.cancel_url) == (GET_URL, CANCEL_URL)
    cancel = adapter.cancel_request(handle)
    assert cancel is not None and cancel.url.startswith(BASE + "/")
    assert adapter.poll_request(handle).url.startswith(BASE + "/")


@pytest.mark.parametrize("body", [CREATED_WITHOUT_ID, b'{"id": "", "status": "starting"}'])
def test_parse_submit_without_an_id_is_unavailable(adapter: ReplicateAdapter, body: bytes) -> None:
    """A success reply with no (or an empty) id is a ProviderUnavailableError."""
    with pytest.raises(ProviderUnavailableError) as info:
        adapter.parse_submit(reply(201, body))
    assert (info.value.provider, info.value.status) == ("replicate", 201)


@pytest.mark.parametrize("body", [b"<html>Bad gateway</html>", b"[1, 2]", b""])
def test_parse_submit_unreadable_body_is_unavailable(adapter: ReplicateAdapter, body: bytes) -> None:
    """A success status whose body is not a JSON object is a ProviderUnavailableError."""
    with pytest.raises(ProviderUnavailableError):
        adapter.parse_submit(reply(201, body))


# ---- poll and cancel requests ---------------------------------------------------------------


def test_poll_request_gets_the_handles_url(adapter: ReplicateAdapter, handle: RemoteHandle) -> None:
    """Polling GETs urls.get with the bearer token."""
    request = adapter.poll_request(handle)
    assert (request.method, request.url) == ("GET", GET_URL)
    assert request.json is None


def test_cancel_request_posts_to_the_cancel_url(adapter: ReplicateAdapter, handle: RemoteHandle) -> None:
    """Cancelling POSTs to urls.cancel with the bearer token and no body."""
    request = adapter.cancel_request(handle)
    assert request is not None
    assert (request.method, request.url, request.json) == ("POST", CANCEL_URL, None)
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"


def test_cancel_request_falls_back_to_the_documented_route(adapter: ReplicateAdapter) -> None:
    """A handle without a cancel URL cancels at /v1/predictions/{id}/cancel; with no id, not at all."""
    request = adapter.cancel_request(RemoteHandle(PREDICTION_ID, GET_URL, Queued()))
    assert request is not None and request.url == CANCEL_URL
    assert adapter.cancel_request(RemoteHandle(None, None, Queued())) is None


# ---- parse_poll: every status word ----------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (POLL_STARTING, Queued()),
        (POLL_PROCESSING, Running()),
        (POLL_SUCCEEDED, Succeeded((AudioURL(OUTPUT_URL),))),
        (POLL_OUTPUT_LIST, Succeeded((AudioURL(OUTPUT_URL),))),
        (POLL_OUTPUT_DATA_URI, Succeeded((InlineAudio(INLINE_AUDIO, "audio/mpeg"),))),
        (POLL_FAILED, Failed("Prediction failed: the model could not generate audio for this "
                             "prompt.", charged=True)),
        (POLL_CANCELED_RUNNING, Failed("prediction canceled", charged=True)),
        (POLL_CANCELED_QUEUED, Failed("prediction canceled", charged=False)),
        (POLL_ABORTED, Failed("aborted: Prediction deadline exceeded before it started "
                              "(Cancel-After: 1m)", charged=False)),
    ],
    ids=["starting", "processing", "succeeded", "output-list", "output-data-uri", "failed",
         "canceled-running", "canceled-queued", "aborted"],
)
def test_parse_poll_maps_each_status(
    adapter: ReplicateAdapter, handle: RemoteHandle, body: bytes, expected: RemoteStatus
) -> None:
    """Each status word maps to one engine status; canceled is billed only if it had started."""
    assert adapter.parse_poll(reply(200, body), handle) == expected


@pytest.mark.parametrize("body", [POLL_DATA_REMOVED, POLL_SUCCEEDED_NO_OUTPUT])
def test_succeeded_without_output_ends_failed(
    adapter: ReplicateAdapter, handle: RemoteHandle, body: bytes
) -> None:
    """succeeded with data_removed (or no output) ends Failed("output deleted …"), not polled on."""
    status = adapter.parse_poll(reply(200, body), handle)
    assert isinstance(status, Failed)
    assert status.reason.startswith("output deleted")


def test_data_removed_wins_over_a_leftover_output(
    adapter: ReplicateAdapter, handle: RemoteHandle
) -> None:
    """data_removed true means the file is gone, even if an output URL is still listed."""
    body = (b'{"id": "x", "status": "succeeded", "data_removed": true, '
            b'"output": "https://replicate.delivery/xezq/a/output.mp3"}')
    status = adapter.parse_poll(reply(200, body), handle)
    assert isinstance(status, Failed) and "data_removed" in status.reason


def test_malformed_inline_output_ends_failed(adapter: ReplicateAdapter, handle: RemoteHandle) -> None:
    """An output data URI that does not decode is a failed job, not a crash."""
    status = adapter.parse_poll(reply(200, POLL_OUTPUT_BAD_DATA_URI), handle)
    assert isinstance(status, Failed) and "inline audio" in status.reason


def test_unknown_status_word_is_logged_and_taken_as_still_running(
        adapter: ReplicateAdapter, handle: RemoteHandle) -> None:
    """A status word outside the contract keeps the job polled (Running, never success)."""
    with structlog.testing.capture_logs() as logs:
        assert adapter.parse_poll(reply(200, POLL_UNKNOWN_WORD), handle) == Running()
    assert [(e["event"], e["status"]) for e in logs] == [("poll.unknown_status", "teleporting")]


# ---- error replies --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "error_type", "words"),
    [
        (401, ERROR_401, AuthenticationError, "Invalid token."),
        (402, ERROR_402, InsufficientBalanceError, "insufficient credit"),
        (404, ERROR_404, InvalidRequestError, "Not found."),
        (422, ERROR_422, InvalidRequestError, "input.duration: Must be less than or equal to 190"),
        (429, ERROR_429, RateLimitedError, "Request was throttled"),
        (500, ERROR_500, ProviderUnavailableError, "Something went wrong."),
        (503, ERROR_503, ProviderUnavailableError, "Service Unavailable"),
    ],
)
def test_error_replies_map_to_the_exception_tree(
    adapter: ReplicateAdapter, handle: RemoteHandle, status: int, body: bytes,
    error_type: type[ProviderError], words: str,
) -> None:
    """Submit and poll errors carry the provider's own words, the HTTP status, and never the key."""
    with pytest.raises(error_type) as submitted:
        adapter.parse_submit(reply(status, body))
    with pytest.raises(error_type) as polled:
        adapter.parse_poll(reply(status, body), handle)
    for error in (submitted.value, polled.value):
        assert (error.provider, error.status) == ("replicate", status)
        assert words in error.message
        assert API_KEY not in str(error)
    assert polled.value.request_id == PREDICTION_ID


@pytest.mark.parametrize(("header", "seconds"), [("30", 30.0), ("0.25", 0.25)])
def test_429_carries_retry_after(adapter: ReplicateAdapter, header: str, seconds: float) -> None:
    """A 429's Retry-After (whole or, on a scaled clock, fractional seconds) reaches the engine."""
    with pytest.raises(RateLimitedError) as info:
        adapter.parse_submit(reply(429, ERROR_429, {**JSON_HEADERS, "retry-after": header}))
    assert info.value.retry_after == seconds


def test_429_without_retry_after_reads_the_reset_from_the_detail(
    adapter: ReplicateAdapter, handle: RemoteHandle
) -> None:
    """Retry-After is optional on Replicate: without it, "resets in ~30s" gives the pause."""
    with pytest.raises(RateLimitedError) as info:
        adapter.parse_submit(reply(429, ERROR_429))
    assert info.value.retry_after == 30.0
    with pytest.raises(RateLimitedError) as polled:
        adapter.parse_poll(reply(429, ERROR_429), handle)
    assert polled.value.retry_after == 30.0


def test_retry_after_header_wins_over_the_detail(adapter: ReplicateAdapter) -> None:
    """When both are there, the header (scaled on the emulator) is the pause, not the text."""
    with pytest.raises(RateLimitedError) as info:
        adapter.parse_submit(reply(429, ERROR_429, {**JSON_HEADERS, "retry-after": "0.3"}))
    assert info.value.retry_after == 0.3


def test_429_with_neither_leaves_the_pause_unset(adapter: ReplicateAdapter) -> None:
    """A 429 with no header and no reset time leaves retry_after unset (the engine backs off)."""
    with pytest.raises(RateLimitedError) as info:
        adapter.parse_submit(reply(429, b'{"detail": "Request was throttled."}'))
    assert info.value.retry_after is None


# ---- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"duration": 1, "steps": 4, "guidance_scale": 1, "seed": 0},
        {"duration": 190, "steps": 8, "guidance_scale": 25, "seed": 4294967295},
        {"options": {"wait": 1}},
        {"options": {"wait": 60, "webhook": "https://example.com/hook"}},
        {"model": "stability-ai/stable-audio-2.5"},
    ],
)
def test_valid_jobs_pass(fields: dict[str, Any]) -> None:
    """Jobs within the model's schema (and a 1–60 wait) are accepted."""
    assert ReplicateAdapter.validate(job(**fields)) == []


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"task": Task.AUDIO_TO_AUDIO, "audio": "https://example.com/a.mp3"}, "task",
         "cannot run audio-to-audio"),
        ({"task": Task.INPAINT, "audio": "https://example.com/a.mp3"}, "task", "cannot run inpaint"),
        ({"negative_prompt": "vocals"}, "negative_prompt", "not supported"),
        ({"bitrate": "192k"}, "bitrate", "not supported"),
        ({"duration": 0.5}, "duration", "whole number"),
        ({"duration": 191}, "duration", "outside"),
        ({"duration": 12.5}, "duration", "whole number"),
        ({"steps": 3}, "steps", "outside"),
        ({"steps": 9}, "steps", "outside"),
        ({"guidance_scale": 0.5}, "guidance_scale", "outside"),
        ({"guidance_scale": 26}, "guidance_scale", "outside"),
        ({"output_format": "wav"}, "output_format", "not one of mp3"),
        ({"model": "stability-ai/stable-audio-2"}, "model", "unknown replicate model"),
        ({"options": {"wait": 0}}, "options.wait", "1 to 60"),
        ({"options": {"wait": 61}}, "options.wait", "1 to 60"),
        ({"options": {"wait": 2.5}}, "options.wait", "1 to 60"),
        ({"options": {"wait": "10"}}, "options.wait", "1 to 60"),
        ({"options": {"wait": True}}, "options.wait", "1 to 60"),
        ({"options": {"cfg_scale": 3}}, "options.cfg_scale", "own field"),
        ({"options": {"prompt": "other"}}, "options.prompt", "own field"),
    ],
)
def test_validation_refuses_with_job_and_field(fields: dict[str, Any], field: str, words: str) -> None:
    """A job Replicate's model cannot run is refused naming the job id and the field."""
    issues = ReplicateAdapter.validate(job(**fields))
    assert issues and {i.job_id for i in issues} == {"job-1"}
    assert (issues[0].field, words in issues[0].message) == (field, True), issues
    # Only a refused task also refuses its input audio (no task here takes one).
    assert {i.field for i in issues[1:]} <= {"audio"}
