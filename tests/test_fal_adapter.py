"""fal adapter: what has no generic form in test_provider_contract.py.

The documented receipts, statuses, results, error bodies and headers are rows of the provider
contract; here are the model routes, the body field names, the errors a result fetch raises
rather than reports, the cancel and price tables, and the validation ranges.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from test_provider_contract import FAL, reply

from stableaudio_async.emulator.audio import render_audio
from stableaudio_async.errors import (
    AuthenticationError,
    InsufficientBalanceError,
    ProviderError,
    ProviderUnavailableError,
    RateLimitedError,
)
from stableaudio_async.models import Job, Task
from stableaudio_async.providers.fal import MAX_LOCAL_AUDIO_BYTES, FalAdapter

BASE = FAL.base_url
APP = f"{BASE}/fal-ai/stable-audio-25"
HANDLE = FAL.poll_handle()

job = FAL.job


@pytest.fixture
def adapter() -> FalAdapter:
    return FAL.build()


def issues_of(j: Job) -> dict[str | None, str]:
    return {issue.field: issue.message for issue in FalAdapter.validate(j)}


# ---- submit_request ---------------------------------------------------------------------


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
    source.write_bytes(render_audio("in", 1, 2.0, "wav"))
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


def test_parse_submit_without_any_usable_url_is_unavailable(adapter: FalAdapter) -> None:
    """No URLs and no submit URL to rebuild them from: a ProviderUnavailableError."""
    with pytest.raises(ProviderUnavailableError, match="status_url"):
        adapter.parse_submit(reply(200, FAL.reply_body("no-urls")))


# ---- result --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (429, FAL.refusal("429").body, RateLimitedError),
        (500, FAL.refusal("500-bare").body, ProviderUnavailableError),
        (502, FAL.refusal("502-html").body, ProviderUnavailableError),
        (503, b'{"detail": "Service Unavailable"}', ProviderUnavailableError),
        (401, FAL.refusal("401").body, AuthenticationError),
        (403, FAL.refusal("403-balance").body, InsufficientBalanceError),
    ],
)
def test_transient_or_key_errors_at_the_response_url_raise(
    adapter: FalAdapter, status: int, body: bytes, kind: type[ProviderError]
) -> None:
    """429 and a bare 5xx are raised (retried); a key problem is raised, not the job's failure."""
    with pytest.raises(kind) as info:
        adapter.parse_result(reply(status, body), HANDLE)
    assert (info.value.request_id, info.value.status) == (HANDLE.request_id, status)


# ---- cancel and cost -----------------------------------------------------------------------


def test_no_cancel_url_means_no_cancel(adapter: FalAdapter) -> None:
    """A handle without a cancel_url cannot be cancelled."""
    assert adapter.cancel_request(replace(HANDLE, cancel_url=None)) is None


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
