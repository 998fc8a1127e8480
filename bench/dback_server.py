"""Runs the original backend, d-back 0.0.18, for the fan-out benchmark.

Started by bench/fanout.py with the Python of a side virtualenv that has d-back
installed (this file imports nothing from dbackd). Data callbacks are registered so
d-back serves its mock world without starting its per-connection random tasks, which
would add noise. Each line on stdin, "K", makes it broadcast one presence event to
D-World through its own `broadcast_presence`, exactly as a bot embedding it would.
"""
import argparse
import asyncio
import sys

from d_back.mock.data import MockDataProvider
from d_back.server import WebSocketServer

DWORLD = "232769614004748288"
STATUSES = ("online", "idle", "dnd", "offline")


async def main(port: int) -> None:
    server = WebSocketServer(port=port, host="127.0.0.1")
    mock = MockDataProvider(server)

    async def servers():
        return mock.get_mock_server_data()

    async def users(server_id):
        return mock.get_mock_user_data(server_id)

    server.on_get_server_data(servers)
    server.on_get_user_data(users)
    serving = asyncio.ensure_future(server.run_forever())
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            break
        k = int(line)
        await server.broadcast_presence(DWORLD, "123456789012345001", STATUSES[k % 4], username=f"e{k}")
    serving.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(main(parser.parse_args().port))
