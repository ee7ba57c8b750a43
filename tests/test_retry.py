"""Tables for the pure retry policy: Retry-After parsing, backoff, and what may be retried."""

from __future__ import annotations

import email.utils
import math

import pytest

from stableaudio_async.errors import (
    AuthenticationError,
    ContentRejectedError,
    DeadlineExceededError,
    DownloadError,
    InsufficientBalanceError,
    InvalidRequestError,
    JobFailedError,
    ProviderError,
    ProviderUnavailableError,
    RateLimitedError,
)
from stableaudio_async.retry import (
    RETRY_AFTER_CAP,
    Phase,
    backoff_delay,
    may_have_been_accepted,
    parse_retry_after,
    retry_after_from_headers,
    should_retry,
)

# 1994-11-06 08:49:37 UTC, the example instant of RFC 9110.
NOW = 784111777.0


def http_date(offset: float) -> str:
    """An IMF-fixdate ``offset`` seconds from NOW, as a server would send it."""
    return email.utils.formatdate(NOW + offset, usegmt=True)


# --- parse_retry_after --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("120", 120.0, id="integer-seconds"),
        pytest.param("1.5", 1.5, id="float-seconds"),
        pytest.param("0", 0.0, id="zero"),
        pytest.param("  7  ", 7.0, id="surrounding-whitespace"),
        pytest.param("-5", 0.0, id="negative-clamped-to-zero"),
        pytest.param("-0.25", 0.0, id="negative-float-clamped-to-zero"),
        pytest.param(str(int(RETRY_AFTER_CAP)), RETRY_AFTER_CAP, id="exactly-cap"),
        pytest.param("86400", RETRY_AFTER_CAP, id="a-day-capped"),
        pytest.param("99999999999999999999", RETRY_AFTER_CAP, id="huge-capped"),
        pytest.param(http_date(120), 120.0, id="http-date-future"),
        pytest.param(http_date(-3600), 0.0, id="http-date-past"),
        pytest.param(http_date(0), 0.0, id="http-date-now"),
        pytest.param(http_date(86400), RETRY_AFTER_CAP, id="http-date-far-future-capped"),
        pytest.param("Sun, 06 Nov 1994 08:51:37 GMT", 120.0, id="imf-fixdate-literal"),
        pytest.param("Sunday, 06-Nov-94 08:51:37 GMT", 120.0, id="rfc850-date"),
        pytest.param(None, None, id="none"),
        pytest.param("", None, id="empty"),
        pytest.param("   ", None, id="blank"),
        pytest.param("soon", None, id="garbage-word"),
        pytest.param("12abc", None, id="garbage-number-prefix"),
        pytest.param("1,5", None, id="garbage-comma-decimal"),
        pytest.param("Mon, 99 Foo 2024 99:99:99 GMT", None, id="garbage-date"),
        pytest.param("inf", None, id="inf"),
        pytest.param("Infinity", None, id="infinity"),
        pytest.param("nan", None, id="nan"),
        pytest.param("NaN", None, id="nan-mixed-case"),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    """Retry-After values parse to seconds (clamped to 0..cap), or None when unusable."""
    result = parse_retry_after(value, now=NOW)
    if expected is None:
        assert result is None
    else:
        assert result == pytest.approx(expected)


def test_parse_retry_after_respects_custom_cap() -> None:
    """The cap argument bounds both delta-seconds and dates."""
    assert parse_retry_after("100", now=NOW, cap=30.0) == 30.0
    assert parse_retry_after(http_date(100), now=NOW, cap=30.0) == 30.0
    assert parse_retry_after("10", now=NOW, cap=30.0) == 10.0


def test_parse_retry_after_date_is_relative_to_now() -> None:
    """The same HTTP-date gives a shorter wait the later ``now`` is."""
    date = http_date(300)
    assert parse_retry_after(date, now=NOW) == pytest.approx(300.0)
    assert parse_retry_after(date, now=NOW + 200) == pytest.approx(100.0)
    assert parse_retry_after(date, now=NOW + 400) == 0.0


def test_parse_retry_after_seconds_ignore_now() -> None:
    """Delta-seconds do not depend on ``now``."""
    assert parse_retry_after("42", now=0.0) == parse_retry_after("42", now=NOW) == 42.0


