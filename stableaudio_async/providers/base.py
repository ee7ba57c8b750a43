"""The adapter interface: a provider is a translator between a Job and that provider's HTTP contract.

Adapters build requests and read replies. They never send, sleep, retry or limit: the engine
does that, the same way for every provider.
"""

from __future__ import annotations

import json
import stat
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeGuard
from urllib.parse import urlsplit

from stableaudio_async.audiocheck import AudioProblem, audio_length
from stableaudio_async.config import ProviderSettings
from stableaudio_async.download import decode_data_uri
from stableaudio_async.errors import (
    AuthenticationError,
    ContentRejectedError,
    InsufficientBalanceError,
    InvalidRequestError,
    JobIssue,
    ProviderError,
    ProviderUnavailableError,
    RateLimitedError,
)
from stableaudio_async.http import HttpReply, HttpRequest
from stableaudio_async.logs import get_logger
from stableaudio_async.models import (
    AudioSource,
    AudioURL,
    Failed,
    InlineAudio,
    Job,
    RemoteHandle,
    RemoteStatus,
    Running,
    Succeeded,
    Task,
)
from stableaudio_async.retry import retry_after_from_headers

log = get_logger(__name__)

__all__ = [
    "AUDIO_SUFFIXES",
    "Adapter",
    "AudioStream",
    "HttpReply",
    "HttpRequest",
    "Lookup",
    "ModelSpec",
    "Range",
    "audio_source",
    "check_job",
    "completed",
    "error_from_reply",
    "input_seconds",
    "is_url",
    "local_audio_problem",
]


@dataclass(frozen=True, slots=True)
class Range:
    """An inclusive range a numeric field must fall in."""

    lo: float
    hi: float
    integer: bool = False

    def __str__(self) -> str:
        if self.integer:
            return f"{int(self.lo)}–{int(self.hi)}"
        return f"{self.lo:g}–{self.hi:g}"


@dataclass(frozen=True)
class ModelSpec:
    """What one provider's model accepts, in the unified job's field names."""

    tasks: frozenset[Task]
    ranges: Mapping[str, Range]
    formats: frozenset[str]
    #: Unified fields this model understands besides ``prompt``, ``seed`` and the ranged ones.
    fields: frozenset[str] = frozenset()
    prompt_max: int | None = None
    #: Whether an input ``audio`` must be a URL (the provider cannot take a local file).
    audio_url_only: bool = False

    @property
    def default_format(self) -> str:
        """The format a job gets when it names none: mp3 where offered, else the first one."""
        return "mp3" if "mp3" in self.formats else min(self.formats)


_CORE_FIELDS = frozenset({"id", "provider", "model", "task", "prompt", "output_format", "options"})

#: Fields that only mean something for some tasks.
_TASK_FIELDS: Mapping[str, frozenset[Task]] = {
    "audio": frozenset({Task.AUDIO_TO_AUDIO, Task.INPAINT}),
    "strength": frozenset({Task.AUDIO_TO_AUDIO}),
    "mask_start": frozenset({Task.INPAINT}),
    "mask_end": frozenset({Task.INPAINT}),
}


def check_job(job: Job, spec: ModelSpec, *, provider: str, reserved: frozenset[str]) -> list[JobIssue]:
    """Every reason ``spec`` cannot run ``job``, each naming the field.

    ``reserved`` is the set of provider body keys the adapter fills itself, which ``options``
    may not override.
    """
    issues: list[JobIssue] = []

    def refuse(name: str, message: str) -> None:
        issues.append(JobIssue(message, job_id=job.id, field=name))

    if job.task not in spec.tasks:
        supported = ", ".join(sorted(spec.tasks))
        refuse("task", f"{provider} cannot run {job.task} (supported: {supported})")
    if spec.prompt_max is not None and len(job.prompt) > spec.prompt_max:
        refuse("prompt", f"longer than {provider}'s limit of {spec.prompt_max} characters")
    if job.output_format is not None and job.output_format not in spec.formats:
        refuse("output_format", f"{job.output_format!r} not one of {', '.join(sorted(spec.formats))}")
    allowed = _CORE_FIELDS | spec.fields | spec.ranges.keys()
    for name, value in job:
        if value is None:
            continue
        if name not in allowed:
            refuse(name, f"not supported by {provider} for {job.task}")
        elif name in _TASK_FIELDS and job.task not in _TASK_FIELDS[name]:
            # Silently dropping it would run a different job than the one asked for.
            used_by = " and ".join(sorted(_TASK_FIELDS[name]))
            refuse(name, f"only used by {used_by}, not by {job.task}")
    for name, limits in spec.ranges.items():
        value = getattr(job, name)
        if value is None:
            continue
        if limits.integer and value != int(value):
            refuse(name, f"must be a whole number in {limits}, got {value}")
        elif not limits.lo <= value <= limits.hi:
            refuse(name, f"{value:g} is outside {provider}'s range {limits}")
    if job.task in (Task.AUDIO_TO_AUDIO, Task.INPAINT) and job.task in spec.tasks:
        if job.audio is None:
            refuse("audio", f"{job.task} needs an input audio file or URL")
        elif spec.audio_url_only and not job.audio.startswith(("http://", "https://")):
            refuse("audio", f"{provider} takes input audio by http(s) URL only")
    if job.mask_start is not None and job.mask_end is not None and job.mask_start >= job.mask_end:
        refuse("mask_end", "must be greater than mask_start")
    for key in sorted(reserved & job.options.keys()):
        refuse(f"options.{key}", "set through the job's own field, not options")
    return issues


