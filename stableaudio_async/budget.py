"""Money: what a job costs in US dollars, estimates for ``--dry-run``, and the ``--max-cost`` cap."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from stableaudio_async.config import Settings
from stableaudio_async.models import Job
from stableaudio_async.providers import adapter_class

__all__ = ["USD_PER_UNIT", "Budget", "Estimate", "estimate", "price_usd"]

#: What one unit of each provider's currency costs in dollars (Stability sells 1,000 credits
#: for $10).
USD_PER_UNIT = {"usd": 1.0, "credits": 0.01}


def price_usd(job: Job, settings: Settings) -> float | None:
    """The job's price in dollars: the configured ``price_usd``, else the published one."""
    configured = settings.providers.get(job.provider)
    if configured is not None and configured.price_usd is not None:
        return configured.price_usd
    if configured is None:
        return None
    # Pricing reads only the job and the adapter's tables: no key is needed to ask.
    published = adapter_class(job.provider)(configured, api_key="").cost(job)
    if published is None:
        return None
    amount, unit = published
    return amount * USD_PER_UNIT[unit] if unit in USD_PER_UNIT else None


@dataclass(frozen=True)
class Estimate:
    """What a batch would cost: per provider, the jobs, their known total, and unpriced jobs."""

    jobs: dict[str, int]
    usd: dict[str, float]
    unpriced: dict[str, int]

    @property
    def total_usd(self) -> float:
        """The known part of the cost, all providers together."""
        return sum(self.usd.values())


def estimate(jobs: Iterable[Job], settings: Settings) -> Estimate:
    """Add up the price of ``jobs`` per provider (jobs without a known price are counted apart)."""
    counts: dict[str, int] = {}
    usd: dict[str, float] = {}
    unpriced: dict[str, int] = {}
    for job in jobs:
        counts[job.provider] = counts.get(job.provider, 0) + 1
        price = price_usd(job, settings)
        if price is None:
            unpriced[job.provider] = unpriced.get(job.provider, 0) + 1
        else:
            usd[job.provider] = usd.get(job.provider, 0.0) + price
    return Estimate(counts, usd, unpriced)


class Budget:
    """A spending cap: a job is only submitted if spent plus in-flight plus its price fits.

    Single-threaded (one event loop), so plain arithmetic is atomic between awaits.
    """

    def __init__(self, cap_usd: float, *, spent_usd: float = 0.0) -> None:
        self.cap_usd = cap_usd
        self.spent_usd = spent_usd
        self.in_flight_usd = 0.0

    def reserve(self, price: float) -> bool:
        """Set ``price`` aside for a submit; False (and nothing reserved) if it would not fit."""
        if self.spent_usd + self.in_flight_usd + price > self.cap_usd + 1e-9:
            return False
        self.in_flight_usd += price
        return True

    def settle(self, reserved: float, charged: float) -> None:
        """The submit ended: release what was set aside and add what was really charged."""
        self.in_flight_usd = max(0.0, self.in_flight_usd - reserved)
        self.spent_usd += charged
