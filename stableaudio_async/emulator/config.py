"""How the emulator behaves: :class:`EmulatorConfig` and its parts (limits, fault rates, readings).

Every part of the emulator reads its configuration from here; nothing here imports another
part of it (the provider modules are found by name, at validation time, by
:func:`provider_modules`).
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

__all__ = ["EmulatedLimit", "EmulatorConfig", "FaultRates", "Reading", "provider_modules"]

#: How a provider answers where its documentation allows two readings. ``strict`` follows the
#: documentation's letter and the official clients (fal answers 202 while a request is pending;
#: Pixazo's ``sync_mode`` submit holds and answers with the finished request, ``media_url`` a
#: list; WaveSpeed answers a failed prediction with HTTP 200). ``loose`` is the other reading
#: (fal 200 while pending; Pixazo queues a ``sync_mode`` request as any other and puts the
#: inline audio in the status body, ``media_url`` a plain string; WaveSpeed answers a failed
#: prediction with HTTP 500, the failed prediction in the envelope). Clients should survive
#: both; the engine's tests run both.
Reading = Literal["strict", "loose"]

#: How often a fault strikes: 0 never, 1 always.
Probability = Annotated[float, Field(ge=0, le=1)]


def provider_modules() -> list[ModuleType]:
    """The emulator's provider modules (each with ``add_routes``), in name order."""
    package = importlib.import_module("stableaudio_async.emulator")
    modules = []
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        if callable(getattr(module, "add_routes", None)):
            modules.append(module)
    return modules


class EmulatedLimit(BaseModel):
    """A provider's rate limit in emulated seconds: ``requests`` per ``period``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    requests: int = Field(ge=1)
    period: float = Field(gt=0)
    counts: Literal["submits", "all"] = "submits"


class FaultRates(BaseModel):
    """How often each fault strikes one provider; probabilities from 0 (never) to 1 (always).

    Where each strikes is told in :mod:`.faults`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: A submit answered 503 before the job is accepted: nothing is created, a retry is safe.
    submit_503: Probability = 0.0
    #: A submit answered 500 or 502 before the job is accepted: nothing is created, but a
    #: client cannot know that (a 5xx may also come after the job was created).
    submit_5xx: Probability = 0.0
    #: A submit the provider accepted (the job is created, counted and billed) whose reply is
    #: replaced by a 500 or 502, as a gateway timing out after the provider said yes: the
    #: case a client can only tell from a lookup, where the provider has one (Replicate).
    submit_lost_reply: Probability = 0.0
    #: A status poll or result fetch answered 500 or 503; the job carries on unaffected.
    poll_5xx: Probability = 0.0
    #: A submit or poll starts a burst of ``burst_length`` requests (itself included) answered
    #: 429, counted in ``ProviderStats.injected_429`` and never in ``rate_limited``.
    burst_429: Probability = 0.0
    burst_length: int = Field(default=5, ge=1)
    #: Whether the burst's 429s carry a Retry-After (one emulated second, scaled).
    burst_retry_after: bool = False
    #: A download's connection is reset (RST) after about half of the body.
    cdn_reset: Probability = 0.0
    #: A download ends (the connection closed) after about half of the body its
    #: Content-Length promises.
    cdn_truncate: Probability = 0.0
    #: A download is sent in pieces with short (scaled) pauses between them.
    cdn_slow: Probability = 0.0
    #: Most resets and truncations per file, so that a client that retries (with Range) gets
    #: it whole in the end.
    cdn_faults_per_file: int = Field(default=2, ge=0)
    #: Emulated seconds a shared-CDN URL stays valid once handed out; then it answers 403.
    url_expiry: float | None = Field(default=None, gt=0)
    #: A shared-CDN file's first request answers 403 as if its URL had expired, whatever the
    #: time (at most once per file, so the fresh URL a new status reply hands out works):
    #: the expiry a test can count on, on a machine of any speed. Counted as ``url_expiry``.
    url_stale: Probability = 0.0
    #: A job accepted as usual ends FAILED or ERROR, as the prompt markers make it.
    job_failed: Probability = 0.0
    job_error: Probability = 0.0

    @model_validator(mode="after")
    def _outcomes_add_up(self) -> FaultRates:
        if self.job_failed + self.job_error > 1:
            raise ValueError("job_failed + job_error must be at most 1")
        return self


