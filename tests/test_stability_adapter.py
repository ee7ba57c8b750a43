"""Stability AI adapter: what has no generic form in test_provider_contract.py.

The documented JSON successes, error bodies, route and headers are rows of the provider
contract; here are the multipart form per task, the audio/* reply read from its headers,
the x-request-id header, credits, and the validation ranges (with real input files).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from test_provider_contract import JSON_HEADERS, NOT_JSON, STABILITY, Refused, reply

from stableaudio_async import InvalidJobError
from stableaudio_async.emulator.audio import render_audio
from stableaudio_async.errors import ProviderError, ProviderUnavailableError
from stableaudio_async.http import FormPart, HttpRequest
from stableaudio_async.models import Task
from stableaudio_async.providers.base import AudioStream
from stableaudio_async.providers.stability import StabilityAdapter

BASE = STABILITY.base_url
ROUTES = {
    Task.TEXT_TO_AUDIO: f"{BASE}/v2beta/audio/stable-audio-2/text-to-audio",
    Task.AUDIO_TO_AUDIO: f"{BASE}/v2beta/audio/stable-audio-2/audio-to-audio",
    Task.INPAINT: f"{BASE}/v2beta/audio/stable-audio-2/inpaint",
}
REQUEST_ID = "d5a1e4c3b2f6a7089e1d2c3b4a5f6e7d"
PROMPT = "warm analog synth pads, slow tempo"
INPUT_WAV = "/data/loops/in.wav"
INPUT_MP3 = "/data/loops/in.mp3"
#: The request id Stability sends in the x-request-id header.
WITH_ID = {**JSON_HEADERS, "x-request-id": REQUEST_ID}

job = STABILITY.job


@pytest.fixture
def adapter() -> StabilityAdapter:
    return STABILITY.build()


def text_parts(request: HttpRequest) -> dict[str, str]:
    """The request's text form fields by name (each name must appear once)."""
    assert request.form is not None
    parts = [p for p in request.form if p.path is None]
    names = [p.name for p in parts]
    assert len(names) == len(set(names)), names
    result: dict[str, str] = {}
    for part in parts:
        assert part.value is not None
        result[part.name] = part.value
    return result


def file_parts(request: HttpRequest) -> list[FormPart]:
    assert request.form is not None
    return [p for p in request.form if p.path is not None]


# ---- submit_request ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "extra"),
    [
        (Task.TEXT_TO_AUDIO, {}),
        (Task.AUDIO_TO_AUDIO, {"audio": INPUT_WAV}),
        (Task.INPAINT, {"audio": INPUT_WAV}),
    ],
    ids=["text-to-audio", "audio-to-audio", "inpaint"],
)
def test_submit_posts_to_the_task_route(
    adapter: StabilityAdapter, task: Task, extra: dict[str, Any]
) -> None:
    """Each task is POSTed to its documented stable-audio-2 route."""
    request = adapter.submit_request(job(task=task, **extra))
    assert request.method == "POST"
    assert request.url == ROUTES[task]


def test_submit_accept_option_asks_for_json(adapter: StabilityAdapter) -> None:
    """options.accept=application/json sets the accept header and is not sent as a form field."""
    request = adapter.submit_request(job(options={"accept": "application/json"}))
    assert request.headers["accept"] == "application/json"
    assert "accept" not in text_parts(request)


@pytest.mark.parametrize("task", [Task.TEXT_TO_AUDIO, Task.AUDIO_TO_AUDIO, Task.INPAINT])
def test_submit_body_is_a_form_never_json(adapter: StabilityAdapter, task: Task) -> None:
    """Every task sends a multipart form of FormParts, even without a file, and no JSON body."""
    audio = None if task is Task.TEXT_TO_AUDIO else INPUT_WAV
    request = adapter.submit_request(job(task=task, audio=audio))
    assert request.json is None
    assert request.form is not None
    assert len(request.form) > 0
    assert all(isinstance(part, FormPart) for part in request.form)