def test_parse_retry_after_accepts_asctime_date() -> None:
    """The obsolete asctime HTTP-date format, which recipients must accept, is read as UTC."""
    assert parse_retry_after("Sun Nov  6 08:51:37 1994", now=NOW) == pytest.approx(120.0)


# --- retry_after_from_headers -------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param({"retry-after-ms": "1500", "retry-after": "30"}, 1.5, id="ms-wins"),
        pytest.param({"Retry-After-Ms": "250"}, 0.25, id="ms-mixed-case"),
        pytest.param({"RETRY-AFTER-MS": "0"}, 0.0, id="ms-zero-upper-case"),
        pytest.param({"retry-after-ms": "-100"}, 0.0, id="ms-negative-clamped"),
        pytest.param({"retry-after-ms": "86400000"}, RETRY_AFTER_CAP, id="ms-huge-capped"),
        pytest.param({"Retry-After": "30"}, 30.0, id="seconds-canonical-case"),
        pytest.param({"RETRY-AFTER": "12"}, 12.0, id="seconds-upper-case"),
        pytest.param({"retry-after": http_date(60)}, 60.0, id="seconds-http-date"),
        pytest.param({"retry-after-ms": "soon", "Retry-After": "7"}, 7.0, id="bad-ms-falls-back"),
        pytest.param({"retry-after-ms": "nan", "Retry-After": "8"}, 8.0, id="nan-ms-falls-back"),
        pytest.param({"retry-after-ms": "inf", "Retry-After": "9"}, 9.0, id="inf-ms-falls-back"),
        pytest.param({"retry-after-ms": "", "Retry-After": "3"}, 3.0, id="empty-ms-falls-back"),
        pytest.param({"retry-after-ms": "soon"}, None, id="bad-ms-nothing-else"),
        pytest.param({"Retry-After": "garbage"}, None, id="bad-seconds"),
        pytest.param({"content-type": "application/json"}, None, id="absent"),
        pytest.param({}, None, id="no-headers"),
    ],
)
def test_retry_after_from_headers(headers: dict[str, str], expected: float | None) -> None:
    """retry-after-ms wins when readable, header names are case-insensitive, else Retry-After."""
    result = retry_after_from_headers(headers, now=NOW)
    if expected is None:
        assert result is None
    else:
        assert result == pytest.approx(expected)


def test_retry_after_from_headers_respects_cap() -> None:
    """The cap argument bounds retry-after-ms and Retry-After alike."""
    assert retry_after_from_headers({"retry-after-ms": "60000"}, cap=5.0) == 5.0
    assert retry_after_from_headers({"Retry-After": "60"}, cap=5.0) == 5.0


# --- backoff_delay ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("initial", "factor", "maximum", "expected"),
    [
        pytest.param(1.0, 2.0, 30.0, [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0], id="doubling"),
        pytest.param(5.0, 1.5, 10.0, [5.0, 7.5, 10.0, 10.0], id="poll-defaults"),
        pytest.param(0.5, 3.0, 100.0, [0.5, 1.5, 4.5, 13.5, 40.5, 100.0], id="tripling"),
        pytest.param(2.0, 1.0, 10.0, [2.0, 2.0, 2.0, 2.0], id="constant"),
        pytest.param(1.0, 2.0, 8.0, [1.0, 2.0, 4.0, 8.0, 8.0], id="hits-max-exactly"),
        pytest.param(3.0, 2.0, 3.0, [3.0, 3.0, 3.0], id="max-equals-initial"),
    ],
)
def test_backoff_schedule(
    initial: float, factor: float, maximum: float, expected: list[float]
) -> None:
    """Without jitter the delays run initial, initial*factor, ... capped at maximum."""
    delays = [
        backoff_delay(attempt, initial=initial, maximum=maximum, factor=factor)
        for attempt in range(len(expected))
    ]
    assert delays == pytest.approx(expected)


