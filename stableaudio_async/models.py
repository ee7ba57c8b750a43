"""The engine's vocabulary: the unified job, a remote job's typed status, and a job's result."""

from __future__ import annotations

import builtins
import hashlib
import json
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Literal, Self, TypeAlias

import anyio
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    Strict,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from stableaudio_async.errors import (
    AudioInvalidError,
    AuthenticationError,
    ContentRejectedError,
    DeadlineExceededError,
    DownloadError,
    InsufficientBalanceError,
    InvalidJobError,
    InvalidRequestError,
    JobFailedError,
    JobIssue,
    JobPendingError,
    ProviderError,
    ProviderUnavailableError,
    RateLimitedError,
    StableAudioError,
)

__all__ = [
    "AudioSource",
    "AudioURL",
    "ErrorType",
    "Failed",
    "InlineAudio",
    "Job",
    "JobResult",
    "JobStatus",
    "OutputFormat",
    "PendingReason",
    "ProviderName",
    "Queued",
    "Ready",
    "RemoteHandle",
    "RemoteStatus",
    "Running",
    "StatusName",
    "Succeeded",
    "Task",
    "TaskName",
    "Timings",
    "error_from_result",
]

# Job ids become file names (`<id>.<ext>`), so they may not hold separators or start with a dot.
JobId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]
#: A job's numbers are taken as written: no ``true`` for 1, no ``"30"`` for 30, nothing
#: infinite or NaN (a whole number is a fine ``float``).
Number = Annotated[float, Strict(), Field(allow_inf_nan=False)]
Whole = Annotated[int, Strict()]
#: How deep ``options`` may nest: deeper is no provider's body, and a hostile one.
MAX_OPTION_DEPTH = 32


class Task(StrEnum):
    """What a job asks the model to do."""

    TEXT_TO_AUDIO = "text-to-audio"
    AUDIO_TO_AUDIO = "audio-to-audio"
    INPAINT = "inpaint"


#: A :class:`Task` as written in a batch file: its value.
TaskName = Literal["text-to-audio", "audio-to-audio", "inpaint"]
#: The providers the engine speaks, by the name jobs and configs use (the adapters'
#: names in :mod:`stableaudio_async.providers`; a test keeps the two equal).
ProviderName = Literal["aimlapi", "fal", "pixazo", "replicate", "stability", "wavespeed"]
#: Every audio format some provider returns; which of them a job's provider and model
#: offer is its adapter's to check.
OutputFormat = Literal["aac", "flac", "m4a", "mp3", "ogg", "opus", "wav"]

# A provider or a format is one of the names above for a type checker, but any string at run
# time: an unknown one is refused where the message can name the batch file, the line and the
# job (check_jobs, the adapters), and a manifest of another version still reads.
if TYPE_CHECKING:
    _ProviderField: TypeAlias = ProviderName
    _FormatField: TypeAlias = OutputFormat
else:
    _ProviderField = _FormatField = str


