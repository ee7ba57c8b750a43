"""The command line's output of the package's log events: one stdlib handler on the
``stableaudio_async`` logger, rendering each event (console or JSON lines) through structlog
processors, known secrets redacted; and the CLI's own events (a run's summary, an error)."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any, TextIO

import structlog

from stableaudio_async.logs import EVENT_ATTRIBUTE, ROOT

__all__ = ["HANDLER_NAME", "REDACTED", "SecretRedactor", "announce", "configure_logging",
           "reset_logging"]

REDACTED = "[REDACTED]"
_SECRET_FIELDS = ("api_key", "apikey", "authorization", "subscription-key", "token", "secret")


class SecretRedactor:
    """A structlog processor that blanks every known secret value, wherever it appears.

    It sees the event after exceptions are formatted, so tracebacks are covered too.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        # Longest first, so a key that contains another is blanked whole.
        self.secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            for secret in self.secrets:
                if secret in value:
                    value = value.replace(secret, REDACTED)
            return value
        if isinstance(value, Mapping):
            return {k: self.scrub(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self.scrub(v) for v in value)
        return value

    def __call__(
        self, logger: Any, method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key in list(event):
            if any(word in key.lower() for word in _SECRET_FIELDS):
                event[key] = REDACTED
            else:
                event[key] = self.scrub(event[key])
        return event


#: The name of the handler the CLI installs on the package's logger (and replaces).
HANDLER_NAME = "stableaudio_async.cli"


def _event_of_record(_: Any, __: str, event_dict: MutableMapping[str, Any]
                     ) -> MutableMapping[str, Any]:
    """The first step for every record: the structured event the package's loggers attach
    (:data:`~stableaudio_async.logs.EVENT_ATTRIBUTE`), copied so that redacting it leaves the
    record as other handlers see it; a record without one keeps its message as its event."""
    event = getattr(event_dict["_record"], EVENT_ATTRIBUTE, None)
    if not isinstance(event, Mapping):
        return event_dict
    carried = {key: event_dict[key] for key in ("_record", "_from_structlog", "exc_info",
                                                "stack_info") if key in event_dict}
    return {**event, **carried}


def configure_logging(*, fmt: str, level: int, secrets: Iterable[str], stream: TextIO) -> None:
    """Console or JSON lines on ``stream``, at ``level``, with ``secrets`` redacted.

    One stdlib handler on the package's logger, which stops propagating so that an
    application's root handlers do not print every event twice. Called again, it replaces
    its handler rather than adding one (see :func:`reset_logging`).
    """
    renderer: structlog.typing.Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty())
    handler = logging.StreamHandler(stream)
    handler.set_name(HANDLER_NAME)
    handler.setLevel(level)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            _event_of_record,
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            SecretRedactor(secrets),
        ],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    ))
    logger = logging.getLogger(ROOT)
    _remove_handler(logger)
    if HANDLER_NAME not in _saved:
        _saved[HANDLER_NAME] = (logger.level, logger.propagate)
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


#: The package logger's level and propagation before the CLI's handler was installed.
_saved: dict[str, tuple[int, bool]] = {}


def _remove_handler(logger: logging.Logger) -> None:
    for handler in [h for h in logger.handlers if h.get_name() == HANDLER_NAME]:
        logger.removeHandler(handler)
        handler.close()


def _cli_handler() -> logging.Handler | None:
    return next((h for h in logging.getLogger(ROOT).handlers if h.get_name() == HANDLER_NAME),
                None)


def reset_logging() -> None:
    """Take the CLI's handler off the package's logger and restore its level and propagation
    (``main`` does on its way out, so that calling it in-process leaves no trace)."""
    logger = logging.getLogger(ROOT)
    _remove_handler(logger)
    if HANDLER_NAME in _saved:
        logger.level, logger.propagate = _saved.pop(HANDLER_NAME)


def announce(event: str, *, level: int = logging.INFO, **fields: Any) -> None:
    """One event of the CLI's own (a run's summary, an error), rendered like the library's
    but at any ``--log-level``: what it says is the run's outcome, not a detail of it."""
    handler = _cli_handler()
    record = logging.getLogger(HANDLER_NAME).makeRecord(
        HANDLER_NAME, level, __file__, 0, event, (), None,
        extra={EVENT_ATTRIBUTE: {"event": event, **fields}})
    if handler is not None:
        handler.handle(record)
    else:  # before logging is configured: the bare JSON line, on stderr
        print(json.dumps({"event": event, **fields}, default=str), file=sys.stderr)
