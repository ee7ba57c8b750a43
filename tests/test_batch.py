"""Tests for batch.py: JSONL and TOML batch files, and checking jobs against the providers."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from stableaudio_async.batch import (
    LocatedJob,
    check_jobs,
    drop_unsupported,
    dropped_fields,
    load_batch,
)
from stableaudio_async.config import Settings, load_settings
from stableaudio_async.errors import InvalidBatchError, JobIssue
from stableaudio_async.models import Job


@pytest.fixture
def settings() -> Settings:
    """The built-in settings, with no environment (so no keys and no URL overrides)."""
    return load_settings(env={})


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def batch_error(path: Path) -> InvalidBatchError:
    with pytest.raises(InvalidBatchError) as info:
        load_batch(path)
    return info.value


# ---- JSONL ---------------------------------------------------------------------------------


def test_jsonl_valid_lines_keep_line_numbers(tmp_path: Path) -> None:
    """Each job remembers its file and 1-based line; blank lines are skipped but counted."""
    path = write(tmp_path, "batch.jsonl", "\n".join([
        '{"id": "rain", "provider": "pixazo", "prompt": "rain on a tin roof", "duration": 20}',
        "",
        "   ",
        '{"provider": "pixazo", "prompt": "wind in pines", "seed": 3}',
        "",
    ]))
    jobs = load_batch(path)
    assert [(j.line, j.source) for j in jobs] == [(1, str(path)), (4, str(path))]
    assert all(isinstance(j, LocatedJob) for j in jobs)
    assert jobs[0].job.id == "rain"
    assert jobs[0].job.duration == 20
    assert jobs[1].job.prompt == "wind in pines"
    assert jobs[1].job.seed == 3


def test_jsonl_accepts_crlf_line_endings(tmp_path: Path) -> None:
    """A JSONL file written with CRLF line endings loads like one with LF."""
    path = tmp_path / "batch.jsonl"
    path.write_bytes(
        b'{"id": "a", "provider": "pixazo", "prompt": "x"}\r\n'
        b'{"id": "b", "provider": "pixazo", "prompt": "y"}\r\n'
    )
    assert [(j.job.id, j.line) for j in load_batch(path)] == [("a", 1), ("b", 2)]


def test_jsonl_reports_every_bad_line_at_once(tmp_path: Path) -> None:
    """Malformed, non-object, incomplete and unknown-field lines are all named in one error."""
    path = write(tmp_path, "batch.jsonl", "\n".join([
        '{"id": "ok", "provider": "pixazo", "prompt": "fine"}',
        '{"provider": "pixazo", "prompt": ',
        '["not", "an", "object"]',
        "",
        '{"id": "no-prompt", "provider": "pixazo"}',
        '{"id": "tempo", "provider": "pixazo", "prompt": "x", "tempo": 120}',
    ]) + "\n")
    error = batch_error(path)
    by_line = {issue.line: issue for issue in error.issues}
    assert sorted(by_line) == [2, 3, 5, 6]
    assert all(issue.source == str(path) for issue in error.issues)
    assert "malformed JSON" in by_line[2].message
    assert "object" in by_line[3].message
    assert (by_line[5].field, by_line[5].job_id) == ("prompt", "no-prompt")
    assert (by_line[6].field, by_line[6].job_id) == ("tempo", "tempo")
    text = str(error)
    for line in (2, 3, 5, 6):
        assert f"{path}:{line}" in text
    assert "'prompt'" in text
    assert "'tempo'" in text
    assert f"{path}:1" not in text


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ('{"prompt": "x"}', "provider"),
        ('{"provider": "pixazo", "prompt": ""}', "prompt"),
        ('{"provider": "pixazo", "prompt": "x", "duration": -1}', "duration"),
        ('{"provider": "pixazo", "prompt": "x", "steps": "many"}', "steps"),
        ('{"provider": "pixazo", "prompt": "x", "task": "remix"}', "task"),
        ('{"id": "../escape", "provider": "pixazo", "prompt": "x"}', "id"),
        ('{"provider": "pixazo", "prompt": "x", "strength": 1.5}', "strength"),
    ],
)
def test_jsonl_model_errors_name_the_field(tmp_path: Path, line: str, field: str) -> None:
    """A line the Job model refuses is reported with its line number and the offending field."""
    path = write(tmp_path, "batch.jsonl", '{"provider": "pixazo", "prompt": "ok"}\n' + line + "\n")
    error = batch_error(path)
    assert [(i.line, i.field) for i in error.issues] == [(2, field)]


def test_a_refused_job_in_a_batch_is_named_by_file_line_and_job(tmp_path: Path) -> None:
    """The Job model's InvalidJobError reaches the batch's error as issues located in the
    file: one error for the whole batch (not the first job's), naming file, line, job, field."""
    path = write(tmp_path, "batch.jsonl", "\n".join([
        '{"id": "a", "provider": "pixazo", "prompt": ""}',
        '{"id": "b", "provider": "pixazo", "prompt": "x", "seed": -1}',
    ]) + "\n")
    error = batch_error(path)
    assert type(error) is InvalidBatchError
    assert [(i.source, i.line, i.job_id, i.field) for i in error.issues] == [
        (str(path), 1, "a", "prompt"), (str(path), 2, "b", "seed")]
    assert f"{path}:2, job b, field 'seed': " in str(error)


def test_an_unknown_provider_is_named_with_its_line_job_and_field(
        tmp_path: Path, settings: Settings) -> None:
    """A provider no adapter has passes the Job model and is refused by the batch check,
    naming the line, the job, the field and the known providers."""
    path = write(tmp_path, "batch.jsonl", '{"id": "b", "provider": "acme", "prompt": "x"}\n')
    with pytest.raises(InvalidBatchError) as info:
        load_batch(path, settings)
    assert f"{path}:1, job b, field 'provider': unknown provider 'acme' (known: aimlapi, " \
        in str(info.value)


@pytest.mark.parametrize("text", ["", "\n\n   \n"], ids=["empty", "blank-lines"])
def test_jsonl_without_jobs_is_refused(tmp_path: Path, text: str) -> None:
    """A batch with no jobs at all is an InvalidBatchError, not an empty run."""
    path = write(tmp_path, "batch.jsonl", text)
    error = batch_error(path)
    assert len(error.issues) == 1
    assert "no jobs" in str(error)


def test_missing_batch_file_is_refused(tmp_path: Path) -> None:
    """An unreadable batch file is an InvalidBatchError naming the file."""
    path = tmp_path / "nope.jsonl"
    error = batch_error(path)
    assert str(path) in str(error)


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x85"])
def test_jsonl_unicode_line_separator_inside_string(tmp_path: Path, separator: str) -> None:
    """A prompt holding U+2028-like characters (legal unescaped in JSON) stays one line."""
    prompt = f"rain{separator}thunder"
    text = json.dumps({"provider": "pixazo", "prompt": prompt}, ensure_ascii=False) + "\n"
    path = write(tmp_path, "batch.jsonl", text)
    (located,) = load_batch(path)
    assert located.job.prompt == prompt
    assert located.line == 1


# ---- TOML ----------------------------------------------------------------------------------


def test_toml_defaults_merge_into_jobs(tmp_path: Path) -> None:
    """[defaults] fills every [[jobs]] entry, and a job's own value wins."""
    path = write(tmp_path, "batch.toml", """
[defaults]
provider = "pixazo"
duration = 20
output_format = "wav"

[[jobs]]
id = "rain"
prompt = "rain on a tin roof"

[[jobs]]
id = "wind"
prompt = "wind in pines"
duration = 10
""")
    jobs = {located.job.id: located.job for located in load_batch(path)}
    assert set(jobs) == {"rain", "wind"}
    assert (jobs["rain"].provider, jobs["rain"].duration, jobs["rain"].output_format) == (
        "pixazo", 20, "wav")
    assert (jobs["wind"].provider, jobs["wind"].duration, jobs["wind"].output_format) == (
        "pixazo", 10, "wav")


def test_toml_matrix_expands_to_product(tmp_path: Path) -> None:
    """[matrix] prompts × seeds × durations gives one job per combination, all distinct ids."""
    path = write(tmp_path, "batch.toml", """
[defaults]
provider = "pixazo"
steps = 8

[matrix]
prompts = ["rain", "wind"]
seeds = [1, 2, 3]
durations = [10, 30]
""")
    jobs = [located.job for located in load_batch(path)]
    assert len(jobs) == 12
    assert len({job.id for job in jobs}) == 12
    combos = {(job.prompt, job.seed, job.duration) for job in jobs}
    assert combos == set(itertools.product(["rain", "wind"], [1, 2, 3], [10, 30]))
    assert {(job.provider, job.steps) for job in jobs} == {("pixazo", 8)}


def test_toml_matrix_and_jobs_combine(tmp_path: Path) -> None:
    """A file with both [[jobs]] and [matrix] yields both sets of jobs."""
    path = write(tmp_path, "batch.toml", """
[defaults]
provider = "pixazo"

[[jobs]]
id = "solo"
prompt = "cello"

[matrix]
prompts = ["rain", "wind"]
""")
    jobs = [located.job for located in load_batch(path)]
    assert sorted(job.prompt for job in jobs) == ["cello", "rain", "wind"]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        pytest.param('[defaults]\nprovider = "pixazo"\n[[jobs]]\nprompt = "x"\n[extras]\na = 1\n',
                     "extras", id="unknown-table"),
        pytest.param('[defaults]\nprovider = "pixazo"\n[matrix]\nprompts = ["x"]\n'
                     "tempos = [90, 120]\n", "tempos", id="unknown-matrix-key"),
        pytest.param('[defaults\nprovider = "pixazo"\n', "TOML", id="malformed"),
        pytest.param('[[jobs]]\nprovider = "pixazo"\nprompt = "x"\ncolour = "red"\n',
                     "colour", id="unknown-job-field"),
    ],
)
def test_toml_problems_are_reported(tmp_path: Path, text: str, words: str) -> None:
    """Unknown tables, unknown matrix keys, unknown fields and bad TOML are InvalidBatchErrors."""
    path = write(tmp_path, "batch.toml", text)
    error = batch_error(path)
    assert words in str(error)
    assert str(path) in str(error)


