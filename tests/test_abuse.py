"""One abusive client costs that client only: rates per socket, yielding between frames, quiet logs, fuzzed frames."""
from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dbackd.fanout import protocol
from dbackd.config import load_text
from dbackd.daemon import Daemon
from dbackd.sources.simulation import ManualClock

from .conftest import RECV_TIMEOUT, ROOT, Client, events
from .test_wire import RawClient

BASE = """
servers:
  - {snowflake: "1", id: a, name: A, default: true, users: [{uid: "11", username: x}]}
  - snowflake: "2"
    id: big
    name: Big
    simulation: {generate: {count: 2000}, presence: {interval: 0}, messages: {interval: 0}}
  - {snowflake: "3", id: priv, name: Private, passworded: true, password: hunter2}
"""


def with_limits(**limits) -> str:
    return BASE + "limits: " + json.dumps(limits) + "\n"


async def closed(client: Client) -> tuple[list[dict], int]:
    """Every text frame until the server closes the socket, and the close code."""
    frames = []
    while True:
        msg = await asyncio.wait_for(client.ws.receive(), RECV_TIMEOUT)
        if msg.type == aiohttp.WSMsgType.TEXT:
            frames.append(json.loads(msg.data))
        elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
            return frames, client.ws.close_code


async def test_a_flood_gets_one_error_then_1008(start_daemon, open_client):
    d = await start_daemon(text=with_limits(frames_per_second=1, frames_burst=5))
    flooder = await open_client(d)
    for _ in range(20):
        await flooder.send("junk")
    frames, code = await closed(flooder)
    assert frames == [protocol.error(protocol.INVALID_JSON)] * 5 + [protocol.error(protocol.TOO_FAST)]
    assert code == 1008
    other = await open_client(d)  # the next socket is its own
    assert (await other.connect("a"))["type"] == "server-join"


async def test_joins_past_their_rate_are_refused_not_carried_out(start_daemon, open_client):
    d = await start_daemon(text=with_limits(joins_per_second=0.01, joins_burst=3))
    client = await open_client(d)
    for _ in range(3):
        assert (await client.connect("big"))["type"] == "server-join"
    assert await client.connect("big") == protocol.error(protocol.TOO_MANY_JOINS)
    assert await client.connect("a") == protocol.error(protocol.TOO_MANY_JOINS)
    await client.assert_quiet()  # the socket stays open


async def test_repeated_bad_input_is_one_log_line_a_minute_with_a_count(start_daemon, open_client, captured_logs):
    d = await start_daemon(text=with_limits(frames_burst=1000))
    client = await open_client(d)
    for _ in range(200):
        await client.send("junk")
    for _ in range(200):
        assert await client.recv() == protocol.error(protocol.INVALID_JSON)
    await client.ws.close()
    await d.stop()
    bad = events(captured_logs, "socket.bad_frame")
    assert [(e["reason"], e["count"]) for e in bad] == [(protocol.INVALID_JSON, 1)]
    assert [e["bad_frames"] for e in events(captured_logs, "socket.closed") if "bad_frames" in e] == [200]


@pytest.mark.parametrize("server", ["9" * 4000, 1e308, "-Infinity", "NaN", 2 ** 64, -(10 ** 300)])
async def test_connect_with_a_huge_or_odd_number_is_an_unknown_server(start_daemon, open_client, server):
    d = await start_daemon(text=BASE)
    client = await open_client(d)
    frame = '{"type": "connect", "data": {"server": %s}}' % (server if isinstance(server, str) else repr(server))
    await client.send(frame)
    assert await client.recv() in (protocol.error(protocol.UNKNOWN_SERVER), protocol.error(protocol.INVALID_JSON))
    await client.assert_quiet()


async def test_a_socket_that_joins_nothing_is_closed_after_the_join_timeout(start_daemon, open_client):
    d = await start_daemon(text=with_limits(join_timeout=0.2))
    idle = await open_client(d)
    joined = await open_client(d)
    assert (await joined.connect("a"))["type"] == "server-join"
    frames, code = await closed(idle)
    assert frames == [] and code == 1008
    await joined.assert_quiet()  # a socket that joined is not held to it


