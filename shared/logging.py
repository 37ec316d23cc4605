"""Logging: one JSON object per line on stdout, for structlog and stdlib loggers alike.

structlog events go through stdlib logging (`structlog.stdlib.LoggerFactory`), so the level is
one stdlib setting that `set_level` (SIGHUP) changes at once for every logger, and stdlib loggers
(aiohttp.access, asyncpg) are rendered by the same `ProcessorFormatter` into the same JSON shape.
Event names are constant snake_case strings; variable data goes in keys. Phone numbers are
masked at info level with `mask_number`.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import orjson
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR, "critical": logging.CRITICAL}
# Chatty library loggers stay at warning even when the daemon runs at debug.
_QUIET_LOGGERS = ("asyncio",)


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
            structlog.processors.dict_tracebacks,
            _keys_first,
            structlog.processors.JSONRenderer(serializer=_json_dumps),
        ],
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    set_level(level)


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
