"""WaveSpeed adapter: what has no generic form in test_provider_contract.py.

The documented envelopes, error bodies, routes and headers are rows of the provider contract;
here are the routes per model and task, the body field names, the sync-mode 504, the error
envelope under HTTP 200, the upload route, prices, and the validation ranges.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from test_provider_contract import WAVESPEED, reply

from stableaudio_async.emulator.audio import render_audio
from stableaudio_async.errors import (
    AuthenticationError,
    ProviderError,
    ProviderUnavailableError,
    RateLimitedError,
)
from stableaudio_async.http import FormPart
from stableaudio_async.models import RemoteHandle, RemoteStatus, Running, Task
from stableaudio_async.providers.wavespeed import MAX_UPLOAD_BYTES, WaveSpeedAdapter

BASE = WAVESPEED.base_url
FAMILY = f"{BASE}/api/v3/stability-ai/stable-audio-3"
HANDLE = WAVESPEED.poll_handle()
UPLOAD_URL = "https://d1q70pf5vjeyhc.cloudfront.net/media/audio/3a7c1e9f.wav"

UPLOAD_OK = b"""{
  "code": 200,
  "message": "success",
  "data": {
    "type": "audio",
    "download_url": "https://d1q70pf5vjeyhc.cloudfront.net/media/audio/3a7c1e9f.wav",
    "filename": "in.wav",
    "size": 1411244
  }
}"""


A2A: dict[str, Any] = {"task": Task.AUDIO_TO_AUDIO, "audio": "https://example.com/loops/in.mp3"}
INPAINT: dict[str, Any] = {"task": Task.INPAINT, "audio": "https://example.com/loops/in.mp3",
                           "mask_start": 4.0, "mask_end": 9.5}

job = WAVESPEED.job


@pytest.fixture
def adapter() -> WaveSpeedAdapter:
    return WAVESPEED.build()


# ---- submit_request ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "fields", "route"),
    [
        pytest.param(None, {}, "music", id="default-text"),
        pytest.param("stable-audio-3", {}, "music", id="family-text"),
        pytest.param(None, A2A, "audio-to-audio", id="default-a2a"),
        pytest.param(None, INPAINT, "audio-inpainting", id="default-inpaint"),
        pytest.param("stable-audio-3/music", {}, "music", id="music"),
        pytest.param("stable-audio-3/text-to-audio", {}, "text-to-audio", id="text-to-audio"),
        pytest.param("stable-audio-3/audio-to-audio", A2A, "audio-to-audio", id="a2a"),
        pytest.param("stable-audio-3/audio-inpainting", INPAINT, "audio-inpainting",
                     id="inpainting"),
    ],
)
def test_submit_posts_to_the_route_for_model_and_task(
    adapter: WaveSpeedAdapter, model: str | None, fields: dict[str, Any], route: str
) -> None:
    """The model and task pick the route under /api/v3/stability-ai/stable-audio-3/."""
    request = adapter.submit_request(job(model=model, **fields))
    assert (request.method, request.url) == ("POST", f"{FAMILY}/{route}")
    assert WaveSpeedAdapter.validate(job(model=model, **fields)) == []


@pytest.mark.parametrize(
    ("base", "field", "value", "body_key"),
    [
        ({}, "duration", 45.0, "duration"),
        ({}, "steps", 8, "num_inference_steps"),
        ({}, "guidance_scale", 2.5, "guidance_scale"),
        ({}, "seed", 1234, "seed"),
        ({}, "negative_prompt", "vocals, distortion", "negative_prompt"),
        ({}, "output_format", "wav", "output_format"),
        (A2A, "audio", "https://example.com/loops/in.wav", "audio"),
        (A2A, "strength", 0.35, "init_noise_level"),
        (A2A, "steps", 20, "num_inference_steps"),
        (INPAINT, "audio", "https://example.com/loops/in.wav", "audio"),
        (INPAINT, "mask_start", 2.5, "mask_start_seconds"),
        (INPAINT, "mask_end", 11.0, "mask_end_seconds"),
        (INPAINT, "duration", 20.0, "duration"),
    ],
)
def test_submit_maps_fields(
    adapter: WaveSpeedAdapter, base: dict[str, Any], field: str, value: Any, body_key: str
) -> None:
    """Each unified field lands in the body under WaveSpeed's name, with its value unchanged."""
    body = adapter.submit_request(job(**{**base, field: value})).json
    assert body[body_key] == value
    if field != body_key:
        assert field not in body


