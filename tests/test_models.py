"""Tests for the job and result models: content-derived ids, validation, immutability."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from typing import Any

import pytest
from pydantic import ValidationError

from stableaudio_async.errors import InvalidJobError, StableAudioError
from stableaudio_async.models import Job, JobResult, JobStatus, Task, Timings

BASE: dict[str, Any] = {"provider": "pixazo", "prompt": "ambient drone"}


def error_fields(exc: InvalidJobError) -> list[str | None]:
    return [issue.field for issue in exc.issues]


# --- content ids --------------------------------------------------------------------------


def test_default_id_is_a_short_hex_hash() -> None:
    """A job without an id gets a 20-character lowercase hex id."""
    job = Job(**BASE)
    assert re.fullmatch(r"[0-9a-f]{20}", job.id)


def test_default_id_is_pinned_across_releases() -> None:
    """The hash of a fixed job never changes (ids name output files, so resume depends on it)."""
    assert Job(**BASE).id == "1b0b70ecd7b9b032f229"
    job = Job(**BASE, duration=30, seed=7, options={"b": 1, "a": [1, 2]})
    assert job.id == "8d350604edfc2bfa7e17"


def test_default_id_does_not_depend_on_python_hash_seed() -> None:
    """A fresh interpreter with another PYTHONHASHSEED derives the same id."""
    code = (
        "from stableaudio_async.models import Job;"
        "print(Job(provider='pixazo', prompt='ambient drone', options={'x': {'b': 1, 'a': 2}}).id)"
    )
    ids = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for seed in ("1", "2", "12345")
    }
    assert ids == {Job(**BASE, options={"x": {"a": 2, "b": 1}}).id}


@pytest.mark.parametrize(
    ("left", "right"),
    [
        pytest.param(
            {"provider": "pixazo", "prompt": "p", "seed": 1},
            {"seed": 1, "prompt": "p", "provider": "pixazo"},
            id="keyword-order",
        ),
        pytest.param(
            {**BASE, "options": {"a": 1, "b": {"y": 2, "x": 3}}},
            {**BASE, "options": {"b": {"x": 3, "y": 2}, "a": 1}},
            id="options-key-order",
        ),
        pytest.param(BASE, {**BASE, "options": {}}, id="empty-options-as-absent"),
        pytest.param(BASE, {**BASE, "seed": None, "duration": None}, id="explicit-none"),
        pytest.param(BASE, {**BASE, "task": "text-to-audio"}, id="default-task-explicit"),
        pytest.param(BASE, {**BASE, "task": Task.TEXT_TO_AUDIO}, id="task-enum-vs-string"),
        pytest.param(BASE, {**BASE, "output_format": None}, id="default-format-explicit"),
        pytest.param({**BASE, "duration": 10}, {**BASE, "duration": 10.0}, id="int-vs-float"),
    ],
)
def test_same_parameters_give_same_id(left: dict[str, Any], right: dict[str, Any]) -> None:
    """Equal parameters hash equally, however the job was spelled or constructed."""
    assert Job(**left).id == Job(**right).id


def test_id_is_independent_of_construction_route() -> None:
    """Keyword construction, model_validate and model_validate_json give the same id."""
    params = {**BASE, "seed": 3, "options": {"k": "v"}}
    by_kwargs = Job(**params)
    by_dict = Job.model_validate(dict(reversed(list(params.items()))))
    by_json = Job.model_validate_json(json.dumps(params))
    assert by_kwargs.id == by_dict.id == by_json.id


def test_id_survives_a_json_round_trip() -> None:
    """A dumped job (id included) reloads with the same id and fields."""
    job = Job(**BASE, seed=5, options={"k": [1, 2]})
    assert Job.model_validate_json(job.model_dump_json()) == job


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"prompt": "ambient drones"}, id="prompt"),
        pytest.param({"seed": 1}, id="seed-added"),
        pytest.param({"duration": 30.0}, id="duration-added"),
        pytest.param({"provider": "stability"}, id="provider"),
        pytest.param({"options": {"sync_mode": True}}, id="options-added"),
        pytest.param({"model": "stable-audio-2.5"}, id="model"),
        pytest.param({"negative_prompt": "drums"}, id="negative-prompt"),
        pytest.param({"steps": 50}, id="steps"),
        pytest.param({"guidance_scale": 7.0}, id="guidance"),
        pytest.param({"output_format": "wav"}, id="format"),
        pytest.param({"task": "audio-to-audio", "audio": "in.wav"}, id="task"),
    ],
)
def test_changing_a_parameter_changes_the_id(change: dict[str, Any]) -> None:
    """Any parameter that changes the audio changes the content id."""
    assert Job(**BASE).id != Job(**{**BASE, **change}).id


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param({"seed": 1}, {"seed": 2}, id="seed-value"),
        pytest.param({"duration": 10.0}, {"duration": 11.0}, id="duration-value"),
        pytest.param({"options": {"a": 1}}, {"options": {"a": 2}}, id="option-value"),
        pytest.param({"options": {"a": 1}}, {"options": {"b": 1}}, id="option-key"),
        pytest.param({"seed": 0}, {}, id="seed-zero-vs-absent"),
    ],
)
def test_different_values_give_different_ids(
    first: dict[str, Any], second: dict[str, Any]
) -> None:
    """Two values of the same field (or a value vs. the default) hash differently."""
    assert Job(**BASE, **first).id != Job(**BASE, **second).id


def test_explicit_id_is_kept() -> None:
    """A job given an id keeps it; content_id() still reports the parameter hash."""
    job = Job(id="intro-01", **BASE)
    assert job.id == "intro-01"
    assert job.content_id() == Job(**BASE).id


@pytest.mark.parametrize(
    "job_id", ["a", "A", "0", "intro-01", "take_2.v3", "x" * 128, "a..b", "a-"]
)
def test_valid_ids_are_accepted(job_id: str) -> None:
    """Ids of letters, digits, '.', '_' and '-' not starting with punctuation are accepted."""
    assert Job(id=job_id, **BASE).id == job_id


@pytest.mark.parametrize(
    "job_id",
    [
        pytest.param("../x", id="parent-traversal"),
        pytest.param("a/b", id="slash"),
        pytest.param("a\\b", id="backslash"),
        pytest.param("/abs", id="absolute"),
        pytest.param(".hidden", id="leading-dot"),
        pytest.param("..", id="dot-dot"),
        pytest.param("-flag", id="leading-dash"),
        pytest.param("_x", id="leading-underscore"),
        pytest.param("", id="empty"),
        pytest.param("a b", id="space"),
        pytest.param("abc\n", id="trailing-newline"),
        pytest.param("a\x00b", id="nul"),
        pytest.param("x" * 129, id="too-long"),
        pytest.param("caf\u00e9", id="non-ascii"),
    ],
)
def test_unsafe_ids_are_refused(job_id: str) -> None:
    """Ids that are not safe file names are refused with an InvalidJobError on field ``id``."""
    with pytest.raises(InvalidJobError) as info:
        Job(id=job_id, **BASE)
    assert error_fields(info.value) == ["id"]


# --- validation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "loc"),
    [
        pytest.param({**BASE, "bogus": 1}, ("bogus",), id="unknown-field"),
        pytest.param({**BASE, "num_inference_steps": 50}, ("num_inference_steps",),
                     id="provider-name-not-unified"),
        pytest.param({"provider": "pixazo"}, ("prompt",), id="prompt-missing"),
        pytest.param({**BASE, "prompt": ""}, ("prompt",), id="prompt-empty"),
        pytest.param({"prompt": "x"}, ("provider",), id="provider-missing"),
        pytest.param({**BASE, "provider": ""}, ("provider",), id="provider-empty"),
        pytest.param({**BASE, "seed": -1}, ("seed",), id="negative-seed"),
        pytest.param({**BASE, "strength": -0.01}, ("strength",), id="strength-below-0"),
        pytest.param({**BASE, "strength": 1.01}, ("strength",), id="strength-above-1"),
        pytest.param({**BASE, "duration": 0}, ("duration",), id="zero-duration"),
        pytest.param({**BASE, "steps": 0}, ("steps",), id="zero-steps"),
        pytest.param({**BASE, "guidance_scale": -1}, ("guidance_scale",), id="neg-guidance"),
        pytest.param({**BASE, "task": "remix"}, ("task",), id="unknown-task"),
    ],
)
def test_invalid_jobs_are_refused(params: dict[str, Any], loc: tuple[str, ...]) -> None:
    """Bad or unknown fields raise an InvalidJobError naming exactly the offending field."""
    with pytest.raises(InvalidJobError) as info:
        Job(**params)
    assert error_fields(info.value) == [".".join(loc)]


@pytest.mark.parametrize("catch", [StableAudioError, ValueError])
def test_a_bad_job_is_the_package_s_error_and_a_value_error(catch: type[Exception]) -> None:
    """Job(...) refuses a bad field with InvalidJobError: a StableAudioError and a ValueError,
    naming the field, chained from pydantic's error."""
    with pytest.raises(catch) as info:
        Job(provider="fal", prompt="")
    error = info.value
    assert isinstance(error, InvalidJobError)
    assert "field 'prompt'" in str(error)
    assert isinstance(error.__cause__, ValidationError)


