"""The engine's vocabulary: the unified job, a remote job's typed status, and a job's result."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
    field_validator,
    model_validator,
)

__all__ = [
    "AudioSource",
    "AudioURL",
    "Failed",
    "InlineAudio",
    "Job",
    "JobResult",
    "JobStatus",
    "PendingReason",
    "Queued",
    "Ready",
    "RemoteHandle",
    "RemoteStatus",
    "Running",
    "Succeeded",
    "Task",
    "Timings",
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


class Job(BaseModel):
    """One generation request, in provider-neutral names.

    Each adapter maps these names onto its provider's (``steps`` becomes Pixazo's
    ``num_inference_steps``, ``duration`` AI/ML API's ``seconds_total``, …) and checks the
    ranges of the provider and model it targets. ``None`` means "the provider's default".
    ``options`` is passed through to the provider's request body untouched.

    Without an ``id``, a job is named by a hash of its parameters, so the same job always gets
    the same id (and the same output file name).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: JobId = Field(default=None, validate_default=False)  # type: ignore[assignment]
    provider: str = Field(min_length=1)
    model: str | None = None
    task: Task = Task.TEXT_TO_AUDIO
    prompt: str = Field(min_length=1)
    negative_prompt: str | None = None
    duration: Number | None = Field(default=None, gt=0)
    steps: Whole | None = Field(default=None, ge=1)
    guidance_scale: Number | None = Field(default=None, ge=0)
    seed: Whole | None = Field(default=None, ge=0)
    #: ``None``: the provider's own default (mp3 where it offers mp3, else what it returns).
    output_format: str | None = None
    bitrate: str | None = None
    audio: str | None = None
    strength: Number | None = Field(default=None, ge=0, le=1)
    mask_start: Number | None = Field(default=None, ge=0)
    mask_end: Number | None = Field(default=None, ge=0)
    options: dict[str, Any] = Field(default_factory=dict)

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
#: request id is kept, and a rerun fetches the audio without submitting again).
PendingReason = Literal["stopped", "max_cost", "provider_stopped", "download"]


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
    provider: str
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
    error_type: str | None = None
    http_status: int | None = None
    #: Set for a ``pending`` job: why it is not done yet (see :data:`PendingReason`).
    pending_reason: PendingReason | None = None

    @property
    def ok(self) -> bool:
        """True when the audio is on disk (made now, or found from an earlier run)."""
        return self.status in (JobStatus.COMPLETED, JobStatus.SKIPPED)
