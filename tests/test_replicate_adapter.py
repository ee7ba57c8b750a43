"""Replicate adapter: what has no generic form in test_provider_contract.py.

The documented predictions, error bodies, routes and headers are rows of the provider
contract; here are the ``input`` body, the ``Prefer: wait`` and webhook options, the cancel
route's fallback, and the validation ranges.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime
from typing import Any

import pytest
from test_provider_contract import REPLICATE, reply

from stableaudio_async.errors import RateLimitedError
from stableaudio_async.models import Queued, RemoteHandle, Task
from stableaudio_async.providers.replicate import ReplicateAdapter

job = REPLICATE.job


@pytest.fixture
def adapter() -> ReplicateAdapter:
    return REPLICATE.build()


# ---- submit_request ------------------------------------------------------------------------


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


# ---- cancel --------------------------------------------------------------------------------


def test_cancel_request_falls_back_to_the_documented_route(adapter: ReplicateAdapter) -> None:
    """A handle without a cancel URL cancels at /v1/predictions/{id}/cancel; with no id, not at all."""
    handle = REPLICATE.poll_handle()
    request = adapter.cancel_request(replace(handle, cancel_url=None))
    assert request is not None and request.url == handle.cancel_url
    assert adapter.cancel_request(RemoteHandle(None, None, Queued())) is None


# ---- error replies --------------------------------------------------------------------------


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


# ---- lookup: the key's recent predictions ---------------------------------------------------

# Replicate's documented reply to GET /v1/predictions (newest first), with this model's inputs.
LISTED = {
    "next": "https://api.replicate.com/v1/predictions?cursor=cD0yMDIzLTA5LTA4",
    "previous": None,
    "results": [
        {
            "completed_at": None,
            "created_at": "2026-12-02T10:00:05.907244Z",
            "data_removed": False,
            "error": None,
            "id": "newer0prediction0id0000000",
            "input": {"prompt": "warm analog synth pads, slow tempo", "duration": 45,
                      "seed": 77},
            "metrics": {},
            "output": None,
            "started_at": None,
            "source": "api",
            "status": "starting",
            "urls": {
                "get": "https://api.replicate.com/v1/predictions/newer0prediction0id0000000",
                "cancel": "https://api.replicate.com/v1/predictions/newer0prediction0id0000000/cancel",
            },
            "model": "stability-ai/stable-audio-2.5",
            "version": "dp-4d0f2a",
        },
        {
            "completed_at": "2026-12-02T10:00:03.791859Z",
            "created_at": "2026-12-02T10:00:01.907244Z",
            "data_removed": False,
            "error": None,
            "id": "gm3qorzdhgbfurvjtvhg6dckhu",
            "input": {"prompt": "warm analog synth pads, slow tempo", "duration": 45, "seed": 77},
            "metrics": {"predict_time": 1.9},
            "output": "https://replicate.delivery/xezq/abc/output.mp3",
            "started_at": "2026-12-02T10:00:02.1Z",
            "source": "api",
            "status": "succeeded",
            "urls": {"get": "https://api.replicate.com/v1/predictions/gm3qorzdhgbfurvjtvhg6dckhu",
                     "cancel": "https://api.replicate.com/v1/predictions/gm3qorzdhgbfurvjtvhg6dckhu/cancel"},
            "model": "stability-ai/stable-audio-2.5",
            "version": "dp-4d0f2a",
        },
        {
            "created_at": "2026-12-02T09:58:00Z",
            "id": "older0prediction0id0000000",
            "input": {"prompt": "warm analog synth pads, slow tempo", "duration": 45, "seed": 77},
            "status": "succeeded",
            "model": "stability-ai/stable-audio-2.5",
            "urls": {"get": "https://api.replicate.com/v1/predictions/older0prediction0id0000000"},
        },
    ],
}


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def test_lookup_lists_the_keys_predictions_and_follows_its_pages(
        adapter: ReplicateAdapter) -> None:
    """GET /v1/predictions with the key; a ``next`` page on the API is followed, one elsewhere
    (where the key must not go) is not."""
    first = adapter.lookup_request()
    assert first is not None and (first.method, first.url) == (
        "GET", "https://api.replicate.com/v1/predictions")
    assert first.headers["Authorization"].startswith("Bearer ")
    following = adapter.lookup_request(LISTED["next"])  # type: ignore[arg-type]
    assert following is not None and following.url == LISTED["next"]
    elsewhere = adapter.lookup_request("https://evil.example/v1/predictions?cursor=x")
    assert elsewhere is not None and elsewhere.url == "https://api.replicate.com/v1/predictions"


def test_lookup_finds_the_predictions_made_from_this_input_since_it_was_sent(
        adapter: ReplicateAdapter) -> None:
    """Same model and exactly the same input, created at or after ``since``: found, newest
    first, as handles to follow; an older one ends the search (no next page)."""
    submitted = adapter.submit_request(job(duration=45, seed=77))
    since = _epoch("2026-12-02T10:00:00Z")
    page = adapter.parse_lookup(reply(200, json.dumps(LISTED).encode()), submitted, since)
    assert [h.request_id for h in page.found] == ["newer0prediction0id0000000",
                                                  "gm3qorzdhgbfurvjtvhg6dckhu"]
    assert page.found[1].poll_url == ("https://api.replicate.com/v1/predictions/"
                                      "gm3qorzdhgbfurvjtvhg6dckhu")
    assert page.next_page is None  # the page already reaches back past `since`
    # Another input (a different seed) is not ours.
    other = adapter.submit_request(job(duration=45, seed=78))
    assert adapter.parse_lookup(reply(200, json.dumps(LISTED).encode()), other, since).found == ()
    # All on the page newer than `since`: read on.
    recent = {**LISTED, "results": LISTED["results"][:2]}  # type: ignore[index]
    page = adapter.parse_lookup(reply(200, json.dumps(recent).encode()), submitted, since)
    assert page.next_page == LISTED["next"]


def test_lookup_error_replies_raise(adapter: ReplicateAdapter) -> None:
    """A 429 or 5xx to the listing is an error (the engine then resends, flagged)."""
    submitted = adapter.submit_request(job())
    with pytest.raises(RateLimitedError):
        adapter.parse_lookup(reply(429, b'{"detail": "Request was throttled."}'), submitted, 0)
