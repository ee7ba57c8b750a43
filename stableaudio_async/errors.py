"""The engine's whole exception tree; every foreign error is translated into one of these.

::

    StableAudioError
    ├── ConfigError                  bad settings file, missing API key (nothing was sent)
    ├── InvalidBatchError            one or more jobs refused before anything was sent
    │   └── InvalidJobError          one job refused (``Job(...)``, ``generate()``); a ValueError
    ├── JobPendingError              a job not done in this run that a later one finishes
    ├── UnknownJobError              ``Engine.attach`` of an id the journal does not know
    └── ProviderError                a provider (or its CDN) answered badly or not at all
        ├── InvalidRequestError      400 / 422: the request itself is wrong
        ├── AuthenticationError      401 / 403: key missing, wrong or not allowed
        ├── InsufficientBalanceError 402: the account is out of credit
        ├── ContentRejectedError     moderation refused the prompt or the input audio
        ├── RateLimitedError         429, with the server's ``retry_after`` when given
        ├── ProviderUnavailableError 5xx, connection failures, malformed replies
        ├── JobFailedError           the provider ran the job and says it failed
        ├── DeadlineExceededError    the job did not finish in time (also a TimeoutError)
        ├── DownloadError            the audio could not be fetched or written
        └── AudioInvalidError        the file is not audio of the format and length asked for

Every :class:`ProviderError` carries ``provider``, ``job_id``, ``request_id``, ``status`` and
``retry_after``; raised for a job (by :meth:`Engine.generate`, a handle's ``result()`` or
:meth:`JobResult.raise_for_status`), an error also carries the job's ``result``. None of them
ever carries an API key: messages are built from status codes, provider error bodies and URLs
that hold no credentials.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "AudioInvalidError",
    "AuthenticationError",
    "ConfigError",
    "ContentRejectedError",
    "DeadlineExceededError",
    "DownloadError",
    "InsufficientBalanceError",
    "InvalidBatchError",
    "InvalidJobError",
    "InvalidRequestError",
    "JobFailedError",
    "JobIssue",
    "JobPendingError",
    "ProviderError",
    "ProviderUnavailableError",
    "RateLimitedError",
    "StableAudioError",
    "UnknownJobError",
]


class StableAudioError(Exception):
    """Base of every error this package raises."""

    #: The :class:`~stableaudio_async.models.JobResult` of the job the error is about, when it
    #: is raised for one (by ``Engine.generate``, a handle's ``result()`` or
    #: ``JobResult.raise_for_status``); ``None`` otherwise. (Typed ``Any`` only because the
    #: result's module builds on this one.)
    result: Any = None


class ConfigError(StableAudioError):
    """Settings are unusable: a malformed config file, an unknown provider, a missing key."""


@dataclass(frozen=True)
class JobIssue:
    """One reason a job was refused: where it came from, which job, which field, and why."""

    message: str
    job_id: str | None = None
    field: str | None = None
    line: int | None = None
    source: str | None = None

    def __str__(self) -> str:
        # Every part may come from the batch file: a control character or a line break in
        # an id is shown escaped, so it can neither forge error lines nor drive a terminal.
        where = []
        if self.source is not None:
            where.append(printable(self.source) if self.line is None
                         else f"{printable(self.source)}:{self.line}")
        elif self.line is not None:
            where.append(f"line {self.line}")
        if self.job_id is not None:
            where.append(f"job {printable(self.job_id)}")
        if self.field is not None:
            where.append(f"field {printable(self.field)!r}")
        prefix = ", ".join(where)
        message = printable(self.message)
        return f"{prefix}: {message}" if prefix else message


def printable(text: str) -> str:
    """``text`` with every unprintable character (controls, line breaks) escaped as ``repr``
    escapes it."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class InvalidBatchError(StableAudioError):
    """A batch holds jobs that cannot be run; nothing from it has been submitted."""

    def __init__(self, issues: Sequence[JobIssue]) -> None:
        self.issues = tuple(issues)
        lines = "\n".join(f"  {issue}" for issue in self.issues)
        super().__init__(f"{len(self.issues)} invalid job(s), nothing was submitted:\n{lines}")