class Job(BaseModel):
    """One generation request, in provider-neutral names.

    Each adapter maps these names onto its provider's (``steps`` becomes Pixazo's
    ``num_inference_steps``, ``duration`` AI/ML API's ``seconds_total``, …) and checks the
    ranges of the provider and model it targets. ``None`` means "the provider's default".
    ``options`` is passed through to the provider's request body untouched.

    Without an ``id``, a job is named by a hash of its parameters, so the same job always gets
    the same id (and the same output file name).

    Bad fields raise :class:`~stableaudio_async.errors.InvalidJobError` (a ``ValueError``),
    one issue per field, from ``Job(...)``, ``model_validate`` and ``model_validate_json``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: JobId = Field(default=None, validate_default=False)  # type: ignore[assignment]
    provider: _ProviderField = Field(min_length=1)
    model: str | None = None
    task: Task = Task.TEXT_TO_AUDIO
    prompt: str = Field(min_length=1)
    negative_prompt: str | None = None
    duration: Number | None = Field(default=None, gt=0)
    steps: Whole | None = Field(default=None, ge=1)
    guidance_scale: Number | None = Field(default=None, ge=0)
    seed: Whole | None = Field(default=None, ge=0)
    #: ``None``: the provider's own default (mp3 where it offers mp3, else what it returns).
    output_format: _FormatField | None = None
    bitrate: str | None = None
    audio: str | None = None
    strength: Number | None = Field(default=None, ge=0, le=1)
    mask_start: Number | None = Field(default=None, ge=0)
    mask_end: Number | None = Field(default=None, ge=0)
    options: dict[str, Any] = Field(default_factory=dict)

    if TYPE_CHECKING:
        # What a checker holds a writer to: a task is the enum or its value (the field is
        # always the enum). Keep in step with the fields (tests/test_public_api.py checks).
        def __init__(
            self, *, id: str | None = ..., provider: ProviderName, model: str | None = ...,
            task: Task | TaskName = ..., prompt: str, negative_prompt: str | None = ...,
            duration: float | None = ..., steps: int | None = ...,
            guidance_scale: float | None = ..., seed: int | None = ...,
            output_format: OutputFormat | None = ..., bitrate: str | None = ...,
            audio: str | None = ..., strength: float | None = ...,
            mask_start: float | None = ..., mask_end: float | None = ...,
            options: Mapping[str, Any] = ...,
        ) -> None: ...
    else:
        # Run time: pydantic's validation error becomes the package's own (a checker keeps
        # BaseModel's signatures for the two classmethods).
        def __init__(self, /, **data):
            with _refused_as_job(data):
                super().__init__(**data)

        # Marked like BaseModel's own (RootModel and pydantic-settings do the same), so that
        # validation does not call it: model_validate would get its error wrapped.
        __init__.__pydantic_base_init__ = True

        @classmethod
        def model_validate(cls, obj, *args, **kwargs):
            with _refused_as_job(obj):
                return super().model_validate(obj, *args, **kwargs)

        @classmethod
        def model_validate_json(cls, json_data, *args, **kwargs):
            with _refused_as_job(None):
                return super().model_validate_json(json_data, *args, **kwargs)

    @field_validator("options")
    @classmethod
    def _options_are_json(cls, options: dict[str, Any]) -> dict[str, Any]:
        """Only what JSON can carry: a NaN or an infinity would go on the wire as a literal
        that is not JSON."""
        problem = _not_json(options, "options", 0)
        if problem is not None:
            raise ValueError(problem)
        return options

    @model_validator(mode="before")
    @classmethod
    def _none_id_means_default(cls, data: Any) -> Any:
        if isinstance(data, dict) and "id" in data and data["id"] is None:
            return {k: v for k, v in data.items() if k != "id"}
        return data

    @model_validator(mode="after")
    def _name_by_content(self) -> Job:
        if self.id is None:
            # Frozen model: the id is derived once, here, from the validated fields.
            self.__dict__["id"] = self.content_id()
        return self

    def content_id(self) -> str:
        """A stable name for this job: a hash of its normalised parameters (not its id)."""
        payload = self.model_dump(mode="json", exclude={"id"}, exclude_none=True)
        if not payload.get("options"):
            payload.pop("options", None)
        canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode()).hexdigest()[:20]


@contextmanager
def _refused_as_job(data: Any) -> Iterator[None]:
    """Raise pydantic's validation error of a job as an :class:`InvalidJobError`, one issue
    per error (the job named when ``data`` gives it an id)."""
    try:
        yield
    except ValidationError as exc:
        raw_id = data.get("id") if isinstance(data, Mapping) else None
        job_id = raw_id if isinstance(raw_id, str) else None
        raise InvalidJobError([
            JobIssue(err["msg"], job_id=job_id,
                     field=".".join(str(part) for part in err["loc"]) or None)
            for err in exc.errors()
        ]) from exc


def _not_json(value: Any, where: str, depth: int) -> str | None:
    """Why ``value`` is not a JSON value (its place named), or None."""
    if depth > MAX_OPTION_DEPTH:
        return f"{where}: nested deeper than {MAX_OPTION_DEPTH} levels"
    if isinstance(value, float) and not math.isfinite(value):
        return f"{where}: {value} is not a finite number"
    if isinstance(value, dict):
        for key, item in value.items():
            problem = _not_json(item, f"{where}.{key}", depth + 1)
            if problem is not None:
                return problem
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            problem = _not_json(item, f"{where}[{index}]", depth + 1)
            if problem is not None:
                return problem
    return None


@dataclass(frozen=True, slots=True)
class AudioURL:
    """Audio the provider left on its CDN, to be downloaded."""

    url: str
    content_type: str | None = None


@dataclass(frozen=True, slots=True)
class InlineAudio:
    """Audio the provider returned in its reply (raw bytes, base64 or a data URI, decoded)."""

    data: bytes = field(repr=False)
    content_type: str | None = None


AudioSource = AudioURL | InlineAudio


@dataclass(frozen=True, slots=True)
class Queued:
    """Accepted, waiting for a worker."""

    position: int | None = None


@dataclass(frozen=True, slots=True)
class Running:
    """Being generated."""


@dataclass(frozen=True, slots=True)
class Succeeded:
    """Done; the audio is at (or in) ``audio``."""

    audio: tuple[AudioSource, ...]
    seed: int | None = None
    finish_reason: str | None = None


@dataclass(frozen=True, slots=True)
class Failed:
    """The provider gave up on the job; ``charged`` says whether it still bills it."""

    reason: str
    charged: bool = True


@dataclass(frozen=True, slots=True)
class Ready:
    """Finished on the provider's side; the result is fetched separately (fal's response_url)."""


RemoteStatus = Queued | Running | Ready | Succeeded | Failed


@dataclass(frozen=True, slots=True)
class RemoteHandle:
    """What a provider told us when it accepted a job: its id, where to poll, its state.

    ``result_url`` is where a finished job's result is fetched when the status itself does
    not carry it; ``cancel_url`` where the job is cancelled, for providers that allow it.
    """

    request_id: str | None
    poll_url: str | None
    status: RemoteStatus
    result_url: str | None = None
    cancel_url: str | None = None


class JobStatus(StrEnum):
    """Where a job ended (in this run)."""

    COMPLETED = "completed"
    FAILED = "failed"
    #: Already done in this output folder (same id, file present, checksum matching).
    SKIPPED = "skipped"
    #: Not run: stopped, or held back by the cost cap; a rerun picks it up.
    PENDING = "pending"


#: Why a job is ``pending``: the run was ``stopped`` before its submit, the cost cap
#: (``max_cost``) held it back, its provider was stopped (``provider_stopped``: a refused key,
#: no credit), or it was generated but its audio could not be fetched yet (``download``: the
#: request id is kept, and a rerun fetches the audio without submitting again), or its caller
#: cancelled it (``cancelled``: a rerun follows its request id, if it was accepted).
PendingReason = Literal["stopped", "cancelled", "max_cost", "provider_stopped", "download"]
#: A :class:`JobStatus` as written in a manifest: its value.
StatusName = Literal["completed", "failed", "skipped", "pending"]
#: The class name of the error a job failed (or was held back) with: a
#: :class:`~stableaudio_async.errors.ProviderError` or one of its subclasses, or
#: ``InternalError`` for a bug in the engine, reported as the job's failure.
ErrorType = Literal[
    "AudioInvalidError", "AuthenticationError", "ContentRejectedError", "DeadlineExceededError",
    "DownloadError", "InsufficientBalanceError", "InternalError", "InvalidRequestError",
    "JobFailedError", "ProviderError", "ProviderUnavailableError", "RateLimitedError",
]

# Like a job's provider, checked statically only: a manifest written by another version (an
# error class this one does not know) still reads.
if TYPE_CHECKING:
    _ErrorTypeField: TypeAlias = ErrorType
else:
    _ErrorTypeField = str


class Timings(BaseModel):
    """Seconds a job spent in each phase (``None`` where it never reached that phase)."""

    model_config = ConfigDict(frozen=True)

    queued: float | None = None
    generating: float | None = None
    downloading: float | None = None
    total: float = 0.0


class JobResult(BaseModel):
    """The outcome of one job, as yielded by the engine and written to ``manifest.jsonl``."""

    model_config = ConfigDict(frozen=True)

    id: str
    provider: _ProviderField
    model: str | None = None
    task: Task
    status: JobStatus
    path: str | None = None
    sha256: str | None = None
    bytes: int | None = None
    content_type: str | None = None
    request_id: str | None = None
    seed: int | None = None
    finish_reason: str | None = None
    #: What the job cost, in ``cost_unit`` (e.g. Stability "credits"); 0 for a failure the
    #: provider does not bill, ``None`` where the price is not known.
    cost: float | None = None
    cost_unit: str | None = None
    attempts: int = 0
    #: The submit was in flight when an earlier run died, and was sent again: the provider
    #: may have run (and billed) the job twice.
    possibly_duplicated: bool = False
    timings: Timings = Field(default_factory=Timings)
    error: str | None = None
    error_type: _ErrorTypeField | None = None
    http_status: int | None = None
    #: Set for a ``pending`` job: why it is not done yet (see :data:`PendingReason`).
    pending_reason: PendingReason | None = None

    #: The error the engine raised for this job, when this run made the result.
    _error: StableAudioError | None = PrivateAttr(default=None)

    if TYPE_CHECKING:
        # Task and status are the enum or its value (the fields are always the enum); the
        # engine writes ``error_type`` as the class name of the error it caught. Keep in step
        # with the fields (tests/test_public_api.py checks).
        def __init__(
            self, *, id: str, provider: ProviderName, model: str | None = ...,
            task: Task | TaskName, status: JobStatus | StatusName, path: str | None = ...,
            sha256: str | None = ..., bytes: int | None = ..., content_type: str | None = ...,
            request_id: str | None = ..., seed: int | None = ...,
            finish_reason: str | None = ..., cost: float | None = ...,
            cost_unit: str | None = ..., attempts: int = ..., possibly_duplicated: bool = ...,
            timings: Timings = ..., error: str | None = ..., error_type: str | None = ...,
            http_status: int | None = ..., pending_reason: PendingReason | None = ...,
        ) -> None: ...

    @property
    def ok(self) -> bool:
        """True when the audio is on disk (made now, or found from an earlier run)."""
        return self.status in (JobStatus.COMPLETED, JobStatus.SKIPPED)

    def raise_for_status(self) -> Self:
        """Return this result when the job's audio is on disk; else raise the job's error.

        That is the exception the engine chose (a :class:`ProviderError` subclass carrying
        job id, provider, request id and HTTP status; :class:`JobPendingError` for a job held
        back or stopped), with this result as its ``result``.
        """
        error = self._error if self._error is not None else error_from_result(self)
        if error is None:
            return self
        error.result = self
        raise error

    async def read_bytes(self) -> builtins.bytes:
        """The audio file's contents (for a completed or skipped job)."""
        if self.path is None:
            self.raise_for_status()
            raise FileNotFoundError(f"job {self.id} has no audio file")
        return await anyio.Path(self.path).read_bytes()


