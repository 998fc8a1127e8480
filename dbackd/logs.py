"""Logging setup: structlog, one event per meaningful thing, key=value.

Readable on a terminal, JSON lines otherwise (journald, files, pipes). A redaction
step runs before rendering so no token, password or secret value ever reaches a line.
It configures logging only; it decides nothing about what is logged.
"""
from __future__ import annotations

import logging
import re
import sys
from typing import Any, MutableMapping, Optional, TextIO

import structlog

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
_SECRET_KEY = re.compile(r"token|password|secret|authorization|cookie", re.IGNORECASE)
REDACTED = "[redacted]"
_current = ("info", "json")  # what configure() last chose: (level, format)


def current() -> tuple[str, str]:
    """The level and format (console or json) logging was last configured with, for a child process."""
    return _current


def redact(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Replace the value of any field whose name suggests a secret."""
    for key in list(event):
        if key != "event" and _SECRET_KEY.search(key):
            event[key] = REDACTED
    return event


def configure(level: str = "info", fmt: str = "auto", stream: Optional[TextIO] = None) -> None:
    global _current
    stream = stream or sys.stderr
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    _current = (level, fmt)
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
    # Libraries that use the standard logging module (aiohttp, asyncio) go to the same stream.
    logging.basicConfig(stream=stream, level=max(LEVELS[level], logging.WARNING), force=True,
                        format="%(levelname)s %(name)s: %(message)s")