def test_every_validation_error_becomes_one_issue_naming_the_job() -> None:
    """Each bad field is one issue, with the job's id, the field's dotted place and pydantic's
    message."""
    with pytest.raises(InvalidJobError) as info:
        Job(id="take-1", provider="fal", prompt="", seed=-1, options={"a": {"b": float("nan")}})
    issues = info.value.issues
    assert [(i.job_id, i.field) for i in issues] == [
        ("take-1", "prompt"), ("take-1", "seed"), ("take-1", "options")]
    assert "at least 1 character" in issues[0].message
    assert "options.a.b" in issues[2].message
    assert str(info.value).startswith("invalid job take-1, nothing was submitted:")


@pytest.mark.parametrize(
    "load",
    [
        pytest.param(Job.model_validate, id="model_validate"),
        pytest.param(lambda raw: Job.model_validate_json(json.dumps(raw)), id="json"),
    ],
)
def test_every_way_in_raises_invalid_job_error(load: Any) -> None:
    """model_validate and model_validate_json refuse a bad job as Job(...) does."""
    with pytest.raises(InvalidJobError) as info:
        load({"provider": "fal", "prompt": "x", "steps": 0})
    assert error_fields(info.value) == ["steps"]


def test_task_and_status_are_enums_whether_given_as_enum_or_string() -> None:
    """A task or a status given as its string is the enum once validated."""
    assert Job(**BASE, task="inpaint").task is Task.INPAINT
    result = JobResult(id="x", provider="fal", task="inpaint", status="failed")
    assert (result.task, result.status) == (Task.INPAINT, JobStatus.FAILED)
    assert result.status is JobStatus.FAILED