@pytest.mark.parametrize(
    ("fields", "name", "value"),
    [
        pytest.param({"prompt": "rain on a tin roof"}, "prompt", "rain on a tin roof", id="prompt"),
        pytest.param({"duration": 30}, "duration", "30", id="duration-int"),
        pytest.param({"duration": 30.0}, "duration", "30", id="duration-whole-float"),
        pytest.param({"duration": 12.5}, "duration", "12.5", id="duration-fractional"),
        pytest.param({"seed": 123}, "seed", "123", id="seed"),
        pytest.param({"seed": 0}, "seed", "0", id="seed-0"),
        pytest.param({"seed": 4294967294}, "seed", "4294967294", id="seed-max"),
        pytest.param({"steps": 8}, "steps", "8", id="steps"),
        pytest.param({"guidance_scale": 7.0}, "cfg_scale", "7", id="cfg-whole"),
        pytest.param({"guidance_scale": 1.5}, "cfg_scale", "1.5", id="cfg-fractional"),
        pytest.param({"output_format": "wav"}, "output_format", "wav", id="output-format"),
        pytest.param({}, "output_format", "mp3", id="output-format-default"),
        pytest.param({}, "model", "stable-audio-2.5", id="model-default"),
        pytest.param({"model": "stable-audio-2.5"}, "model", "stable-audio-2.5", id="model-2.5"),
        pytest.param({"model": "stable-audio-2"}, "model", "stable-audio-2", id="model-2"),
    ],
)
def test_submit_maps_text_to_audio_fields(
    adapter: StabilityAdapter, fields: dict[str, Any], name: str, value: str
) -> None:
    """Each unified field lands in the form under Stability's name, rendered as text."""
    assert text_parts(adapter.submit_request(job(**fields)))[name] == value


def test_submit_guidance_scale_is_sent_only_as_cfg_scale(adapter: StabilityAdapter) -> None:
    """guidance_scale is renamed cfg_scale, not sent under its unified name as well."""
    form = text_parts(adapter.submit_request(job(guidance_scale=3)))
    assert form["cfg_scale"] == "3"
    assert "guidance_scale" not in form


def test_submit_omits_unset_fields(adapter: StabilityAdapter) -> None:
    """None fields are not sent; the model is always named, since the API defaults to 2.0."""
    request = adapter.submit_request(job(prompt="rain on a tin roof"))
    assert text_parts(request) == {
        "prompt": "rain on a tin roof",
        "output_format": "mp3",
        "model": "stable-audio-2.5",
    }
    assert file_parts(request) == []


def test_submit_renders_numbers_without_trailing_zero(adapter: StabilityAdapter) -> None:
    """Whole numbers go out as "30", never "30.0"; fractions keep their digits."""
    form = text_parts(adapter.submit_request(job(
        duration=30.0, guidance_scale=2.0, steps=8, seed=42,
    )))
    assert (form["duration"], form["cfg_scale"], form["steps"], form["seed"]) == ("30", "2", "8", "42")
    a2a = text_parts(adapter.submit_request(job(
        task=Task.AUDIO_TO_AUDIO, audio=INPUT_WAV, strength=0.5, duration=7.25,
    )))
    assert (a2a["strength"], a2a["duration"]) == ("0.5", "7.25")
    assert not any(v.endswith(".0") for v in (*form.values(), *a2a.values()))


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        (INPUT_WAV, "audio/wav"),
        (INPUT_MP3, "audio/mpeg"),
        ("/data/loops/LOUD.WAV", "audio/wav"),
        ("/data/loops/LOUD.Mp3", "audio/mpeg"),
    ],
    ids=["wav", "mp3", "upper-wav", "mixed-mp3"],
)
def test_submit_audio_to_audio_uploads_the_file(
    adapter: StabilityAdapter, path: str, content_type: str
) -> None:
    """Audio-to-audio adds strength and one audio file part, typed by the file's suffix."""
    request = adapter.submit_request(job(task=Task.AUDIO_TO_AUDIO, audio=path, strength=0.35,
                                         model="stable-audio-2", guidance_scale=7, steps=50))
    assert text_parts(request) == {
        "prompt": PROMPT,
        "output_format": "mp3",
        "model": "stable-audio-2",
        "cfg_scale": "7",
        "steps": "50",
        "strength": "0.35",
    }
    assert file_parts(request) == [FormPart("audio", path=Path(path), content_type=content_type)]