class EmulatorConfig(BaseModel):
    """How the emulator behaves. Durations are emulated seconds; real ones are × ``time_scale``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: Real seconds per emulated second: 0.01 runs everything a hundred times faster.
    time_scale: float = Field(default=1.0, gt=0)
    #: The only API key the emulator accepts (for every provider).
    api_key: str = "emulator-key"
    queue_time: float = Field(default=2.0, ge=0)
    #: Emulated generation time: a fixed part plus a part per second of requested audio.
    generation_time: float = Field(default=5.0, ge=0)
    generation_time_per_second: float = Field(default=0.0, ge=0)
    #: Spread of generation times: each job's is drawn uniformly within ± this fraction
    #: (seeded by ``fault_seed``), as real generation times vary with load and prompt.
    generation_jitter: float = Field(default=0.0, ge=0, lt=1)
    limits: dict[str, EmulatedLimit] = Field(
        default_factory=lambda: {
            "pixazo": EmulatedLimit(requests=10, period=1.0, counts="all"),
            "stability": EmulatedLimit(requests=150, period=10.0, counts="submits"),
            "wavespeed": EmulatedLimit(requests=60, period=60.0, counts="all"),
            "aimlapi": EmulatedLimit(requests=10, period=1.0, counts="all"),
            "replicate": EmulatedLimit(requests=600, period=60.0, counts="submits"),
        }
    )
    #: A second window for every request that is not a submit (Replicate: 3000 per minute).
    poll_limits: dict[str, EmulatedLimit] = Field(
        default_factory=lambda: {"replicate": EmulatedLimit(requests=3000, period=60.0)})
    #: Jobs a provider runs at once; more wait in its queue (fal, WaveSpeed's tiers).
    concurrency: dict[str, int] = Field(default_factory=dict)
    #: Emulated seconds a key is locked out (every request 429s) once its window overflows;
    #: providers absent here only refuse the overflowing requests themselves.
    lockouts: dict[str, float] = Field(default_factory=lambda: {"stability": 60.0})
    #: Accepted submissions per provider before it answers 402 (``None``: unlimited).
    balance: dict[str, int] = Field(default_factory=dict)
    #: Faults to inject, per provider (none by default: the faithful emulator).
    faults: dict[str, FaultRates] = Field(default_factory=dict)
    #: Seeds every fault decision, so that a run meets the same faults again.
    fault_seed: int = 0
    #: Render at most this many distinct pieces of audio (each job's prompt and seed pick
    #: one), cached once rendered, so that the CPU goes to serving rather than to synthesis:
    #: for benchmarks of many jobs. ``None``: every prompt and seed sounds different.
    audio_variants: int | None = Field(default=None, ge=1)
    #: The reading each provider is served in (see :data:`Reading`); ``"*"`` names every
    #: provider not listed by name. Absent: ``strict``.
    readings: dict[str, Reading] = Field(default_factory=dict)

    @field_validator("faults", "readings")
    @classmethod
    def _known_providers(cls, by_provider: dict[str, Any], info: ValidationInfo
                         ) -> dict[str, Any]:
        known = {getattr(m, "PROVIDER", None) for m in provider_modules()}
        if info.field_name == "readings":
            known.add("*")
        unknown = sorted(set(by_provider) - known)
        if unknown:
            raise ValueError(f"no emulated provider named {', '.join(unknown)}")
        return by_provider

    def reading(self, provider: str) -> Reading:
        """The reading ``provider`` is served in."""
        return self.readings.get(provider, self.readings.get("*", "strict"))