@pytest.mark.parametrize("strength", [0, 0.0, 0.5, 1, 1.0])
def test_strength_bounds_are_inclusive(strength: float) -> None:
    """strength 0 and 1 (and values between) are accepted."""
    assert Job(**BASE, strength=strength).strength == strength


def test_seed_zero_is_accepted() -> None:
    """seed=0 is a valid seed, not refused as 'negative'."""
    assert Job(**BASE, seed=0).seed == 0


@pytest.mark.parametrize(
    ("field", "value"), [("prompt", "other"), ("seed", 3), ("id", "renamed"), ("options", {})]
)
def test_job_is_frozen(field: str, value: Any) -> None:
    """Assigning to any field of a Job raises, and the job keeps its values."""
    job = Job(**BASE, seed=1)
    before = job.model_dump()
    with pytest.raises(ValidationError):
        setattr(job, field, value)
    assert job.model_dump() == before


def test_jobs_are_equal_by_value() -> None:
    """Two jobs with the same parameters are equal."""
    assert Job(**BASE, seed=2) == Job(**BASE, seed=2)
    assert Job(**BASE, seed=2) != Job(**BASE, seed=3)


# --- results ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "result",
    [
        pytest.param(
            JobResult(
                id="intro-01",
                provider="pixazo",
                model="stable-audio-2.5",
                task=Task.AUDIO_TO_AUDIO,
                status=JobStatus.COMPLETED,
                path="out/intro-01.mp3",
                sha256="ab" * 32,
                bytes=123456,
                content_type="audio/mpeg",
                request_id="req-9",
                seed=42,
                attempts=2,
                timings=Timings(queued=1.5, generating=20.25, downloading=0.5, total=22.25),
            ),
            id="completed",
        ),
        pytest.param(
            JobResult(
                id="x",
                provider="stability",
                task=Task.TEXT_TO_AUDIO,
                status=JobStatus.FAILED,
                attempts=5,
                error="rate limited (provider=stability, http=429)",
                error_type="RateLimitedError",
                http_status=429,
            ),
            id="failed",
        ),
    ],
)
def test_job_result_round_trips_through_json(result: JobResult) -> None:
    """model_dump_json then model_validate_json gives back an equal JobResult."""
    text = result.model_dump_json()
    again = JobResult.model_validate_json(text)
    assert again == result
    assert again.ok is result.ok
    assert isinstance(again.task, Task)
    assert isinstance(again.status, JobStatus)
    assert json.loads(text)["status"] == result.status.value


def test_job_result_ok_only_when_completed() -> None:
    """ok is True for a completed result and False for a failed one."""
    common: dict[str, Any] = {"id": "x", "provider": "p", "task": "text-to-audio"}
    assert JobResult(**common, status="completed").ok is True
    assert JobResult(**common, status="failed").ok is False
