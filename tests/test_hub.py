"""The hub's fan-out: one encode per broadcast, order kept, slow clients dropped alone."""
from __future__ import annotations

import asyncio
import base64
import os
import socket

import aiohttp

from dbackd.fanout import protocol
from dbackd.config import load_text

from .conftest import ROOT, RECV_TIMEOUT

CONFIG = """
servers:
  - snowflake: "1"
    id: a
    name: A
    default: true
    users: [{uid: "11", username: x}, {uid: "12", username: y}]
  - {snowflake: "2", id: b, name: B, users: [{uid: "21", username: z}]}
limits: {send_buffer_bytes: 262144}
"""


async def test_one_encode_per_broadcast(start_daemon, open_client, monkeypatch):
    d = await start_daemon(text=CONFIG)
    clients = [await open_client(d) for _ in range(5)]
    for c in clients:
        await c.connect("a")
    calls = []
    real = protocol.encode
    monkeypatch.setattr(protocol, "encode", lambda m: calls.append(m) or real(m))
    d.world.set_presence("a", "11", "idle")
    assert len(calls) == 1
    for c in clients:
        assert (await c.recv_type("presence"))["data"] == {"uid": "11", "status": "idle"}


async def test_join_reencodes_only_changed_users(start_daemon, open_client, monkeypatch):
    d = await start_daemon(text=CONFIG)
    first = await open_client(d)
    await first.connect("a")
    state = d.world.servers["1"]
    cached = d.hub.joins.messages(state, "a")
    assert d.hub.joins.messages(state, "a") == cached  # nothing changed: the same frame
    d.world.set_presence("a", "12", "dnd")
    calls = []
    real = protocol.encode
    monkeypatch.setattr(protocol, "encode", lambda m: calls.append(m) or real(m))
    late = await open_client(d)
    users = (await late.connect("a"))["data"]["users"]
    assert users["12"]["status"] == "dnd" and users["11"]["status"] == "online"
    encoded_users = [c for c in calls if "type" not in c and "request" not in c]
    assert encoded_users == [{"12": {"uid": "12", "username": "y", "status": "dnd", "roleColor": "#ffffff"}}]


async def test_order_is_kept_per_socket(start_daemon, open_client):
    d = await start_daemon(text=CONFIG)
    a, b = await open_client(d), await open_client(d)
    await a.connect("a")
    await b.connect("a")
    for i in range(500):
        d.world.say("a", "11", str(i), "c")
    for c in (a, b):
        assert [(await c.recv())["data"]["message"] for _ in range(500)] == [str(i) for i in range(500)]


