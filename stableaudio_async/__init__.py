"""stableaudio-async: generate audio in bulk with Stable Audio through hosted providers."""

from stableaudio_async.batch import LocatedJob, check_jobs, load_batch
from stableaudio_async.config import Settings, load_settings
from stableaudio_async.engine import Engine, ProviderProgress
from stableaudio_async.errors import (
    AudioInvalidError,
    AuthenticationError,
    ConfigError,
    ContentRejectedError,
    DeadlineExceededError,
    DownloadError,
    InsufficientBalanceError,
    InvalidBatchError,
    InvalidRequestError,
    JobFailedError,
    JobIssue,
    ProviderError,
    ProviderUnavailableError,
    RateLimitedError,
    StableAudioError,
)
from stableaudio_async.models import Job, JobResult, JobStatus, Task, Timings

__version__ = "0.1.0"

__all__ = [
    "AudioInvalidError",
    "AuthenticationError",
    "ConfigError",
    "ContentRejectedError",
    "DeadlineExceededError",
    "DownloadError",
    "Engine",
    "InsufficientBalanceError",
    "InvalidBatchError",
    "InvalidRequestError",
    "Job",
    "JobFailedError",
    "JobIssue",
    "JobResult",
    "JobStatus",
    "LocatedJob",
    "ProviderError",
    "ProviderProgress",
    "ProviderUnavailableError",
    "RateLimitedError",
    "Settings",
    "StableAudioError",
    "Task",
    "Timings",
    "__version__",
    "check_jobs",
    "load_batch",
    "load_settings",
]