@pytest.mark.parametrize("u", [0.0, 0.25, 0.5, 0.999999])
@pytest.mark.parametrize("jitter", [0.0, 0.1, 0.5])
@pytest.mark.parametrize("attempt", [0, 2, 10])
def test_backoff_jitter_shortens_by_at_most_jitter_fraction(
    u: float, jitter: float, attempt: int
) -> None:
    """Jitter scales the delay by exactly (1 - jitter*U): never longer, never below (1-jitter)."""
    base = backoff_delay(attempt, initial=1.0, maximum=30.0, factor=2.0)
    delay = backoff_delay(
        attempt, initial=1.0, maximum=30.0, factor=2.0, jitter=jitter, rand=lambda: u
    )
    assert delay == pytest.approx(base * (1.0 - jitter * u))
    assert base * (1.0 - jitter) <= delay <= base


def test_backoff_jitter_uses_the_injected_rand() -> None:
    """Different draws of the injected rand give different delays (jitter is not ignored)."""
    draws = iter([0.0, 0.9])
    first = backoff_delay(3, initial=1.0, maximum=30.0, factor=2.0, jitter=0.5, rand=lambda: 0.0)
    second = backoff_delay(
        3, initial=1.0, maximum=30.0, factor=2.0, jitter=0.5, rand=lambda: next(draws)
    )
    third = backoff_delay(
        3, initial=1.0, maximum=30.0, factor=2.0, jitter=0.5, rand=lambda: next(draws)
    )
    assert first == second == 8.0
    assert third == pytest.approx(8.0 * (1 - 0.45))


@pytest.mark.parametrize("attempt", [60, 1000, 10**6, 10**12])
@pytest.mark.parametrize("factor", [1.5, 2.0, 10.0])
def test_backoff_huge_attempt_does_not_overflow(attempt: int, factor: float) -> None:
    """A huge attempt number returns the maximum instead of overflowing."""
    delay = backoff_delay(attempt, initial=1.0, maximum=30.0, factor=factor)
    assert delay == 30.0
    assert math.isfinite(delay)


def test_backoff_huge_attempt_with_factor_one_stays_initial() -> None:
    """With factor 1 the delay stays at initial however many attempts were made."""
    assert backoff_delay(10**9, initial=2.0, maximum=30.0, factor=1.0) == 2.0


@pytest.mark.parametrize("attempt", [-1, -100])
def test_backoff_negative_attempt_raises(attempt: int) -> None:
    """A negative attempt number is a programming error and raises ValueError."""
    with pytest.raises(ValueError, match="attempt"):
        backoff_delay(attempt, initial=1.0, maximum=30.0, factor=2.0)


# --- should_retry -------------------------------------------------------------------------


def unavailable(*, status: int | None = None, sent: bool = True) -> ProviderUnavailableError:
    err = ProviderUnavailableError("unavailable", provider="pixazo", status=status)
    if not sent:
        err.sent = False
    return err


RETRY_TABLE = [
    # (phase, error, retry?)
    *(
        pytest.param(phase, RateLimitedError("429", provider="p", status=429), True,
                     id=f"{phase}-rate-limited")
        for phase in ("submit", "poll", "download")
    ),
    *(
        pytest.param(phase, RateLimitedError("429", provider="p", retry_after=3.0), True,
                     id=f"{phase}-rate-limited-no-status")
        for phase in ("submit", "poll", "download")
    ),
    pytest.param("submit", unavailable(sent=False), True, id="submit-never-sent"),
    pytest.param("poll", unavailable(sent=False), True, id="poll-never-sent"),
    pytest.param("download", unavailable(sent=False), True, id="download-never-sent"),
    pytest.param("submit", unavailable(), False, id="submit-sent-ambiguous"),
    pytest.param("poll", unavailable(), True, id="poll-sent-ambiguous"),
    pytest.param("download", unavailable(), True, id="download-sent-ambiguous"),
    pytest.param("submit", unavailable(status=503), True, id="submit-503"),
    pytest.param("poll", unavailable(status=503), True, id="poll-503"),
    pytest.param("submit", unavailable(status=500), False, id="submit-500"),
    pytest.param("submit", unavailable(status=502), False, id="submit-502"),
    pytest.param("submit", unavailable(status=504), False, id="submit-504"),
    pytest.param("poll", unavailable(status=500), True, id="poll-500"),
    pytest.param("download", unavailable(status=500), True, id="download-500"),
    *(
        pytest.param(phase, error, False, id=f"{phase}-{name}")
        for phase in ("submit", "poll", "download")
        for name, error in [
            ("invalid-400", InvalidRequestError("bad", provider="p", status=400)),
            ("invalid-422", InvalidRequestError("bad", provider="p", status=422)),
            ("auth-401", AuthenticationError("no", provider="p", status=401)),
            ("auth-403", AuthenticationError("no", provider="p", status=403)),
            ("balance-402", InsufficientBalanceError("broke", provider="p", status=402)),
            ("job-failed", JobFailedError("failed", provider="p")),
            ("content-rejected", ContentRejectedError("nope", provider="p", status=400)),
            ("deadline", DeadlineExceededError("late", provider="p")),
        ]
    ),
    pytest.param("download", DownloadError("reset", provider="p"), True, id="download-no-status"),
    pytest.param("download", DownloadError("gone", provider="p", status=404), False,
                 id="download-404"),
    pytest.param("download", DownloadError("no", provider="p", status=403), False,
                 id="download-403"),
    pytest.param("download", DownloadError("busy", provider="p", status=503), True,
                 id="download-503"),
    pytest.param("download", DownloadError("oops", provider="p", status=500), True,
                 id="download-500"),
    pytest.param("submit", DownloadError("reset", provider="p"), False,
                 id="submit-download-error"),
    pytest.param("poll", ProviderError("generic 400", provider="p", status=400), False,
                 id="poll-generic-400"),
    pytest.param("poll", ValueError("not a provider error"), False, id="poll-foreign-error"),
    pytest.param("submit", ConnectionError("raw"), False, id="submit-foreign-error"),
]