async def raw_joined_socket(port: int) -> socket.socket:
    """A client that joins and then never reads: a tiny receive buffer, as a stalled browser."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    await loop.sock_sendall(sock, (
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    payload = b'{"type":"connect","data":{"server":"a"}}'
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    await loop.sock_sendall(sock, bytes([0x81, 0x80 | len(payload)]) + mask + masked)
    return sock


async def test_slow_consumer_is_dropped_and_others_are_unaffected(start_daemon, open_client):
    d = await start_daemon(text=CONFIG)
    fast = await open_client(d)
    await fast.connect("a")
    stalled = await raw_joined_socket(d.port)

    async def members() -> None:
        while len(d.hub.members.get("1", ())) < 2:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(members(), RECV_TIMEOUT)
    text = "x" * 60000
    received = 0
    for i in range(300):  # ~18 MB to each member: more than kernel buffers plus the limit
        d.world.say("a", "11", f"{i}:{text}", "c")
        msg = await fast.recv()  # the fast client keeps up, event by event
        assert msg["data"]["message"].startswith(f"{i}:")
        received += 1
    assert received == 300
    assert d.hub.slow_dropped == 1
    assert d.hub.count("1") == 1  # only the fast client is still a member
    # The stalled socket is closed: it is aborted after the grace period, at the latest.
    loop = asyncio.get_running_loop()

    async def closed() -> None:
        while True:
            data = await loop.sock_recv(stalled, 1 << 20)
            if not data:
                return

    await asyncio.wait_for(closed(), RECV_TIMEOUT)
    stalled.close()


async def test_server_isolation(start_daemon, open_client):
    d = await start_daemon(text=CONFIG)
    on_a, on_b = await open_client(d), await open_client(d)
    await on_a.connect("a")
    await on_b.connect("b")
    d.world.set_presence("b", "21", "dnd")
    assert (await on_b.recv_type("presence"))["server"] == "2"
    await on_a.assert_quiet()


async def test_compression_is_a_config_choice(start_daemon, http):
    d = await start_daemon(load_text(CONFIG + "websocket: {compression: true}\n", "t.yaml", ROOT))
    async with http.ws_connect(f"http://127.0.0.1:{d.port}/ws", compress=15) as ws:
        assert ws.compress == 15  # negotiated permessage-deflate
        assert (await ws.receive_json(timeout=RECV_TIMEOUT))["type"] == "server-list"
        await ws.send_json({"type": "connect", "data": {"server": "a"}})
        assert (await ws.receive_json(timeout=RECV_TIMEOUT))["type"] == "server-join"
        for i in range(50):
            d.world.say("a", "11", f"hello {i}", "c")
        got = [(await ws.receive_json(timeout=RECV_TIMEOUT))["data"]["message"] for _ in range(50)]
        assert got == [f"hello {i}" for i in range(50)]
    off = await start_daemon(text=CONFIG)
    async with http.ws_connect(f"http://127.0.0.1:{off.port}/ws", compress=15) as ws:
        assert not ws.compress  # off by default: the offer is declined


async def test_events_before_a_switch_arrive_before_the_new_join(start_daemon, open_client):
    d = await start_daemon(text=CONFIG)
    mover = await open_client(d)
    await mover.connect("a")
    d.world.say("a", "11", "said while a member", "c")  # queued until the end of this iteration
    await mover.send({"type": "connect", "data": {"server": "b"}})
    assert (await mover.recv_type("message"))["data"]["message"] == "said while a member"
    assert (await mover.recv_type("server-join"))["data"]["serverName"] == "B"
    d.world.say("a", "11", "said after it left", "c")
    await mover.assert_quiet()


async def test_many_events_in_one_iteration_are_one_write_per_socket(start_daemon, open_client, monkeypatch):
    d = await start_daemon(text=CONFIG)
    clients = [await open_client(d) for _ in range(3)]
    for c in clients:
        await c.connect("a")
    writes = []
    for conn in d.hub.connections:
        real = conn.wire.transport.write
        monkeypatch.setattr(conn.wire.transport, "write", lambda data, real=real: writes.append(data) or real(data))
    for i in range(10):
        d.world.say("a", "11", str(i), "c")
    for c in clients:
        assert [(await c.recv())["data"]["message"] for _ in range(10)] == [str(i) for i in range(10)]
    assert len(writes) == 3


async def test_heartbeat_pings_and_drops_the_silent(start_daemon, open_client):
    d = await start_daemon(text=CONFIG)
    alive = await open_client(d)  # aiohttp's client answers pings by itself
    await alive.connect("a")
    silent = await raw_joined_socket(d.port)  # never reads, never answers

    async def joined() -> None:
        while d.hub.count("1") < 2:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(joined(), RECV_TIMEOUT)
    loop = asyncio.get_running_loop()
    port = silent.getsockname()[1]
    quiet_one = next(c for c in d.hub.connections if c.wire.transport.get_extra_info("peername")[1] == port)
    # Everybody was heard from just now: a ping for all, nobody dropped.
    assert d.hub.heartbeat(loop.time(), 30) == 0
    await alive.assert_quiet()  # the ping was answered with a pong (not surfaced), then the probe
    # Time passes for the silent socket only (its last frame was long ago): it goes, alone.
    quiet_one.last_seen -= 3 * 30 + 1
    assert d.hub.heartbeat(loop.time(), 30) == 1
    assert d.hub.count("1") == 1 and not quiet_one.open
    d.world.say("a", "11", "still here", "c")
    assert (await alive.recv_type("message"))["data"]["message"] == "still here"
    data = b""
    while b"\x88\x13\x03\xe9no answer to ping" not in data:  # close 1001, after the frames sent before it
        chunk = await asyncio.wait_for(loop.sock_recv(silent, 1 << 20), RECV_TIMEOUT)
        assert chunk, "closed without a close frame"
        data += chunk
    silent.close()


async def test_a_client_ping_gets_a_pong(start_daemon, http):
    d = await start_daemon(text=CONFIG)
    async with http.ws_connect(f"http://127.0.0.1:{d.port}/ws", autoping=False) as ws:
        assert (await ws.receive_json(timeout=RECV_TIMEOUT))["type"] == "server-list"
        await ws.ping(b"hello")
        msg = await ws.receive(timeout=RECV_TIMEOUT)
        assert msg.type == aiohttp.WSMsgType.PONG and msg.data == b"hello"


async def test_heartbeat_service_pings_on_its_interval(start_daemon, http):
    d = await start_daemon(load_text(CONFIG.replace("send_buffer_bytes: 262144", "send_buffer_bytes: 262144, heartbeat: 0.05"),
                                     "t.yaml", ROOT))
    async with http.ws_connect(f"http://127.0.0.1:{d.port}/ws", autoping=False) as ws:
        assert (await ws.receive_json(timeout=RECV_TIMEOUT))["type"] == "server-list"
        msg = await ws.receive(timeout=RECV_TIMEOUT)
        assert msg.type == aiohttp.WSMsgType.PING