async def test_a_flood_does_not_delay_another_clients_broadcast(start_daemon, open_client):
    """Frames a client sends in one burst are worked through one per loop turn, so a broadcast
    due meanwhile reaches the others at once, not after the burst."""
    d = await start_daemon(text=with_limits(frames_per_second=100000, frames_burst=100000,
                                            send_buffer_bytes=64 * 1024 * 1024))
    victim = await open_client(d)
    assert (await victim.connect("a"))["type"] == "server-join"
    flooder = await RawClient.open(d.port)
    burst = 20000
    frames = [b'{"type":"connect","data":{"server":"big"}}', b"nope", b'{"type":"zap"}'] * (burst // 3)
    flood = asyncio.ensure_future(asyncio.gather(*(flooder.send(0x1, f) for f in frames)))
    await asyncio.wait_for(flood, RECV_TIMEOUT * 4)
    # The burst is now in the daemon's buffers; a broadcast is due while it is worked through.
    handled_before = d.hub.frames_sent
    started = time.monotonic()
    d.world.say("a", "11", "still here", "1")
    assert (await victim.recv_type("message"))["data"]["message"] == "still here"
    handled = d.hub.frames_sent - handled_before  # answers the flooder got before the broadcast arrived
    latency = time.monotonic() - started
    assert handled < burst // 10, f"the broadcast waited behind {handled} of the flood's frames ({latency:.3f} s)"
    flooder.close()


# -- fuzzing -------------------------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=20,
)
anything = json_values | st.integers(min_value=-(10 ** 100), max_value=10 ** 100)
connects = st.fixed_dictionaries({"type": st.just("connect")}, optional={
    "data": st.fixed_dictionaries({}, optional={
        "server": anything | st.sampled_from(["a", "big", "priv", "default", "1", "2", "3", " ", ""]),
        "password": anything | st.just("hunter2"),
        "discordToken": anything,
        "discordUser": anything | st.fixed_dictionaries({}, optional={"id": anything, "username": anything}),
    }) | anything,
})
text_frames = (
    json_values.map(json.dumps)
    | connects.map(json.dumps)
    | st.text(max_size=200)
    | st.integers(min_value=1, max_value=3000).map(lambda n: "[" * n + "]" * n)  # deep nesting
    | st.integers(min_value=1, max_value=60000).map(lambda n: json.dumps({"type": "connect", "x": "y" * n}))
)
frames = st.lists(st.tuples(st.just("text"), text_frames) | st.tuples(st.just("bytes"), st.binary(max_size=300)),
                  min_size=1, max_size=25)

FUZZ_CONFIG = BASE + "limits: {max_message_bytes: 65536, frames_burst: 10000, joins_burst: 10000}\n"


async def fuzz_once(sequence: list[tuple[str, object]]) -> None:
    d = Daemon(load_text(FUZZ_CONFIG, "fuzz.yaml", ROOT), host="127.0.0.1", port=0, watch=False,
               clock=ManualClock())
    await d.start()
    try:
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{d.port}/ws"
            victim = Client(await http.ws_connect(url))
            await victim.recv_type("server-list")
            assert (await victim.connect("a"))["type"] == "server-join"
            baseline = d.health()["tasks"]
            abuser = await http.ws_connect(url, max_msg_size=0)
            for i, (kind, payload) in enumerate(sequence):
                if kind == "text":
                    await abuser.send_str(payload)
                else:
                    await abuser.send_bytes(payload)
                d.world.say("a", "11", f"broadcast {i}", "1")
            for i in range(len(sequence)):  # every broadcast, in order, whatever the abuser did
                assert (await victim.recv_type("message"))["data"]["message"] == f"broadcast {i}"
            await abuser.close()
            await victim.assert_quiet()
            async with http.get(f"http://127.0.0.1:{d.port}/healthz", headers={"Connection": "close"}) as r:
                assert r.status == 200
            while d.health()["connections"] > 1:  # the abuser's handler ends
                await asyncio.sleep(0.01)
            for _ in range(100):
                if d.health()["tasks"] <= baseline:
                    break
                await asyncio.sleep(0.01)
            assert d.health()["tasks"] <= baseline, "a task outlived its socket"
            await victim.ws.close()
    finally:
        await d.stop()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(frames)
def test_fuzzed_frames_crash_nothing_and_cost_the_others_nothing(sequence):
    asyncio.run(fuzz_once(sequence))


async def test_one_address_opening_sockets_past_its_rate_is_refused(start_daemon, captured_logs):
    d = await start_daemon(text=with_limits(sockets_per_second=0.01, sockets_burst=3))
    url = f"ws://127.0.0.1:{d.port}/ws"
    async with aiohttp.ClientSession() as http:
        opened = [await http.ws_connect(url) for _ in range(3)]
        for _ in range(2):
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(url)
            assert refused.value.status == 429
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))) as other:
        client = Client(await other.ws_connect(url))  # another address has its own allowance
        await client.recv_type("server-list")
    for ws in opened:
        await ws.close()
    lines = events(captured_logs, "socket.refused_address")
    assert [(e["peer"], e["reason"], e["count"]) for e in lines] == [("127.0.0.1", "socket_rate", 1)]


async def test_a_socket_closed_for_flooding_is_not_read_any_more(start_daemon, captured_logs):
    """After the 1008, what the flooder sends is not read: not even its answer to the close."""
    d = await start_daemon(text=with_limits(frames_per_second=1, frames_burst=5))
    flooder = await RawClient.open(d.port)
    for _ in range(20):
        await flooder.send(0x1, b"junk")
    while True:
        opcode, payload = await flooder.frame()
        if opcode == 0x8:
            assert payload[:2] == (1008).to_bytes(2, "big")
            break
    for _ in range(200):
        await flooder.send(0x1, b"more junk")
    await flooder.send(0x8, (1000).to_bytes(2, "big"))  # the client's half of the close
    for _ in range(100):  # the daemon ends the socket within its close grace
        if events(captured_logs, "socket.closed"):
            break
        await asyncio.sleep(0.05)
    (closed,) = events(captured_logs, "socket.closed")
    assert closed["code"] == 1006, closed  # the client's close frame was never read
    flooder.close()