def test_submit_inpaint_sends_masks_but_no_model_or_cfg_scale(adapter: StabilityAdapter) -> None:
    """Inpaint sends mask_start/mask_end and the audio part, but neither model nor cfg_scale."""
    request = adapter.submit_request(job(
        task=Task.INPAINT, audio=INPUT_MP3, mask_start=10, mask_end=20.5,
        model="stable-audio-2.5", guidance_scale=3, steps=8, duration=60,
    ))
    assert text_parts(request) == {
        "prompt": PROMPT,
        "output_format": "mp3",
        "steps": "8",
        "duration": "60",
        "mask_start": "10",
        "mask_end": "20.5",
    }
    assert file_parts(request) == [
        FormPart("audio", path=Path(INPUT_MP3), content_type="audio/mpeg")
    ]


def test_submit_inpaint_without_masks_sends_none(adapter: StabilityAdapter) -> None:
    """Inpaint with no masks leaves both out, so the API's defaults (30, 190) apply."""
    form = text_parts(adapter.submit_request(job(task=Task.INPAINT, audio=INPUT_WAV)))
    assert form == {"prompt": PROMPT, "output_format": "mp3"}


def test_submit_text_to_audio_never_sends_audio_keys(adapter: StabilityAdapter) -> None:
    """A text-to-audio form holds no strength, masks or file part."""
    request = adapter.submit_request(job(seed=1))
    assert not {"strength", "mask_start", "mask_end", "audio"} & text_parts(request).keys()
    assert file_parts(request) == []


def test_submit_passes_other_options_through_as_text(adapter: StabilityAdapter) -> None:
    """Unmapped options are added as text parts, numbers rendered like the mapped fields."""
    options = {"foo": "bar", "n": 2, "weight": 0.25, "whole": 3.0}
    form = text_parts(adapter.submit_request(job(options=options, seed=7)))
    assert (form["foo"], form["n"], form["weight"], form["whole"]) == ("bar", "2", "0.25", "3")
    assert form["seed"] == "7"


# ---- audio_stream --------------------------------------------------------------------------


def test_audio_stream_reads_the_audio_headers(adapter: StabilityAdapter) -> None:
    """A 200 audio/mpeg reply is the audio, with request id, seed and finish reason from headers."""
    headers = {"content-type": "audio/mpeg", "x-request-id": REQUEST_ID, "seed": "123",
               "finish-reason": "SUCCESS"}
    assert adapter.audio_stream(200, headers) == AudioStream(
        request_id=REQUEST_ID, content_type="audio/mpeg", seed=123, finish_reason="SUCCESS"
    )


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("audio/wav", "audio/wav"),
        ("audio/wav; charset=binary", "audio/wav"),
        ("audio/mpeg;codecs=mp3", "audio/mpeg"),
    ],
)
def test_audio_stream_strips_content_type_parameters(
    adapter: StabilityAdapter, content_type: str, expected: str
) -> None:
    """Parameters after the media type are dropped."""
    stream = adapter.audio_stream(200, {"content-type": content_type})
    assert stream is not None
    assert stream.content_type == expected


def test_audio_stream_without_optional_headers(adapter: StabilityAdapter) -> None:
    """Missing or non-numeric seed and missing ids are None, not errors."""
    assert adapter.audio_stream(200, {"content-type": "audio/wav"}) == AudioStream(None, "audio/wav")
    stream = adapter.audio_stream(200, {"content-type": "audio/wav", "seed": "n/a"})
    assert stream is not None
    assert stream.seed is None


@pytest.mark.parametrize(
    ("status", "content_type"),
    [
        (200, "application/json"),
        (200, "application/json; charset=utf-8"),
        (200, "text/html"),
        (400, "application/json"),
        (403, "audio/mpeg"),
        (429, "application/json"),
        (500, "audio/wav"),
        (502, "text/html"),
    ],
)
def test_audio_stream_is_none_for_json_and_errors(
    adapter: StabilityAdapter, status: int, content_type: str
) -> None:
    """JSON successes and every error reply are read whole, not streamed as audio."""
    assert adapter.audio_stream(status, {"content-type": content_type}) is None


def test_audio_stream_without_content_type_is_none(adapter: StabilityAdapter) -> None:
    """A 200 that does not say it is audio is not streamed as audio."""
    assert adapter.audio_stream(200, {}) is None


# ---- parse_submit: the x-request-id header ---------------------------------------------------