@pytest.mark.parametrize(
    "axis", ['prompts = "rain"', 'prompts = ["rain"]\nseeds = 5'], ids=["string", "integer"]
)
def test_toml_matrix_axis_must_be_a_list(tmp_path: Path, axis: str) -> None:
    """A matrix axis given as a scalar is an InvalidBatchError, not one job per character."""
    path = write(tmp_path, "batch.toml", f'[defaults]\nprovider = "pixazo"\n[matrix]\n{axis}\n')
    error = batch_error(path)
    assert "matrix" in str(error)


# ---- check_jobs ----------------------------------------------------------------------------


def test_check_jobs_accepts_valid_batch(tmp_path: Path, settings: Settings) -> None:
    """Jobs within Pixazo's ranges give no issues."""
    path = write(tmp_path, "batch.jsonl",
                 '{"id": "a", "provider": "pixazo", "prompt": "x", "duration": 120}\n'
                 '{"id": "b", "provider": "pixazo", "prompt": "y", "steps": 100}\n')
    assert check_jobs(load_batch(path), settings) == []


def test_check_jobs_range_issue_names_job_line_and_field(
    tmp_path: Path, settings: Settings
) -> None:
    """An out-of-range duration is reported with the job id, its line, its file and the field."""
    path = write(tmp_path, "batch.jsonl",
                 '{"id": "ok", "provider": "pixazo", "prompt": "x"}\n'
                 "\n"
                 '{"id": "long", "provider": "pixazo", "prompt": "y", "duration": 500}\n')
    issues = check_jobs(load_batch(path), settings)
    assert [(i.job_id, i.line, i.source, i.field) for i in issues] == [
        ("long", 3, str(path), "duration")
    ]
    assert "1–120" in issues[0].message
    assert f"{path}:3" in str(issues[0])