#: Input audio files the providers take, by suffix.
AUDIO_SUFFIXES: Mapping[str, str] = {
    ".mp3": "audio/mpeg", ".wav": "audio/wav", ".ogg": "audio/ogg", ".m4a": "audio/mp4",
    ".aac": "audio/aac", ".flac": "audio/flac",
}


def completed(read: Callable[[], tuple[AudioSource, ...]], missing: str, *,
              seed: int | None = None, charged: bool = True) -> Succeeded | Failed:
    """A "completed" status as the audio ``read`` finds in it, or the job's failure when that
    audio is missing (``missing`` says how) or unreadable inline audio."""
    try:
        audio = read()
    except ValueError as exc:
        return Failed(f"unreadable inline audio: {exc}", charged=charged)
    if not audio:
        return Failed(missing, charged=charged)
    return Succeeded(audio, seed)


def audio_source(url: str, content_type: str | None = None) -> AudioSource:
    """A provider's audio reference as a source: a CDN URL, or a ``data:`` URI decoded inline.

    Raises :class:`ValueError` for a malformed data URI.
    """
    if url.startswith("data:"):
        data, inline_type = decode_data_uri(url)
        return InlineAudio(data, inline_type or content_type)
    return AudioURL(url, content_type)


def is_url(audio: str) -> bool:
    """Whether ``audio`` names remote audio (http(s) or a data URI) rather than a local file."""
    return audio.startswith(("http://", "https://", "data:"))


#: The format the audio check expects of a local input file, by its suffix.
_SUFFIX_FORMATS: Mapping[str, str] = {
    ".mp3": "mp3", ".wav": "wav", ".ogg": "ogg", ".m4a": "m4a", ".aac": "aac", ".flac": "flac",
}


def input_seconds(spec: ModelSpec) -> Range | None:
    """How long a local input may be: up to the longest audio the model makes."""
    longest = spec.ranges.get("duration")
    return None if longest is None else Range(0, longest.hi)


