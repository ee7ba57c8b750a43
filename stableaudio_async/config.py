"""Provider settings (endpoints, limits, poll and retry policy), loaded from TOML and the environment.

The built-in defaults below are the same as ``configs/providers.toml`` (a test keeps the two
equal). A config file is merged over them table by table, so it only needs the values it
changes. ``STABLEAUDIO_<PROVIDER>_BASE_URL`` overrides a provider's base URL. API keys are
never part of the settings: only the *name* of the environment variable holding each one.
"""

from __future__ import annotations

import copy
import os
import tomllib
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from stableaudio_async.errors import ConfigError

__all__ = [
    "DEFAULTS",
    "CircuitPolicy",
    "DownloadSettings",
    "PollPolicy",
    "ProviderSettings",
    "RateLimit",
    "RetryPolicy",
    "Settings",
    "load_settings",
]


class _Frozen(BaseModel):
    # Every number a user writes must be finite: an infinite period, price or timeout is no
    # setting, and would only fail later, mid-run.
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class RateLimit(_Frozen):
    """At most ``requests`` requests in any window of ``period`` seconds.

    ``counts`` says what the provider counts: only job submissions, or every request (polls
    too). ``margin`` is a fraction of ``period`` added to every window, because the provider
    counts requests when they arrive and we can only stamp them when we send them (at least
    ``min_margin`` seconds). ``burst``
    is how many requests may leave at once; after it they are spread evenly over the window
    (default: a tenth of ``requests``), which keeps a provider's queueing delay from pushing
    one window's requests into the next.
    """

    requests: int = Field(ge=1)
    period: float = Field(gt=0)
    counts: Literal["submits", "all"] = "submits"
    margin: float = Field(default=0.02, ge=0, le=1)
    #: The margin's floor in seconds: network and server-side jitter do not shrink with the
    #: window, and a short window's proportional margin would be too thin to absorb them. A
    #: quarter second costs Stability's 10 s window 2.5 % of its rate; one lockout costs 60 s.
    min_margin: float = Field(default=0.25, ge=0)
    burst: int | None = Field(default=None, ge=1)
    #: Seconds the provider locks the key out after a 429 (Stability: 60); every request in
    #: that time is refused, so the whole provider pauses this long instead of retrying.
    lockout: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _burst_within_limit(self) -> RateLimit:
        if self.burst is not None and self.burst > self.requests:
            raise ValueError("rate_limit.burst must not exceed rate_limit.requests")
        return self

    @property
    def window(self) -> float:
        """The window the engine keeps: ``period`` plus the larger of the two margins."""
        return self.period + max(self.period * self.margin, self.min_margin)

    @property
    def effective_burst(self) -> int:
        """``burst``, or its default: a tenth of ``requests`` (at least 1)."""
        return self.burst if self.burst is not None else max(1, self.requests // 10)


class PollPolicy(_Frozen):
    """When to ask for a job's status.

    The engine learns how long each provider's jobs take (submission to done, over its recent
    jobs) and polls where completions fall: first at their 10th percentile, then at each
    further decile, never closer than ``near_interval`` seconds, and past the slowest it has
    seen backs off from ``near_interval`` by ``factor`` up to ``max``. Until it has seen a
    first job finish, ``expected`` (the provider's documented generation time, if any)
    stands in for them; without it, polls back off from ``initial`` by ``factor`` up to
    ``max``.

    ``jitter`` is the fraction by which each interval is randomly shortened, so that jobs
    submitted together do not poll together. ``timeout`` is the job's overall deadline,
    counted from its submission.
    """

    initial: float = Field(default=5.0, gt=0)
    max: float = Field(default=10.0, gt=0)
    factor: float = Field(default=1.5, ge=1)
    jitter: float = Field(default=0.1, ge=0, lt=1)
    timeout: float = Field(default=600.0, gt=0)
    #: Typical seconds from submission to a final status, before any have been observed.
    #: Built in only where a provider documents it; a config that sets ``initial`` for a
    #: provider without setting ``expected`` turns the built-in one off.
    expected: float | None = Field(default=None, gt=0)
    #: Seconds to done per second of audio asked for: the prior for a job that states its
    #: duration ``d`` is ``expected_per_second * d`` (a 5 s clip is not a 47 s one);
    #: ``expected`` stays the prior of a job that leaves the duration to the provider.
    expected_per_second: float | None = Field(default=None, gt=0)
    #: The shortest gap between polls once a job is expected to finish any moment.
    near_interval: float = Field(default=1.0, gt=0)
    #: Whether to learn completion times from finished jobs (off: ``expected`` or backoff).
    learn: bool = True

    @model_validator(mode="after")
    def _ordered(self) -> PollPolicy:
        if self.max < self.initial:
            raise ValueError("poll.max must not be below poll.initial")
        return self


class RetryPolicy(_Frozen):
    """How often, and how patiently, a transient failure is retried."""

    attempts: int = Field(default=5, ge=1)
    #: Resend a submit answered with a 5xx other than 503. The provider may have created the
    #: job before failing, so the result is flagged ``possibly_duplicated``; failing the job
    #: instead (``false``) does not avoid paying twice, as a rerun resends it anyway.
    submit_5xx: bool = True
    initial: float = Field(default=1.0, gt=0)
    max: float = Field(default=30.0, gt=0)
    factor: float = Field(default=2.0, ge=1)


class CircuitPolicy(_Frozen):
    """When a provider fails ``failures`` times running (5xx, connection errors), pause it for
    ``cooldown`` seconds, doubling while the probe after each pause fails, up to ``max_cooldown``.

    A provider stopped by a refused key or an empty account (401, 403, 402) takes no submits
    for ``auth_cooldown`` seconds; then the next job is sent as the one probe, and its answer
    reopens the provider or stops it again (``None``: stopped until ``Engine.resume_provider``).
    """

    failures: int = Field(default=5, ge=1)
    cooldown: float = Field(default=5.0, gt=0)
    max_cooldown: float = Field(default=120.0, gt=0)
    auth_cooldown: float | None = Field(default=300.0, gt=0)


class ProviderSettings(_Frozen):
    """Everything the engine needs to know about one provider, except its key."""

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        """An http or https URL with a host: the key is sent there, so nothing else will do."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{url!r} is not an http(s) URL with a host")
        if parts.username is not None or parts.password is not None:
            raise ValueError("must not hold a user name or password (keys come from the "
                             "environment)")
        return url

    base_url: str
    api_key_env: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    rate_limit: RateLimit | None = None
    #: A separate limit for every request that is not a submit (polls, result fetches,
    #: uploads, cancels), for providers that publish one (Replicate).
    poll_rate_limit: RateLimit | None = None
    max_in_flight: int = Field(default=8, ge=1)
    #: Price of one job in US dollars, overriding the provider's published one (or giving
    #: one where none is published), for estimates and ``--max-cost``.
    price_usd: float | None = Field(default=None, ge=0)
    poll: PollPolicy = Field(default_factory=PollPolicy)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    circuit: CircuitPolicy = Field(default_factory=CircuitPolicy)
    request_timeout: float = Field(default=60.0, gt=0)

    def api_key(self, env: Mapping[str, str] | None = None) -> str | None:
        """The key from the environment, or ``None`` when the variable is unset or empty."""
        value = (os.environ if env is None else env).get(self.api_key_env, "").strip()
        return value or None


class DownloadSettings(_Frozen):
    """How audio is fetched from a provider's CDN."""

    chunk_size: int = Field(default=256 * 1024, ge=4096)
    timeout: float = Field(default=300.0, gt=0)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)


