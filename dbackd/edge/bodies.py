"""Reading an HTTP body (a request's or an answer's) with a size limit, without holding more than the limit.

A declared Content-Length over the limit is refused before anything is read; a body that
grows past it while streaming is refused at that point, and one that does not arrive
within its time is given up. It reads and counts only.
"""
from __future__ import annotations

import asyncio
from typing import Optional

from aiohttp import StreamReader


class TooLarge(ValueError):
    """The body is larger than the limit."""


class TooSlow(ValueError):
    """The body did not arrive within its time."""


async def read_limited(stream: StreamReader, limit: int, declared: Optional[int] = None,
                       timeout: Optional[float] = None) -> bytes:
    if declared is not None and declared > limit:
        raise TooLarge(f"{declared} bytes declared, {limit} allowed")
    if timeout is None:
        return await _read(stream, limit)
    try:
        return await asyncio.wait_for(_read(stream, limit), timeout)
    except asyncio.TimeoutError:
        raise TooSlow(f"not complete after {timeout:g} s") from None


async def _read(stream: StreamReader, limit: int) -> bytes:
    body = bytearray()
    async for chunk in stream.iter_any():
        body += chunk
        if len(body) > limit:
            raise TooLarge(f"more than {limit} bytes")
    return bytes(body)