def error_from_result(result: JobResult) -> StableAudioError | None:
    """The error a job's ``result`` stands for, or None when the job's audio is on disk.

    Built from the result's own fields (``error_type``, ``error``, ``http_status``,
    ``request_id``), so it serves results read back from a manifest as well.
    """
    if result.status in ("completed", "skipped"):
        return None
    message = result.error or f"job {result.status}"
    error: StableAudioError
    cls = _ERRORS.get(result.error_type or "")
    if cls is not None:
        error = cls(message, provider=result.provider, job_id=result.id,
                    request_id=result.request_id, status=result.http_status)
    elif result.status == "pending":
        error = JobPendingError(message, job_id=result.id,
                                reason=result.pending_reason or "stopped")
    else:  # a bug in the engine, reported as the job's failure
        error = ProviderError(message, provider=result.provider, job_id=result.id,
                              request_id=result.request_id, status=result.http_status)
    error.result = result
    return error


_ERRORS: dict[str, type[ProviderError]] = {
    cls.__name__: cls for cls in (
        ProviderError, InvalidRequestError, AuthenticationError, InsufficientBalanceError,
        ContentRejectedError, RateLimitedError, ProviderUnavailableError, JobFailedError,
        DeadlineExceededError, DownloadError, AudioInvalidError)
}