def local_audio_problem(audio: str, *, max_bytes: int | None,
                        suffixes: Collection[str] = AUDIO_SUFFIXES.keys(),
                        seconds: Range | None = None) -> str | None:
    """Why the local file ``audio`` cannot be sent, checked before anything is: it must be a
    regular file (a symlink is resolved, and what it points at checked the same way), of an
    audio suffix the provider takes, not empty nor over ``max_bytes``, whose content the audio
    check recognises as that format, lasting within ``seconds`` where its container says.

    Only what passes is ever read and sent: a text file named ``.wav``, a file of zeros, a
    directory, a device or a link to ``/etc/shadow`` is refused here.
    """
    path = Path(audio)
    suffix = path.suffix.lower()
    if suffix not in suffixes:
        allowed = ", ".join(sorted(s.lstrip(".") for s in suffixes))
        return f"input audio must be one of {allowed}, not {suffix or 'a file without suffix'}"
    try:
        real = path.resolve(strict=True)
        info = real.stat()
    except (OSError, RuntimeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "a symlink loop"
        return f"cannot read input audio {audio!r}: {reason}"
    if not stat.S_ISREG(info.st_mode):
        return f"input audio {audio!r} is not a regular file"
    if real.suffix.lower() != suffix and real.suffix.lower() not in suffixes:
        return f"input audio {audio!r} links to {real.name!r}, which is not an audio file name"
    if info.st_size == 0:
        return f"input audio {audio!r} is empty"
    if max_bytes is not None and info.st_size > max_bytes:
        return f"input audio is {info.st_size / 1e6:.1f} MB; the limit is {max_bytes / 1e6:g} MB"
    length = audio_length(real, expected_format=_SUFFIX_FORMATS.get(suffix, "mp3"))
    if isinstance(length, AudioProblem):
        # What the bytes look like is not repeated: the file may hold anything.
        detail = length.detail if length.reason == "wrong_format" else {
            "empty": "it holds no audio", "truncated": "it is cut short",
        }.get(length.reason, "not a recognised audio file")
        return f"input audio {audio!r} is not {suffix.lstrip('.')} audio: {detail}"
    if seconds is not None and length is not None and not seconds.lo <= length <= seconds.hi:
        return f"input audio is {length:.1f} s long; this provider takes {seconds} s"
    return None


def _message_from_body(body: bytes) -> str | None:
    try:
        data = json.loads(body)
    except ValueError:
        text = body.decode("utf-8", "replace").strip()
        return text[:300] or None
    if not isinstance(data, dict):
        return None
    parts: list[str] = []
    for key in ("name", "title", "error", "message", "detail", "errors"):
        value = data.get(key)
        if isinstance(value, list):
            value = "; ".join(str(v) for v in value)
        elif isinstance(value, dict):
            value = value.get("message") or value.get("name")
        if value and str(value) not in parts:
            parts.append(str(value))
    return ": ".join(parts)[:500] or None


def error_from_reply(
    reply: HttpReply, *, provider: str, request_id: str | None = None
) -> ProviderError:
    """The engine's exception for an HTTP error reply, with the provider's own words in it."""
    status = reply.status
    detail = _message_from_body(reply.body)
    message = f"HTTP {status}" + (f": {detail}" if detail else "")
    context: dict[str, Any] = {"provider": provider, "request_id": request_id, "status": status}
    if status == 429:
        retry_after = retry_after_from_headers(reply.headers)
        return RateLimitedError(message, retry_after=retry_after, **context)
    if status == 402:
        return InsufficientBalanceError(message, **context)
    if status == 401:
        return AuthenticationError(message, **context)
    if status == 403:
        if detail and "moderation" in detail.lower():
            return ContentRejectedError(message, **context)
        return AuthenticationError(message, **context)
    if status >= 500:
        return ProviderUnavailableError(message, **context)
    return InvalidRequestError(message, **context)


@dataclass(frozen=True, slots=True)
class AudioStream:
    """A synchronous reply whose body is the audio, described by its headers."""

    request_id: str | None
    content_type: str | None
    seed: int | None = None
    finish_reason: str | None = None


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


@dataclass(frozen=True, slots=True)
class Lookup:
    """A page of a provider's job listing, read for one submit (see :meth:`Adapter.parse_lookup`).

    ``found`` are the jobs on the page made from that submit's body, newest first;
    ``next_page`` is the URL of the next (older) page, ``None`` when it would hold only jobs
    created before the submit was first sent, or there is none.
    """

    found: tuple[RemoteHandle, ...]
    next_page: str | None


class Adapter(ABC):
    """Translates jobs into one provider's requests and its replies into engine types."""

    #: The provider's name in configs, jobs and the CLI.
    name: ClassVar[str]
    #: The model used when a job names none.
    default_model: ClassVar[str]
    #: What each model can do.
    models: ClassVar[Mapping[str, ModelSpec]]
    #: True when the submit reply itself carries the audio: no request id to poll.
    synchronous: ClassVar[bool] = False
    #: True when the provider bills no failed generation: a 5xx answer to a submit is then a
    #: free failure rather than an ambiguity, and may be retried.
    free_failures: ClassVar[bool] = False
    #: How a local input file (``job.audio`` that is not a URL) reaches the provider: not at
    #: all (URLs only), as a multipart part of the submit itself, uploaded first through
    #: :meth:`upload_request`, or inline as a ``data:`` URI built by the engine.
    local_audio: ClassVar[Literal["none", "multipart", "upload", "data_uri"]] = "none"

    def __init__(self, settings: ProviderSettings, api_key: str) -> None:
        self.settings = settings
        self.base_url = settings.base_url.rstrip("/")
        self._api_key = api_key

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.base_url}>"

    def json_object(self, reply: HttpReply, request_id: str | None = None) -> dict[str, Any]:
        """The reply's body as a JSON object, or :class:`ProviderUnavailableError`."""
        try:
            data = reply.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise ProviderUnavailableError("reply is not a JSON object", provider=self.name,
                                           request_id=request_id, status=reply.status)
        return data

    def on_own_origin(self, url: object) -> TypeGuard[str]:
        """Whether ``url`` is on the API's own scheme and host: the only place the key may go.

        Providers hand back URLs to poll, fetch and cancel; following one elsewhere would
        send the key with it.
        """
        return isinstance(url, str) and _origin(url) == _origin(self.base_url)

    def model_of(self, job: Job) -> str:
        """The model the job runs on."""
        return job.model or self.default_model

    @classmethod
    def output_format(cls, job: Job) -> str:
        """The format the job's audio comes in: its own, or its model's default."""
        if job.output_format is not None:
            return job.output_format
        spec = cls.models.get(job.model or cls.default_model)
        return spec.default_format if spec is not None else "mp3"

    @classmethod
    def validate(cls, job: Job) -> list[JobIssue]:
        """Every reason this provider cannot run ``job``; empty when it can."""
        model = job.model or cls.default_model
        spec = cls.models.get(model)
        if spec is None:
            known = ", ".join(sorted(cls.models))
            return [JobIssue(f"unknown {cls.name} model {model!r} (known: {known})",
                             job_id=job.id, field="model")]
        return cls.check(job, spec)

    def unknown_status(self, word: str, request_id: str | None) -> Running:
        """A status word the contract does not list: logged, and taken as still running (so
        polling goes on until the job's deadline), never as success. A missing word is no
        status at all (:class:`ProviderUnavailableError`)."""
        if not word:
            raise ProviderUnavailableError("status reply without a status", provider=self.name,
                                           request_id=request_id)
        log.warning("poll.unknown_status", provider=self.name, request_id=request_id,
                    status=word[:64])
        return Running()

    @classmethod
    def unsupported_fields(cls, job: Job) -> list[str]:
        """The job's fields that are set but that its model on this provider does not take
        at all (task-specific fields used with the wrong task are not among them)."""
        spec = cls.models.get(job.model or cls.default_model)
        if spec is None:
            return []
        allowed = _CORE_FIELDS | spec.fields | spec.ranges.keys() | _TASK_FIELDS.keys()
        return [name for name, value in job if value is not None and name not in allowed]

    @classmethod
    def check(cls, job: Job, spec: ModelSpec) -> list[JobIssue]:
        """Model-specific checks; the default applies ``spec`` with :func:`check_job`."""
        return check_job(job, spec, provider=cls.name, reserved=frozenset())

    @abstractmethod
    def submit_request(self, job: Job, audio_url: str | None = None) -> HttpRequest:
        """The request that starts ``job``.

        ``audio_url`` is the job's input audio as this provider takes it, resolved by the
        engine: the job's own URL, the URL an upload returned, or a ``data:`` URI (``None``
        when the job has no input, or the adapter sends the file itself).
        """

    @abstractmethod
    def parse_submit(self, reply: HttpReply) -> RemoteHandle:
        """Read a successful submit reply; raise a :class:`ProviderError` for anything else."""

    def audio_stream(self, status: int, headers: Mapping[str, str]) -> AudioStream | None:
        """For a synchronous provider: whether this submit reply's body is the audio itself.

        Returns what the headers say about it (the engine then streams the body to disk), or
        ``None`` for a reply to read whole and hand to :meth:`parse_submit`.
        """
        return None

    def upload_request(self, path: Path) -> HttpRequest:
        """For ``local_audio = "upload"``: the request that stores a local file remotely."""
        raise NotImplementedError(f"{self.name} has no upload endpoint")

    def parse_upload(self, reply: HttpReply) -> str:
        """For ``local_audio = "upload"``: the URL the stored file can be fetched from."""
        raise NotImplementedError(f"{self.name} has no upload endpoint")

    def poll_request(self, handle: RemoteHandle) -> HttpRequest:
        """The request that asks for the job's current status."""
        raise NotImplementedError(f"{self.name} has no status to poll")

    def result_request(self, handle: RemoteHandle) -> HttpRequest:
        """After a :class:`Ready` status: the request that fetches the finished result."""
        raise NotImplementedError(f"{self.name} reports results with its status")

    def parse_result(self, reply: HttpReply, handle: RemoteHandle) -> Succeeded | Failed:
        """Read the reply to :meth:`result_request`; a failed job is ``Failed``, not an error."""
        raise NotImplementedError(f"{self.name} reports results with its status")

    def cancel_request(self, handle: RemoteHandle) -> HttpRequest | None:
        """The request that cancels a running job remotely, or ``None`` where none exists."""
        return None

    def lookup_request(self, page: str | None = None) -> HttpRequest | None:
        """Where the provider lists the key's recent jobs, newest first (``page``: a URL that
        :meth:`parse_lookup` returned), so that a submit whose answer was lost can be found
        rather than sent again; ``None`` where it lists none."""
        return None

    def parse_lookup(self, reply: HttpReply, submitted: HttpRequest, since: float
                     ) -> Lookup:
        """Read a page of :meth:`lookup_request`: the jobs on it created from ``submitted``'s
        body at or after ``since`` (seconds since the epoch), and whether to read on."""
        raise NotImplementedError(f"{self.name} lists no jobs")

    def parse_poll(self, reply: HttpReply, handle: RemoteHandle) -> RemoteStatus:
        """Read a status reply into one typed status; raise for an error reply."""
        raise NotImplementedError(f"{self.name} has no status to poll")

    def cost(self, job: Job) -> tuple[float, str] | None:
        """What a successful ``job`` costs and in what unit, where the price is published."""
        return None

    def download_headers(self, url: str) -> Mapping[str, str]:
        """Headers for fetching audio from ``url`` (public CDNs need none)."""
        return {}