def test_check_jobs_unknown_provider(tmp_path: Path, settings: Settings) -> None:
    """A job for a provider the engine does not know is refused on the provider field."""
    path = write(tmp_path, "batch.jsonl", '{"id": "a", "provider": "acme", "prompt": "x"}\n')
    issues = check_jobs(load_batch(path), settings)
    assert [(i.job_id, i.line, i.field) for i in issues] == [("a", 1, "provider")]
    assert "acme" in issues[0].message
    assert "pixazo" in issues[0].message  # names the known ones


def test_check_jobs_unconfigured_provider() -> None:
    """A known provider missing from the settings is refused on the provider field."""
    empty = Settings.model_validate({"providers": {}})
    issues = check_jobs([Job(id="a", provider="pixazo", prompt="x")], empty)
    assert [(i.job_id, i.field) for i in issues] == [("a", "provider")]
    assert "not configured" in issues[0].message


@pytest.mark.parametrize(
    "line",
    [
        '{"id": "same", "provider": "pixazo", "prompt": "x"}',
        '{"provider": "pixazo", "prompt": "identical job, no id"}',
    ],
    ids=["explicit-id", "content-id"],
)
def test_check_jobs_duplicate_ids_name_first_line(
    tmp_path: Path, settings: Settings, line: str
) -> None:
    """A repeated id (explicit, or from identical jobs) is reported on the repeat, naming line 1."""
    other = '{"id": "other", "provider": "pixazo", "prompt": "y"}'
    path = write(tmp_path, "batch.jsonl", "\n".join([line, other, line]) + "\n")
    jobs = load_batch(path)
    issues = check_jobs(jobs, settings)
    assert [(i.job_id, i.line, i.field) for i in issues] == [(jobs[0].job.id, 3, "id")]
    assert "line 1" in issues[0].message


