"""AI/ML API adapter: what has no generic form in test_provider_contract.py.

The documented replies, error bodies, routes and headers are rows of the provider contract;
here are the body field names, the poll URL's encoding and the validation ranges.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from test_provider_contract import AIMLAPI, reply

from stableaudio_async import InvalidJobError
from stableaudio_async.models import Job, Succeeded, Task
from stableaudio_async.providers.aimlapi import AimlapiAdapter

job = AIMLAPI.job


@pytest.fixture
def adapter() -> AimlapiAdapter:
    return AIMLAPI.build()


# ---- submit_request --------------------------------------------------------------------------


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


# ---- parse_submit and poll ------------------------------------------------------------------


@pytest.mark.parametrize("generation_id", [
    AIMLAPI.poll_handle().request_id, "a:b:stable-audio", "x&y=1:stable-audio",
    "sp ace/slash?q#f:stable-audio"])
def test_poll_url_carries_the_id_as_one_encoded_query_value(
    adapter: AimlapiAdapter, generation_id: str
) -> None:
    """The id's colon and any other reserved character is encoded; decoding gives the id back."""
    body = b'{"id": "%s", "status": "queued"}' % generation_id.encode()
    handle = adapter.parse_submit(reply(200, body))
    request = adapter.poll_request(handle)
    parts = urlsplit(request.url)
    assert (request.method, f"{parts.scheme}://{parts.netloc}{parts.path}") == ("GET", AIMLAPI.submit_url)
    assert ":" not in parts.query
    assert parse_qs(parts.query, strict_parsing=True) == {"generation_id": [generation_id]}


def test_status_words_are_read_case_insensitively(adapter: AimlapiAdapter) -> None:
    """"COMPLETED" reads as completed: the word's case is not part of the contract's meaning."""
    body = AIMLAPI.reply_body("completed").replace(b'"completed"', b'"COMPLETED"')
    assert isinstance(adapter.parse_poll(reply(200, body), AIMLAPI.poll_handle()), Succeeded)


# ---- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [float("inf"), float("nan")])
def test_a_non_finite_option_is_refused_by_the_job_itself(value: float) -> None:
    """A NaN or infinite seconds_start never reaches the adapter: the job refuses it."""
    with pytest.raises(InvalidJobError, match=r"options\.seconds_start"):
        job(options={"seconds_start": value})


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
