"""Log lines: bounded in size, one write each, whatever a record carries."""
from __future__ import annotations

import io
import json
import logging

import structlog

from dbackd.ops import logs


class Writes(io.StringIO):
    """A stream that remembers each write() it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def write(self, text: str) -> int:
        self.calls.append(text)
        return super().write(text)


def test_a_huge_record_is_one_bounded_line_that_keeps_its_event(captured_logs):
    log = structlog.get_logger("dbackd.test")
    log.error("reload.failed", config="/etc/dbackd/dback.yaml", errors=["x" * 5000] * 200, detail="y" * 100_000,
              worker=1)
    (line,) = captured_logs.getvalue().splitlines()
    assert len(line.encode()) <= logs.MAX_LINE
    record = json.loads(line)
    assert record["event"] == "reload.failed" and record["worker"] == 1 and record["truncated"] is True
    assert record["errors"][-1] == "...(+190 more)" and record["errors"][0].endswith("...(+4700 chars)")


def test_a_record_that_fits_is_written_as_it_is(captured_logs):
    structlog.get_logger("dbackd.test").info("socket.opened", conn=7, peer="127.0.0.1", note="z" * 2000)
    record = json.loads(captured_logs.getvalue())
    assert record["note"] == "z" * 2000 and "truncated" not in record


def test_a_long_traceback_keeps_its_end():
    stream = io.StringIO()
    try:
        logs.configure("info", "json", stream)

        def deep(n: int) -> None:
            if n == 0:
                raise RuntimeError("the actual problem")
            deep(n - 1)

        try:
            deep(300)
        except RuntimeError:
            structlog.get_logger("dbackd.test").exception("service.failed", service="x" * 5000)
    finally:
        structlog.reset_defaults()
    record = json.loads(stream.getvalue())
    assert record["truncated"] is True and record["exception"].endswith("RuntimeError: the actual problem")
    assert len(stream.getvalue().encode()) <= logs.MAX_LINE + 1


def test_every_line_is_a_single_write_in_both_formats():
    for fmt in ("json", "console"):
        stream = Writes()
        root = logging.getLogger()
        handlers, level = root.handlers[:], root.level
        try:
            logs.configure("info", fmt, stream)
            structlog.get_logger("dbackd.test").info("reload.applied", changes=["~ server a"] * 50)
            structlog.get_logger("dbackd.test").warning("big", text="w" * 50_000)
            logging.getLogger("aiohttp.server").error("Error handling request: %s", "v" * 50_000)
        finally:
            structlog.reset_defaults()
            root.handlers[:] = handlers
            root.setLevel(level)
        lines = [c for c in stream.calls if c]
        assert len(lines) == 3, (fmt, lines)
        assert all(c.endswith("\n") and c.count("\n") == 1 and len(c.encode()) <= logs.MAX_LINE + 1
                   for c in lines), fmt