def test_check_jobs_reports_every_issue(tmp_path: Path, settings: Settings) -> None:
    """Problems across several jobs are all returned together."""
    path = write(tmp_path, "batch.jsonl", "\n".join([
        '{"id": "a", "provider": "pixazo", "prompt": "x", "duration": 500}',
        '{"id": "b", "provider": "acme", "prompt": "x"}',
        '{"id": "c", "provider": "pixazo", "prompt": "x", "output_format": "xyz"}',
        '{"id": "a", "provider": "pixazo", "prompt": "again"}',
    ]) + "\n")
    issues = check_jobs(load_batch(path), settings)
    assert [(i.job_id, i.line, i.field) for i in issues] == [
        ("a", 1, "duration"), ("b", 2, "provider"), ("c", 3, "output_format"), ("a", 4, "id"),
    ]
    assert all(isinstance(i, JobIssue) for i in issues)


def test_unsupported_fields_refuse_the_batch_unless_told_to_drop_them(
        tmp_path: Path, settings: Settings) -> None:
    """Refused by default, naming line and field; with unsupported = "drop" the field is left
    out of that job only, the job keeps its id, and what was dropped is noted."""
    rows = [{"provider": "aimlapi", "prompt": "open", "seed": 4, "duration": 5,
             "output_format": "wav"},
            {"provider": "pixazo", "prompt": "keeps its seed", "seed": 4, "duration": 5},
            {"provider": "aimlapi", "prompt": "plain", "duration": 5, "output_format": "wav"}]
    path = write(tmp_path, "b.jsonl", "\n".join(json.dumps(r) for r in rows))
    with pytest.raises(InvalidBatchError) as info:
        load_batch(path, settings)
    error = info.value
    assert [(i.line, i.field) for i in error.issues] == [(1, "seed")]
    assert "not supported by aimlapi" in error.issues[0].message

    dropping = settings.model_copy(update={"unsupported": "drop"})
    as_written = [LocatedJob(Job.model_validate(r)) for r in rows]
    jobs = load_batch(path, dropping)
    assert [j.job.seed for j in jobs] == [None, 4, None]
    assert [j.dropped for j in jobs] == [("seed",), (), ()]
    assert [j.job.id for j in jobs] == [j.job.id for j in as_written]
    assert dropped_fields(jobs) == {"aimlapi": {"seed": 1}}
    assert check_jobs(jobs, dropping) == []
    # A field that changes what the job is (strength without audio-to-audio) is still refused.
    wrong_task = Job(provider="aimlapi", prompt="x", strength=0.5, output_format="wav")
    assert drop_unsupported([LocatedJob(wrong_task)])[0].dropped == ()
    assert [i.field for i in check_jobs([LocatedJob(wrong_task)], dropping)] == ["strength"]
