"""Pure retry policy: what may be retried in each phase, how long to wait, and Retry-After parsing."""

from __future__ import annotations

import email.utils
import math
import random
import re
import time
from collections.abc import Callable, Mapping
from datetime import UTC
from typing import Literal

from stableaudio_async.errors import (
    DownloadError,
    ProviderError,
    ProviderUnavailableError,
    RateLimitedError,
)

__all__ = [
    "Phase",
    "backoff_delay",
    "may_have_been_accepted",
    "parse_retry_after",
    "retry_after_from_headers",
    "should_retry",
]

Phase = Literal["submit", "upload", "poll", "download"]

#: A Retry-After beyond this many seconds is treated as this many: a bogus or hostile value
#: must not park a batch for a day.
RETRY_AFTER_CAP = 600.0

# Delta-seconds as servers send it; fractions are accepted for sub-second (scaled) clocks.
_DELTA = re.compile(r"-?[0-9]+(\.[0-9]+)?")


def backoff_delay(
    attempt: int,
    *,
    initial: float,
    maximum: float,
    factor: float,
    jitter: float = 0.0,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait before retry number ``attempt`` (0 for the first retry).

    ``min(maximum, initial * factor ** attempt) * (1 - jitter * U)`` with ``U`` uniform in
    [0, 1): capped exponential growth, shortened by up to ``jitter`` so that jobs started
    together spread out instead of moving in lockstep.
    """
    if attempt < 0:
        raise ValueError("attempt must be >= 0")
    # Compare exponents rather than computing factor ** attempt, which overflows for big attempts.
    if factor > 1 and attempt * math.log(factor) > math.log(maximum / initial):
        base = maximum
    else:
        base = min(maximum, initial * factor**attempt)
    return base * (1.0 - jitter * rand())


def parse_retry_after(
    value: str | None, *, now: float | None = None, cap: float = RETRY_AFTER_CAP
) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delta-seconds or an HTTP-date.

    Returns ``None`` for a missing or unreadable value (the caller then uses its own backoff),
    ``0`` for a date in the past, and never more than ``cap``.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    # Not float(text): it would also take "1_000", "inf" and "nan".
    if _DELTA.fullmatch(text):
        seconds = float(text)
    else:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            # The asctime form carries no zone; HTTP dates are always GMT.
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - (time.time() if now is None else now)
    if math.isnan(seconds) or seconds == math.inf:
        return None
    return min(max(seconds, 0.0), cap)


def retry_after_from_headers(
    headers: Mapping[str, str], *, now: float | None = None, cap: float = RETRY_AFTER_CAP
) -> float | None:
    """The server's requested pause: ``retry-after-ms`` when present, else ``Retry-After``."""
    lowered = {k.lower(): v for k, v in headers.items()}
    millis = lowered.get("retry-after-ms")
    if millis is not None:
        try:
            ms = float(millis)
        except ValueError:
            ms = math.nan
        if math.isfinite(ms):
            return min(max(ms / 1000.0, 0.0), cap)
    return parse_retry_after(lowered.get("retry-after"), now=now, cap=cap)


def should_retry(phase: Phase, error: BaseException, *, free_failures: bool = False,
                 submit_5xx: bool = False, look_up: bool = False) -> bool:
    """Whether ``error`` in ``phase`` may be retried.

    A submit is repeated freely only when the provider provably did not accept it: a 429, a
    503 from the gateway, or a connection that was never made. A 5xx *reply* is retried when
    the provider bills no failed generation (``free_failures``), or when ``submit_5xx`` says
    to resend such an ambiguous submit anyway (the job may exist: see
    :func:`may_have_been_accepted`). A timeout or a reset after the request was sent is never
    resent: the provider most likely has the job, unless it can be looked up (``look_up``: the
    provider lists recent jobs, and the retry looks there before sending) and ``submit_5xx``
    allows resending at all. Polls and downloads (and uploads of input files) cost nothing,
    so every transient failure there is retried.
    """
    if isinstance(error, RateLimitedError):
        return True
    if phase == "submit":
        if isinstance(error, ProviderUnavailableError):
            if not error.sent or error.status == 503:
                return True
            if look_up and submit_5xx and (error.status is None or error.status >= 500):
                return True
            return (free_failures or submit_5xx) and error.status is not None \
                and error.status >= 500
        return False
    if isinstance(error, ProviderUnavailableError):
        return True
    if phase == "download" and isinstance(error, DownloadError):
        return error.status is None or error.status >= 500 or error.status == 408
    return isinstance(error, ProviderError) and error.status in (408, 502, 503, 504)


def may_have_been_accepted(error: BaseException, *, free_failures: bool = False) -> bool:
    """Whether a failed submit may still have created a billed job: it reached the provider
    and got neither a 429, nor a 503 (the gateway turning it away), nor a free failure."""
    if not isinstance(error, ProviderUnavailableError) or not error.sent:
        return False
    return error.status != 503 and not free_failures
