"""One adapter per provider, looked up by name.

A provider is a module in this package defining one :class:`Adapter` subclass; the registry
below finds them all, so adding a provider touches no other file.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

from stableaudio_async.errors import ConfigError
from stableaudio_async.providers.base import Adapter, HttpReply, HttpRequest, ModelSpec, Range

__all__ = ["ADAPTERS", "Adapter", "HttpReply", "HttpRequest", "ModelSpec", "Range", "adapter_class"]


def _discover() -> dict[str, type[Adapter]]:
    found: dict[str, type[Adapter]] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name == "base":
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, Adapter) and cls.__module__ == module.__name__ \
                    and not inspect.isabstract(cls):
                found[cls.name] = cls
    return found


#: Every provider the engine speaks, by the name used in jobs and configs.
ADAPTERS: dict[str, type[Adapter]] = _discover()


def adapter_class(name: str) -> type[Adapter]:
    """The adapter for provider ``name``, or a :class:`ConfigError` naming the known ones."""
    try:
        return ADAPTERS[name]
    except KeyError:
        known = ", ".join(sorted(ADAPTERS))
        raise ConfigError(f"unknown provider {name!r} (known: {known})") from None