def test_submit_omits_unset_fields(adapter: WaveSpeedAdapter) -> None:
    """Fields left as None are not sent, so WaveSpeed applies its own defaults."""
    body = adapter.submit_request(job(prompt="rain on a tin roof")).json
    assert body == {"prompt": "rain on a tin roof", "output_format": "mp3"}


def test_submit_task_bodies_hold_only_their_keys(adapter: WaveSpeedAdapter) -> None:
    """Text-to-audio sends no audio keys; audio-to-audio no mask; inpainting no noise level."""
    text = adapter.submit_request(job()).json
    a2a = adapter.submit_request(job(**A2A, strength=0.5)).json
    inpaint = adapter.submit_request(job(**INPAINT)).json
    assert not {"audio", "init_noise_level", "mask_start_seconds"} & text.keys()
    assert not {"mask_start_seconds", "mask_end_seconds"} & a2a.keys()
    assert "init_noise_level" not in inpaint
    assert inpaint["mask_start_seconds"] == 4.0 and inpaint["mask_end_seconds"] == 9.5


def test_submit_sends_the_resolved_audio_url(adapter: WaveSpeedAdapter, tmp_path: Path) -> None:
    """For a local file the engine's upload URL is sent as ``audio``, never the path."""
    source = tmp_path / "in.wav"
    source.write_bytes(b"RIFF")
    body = adapter.submit_request(job(task=Task.AUDIO_TO_AUDIO, audio=str(source)),
                                  UPLOAD_URL).json
    assert body["audio"] == UPLOAD_URL


def test_submit_passes_options_through(adapter: WaveSpeedAdapter) -> None:
    """Keys in options (sync mode, base64 output) are copied into the body untouched."""
    options = {"enable_sync_mode": True, "enable_base64_output": True}
    body = adapter.submit_request(job(options=options, seed=7)).json
    for key, value in options.items():
        assert body[key] is value
    assert body["seed"] == 7


# ---- parse_submit --------------------------------------------------------------------------


# enable_sync_mode gave up waiting; the prediction carries on.
SUBMIT_SYNC_TIMEOUT = b"""{
  "code": 504,
  "message": "sync mode timed out",
  "data": {
    "id": "9c3f2a1b7e6d4c5f8a0b1c2d3e4f5a6b",
    "model": "stability-ai/stable-audio-3/music",
    "outputs": [],
    "urls": {"get": "https://api.wavespeed.ai/api/v3/predictions/9c3f2a1b7e6d4c5f8a0b1c2d3e4f5a6b/result"},
    "status": "processing",
    "error": ""
  }
}"""


@pytest.mark.parametrize(("body", "status"), [
    (SUBMIT_SYNC_TIMEOUT, Running()),
    (SUBMIT_SYNC_TIMEOUT.replace(b'"status": "processing",', b""), Running()),
], ids=["processing", "no-status"])
def test_sync_mode_504_naming_the_prediction_is_polled(adapter: WaveSpeedAdapter, body: bytes,
                                                       status: RemoteStatus) -> None:
    """A 504 whose envelope still names the prediction gives a handle to poll, not an error."""
    assert adapter.parse_submit(reply(504, body)) == RemoteHandle(
        HANDLE.request_id, HANDLE.poll_url, status)


@pytest.mark.parametrize("body", [
    b"Gateway Timeout", b'{"code": 504, "message": "Gateway Timeout", "data": null}'])
def test_plain_504_is_unavailable(adapter: WaveSpeedAdapter, body: bytes) -> None:
    """A 504 that names no prediction is a ProviderUnavailableError with the gateway's words."""
    with pytest.raises(ProviderUnavailableError) as info:
        adapter.parse_submit(reply(504, body))
    assert info.value.status == 504 and "Gateway Timeout" in info.value.message


# ---- error replies -------------------------------------------------------------------------


@pytest.mark.parametrize(("code", "error_type"), [
    (401, AuthenticationError), (429, RateLimitedError), (500, ProviderUnavailableError)])
def test_error_envelope_under_http_200_is_an_error(adapter: WaveSpeedAdapter, code: int,
                                                   error_type: type[ProviderError]) -> None:
    """An envelope whose code is an error counts as that error even when HTTP says 200."""
    body = b'{"code": %d, "message": "refused", "data": null}' % code
    with pytest.raises(error_type) as info:
        adapter.parse_poll(reply(200, body), HANDLE)
    assert info.value.status == code and info.value.request_id == HANDLE.request_id


# ---- upload and cost ------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "content_type"), [("in.wav", "audio/wav"),
                                                     ("in.MP3", "audio/mpeg"),
                                                     ("in.flac", "audio/flac")])