class InvalidJobError(InvalidBatchError, ValueError):
    """One job cannot be run: its fields (``Job(...)``), or what its provider allows
    (``Engine.generate``, ``Engine.submit``). Also a :class:`ValueError`, as pydantic's own
    validation errors are; ``issues`` names each bad field."""

    def __init__(self, issues: Sequence[JobIssue]) -> None:
        self.issues = tuple(issues)
        job_ids = {issue.job_id for issue in self.issues if issue.job_id is not None}
        name = f"job {printable(next(iter(job_ids)))}" if len(job_ids) == 1 else "job"
        lines = "\n".join(f"  {_without_job(issue)}" for issue in self.issues)
        StableAudioError.__init__(self, f"invalid {name}, nothing was submitted:\n{lines}")


def _without_job(issue: JobIssue) -> JobIssue:
    return JobIssue(issue.message, field=issue.field, line=issue.line, source=issue.source)


class JobPendingError(StableAudioError):
    """A job this run did not finish, which a later run (or ``Engine.attach``) does: held back
    by the cost cap (``reason`` ``max_cost``), or stopped before its submit (``stopped``) or
    while it ran (``cancelled``). Its ``result`` says which, and keeps the request id if the
    job was accepted."""

    def __init__(self, message: str, *, job_id: str, reason: str) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.reason = reason


class UnknownJobError(StableAudioError, LookupError):
    """No job of that id is known to the engine's journal (``Engine.attach``)."""


class ProviderError(StableAudioError):
    """A provider, or the CDN serving its audio, did not give us what we asked for."""

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        job_id: str | None = None,
        request_id: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.job_id = job_id
        self.request_id = request_id
        self.status = status
        self.retry_after = retry_after

    def __str__(self) -> str:
        context = [f"provider={self.provider}"]
        if self.job_id is not None:
            context.append(f"job={self.job_id}")
        if self.request_id is not None:
            context.append(f"request={self.request_id}")
        if self.status is not None:
            context.append(f"http={self.status}")
        return f"{self.message} ({', '.join(context)})"

    def with_context(
        self, *, job_id: str | None = None, request_id: str | None = None
    ) -> ProviderError:
        """Fill in the job and request ids where the raiser could not know them."""
        if self.job_id is None:
            self.job_id = job_id
        if self.request_id is None:
            self.request_id = request_id
        return self


class InvalidRequestError(ProviderError):
    """The provider refused the request as malformed or out of range (400, 422)."""


class AuthenticationError(ProviderError):
    """The API key is missing, wrong, or not allowed to use this endpoint (401, 403)."""


class InsufficientBalanceError(ProviderError):
    """The account has no credit left (402)."""


class ContentRejectedError(ProviderError):
    """Moderation refused the prompt or the input audio; providers do not charge for it."""


class RateLimitedError(ProviderError):
    """The provider said 429; ``retry_after`` holds its requested pause in seconds, if any."""


class ProviderUnavailableError(ProviderError):
    """A 5xx, a connection failure or a reply we could not read."""

    #: False only when the request provably never reached the provider (the connection
    #: was never made), which is what makes a paid submit safe to repeat.
    sent: bool = True


class JobFailedError(ProviderError):
    """The provider ran the job and reports it failed; ``charged`` says whether it billed it."""

    #: Whether the provider bills a failure of this kind (Pixazo's ERROR, for one, is free).
    charged: bool = True


class DeadlineExceededError(ProviderError, TimeoutError):
    """The job did not reach a final state within its deadline."""


class DownloadError(ProviderError):
    """The audio could not be downloaded, decoded or written to disk."""

    #: Whether the generation it came from was billed although its audio is lost: a
    #: synchronous reply cut off after the generation finished (no way to fetch it again).
    charged: bool = False


class AudioInvalidError(ProviderError):
    """The provider delivered a file that is not what was asked for (``reason``: ``truncated``,
    ``wrong_format``, ``too_long``, ``unreadable``, ``empty``); the generation was billed."""

    reason: str = "unreadable"
    charged: bool = True

