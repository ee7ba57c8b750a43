"""The package's loggers: structlog bound loggers on top of the standard library's ``logging``.

A library does not decide where its logs go. Every event is handed to the stdlib logger of
its module, under ``stableaudio_async``, which has a :class:`logging.NullHandler` and nothing
else: with no logging configured by the application nothing is printed, not even warnings
(``logging.lastResort`` is never reached), and ``logging.getLogger("stableaudio_async")``
filters and routes them like any other library's. The same as httpx and aiohttp do.

The loggers never touch structlog's global configuration, so an application's own
``structlog.configure`` neither breaks nor is broken by them. Each record carries:

- as its message, the event name followed by its fields as ``key=value``, readable under a
  plain ``logging.basicConfig()``;
- as the attribute ``stableaudio``, the event as a dict (``{"event": "job.completed",
  "job_id": ..., ...}``), for handlers that render structure (the CLI's console and JSON
  output read it).
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

import structlog

__all__ = ["EVENT_ATTRIBUTE", "ROOT", "Logger", "get_logger"]

#: The logger every module of the package logs under.
ROOT = "stableaudio_async"
#: The :class:`logging.LogRecord` attribute that holds the structured event.
EVENT_ATTRIBUTE = "stableaudio"

Logger = structlog.stdlib.BoundLogger

logging.getLogger(ROOT).addHandler(logging.NullHandler())

#: Keyword arguments of the stdlib logging methods, passed as such rather than as fields.
_KWARGS = ("exc_info", "stack_info", "stacklevel")


def _field(value: Any) -> str:
    text = str(value)
    return repr(text) if not text or any(c.isspace() or c in "=\"'" for c in text) else text


def _to_stdlib(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> dict[str, Any]:
    """The last processor: the event as a stdlib logging call's arguments."""
    kwargs = {kw: event_dict.pop(kw) for kw in _KWARGS if kw in event_dict}
    event = dict(event_dict)
    name = str(event.get("event", ""))
    fields = " ".join(f"{key}={_field(value)}" for key, value in event.items() if key != "event")
    return {"msg": f"{name} {fields}" if fields else name, "extra": {EVENT_ATTRIBUTE: event},
            **kwargs}


_PROCESSORS = [structlog.stdlib.filter_by_level, _to_stdlib]


def get_logger(name: str) -> Logger:
    """The bound logger of module ``name`` (a stdlib logger of the same name underneath)."""
    logger: Logger = structlog.wrap_logger(
        logging.getLogger(name), processors=_PROCESSORS, wrapper_class=structlog.stdlib.BoundLogger)
    return logger
