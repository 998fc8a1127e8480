"""A real redis-server on loopback for the cluster tests: started, stopped and started again by a test.

Uses Debian's `redis-server` (`.ci/run` installs it); without it the cluster tests are
skipped with that reason. No persistence: a restart is a Redis that lost its data.
"""
from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import tempfile
from typing import Optional

import pytest

BINARY = shutil.which("redis-server")
START_TIMEOUT = 10.0


def need_redis() -> None:
    if BINARY is None:
        pytest.skip("the cluster tests need a real Redis: install Debian's redis-server (apt-get install redis-server)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    def __init__(self) -> None:
        need_redis()
        self.port = _free_port()
        self.dir = tempfile.mkdtemp(prefix="dbackd-redis-")
        self.proc: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        assert BINARY is not None
        self.proc = subprocess.Popen([BINARY, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", self.dir, "--protected-mode", "no"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        await self._until_answering()

    async def _until_answering(self) -> None:
        """Until the server answers PING (it takes a few milliseconds to start)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT
        while True:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.write(b"PING\r\n")
                answer = await asyncio.wait_for(reader.readline(), 1)
                writer.close()
                if answer.startswith(b"+PONG"):
                    return
            except OSError:
                pass
            assert loop.time() < deadline, "redis-server did not start"
            assert self.proc is not None and self.proc.poll() is None, "redis-server exited"
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            await asyncio.get_running_loop().run_in_executor(None, self.proc.wait)
        self.proc = None

    async def restart(self) -> None:
        await self.stop()
        await self.start()
