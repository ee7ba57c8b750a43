"""One adapter per provider, looked up by name."""

from __future__ import annotations

from stableaudio_async.errors import ConfigError
from stableaudio_async.providers.base import Adapter, HttpReply, HttpRequest, ModelSpec, Range
from stableaudio_async.providers.pixazo import PixazoAdapter
from stableaudio_async.providers.stability import StabilityAdapter

__all__ = ["ADAPTERS", "Adapter", "HttpReply", "HttpRequest", "ModelSpec", "Range", "adapter_class"]

#: Every provider the engine speaks, by the name used in jobs and configs.
ADAPTERS: dict[str, type[Adapter]] = {
    cls.name: cls for cls in (PixazoAdapter, StabilityAdapter)
}


def adapter_class(name: str) -> type[Adapter]:
    """The adapter for provider ``name``, or a :class:`ConfigError` naming the known ones."""
    try:
        return ADAPTERS[name]
    except KeyError:
        known = ", ".join(sorted(ADAPTERS))
        raise ConfigError(f"unknown provider {name!r} (known: {known})") from None
