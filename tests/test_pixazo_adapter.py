"""Pixazo adapter: what has no generic form in test_provider_contract.py.

The documented replies, error bodies, routes and headers are rows of the provider contract;
here are the task routes, the body field names, and the validation ranges.
"""

from __future__ import annotations

from typing import Any

import pytest
from test_provider_contract import PIXAZO, reply

from stableaudio_async import InvalidJobError
from stableaudio_async.models import Job, Task
from stableaudio_async.providers.pixazo import PixazoAdapter

TEXT_ROUTE = PIXAZO.submit_url
AUDIO_ROUTE = (f"{PIXAZO.base_url}/stable-audio-3-small-music-audio-to-audio/v1/"
               "stable-audio-3-small-music-audio-to-audio-request")

job = PIXAZO.job


@pytest.fixture
def adapter() -> PixazoAdapter:
    return PIXAZO.build()


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


# ---- parse_submit --------------------------------------------------------------------------


def test_parse_submit_uses_polling_url_from_reply_verbatim(adapter: PixazoAdapter) -> None:
    """A polling_url on the gateway is used exactly as given, query string included."""
    body = (
        b'{"request_id": "m_1", "status": "QUEUED",'
        b' "polling_url": "https://gateway.pixazo.ai/v2/requests/status/m_1?sig=abc"}'
    )
    handle = adapter.parse_submit(reply(202, body))
    assert handle.poll_url == "https://gateway.pixazo.ai/v2/requests/status/m_1?sig=abc"


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
    with pytest.raises(InvalidJobError):
        job(steps=0)
    unchecked = Job.model_construct(id="job-1", provider="pixazo", prompt="rain", steps=0)
    issues = PixazoAdapter.validate(unchecked)
    assert [(i.field, i.job_id) for i in issues] == [("steps", "job-1")]
    assert "1–100" in issues[0].message


def test_validate_refuses_audio_on_text_to_audio() -> None:
    """An input audio on a text-to-audio job is refused, as strength is, not silently dropped."""
    issues = PixazoAdapter.validate(job(audio="https://example.com/in.mp3"))
    assert [i.field for i in issues] == ["audio"]