@pytest.mark.parametrize("body", [*STABILITY.submit_unusable, *NOT_JSON.values()])
def test_unusable_success_names_the_request_from_its_header(
    adapter: StabilityAdapter, body: bytes
) -> None:
    """A 200 holding neither audio nor base64 JSON is unavailable, naming the x-request-id."""
    with pytest.raises(ProviderUnavailableError) as info:
        adapter.parse_submit(reply(200, body, WITH_ID))
    assert info.value.request_id == REQUEST_ID


@pytest.mark.parametrize("row", [pytest.param(row, id=row.id) for row in STABILITY.refusals])
def test_error_request_id_header_wins_over_body_id(adapter: StabilityAdapter, row: Refused) -> None:
    """With an x-request-id header, the error carries the header's id, not the body's."""
    with pytest.raises(ProviderError) as info:
        adapter.parse_submit(reply(row.code, row.body, WITH_ID))
    assert type(info.value) is row.error
    assert info.value.request_id == REQUEST_ID


# ---- validation ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Input audio files on disk, by the name the validation tables use."""
    root = tmp_path_factory.mktemp("stability-inputs")
    paths: dict[str, str] = {}

    def write(name: str, data: bytes) -> None:
        (root / name).write_bytes(data)
        paths[name] = str(root / name)

    write("wav8.wav", render_audio("loop", 1, 8, "wav"))
    write("wav3.wav", render_audio("loop", 1, 3, "wav"))
    write("mp3_8.mp3", render_audio("loop", 1, 8, "mp3"))
    write("fake.wav", b"ID3\x04 this is an mp3, not a RIFF file " * 10)
    write("in.flac", b"fLaC\x00\x00\x00\x22" + b"\x00" * 64)
    big = root / "x.mp3"
    with big.open("wb") as f:
        f.truncate(51_000_000)  # sparse: no real disk use
    paths["x.mp3"] = str(big)
    paths["missing.wav"] = str(root / "missing.wav")
    paths["missing.mp3"] = str(root / "missing.mp3")
    return paths


def resolve(fields: dict[str, Any], files: Mapping[str, str]) -> dict[str, Any]:
    """Replace an ``audio`` of ``@name`` with that test file's path."""
    audio = fields.get("audio")
    if isinstance(audio, str) and audio.startswith("@"):
        return {**fields, "audio": files[audio[1:]]}
    return fields