class Settings(_Frozen):
    """The engine's configuration: one entry per provider, plus download policy."""

    providers: dict[str, ProviderSettings]
    download: DownloadSettings = Field(default_factory=DownloadSettings)
    #: A job field its provider does not take (AI/ML API has no ``seed``, say): ``error``
    #: refuses the batch, naming it; ``drop`` leaves the field out of that job's request and
    #: names every dropped field in the run's summary.
    unsupported: Literal["error", "drop"] = "error"

    def provider(self, name: str) -> ProviderSettings:
        """The named provider's settings, or a :class:`ConfigError` naming the known ones."""
        try:
            return self.providers[name]
        except KeyError:
            known = ", ".join(sorted(self.providers)) or "none"
            raise ConfigError(f"provider {name!r} is not configured (configured: {known})") from None


#: The built-in settings; ``configs/providers.toml`` states the same values for users to edit.
DEFAULTS: dict[str, Any] = {
    "providers": {
        "pixazo": {
            "base_url": "https://gateway.pixazo.ai",
            "api_key_env": "PIXAZO_API_KEY",
            # Pixazo publishes no limit; its gateway counts every call, polls included.
            "rate_limit": {"requests": 10, "period": 1.0, "counts": "all"},
            "max_in_flight": 16,
            # The documentation suggests polling every 5 to 10 seconds.
            "poll": {"initial": 5.0, "max": 10.0, "factor": 1.5, "timeout": 600.0},
        },
        "stability": {
            "base_url": "https://api.stability.ai",
            "api_key_env": "STABILITY_API_KEY",
            # 150 requests in any 10 s, then the key is locked out for 60 s. The 2 % margin
            # (200 ms) covers the network between our send and Stability's count.
            "rate_limit": {"requests": 150, "period": 10.0, "counts": "submits",
                           "margin": 0.02, "lockout": 60.0},
            # Generation happens inside the request: every job in flight is a held connection.
            "max_in_flight": 150,
            "request_timeout": 600.0,
        },
        "wavespeed": {
            "base_url": "https://api.wavespeed.ai",
            "api_key_env": "WAVESPEED_API_KEY",
            # Limits are per account tier and reset each minute; the lowest tier allows 2
            # concurrent jobs. Raise both for a higher tier.
            "rate_limit": {"requests": 60, "period": 60.0, "counts": "all"},
            "max_in_flight": 2,
            "poll": {"initial": 2.0, "max": 10.0, "factor": 1.5, "timeout": 600.0},
        },
        "aimlapi": {
            "base_url": "https://api.aimlapi.com",
            "api_key_env": "AIMLAPI_API_KEY",
            # No published limit: a conservative one, every call counted.
            "rate_limit": {"requests": 10, "period": 1.0, "counts": "all"},
            "max_in_flight": 8,
            # Generations take 50–60 s (for the default 30 s clip); the documentation polls
            # every 10 s. A clip of stated length: 50/30 s per second of audio.
            "poll": {"initial": 10.0, "max": 20.0, "factor": 1.5, "timeout": 900.0,
                     "expected": 50.0, "expected_per_second": 5 / 3},
        },
        "fal": {
            "base_url": "https://queue.fal.run",
            "api_key_env": "FAL_KEY",
            # fal limits concurrency and queues the excess rather than refusing it.
            "max_in_flight": 16,
            "poll": {"initial": 1.0, "max": 10.0, "factor": 1.5, "timeout": 900.0},
        },
        "replicate": {
            "base_url": "https://api.replicate.com",
            "api_key_env": "REPLICATE_API_TOKEN",
            "rate_limit": {"requests": 600, "period": 60.0, "counts": "submits"},
            "poll_rate_limit": {"requests": 3000, "period": 60.0, "counts": "all"},
            "max_in_flight": 32,
            # Above the longest `Prefer: wait` hold (60 s) a create may ask for.
            "request_timeout": 90.0,
            "poll": {"initial": 1.0, "max": 10.0, "factor": 1.5, "timeout": 900.0},
        },
    },
}