@pytest.mark.parametrize(("phase", "error", "expected"), RETRY_TABLE)
def test_should_retry(phase: Phase, error: BaseException, expected: bool) -> None:
    """Retry decisions by phase: never resend an ambiguous submit, retry transient polls/downloads."""
    assert should_retry(phase, error) is expected


def test_sent_defaults_to_true_on_the_class_not_shared_by_instances() -> None:
    """ProviderUnavailableError.sent defaults True; setting it on one instance leaves others alone."""
    first, second = unavailable(), unavailable()
    first.sent = False
    assert ProviderUnavailableError.sent is True
    assert second.sent is True
    assert should_retry("submit", first) is True
    assert should_retry("submit", second) is False


@pytest.mark.parametrize(("error", "resent", "ambiguous"), [
    pytest.param(unavailable(status=500), True, True, id="500"),
    pytest.param(unavailable(status=502), True, True, id="502"),
    pytest.param(unavailable(status=504), True, True, id="504"),
    pytest.param(unavailable(status=503), True, False, id="503-gateway"),
    pytest.param(unavailable(sent=False), True, False, id="never-sent"),
    pytest.param(unavailable(), False, True, id="reset-or-timeout-after-sending"),
    pytest.param(RateLimitedError("429", provider="p", status=429), True, False, id="429"),
    pytest.param(InvalidRequestError("bad", provider="p", status=400), False, False, id="400"),
])
def test_submit_5xx_resends_ambiguous_5xx_replies_and_says_which_may_exist(
        error: BaseException, resent: bool, ambiguous: bool) -> None:
    """submit_5xx: a 5xx reply is resent; may_have_been_accepted says when that risks a double."""
    assert should_retry("submit", error, submit_5xx=True) is resent
    assert may_have_been_accepted(error) is ambiguous
    # A provider that bills no failed generation: a 5xx is a free failure, nothing doubles.
    assert may_have_been_accepted(error, free_failures=True) is False


@pytest.mark.parametrize(("error", "resent"), [
    pytest.param(unavailable(status=500), True, id="500"),
    pytest.param(unavailable(), True, id="reset-or-timeout-after-sending"),
    pytest.param(InvalidRequestError("bad", provider="p", status=400), False, id="400"),
])
def test_a_provider_that_lists_its_jobs_retries_a_sent_submit_after_a_lookup(
        error: BaseException, resent: bool) -> None:
    """With ``look_up`` (Replicate lists recent predictions), a reset or timeout after sending
    is retried too, as the retry looks the job up before sending; ``submit_5xx = false`` still
    keeps every ambiguous submit from being sent again."""
    assert should_retry("submit", error, submit_5xx=True, look_up=True) is resent
    assert should_retry("submit", error, submit_5xx=False, look_up=True) is False
    assert should_retry("submit", unavailable(), submit_5xx=True, look_up=False) is False
