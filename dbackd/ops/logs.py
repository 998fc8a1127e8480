"""Logging setup: structlog, one event per meaningful thing, key=value.

Readable on a terminal, JSON lines otherwise (journald, files, pipes). A redaction
step runs before rendering so no token, password or secret value ever reaches a line.
Records of the libraries that log through the standard logging module (aiohttp,
asyncio) are rendered the same way, after a filter that reshapes them: a malformed
request is named by its kind (aiohttp quotes the offending header line, which can hold
a token), credentials in their text are cut out, and a record repeated within a minute
is written once with a count (a refused accept can repeat a thousand times a second).
Every line is bounded (`MAX_LINE`) and written with one write, so the workers of
`workers: N`, which share one stderr, never interleave inside a line.
It configures logging only; it decides nothing about what is logged.
"""
from __future__ import annotations

import asyncio
import logging
import re
import sys
import traceback
from typing import Any, MutableMapping, Optional, TextIO

import structlog

from dbackd.core.rates import Tallies, Tally

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
_SECRET_KEY = re.compile(r"token|password|secret|authorization|cookie", re.IGNORECASE)
REDACTED = "[redacted]"
_current = ("info", "json")  # what configure() last chose: (level, format)


def current() -> tuple[str, str]:
    """The level and format (console or json) logging was last configured with, for a child process."""
    return _current

# Credentials inside free text: a header line or a scheme and its token.
_SECRET_TEXT = re.compile(
    r"((?:authorization|proxy-authorization|cookie|set-cookie|x-api-key)\s*[:=]\s*)[^\r\n'\"]*"
    r"|((?:bearer|bot|basic)\s+)[A-Za-z0-9\-._~+/=%]+",
    re.IGNORECASE,
)
MAX_LINE = 4000  # bytes of one line: a pipe takes a write of up to PIPE_BUF (4096) whole
MAX_FIELD = 300  # characters kept of a text field of a record that was too long
MAX_ITEMS = 10  # items kept of a list field of a record that was too long
MAX_TRACE = 1500  # characters kept of a traceback (its end, where the error is)
_ESSENTIAL = ("event", "level", "timestamp", "logger", "worker", "conn", "server", "error")
FOREIGN_WINDOW = 60.0  # seconds in which a repeated library record is written once
_MAX_TALLIES = 256  # distinct library messages remembered for that


def scrub(text: str) -> str:
    """Free text with every credential it seems to carry replaced."""
    return _SECRET_TEXT.sub(lambda m: (m.group(1) or m.group(2)) + REDACTED, text)


def _malformed_request(exc: Optional[BaseException]) -> bool:
    """aiohttp's error for a request it could not parse (which exists only once aiohttp is loaded)."""
    module = sys.modules.get("aiohttp.http_exceptions")
    return module is not None and isinstance(exc, module.HttpProcessingError)


class ForeignRecords(logging.Filter):
    """Makes the records of other libraries safe to write (see the module's docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self._tallies: dict[tuple[str, str], Tally] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if _malformed_request(exc):
            text, trace = f"malformed HTTP request ({type(exc).__name__}, status {exc.code})", ""
        else:
            text = record.getMessage()
            trace = "".join(traceback.format_exception(*record.exc_info)) if record.exc_info else ""
        key = (record.name, str(record.msg)[:200])
        tally = self._tallies.get(key)
        if tally is None:
            if len(self._tallies) >= _MAX_TALLIES:
                self._tallies.clear()
            tally = self._tallies[key] = Tally(FOREIGN_WINDOW)
        count = tally.note(record.created)
        if not count:
            return False
        if count > 1:
            text += f" ({count} times in the last minute)"
        record.msg = scrub(text + ("\n" + trace.rstrip() if trace else ""))
        record.args = ()
        record.exc_info = None
        record.exc_text = None
        return True


def _foreign_fields(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    record = event.get("_record")
    if record is not None:
        event["logger"] = record.name
    return event


def redact(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Replace the value of any field whose name suggests a secret."""
    for key in list(event):
        if key != "event" and _SECRET_KEY.search(key):
            event[key] = REDACTED
    return event


def _shorten(key: str, value: Any) -> Any:
    if key == "exception" and isinstance(value, str):
        return "..." + value[-MAX_TRACE:] if len(value) > MAX_TRACE else value
    if isinstance(value, str) and len(value) > MAX_FIELD:
        return f"{value[:MAX_FIELD]}...(+{len(value) - MAX_FIELD} chars)"
    if isinstance(value, (list, tuple)):
        items = [_shorten("", v) for v in value[:MAX_ITEMS]]
        return items + [f"...(+{len(value) - MAX_ITEMS} more)"] if len(value) > MAX_ITEMS else items
    if isinstance(value, dict) and len(repr(value)) > MAX_FIELD:
        return _shorten("", repr(value))
    return value


def bounded(renderer: Any) -> Any:
    """`renderer`, with a record whose line would pass MAX_LINE shortened field by field,
    then cut to its essential fields, and marked `truncated=true`."""

    def render(logger: Any, method: str, event: MutableMapping[str, Any]) -> Any:
        line = renderer(logger, method, dict(event))  # the console renderer pops what it shows
        if len(line.encode("utf-8", "replace")) <= MAX_LINE:
            return line
        short = {key: _shorten(key, value) for key, value in event.items()}
        short["truncated"] = True
        line = renderer(logger, method, dict(short))
        if len(line.encode("utf-8", "replace")) <= MAX_LINE:
            return line
        essential = {key: short[key] for key in (*_ESSENTIAL, "exception") if key in short}
        essential["truncated"] = True
        return renderer(logger, method, essential)

    return render


def configure(level: str = "info", fmt: str = "auto", stream: Optional[TextIO] = None) -> None:
    global _current
    stream = stream or sys.stderr
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    _current = (level, fmt)
    renderer: Any
    if fmt == "json":
        renderer = bounded(structlog.processors.JSONRenderer())
    else:
        renderer = bounded(structlog.dev.ConsoleRenderer(colors=stream.isatty()))
    stamp = structlog.processors.TimeStamper(fmt="iso", utc=True)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            stamp,
            redact,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=structlog.WriteLoggerFactory(stream),  # the line and its newline in one write
        cache_logger_on_first_use=False,
    )
    # Libraries that use the standard logging module (aiohttp, asyncio) go to the same stream,
    # in the same format, through the filter that makes them safe.
    handler = logging.StreamHandler(stream)
    handler.addFilter(ForeignRecords())
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        foreign_pre_chain=[structlog.stdlib.add_log_level, stamp, _foreign_fields, redact],
    ))
    logging.basicConfig(handlers=[handler], level=max(LEVELS[level], logging.WARNING), force=True)


class PerAddress:
    """Lines that repeat for one client address (a socket opened, joined, closed, refused, an
    HTTP error): the first of each minute per address and event is written, with `count`, how
    many there were since the last one written; the rest are counted. A client reconnecting
    as fast as it can writes one line a minute, not three per socket."""

    def __init__(self, logger: Any, window: float = 60.0):
        self.logger = logger
        self._tallies = Tallies(window)

    def info(self, event: str, address: Optional[str], **fields: Any) -> None:
        count = self._tallies.note((address, event), asyncio.get_running_loop().time())
        if count:
            self.logger.info(event, peer=address, count=count, **fields)