def test_upload_request_posts_the_file_as_multipart(adapter: WaveSpeedAdapter, tmp_path: Path,
                                                    name: str, content_type: str) -> None:
    """The file goes as the multipart field ``file`` to /api/v3/media/upload/binary."""
    path = tmp_path / name
    request = adapter.upload_request(path)
    assert (request.method, request.url) == ("POST", f"{BASE}/api/v3/media/upload/binary")
    assert request.form == [FormPart("file", path=path, content_type=content_type)]
    # aiohttp writes the multipart content type with its boundary.
    assert "Content-Type" not in request.headers and request.json is None


def test_parse_upload_returns_the_download_url(adapter: WaveSpeedAdapter) -> None:
    """The upload's data.download_url is what audio-to-audio will be sent."""
    assert adapter.parse_upload(reply(200, UPLOAD_OK)) == UPLOAD_URL


@pytest.mark.parametrize("body", [
    b'{"code": 200, "message": "success", "data": {"filename": "in.wav"}}',
    b'{"code": 200, "message": "success", "data": {"download_url": "/media/in.wav"}}',
], ids=["missing", "not-a-url"])
def test_parse_upload_without_url_is_unavailable(adapter: WaveSpeedAdapter, body: bytes) -> None:
    """An upload reply without an http(s) download_url is a ProviderUnavailableError."""
    with pytest.raises(ProviderUnavailableError):
        adapter.parse_upload(reply(200, body))


@pytest.mark.parametrize(("fields", "price"), [
    pytest.param({}, (0.0217, "usd"), id="default-music"),
    pytest.param({"model": "stable-audio-3/music"}, (0.0217, "usd"), id="music"),
    pytest.param({"model": "stable-audio-3/text-to-audio"}, (0.0206, "usd"), id="text-to-audio"),
    pytest.param(A2A, (0.024, "usd"), id="audio-to-audio"),
    pytest.param({**A2A, "model": "stable-audio-3/audio-to-audio"}, (0.024, "usd"), id="a2a-model"),
    pytest.param(INPAINT, None, id="inpainting-unpublished"),
])
def test_cost_is_the_published_price_per_run(adapter: WaveSpeedAdapter, fields: dict[str, Any],
                                             price: tuple[float, str] | None) -> None:
    """Each route costs its published dollar price; inpainting has none."""
    assert adapter.cost(job(**fields)) == price