A2A = {"task": Task.AUDIO_TO_AUDIO, "audio": "@wav8.wav"}
INPAINT = {"task": Task.INPAINT, "audio": "@wav8.wav"}
SA2 = {"model": "stable-audio-2"}


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        pytest.param({"duration": 0.5}, "duration", "1–190", id="duration-0.5"),
        pytest.param({"duration": 191}, "duration", "1–190", id="duration-191"),
        pytest.param({**SA2, "steps": 29}, "steps", "30–100", id="sa2-steps-29"),
        pytest.param({**SA2, "steps": 101}, "steps", "30–100", id="sa2-steps-101"),
        pytest.param({"steps": 3}, "steps", "4–8", id="sa25-steps-3"),
        pytest.param({"steps": 9}, "steps", "4–8", id="sa25-steps-9"),
        pytest.param({"steps": 50}, "steps", "4–8", id="sa25-steps-50"),
        pytest.param({"seed": 4294967295}, "seed", "4294967294", id="seed-too-big"),
        pytest.param({"guidance_scale": 0.5}, "guidance_scale", "1–25", id="guidance-0.5"),
        pytest.param({"guidance_scale": 26}, "guidance_scale", "1–25", id="guidance-26"),
        pytest.param({**INPAINT, "guidance_scale": 3}, "guidance_scale", "cfg_scale",
                     id="guidance-on-inpaint"),
        pytest.param({**A2A, "strength": 0.005}, "strength", "0.01–1", id="sa25-strength-0.005"),
        pytest.param({"output_format": "flac"}, "output_format", "flac", id="format-flac"),
        pytest.param({"prompt": "x" * 10001}, "prompt", "10000", id="prompt-10001"),
        pytest.param({"negative_prompt": "vocals"}, "negative_prompt", "not supported",
                     id="negative-prompt"),
        pytest.param({"bitrate": "192k"}, "bitrate", "not supported", id="bitrate"),
        pytest.param({**INPAINT, **SA2}, "task", "inpaint", id="inpaint-on-sa2"),
        pytest.param({**INPAINT, "mask_start": 50, "mask_end": 50}, "mask_end", "mask_start",
                     id="mask-equal"),
        pytest.param({**INPAINT, "mask_start": 60, "mask_end": 50}, "mask_end", "mask_start",
                     id="mask-reversed"),
        pytest.param({**INPAINT, "mask_end": 191}, "mask_end", "0–190", id="mask-end-191"),
        pytest.param({"task": Task.AUDIO_TO_AUDIO}, "audio", "audio", id="a2a-no-audio"),
        pytest.param({"task": Task.INPAINT}, "audio", "audio", id="inpaint-no-audio"),
        pytest.param({"task": Task.AUDIO_TO_AUDIO, "audio": "https://example.com/in.mp3"},
                     "audio", "upload", id="a2a-https-url"),
        pytest.param({"task": Task.INPAINT, "audio": "http://example.com/in.wav"},
                     "audio", "upload", id="inpaint-http-url"),
        pytest.param({**A2A, "audio": "@missing.wav"}, "audio", "cannot read", id="missing-wav"),
        pytest.param({**INPAINT, "audio": "@missing.mp3"}, "audio", "cannot read",
                     id="missing-mp3"),
        pytest.param({**A2A, "audio": "@in.flac"}, "audio", ".flac", id="flac-suffix"),
        pytest.param({**A2A, "audio": "@wav3.wav"}, "audio", "6–190", id="a2a-wav-3s"),
        pytest.param({**A2A, "audio": "@x.mp3"}, "audio", "50 MB", id="a2a-51MB"),
        pytest.param({**INPAINT, "audio": "@x.mp3"}, "audio", "50 MB", id="inpaint-51MB"),
        pytest.param({**A2A, "audio": "@fake.wav"}, "audio", "is not wav audio",
                     id="a2a-not-a-wav"),
        pytest.param({"options": {"accept": "text/html"}}, "options.accept", "application/json",
                     id="accept-html"),
        pytest.param({"options": {"steps": 5}}, "options.steps", "options",
                     id="options-override-steps"),
        pytest.param({"options": {"cfg_scale": 5}}, "options.cfg_scale", "options",
                     id="options-override-cfg"),
        pytest.param({"options": {"model": "stable-audio-2"}}, "options.model", "options",
                     id="options-override-model"),
        pytest.param({"model": "stable-audio-9"}, "model", "stable-audio-9", id="unknown-model"),
        pytest.param({"strength": 0.5}, "strength", "audio-to-audio", id="strength-t2a"),
        pytest.param({"mask_start": 5.0}, "mask_start", "inpaint", id="mask-start-t2a"),
        pytest.param({"audio": "@wav8.wav"}, "audio", "text-to-audio", id="audio-t2a"),
    ],
)
def test_validate_refuses(
    files: dict[str, str], fields: dict[str, Any], field: str, words: str
) -> None:
    """Each out-of-contract job is refused with one issue naming the field and the job id."""
    issues = StabilityAdapter.validate(job(**resolve(fields, files)))
    assert [i.field for i in issues] == [field], issues
    (issue,) = issues
    assert words in issue.message
    assert issue.job_id == "job-1"


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({}, id="defaults"),
        pytest.param({"duration": 190}, id="duration-190"),
        pytest.param({"duration": 1}, id="duration-1"),
        pytest.param({"steps": 8}, id="sa25-steps-8"),
        pytest.param({"steps": 4}, id="sa25-steps-4"),
        pytest.param({**SA2, "steps": 50}, id="sa2-steps-50"),
        pytest.param({**SA2, "steps": 30}, id="sa2-steps-30"),
        pytest.param({**SA2, "steps": 100}, id="sa2-steps-100"),
        pytest.param({"seed": 0}, id="seed-0"),
        pytest.param({"seed": 4294967294}, id="seed-max"),
        pytest.param({"guidance_scale": 1}, id="guidance-1"),
        pytest.param({"guidance_scale": 25}, id="guidance-25"),
        pytest.param({"output_format": "wav"}, id="format-wav"),
        pytest.param({"prompt": "x" * 10000}, id="prompt-10000"),
        pytest.param({"options": {"accept": "audio/*"}}, id="accept-audio"),
        pytest.param({"options": {"accept": "application/json"}}, id="accept-json"),
        pytest.param({"options": {"foo": "bar"}}, id="options-unmapped"),
        pytest.param({**A2A}, id="a2a-wav-8s"),
        pytest.param({**A2A, "audio": "@mp3_8.mp3"}, id="a2a-mp3"),
        pytest.param({**A2A, "strength": 0.01}, id="sa25-strength-0.01"),
        pytest.param({**A2A, "strength": 1.0}, id="sa25-strength-1"),
        pytest.param({**A2A, **SA2, "strength": 0.005}, id="sa2-strength-0.005"),
        pytest.param({**A2A, **SA2, "strength": 0.0}, id="sa2-strength-0"),
        pytest.param({**A2A, **SA2, "guidance_scale": 7, "steps": 50}, id="sa2-a2a-full"),
        pytest.param({**INPAINT}, id="inpaint-defaults"),
        pytest.param({**INPAINT, "model": "stable-audio-2.5"}, id="inpaint-explicit-2.5"),
        pytest.param({**INPAINT, "mask_start": 0, "mask_end": 190}, id="inpaint-masks"),
        pytest.param({**INPAINT, "audio": "@mp3_8.mp3", "steps": 8, "duration": 30},
                     id="inpaint-mp3"),
    ],
)
def test_validate_accepts(files: dict[str, str], fields: dict[str, Any]) -> None:
    """Jobs inside Stability's documented ranges raise no issue."""
    assert StabilityAdapter.validate(job(**resolve(fields, files))) == []


