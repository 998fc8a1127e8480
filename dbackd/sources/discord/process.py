"""The daemon's side of the gateway worker: start it, feed it its settings, read its records, stop it.

The worker (worker.py) runs discord.py in a process of its own, so its parsing never
holds this interpreter. Records arrive as JSON lines and go to `on_record` in order; a
worker that ends on its own is started again with backoff. The token goes to the worker
on its stdin only. It decides nothing about what records mean.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import sys
from typing import Callable, Optional

import structlog

from dbackd.ops import logs
from dbackd.core.backoff import Backoff
from dbackd.core import tokens
from dbackd.core.tasks import TaskSet
from dbackd.sources.discord import chunks, gateway
from dbackd.sources.discord.gateway import Wants
from dbackd.sources.discord.records import Disconnected, Record, decode

log = structlog.get_logger("dbackd.discord")

STOP_TIMEOUT = 10.0  # seconds the worker gets to close its connection and end
STEADY_RUN = 300.0  # seconds a worker must have run before its next restart is quick again
LINE_LIMIT = 64 * 1024 * 1024  # the longest record line (a snapshot part of 1,000 members is ~0.2 MB)


def next_restart(delay: float, ran_for: float) -> tuple[float, float]:
    """(this wait, the next one) after a worker ended having run `ran_for` seconds.

    Every start identifies, and identifies are a budget: a worker that ends soon after each
    READY must be started less and less often, so only a steady run resets the delay, never
    the records it sent.
    """
    backoff = Backoff(gateway.BACKOFF_FIRST, gateway.BACKOFF_MAX, delay)
    if ran_for >= STEADY_RUN:
        backoff.reset()
    return backoff.next(), backoff.delay


class GatewayProcess:
    def __init__(self, token: str, api_base: str, timeout: float, wants: Wants, on_record: Callable[[Record], None],
                 commands: Optional[dict] = None):
        self.api_base = api_base
        self.commands = commands  # the slash command's words and guilds (command.py), as the worker has them
        self.timeout = timeout
        self.wants = wants
        self._token = token
        self._on_record = on_record
        self._proc: Optional[asyncio.subprocess.Process] = None
        self._tasks = TaskSet("discord.worker")
        self._stopping = False

    def token_differs(self, token: str) -> bool:
        return not hmac.compare_digest(tokens.digest(token), tokens.digest(self._token))

    async def start(self) -> None:
        self._stopping = False
        self._tasks.spawn(self._supervise(), name="dbackd-discord-worker")

    async def _spawn(self) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "dbackd.sources.discord.worker", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, limit=LINE_LIMIT)
        level, fmt = logs.current()
        settings = {"token": self._token, "api_base": self.api_base, "timeout": self.timeout,
                    "messages": self.wants.messages, "content": self.wants.content,
                    # Read now, so a test can make them short for the fake Discord.
                    "identify_delay": gateway.IDENTIFY_DELAY, "guild_ready_timeout": gateway.GUILD_READY_TIMEOUT,
                    "backoff_first": gateway.BACKOFF_FIRST, "chunk_interval": chunks.REQUEST_INTERVAL,
                    "chunk_stall": chunks.STALL, "log_level": level, "log_format": fmt, "commands": self.commands}
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(settings).encode() + b"\n")
        await proc.stdin.drain()
        return proc

    async def _supervise(self) -> None:
        delay = gateway.BACKOFF_FIRST
        loop = asyncio.get_running_loop()
        while not self._stopping:
            started = loop.time()
            proc = self._proc = await self._spawn()
            assert proc.stdout is not None
            while True:
                try:
                    line = await proc.stdout.readline()
                except ValueError:  # a line past LINE_LIMIT: the worker is not itself
                    log.error("discord.worker_bad_output")
                    proc.kill()
                    break
                if not line:
                    break
                try:
                    record = decode(line)
                except ValueError:
                    log.error("discord.worker_bad_output")
                    continue
                self._on_record(record)
            code = await proc.wait()
            if self._stopping:
                return
            log.error("discord.worker_ended", code=code)
            self._on_record(Disconnected("the gateway worker ended"))
            wait, delay = next_restart(delay, loop.time() - started)
            await asyncio.sleep(wait)

    def resync(self) -> None:
        self._command(b"resync")

    def set_commands(self, commands: dict) -> None:
        """The slash command's words or guilds changed: the worker registers them again (a new worker starts with them)."""
        if commands != self.commands:
            self.commands = commands
            self._command(b"commands " + json.dumps(commands).encode())

    def answer(self, ask: str, text: str) -> None:
        self._command(b"answer " + json.dumps({"ask": ask, "text": text}, ensure_ascii=False).encode())

    def _command(self, line: bytes) -> None:
        proc = self._proc
        if proc is not None and proc.stdin is not None and not proc.stdin.is_closing():
            proc.stdin.write(line + b"\n")

    async def stop(self) -> None:
        """Ask the worker to close its connection and end; kill it if it does not in time."""
        self._stopping = True
        proc = self._proc
        if proc is not None and proc.returncode is None:
            self._command(b"stop")
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
            except asyncio.TimeoutError:
                log.warning("discord.worker_killed", after_seconds=STOP_TIMEOUT)
                proc.kill()
                await proc.wait()
        await self._tasks.cancel()