# ---- validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        pytest.param({"duration": 0.5}, "duration", "1–120", id="duration-0.5"),
        pytest.param({"duration": 121}, "duration", "1–120", id="duration-121"),
        pytest.param({"steps": 101}, "steps", "1–100", id="steps-101"),
        pytest.param({"guidance_scale": 25.5}, "guidance_scale", "0–25", id="guidance-25.5"),
        pytest.param({"output_format": "aiff"}, "output_format", "aiff", id="format-aiff"),
        pytest.param({"bitrate": "192k"}, "bitrate", "not supported", id="bitrate"),
        pytest.param({"model": "stable-audio-3/audio-outpainting"}, "model", "outpainting",
                     id="outpainting"),
        pytest.param({"model": "stable-audio-2.5"}, "model", "stable-audio-2.5", id="unknown"),
        pytest.param({"model": "stable-audio-3/text-to-audio", "task": Task.AUDIO_TO_AUDIO}, "task",
                     "audio-to-audio", id="a2a-on-text-route"),
        pytest.param({"model": "stable-audio-3/audio-to-audio"}, "task", "text-to-audio",
                     id="text-on-a2a-route"),
        pytest.param({"model": "stable-audio-3/audio-inpainting", **A2A}, "task",
                     "audio-to-audio", id="a2a-on-inpainting-route"),
        pytest.param({"task": Task.AUDIO_TO_AUDIO}, "audio", "needs", id="a2a-no-audio"),
        pytest.param({**A2A, "audio": "data:audio/wav;base64,UklGRg=="}, "audio", "data:",
                     id="a2a-data-uri"),
        pytest.param({**A2A, "audio": "/nonexistent/loops/in.wav"}, "audio", "cannot read",
                     id="a2a-missing-file"),
        pytest.param({**A2A, "audio": "/data/loops/in.txt"}, "audio", "must be one of",
                     id="a2a-wrong-suffix"),
        pytest.param({**INPAINT, "mask_start": None}, "mask_start", "mask_start and mask_end",
                     id="inpaint-no-start"),
        pytest.param({**INPAINT, "mask_end": None}, "mask_end", "mask_start and mask_end",
                     id="inpaint-no-end"),
        pytest.param({**INPAINT, "mask_start": 9.5, "mask_end": 4.0}, "mask_end",
                     "greater than", id="inpaint-reversed"),
        pytest.param({**INPAINT, "strength": 0.5}, "strength", "audio-to-audio",
                     id="strength-on-inpaint"),
        pytest.param({"strength": 0.5}, "strength", "audio-to-audio", id="strength-on-text"),
        pytest.param({**A2A, "mask_start": 1.0}, "mask_start", "inpaint", id="mask-on-a2a"),
        pytest.param({"audio": "https://example.com/in.mp3"}, "audio", "not by text-to-audio",
                     id="audio-on-text"),
        pytest.param({"options": {"num_inference_steps": 50}}, "options.num_inference_steps",
                     "options", id="options-steps"),
        pytest.param({**A2A, "options": {"init_noise_level": 0.1}}, "options.init_noise_level",
                     "options", id="options-noise"),
        pytest.param({**INPAINT, "options": {"audio": "https://x.example/a.mp3"}},
                     "options.audio", "options", id="options-audio"),
    ],
)
def test_validate_refuses(fields: dict[str, Any], field: str, words: str) -> None:
    """Each out-of-contract job is refused with one issue naming the field and the job id."""
    issues = WaveSpeedAdapter.validate(job(**fields))
    assert [i.field for i in issues] == [field], issues
    (issue,) = issues
    assert words in issue.message
    assert issue.job_id == "job-1"


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({}, id="defaults"),
        pytest.param({"duration": 1, "steps": 1, "guidance_scale": 0}, id="low-ends"),
        pytest.param({"duration": 120, "steps": 100, "guidance_scale": 25}, id="high-ends"),
        pytest.param({"seed": 0, "negative_prompt": ""}, id="misc"),
        pytest.param({**A2A, "strength": 0.0}, id="a2a-strength-0"),
        pytest.param({**A2A, "strength": 1.0, "duration": 60}, id="a2a-strength-1"),
        pytest.param({**A2A, "audio": "http://example.com/in.wav"}, id="a2a-http"),
        pytest.param({**INPAINT, "mask_start": 0.0, "mask_end": 0.5}, id="inpaint-from-0"),
        pytest.param({"options": {"enable_sync_mode": True, "enable_base64_output": True}},
                     id="options-unmapped"),
        *(pytest.param({"output_format": f}, id=f"format-{f}")
          for f in ("mp3", "wav", "flac", "ogg", "opus", "m4a", "aac")),
    ],
)
def test_validate_accepts(fields: dict[str, Any]) -> None:
    """Jobs inside WaveSpeed's documented ranges raise no issue."""
    assert WaveSpeedAdapter.validate(job(**fields)) == []


def test_validate_accepts_a_local_file_to_upload(tmp_path: Path) -> None:
    """A readable local audio file is fine: the engine uploads it first."""
    source = tmp_path / "in.wav"
    source.write_bytes(render_audio("in", 1, 2.0, "wav"))
    assert WaveSpeedAdapter.validate(job(task=Task.AUDIO_TO_AUDIO, audio=str(source))) == []
    assert WaveSpeedAdapter.local_audio == "upload"


def test_validate_refuses_a_file_over_50_mb(tmp_path: Path) -> None:
    """A local file over the 50 MB upload limit is refused before anything is sent."""
    big = tmp_path / "big.wav"
    with big.open("wb") as f:
        f.truncate(MAX_UPLOAD_BYTES + 1)  # sparse: no 50 MB actually written
    issues = WaveSpeedAdapter.validate(job(task=Task.AUDIO_TO_AUDIO, audio=str(big)))
    assert [(i.field, i.job_id) for i in issues] == [("audio", "job-1")]
    assert "50 MB" in issues[0].message
    # Within the limit, 50 MB of zeros is still no audio: refused for what it holds.
    os.truncate(big, MAX_UPLOAD_BYTES)
    (issue,) = WaveSpeedAdapter.validate(job(task=Task.AUDIO_TO_AUDIO, audio=str(big)))
    assert "is not wav audio" in issue.message


def test_validate_reports_every_issue_at_once() -> None:
    """Several problems in one job are all reported, each naming its field."""
    issues = WaveSpeedAdapter.validate(
        job(duration=500, steps=101, guidance_scale=30, output_format="xyz"))
    assert {i.field for i in issues} == {"duration", "steps", "guidance_scale", "output_format"}
    assert {i.job_id for i in issues} == {"job-1"}