def test_strength_above_one_is_refused_by_the_job_model() -> None:
    """strength 1.5 never reaches the adapter: the Job model refuses it."""
    with pytest.raises(InvalidJobError):
        job(task=Task.AUDIO_TO_AUDIO, audio=INPUT_WAV, strength=1.5)


def test_validate_reports_every_issue_at_once() -> None:
    """Several problems in one job are all reported, each naming its field and the job."""
    issues = StabilityAdapter.validate(job(
        model="stable-audio-2", duration=500, steps=10, guidance_scale=30, output_format="flac",
        negative_prompt="vocals", options={"accept": "text/html", "seed": 1},
    ))
    assert {i.field for i in issues} == {
        "duration", "steps", "guidance_scale", "output_format", "negative_prompt",
        "options.accept", "options.seed",
    }
    assert {i.job_id for i in issues} == {"job-1"}


def test_validate_refuses_unhashable_accept_option() -> None:
    """options.accept given as a list is refused with an issue, not a TypeError."""
    issues = StabilityAdapter.validate(job(options={"accept": ["audio/*"]}))
    assert [i.field for i in issues] == ["options.accept"]


def test_validate_refuses_wav_with_zero_frame_rate(tmp_path: Path) -> None:
    """A WAV whose header says 0 Hz is refused as unreadable, not a ZeroDivisionError."""
    data = b"\x00" * 400
    fmt = struct.pack("<HHIIHH", 1, 2, 0, 0, 4, 16)
    body = b"WAVEfmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", len(data)) + data
    path = tmp_path / "zero.wav"
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    issues = StabilityAdapter.validate(job(task=Task.AUDIO_TO_AUDIO, audio=str(path)))
    assert [i.field for i in issues] == ["audio"]


# ---- cost --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "credits"),
    [
        pytest.param(SA2, 20.0, id="sa2-default-steps"),
        pytest.param({**SA2, "steps": 100}, 23.0, id="sa2-steps-100"),
        pytest.param({**SA2, "steps": 30}, 18.8, id="sa2-steps-30"),
        pytest.param({}, 20.0, id="sa25-default"),
        pytest.param({"model": "stable-audio-2.5", "steps": 4}, 20.0, id="sa25-steps-4"),
        pytest.param({"task": Task.INPAINT, "audio": INPUT_WAV}, 20.0, id="inpaint"),
        pytest.param({"task": Task.AUDIO_TO_AUDIO, "audio": INPUT_WAV, **SA2, "steps": 100}, 23.0,
                     id="sa2-a2a-steps-100"),
    ],
)
def test_cost_in_credits(adapter: StabilityAdapter, fields: dict[str, Any], credits: float) -> None:
    """2.0 costs 17 + 0.06 × steps (50 by default); 2.5 and inpaint a flat 20 credits."""
    cost = adapter.cost(job(**fields))
    assert cost is not None
    value, unit = cost
    assert value == pytest.approx(credits)
    assert unit == "credits"


