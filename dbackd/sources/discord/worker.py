"""The gateway worker: `python -m dbackd.sources.discord.worker`, a process the Discord source starts.

Reads its settings as one JSON line on stdin (the bot token included: never on the
command line, never in the environment), runs one gateway connection (gateway.py), and
writes each record as a line of JSON on stdout. Later lines on stdin are commands:
`resync` (send every guild again, whole), `answer {...}` (the reply to a slash command's use),
`commands {...}` (the slash command's words and guilds changed) and `stop`; the end of stdin also stops it. Its
own log lines go to stderr, as the daemon's do. It touches nothing but its pipes.
"""
from __future__ import annotations

import asyncio
import json
import sys

import structlog

from dbackd.ops import logs
from dbackd.sources.discord.gateway import Gateway, Wants
from dbackd.sources.discord.records import Record, encode

log = structlog.get_logger("dbackd.discord")


async def main() -> int:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    settings = json.loads(await reader.readline())
    logs.configure(settings.get("log_level", "info"), settings.get("log_format", "json"))
    out = sys.stdout.buffer

    def post(record: Record) -> None:
        # A blocking write is right here: the daemon reads the pipe without pause, and a full
        # pipe means it is the one to catch up.
        out.write(encode(record))
        out.flush()

    gateway = Gateway(settings["token"], settings["api_base"], settings["timeout"],
                      Wants(settings["messages"], settings["content"]), post,
                      identify_delay=settings["identify_delay"], guild_ready_timeout=settings["guild_ready_timeout"],
                      backoff_first=settings["backoff_first"], chunk_interval=settings["chunk_interval"],
                      chunk_stall=settings["chunk_stall"], commands=settings.get("commands"))
    run = asyncio.ensure_future(gateway.run())

    async def commands() -> None:
        while True:
            line = (await reader.readline()).strip()
            word, _, rest = line.partition(b" ")
            if line == b"resync":
                await gateway.resync()
            elif word == b"answer":
                ask = json.loads(rest)
                gateway.slash.answer(ask["ask"], ask["text"])
            elif word == b"commands":
                await gateway.slash.change(json.loads(rest))
            elif line in (b"stop", b""):
                await gateway.stop()
                return

    listen = asyncio.ensure_future(commands())
    await asyncio.wait({run, listen}, return_when=asyncio.FIRST_COMPLETED)
    await gateway.stop()
    await asyncio.wait({run}, timeout=10)
    listen.cancel()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main()))
    except (BrokenPipeError, KeyboardInterrupt):  # the daemon went away: nothing left to tell
        sys.exit(0)
