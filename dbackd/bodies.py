"""Reading an HTTP body (a request's or an answer's) with a size limit, without holding more than the limit.

A declared Content-Length over the limit is refused before anything is read; a body that
grows past it while streaming is refused at that point. It reads and counts only.
"""
from __future__ import annotations

from typing import Optional

from aiohttp import StreamReader


class TooLarge(ValueError):
    """The body is larger than the limit."""


async def read_limited(stream: StreamReader, limit: int, declared: Optional[int] = None) -> bytes:
    if declared is not None and declared > limit:
        raise TooLarge(f"{declared} bytes declared, {limit} allowed")
    body = bytearray()
    async for chunk in stream.iter_any():
        body += chunk
        if len(body) > limit:
            raise TooLarge(f"more than {limit} bytes")
    return bytes(body)
