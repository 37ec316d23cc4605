"""Logging: one JSON object per line on stdout, for structlog and stdlib loggers alike.

structlog events go through stdlib logging (`structlog.stdlib.LoggerFactory`), so the level is
one stdlib setting that `set_level` (SIGHUP) changes at once for every logger, and stdlib loggers
(aiohttp.access, asyncpg) are rendered by the same `ProcessorFormatter` into the same JSON shape.
Event names are constant snake_case strings; variable data goes in keys. Phone numbers are
masked at info level with `mask_number`.

Tracebacks are rendered as structured frames WITHOUT local variables (`EXCEPTION_RENDERER`):
a frame's locals can hold a secret (an HMAC key, an API key, a password) and a log line is
never the place for one. aiohttp's "Error handling request" records for requests its parser
refuses quote the raw request line or header (a password in a query, a bearer key) in the
exception message; `_ParserErrorFilter` turns them into one `http_request_rejected` event
with the status and the error class only.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import orjson
import structlog
from aiohttp.http_exceptions import HttpProcessingError
from structlog.tracebacks import ExceptionDictTransformer
from structlog.typing import EventDict, Processor, WrappedLogger

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR, "critical": logging.CRITICAL}
# Chatty library loggers stay at warning even when the daemon runs at debug.
_QUIET_LOGGERS = ("asyncio",)
# Exceptions as a list of frames, never with the frames' local variables (which can hold
# secrets); structlog's `dict_tracebacks` default shows them.
EXCEPTION_RENDERER = structlog.processors.ExceptionRenderer(
    ExceptionDictTransformer(show_locals=False))


def _json_dumps(obj: Any, default: Any = None) -> str:
    return orjson.dumps(obj, default=default or str).decode()


class _ContextAdder:
    """Adds the daemon name and instance to every event (structlog and stdlib)."""

    def __init__(self, daemon: str, instance: int) -> None:
        self.daemon = daemon
        self.instance = instance

    def __call__(self, _logger: WrappedLogger, _name: str, event: EventDict) -> EventDict:
        event.setdefault("daemon", self.daemon)
        event.setdefault("instance", self.instance)
        return event


_FIRST_KEYS = ("timestamp", "level", "event", "daemon", "instance", "logger")


def _keys_first(_logger: WrappedLogger, _name: str, event: EventDict) -> EventDict:
    # Readable lines: time, level and event name first, then the event's own keys.
    head = {k: event.pop(k) for k in _FIRST_KEYS if k in event}
    head.update(event)
    return head


def configure_logging(level: str, daemon: str, instance: int) -> None:
    """Route structlog and stdlib logging to stdout as one JSON line per event.

    Call once at start, after the config is loaded. `level` is one of `LEVELS`.
    """
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _ContextAdder(daemon, instance),
    ]
    structlog.configure(
        processors=[structlog.stdlib.filter_by_level, *shared,
                    structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        # ExtraAdder keeps stdlib `extra=` fields (the SMPP session logs connector, error …).
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            EXCEPTION_RENDERER,
            _keys_first,
            structlog.processors.JSONRenderer(serializer=_json_dumps),
        ],
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter)
    handler.addFilter(_ParserErrorFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    set_level(level)


class _ParserErrorFilter(logging.Filter):
    """aiohttp's log of a request its HTTP parser refused (bad header bytes, bad URL): the
    exception's message quotes the raw input, which may carry a credential. Keep the status
    and the error class, drop the message and the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg, record.args = "http_request_rejected", ()
            record.levelno, record.levelname = logging.INFO, "INFO"  # the client's error
            record.exc_info, record.exc_text = None, None
            record.status = getattr(exc, "code", 400)
            record.error = type(exc).__name__
        return True


def set_level(level: str) -> None:
    """Change the level of every logger at once (SIGHUP reload)."""
    logging.getLogger().setLevel(LEVELS[level])


def get_logger(name: str = "smsgw", **bound: Any) -> structlog.stdlib.BoundLogger:
    """A structlog logger with `bound` keys on every event."""
    return structlog.stdlib.get_logger(name).bind(**bound)


def mask_number(number: str | None) -> str | None:
    """Mask the middle of a phone number for info-level logs: `+447911123456` -> `+4479*****456`.

    Keeps the country code and operator prefix (useful for routing questions) and the last
    three digits (enough to tell messages apart in one conversation).
    """
    if not number:
        return number
    if len(number) <= 6:
        return number[:1] + "*" * (len(number) - 1)
    head = 5 if len(number) > 9 else 2
    return number[:head] + "*" * (len(number) - head - 3) + number[-3:]