def _merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """A new nested dict: ``override`` over ``base``; neither input is modified or shared."""
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _user_poll_wins(data: dict[str, Any], user: Mapping[str, Any]) -> None:
    """An ``initial`` the user set for a provider's polls beats a built-in ``expected``: the
    first poll comes where they asked, unless they set ``expected`` themselves too."""
    providers = user.get("providers")
    if not isinstance(providers, Mapping):
        return  # not a table: validation says so
    for name, provider in providers.items():
        poll = provider.get("poll") if isinstance(provider, Mapping) else None
        if not isinstance(poll, Mapping) or "initial" not in poll or "expected" in poll \
                or "expected_per_second" in poll:
            continue
        merged = data["providers"][name]["poll"]
        merged["expected"] = None
        merged["expected_per_second"] = None


def load_settings(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Built-in defaults, then the TOML file at ``path``, then ``overrides``, then the environment.

    Raises :class:`ConfigError` with the file and the offending key when anything is invalid.
    """
    env = os.environ if env is None else env
    data: dict[str, Any] = _merge({}, DEFAULTS)
    # What the user wrote (file, then overrides), to tell their settings from built-in ones.
    user: dict[str, Any] = {}
    source = "built-in defaults"
    if path is not None:
        source = str(path)
        try:
            with open(path, "rb") as fh:
                user = tomllib.load(fh)
                data = _merge(data, user)
        except OSError as exc:
            raise ConfigError(f"cannot read config {source}: {exc.strerror}") from exc
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config {source} is not valid TOML: {exc}") from exc
        except RecursionError as exc:  # thousands of nested tables: no config, a hostile file
            raise ConfigError(f"config {source} is nested too deeply") from exc
    if overrides:
        user = _merge(user, overrides)
        data = _merge(data, overrides)
    _user_poll_wins(data, user)
    providers = data.get("providers")
    if isinstance(providers, dict):
        for name, provider in providers.items():
            url = env.get(f"STABLEAUDIO_{name.upper()}_BASE_URL")
            if url and isinstance(provider, dict):
                provider["base_url"] = url
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid config ({source}): {problems}") from exc
