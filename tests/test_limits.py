"""Connection caps refuse cleanly and recover; slow clients are closed by their timeouts; the file limit is raised."""
from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from dbackd.ops import fdlimit

from .conftest import RECV_TIMEOUT, Client, events

BASE = """
servers:
  - {snowflake: "1", id: a, name: A, default: true, users: [{uid: "11", username: x}]}
api: {tokens: ["${TOKEN:-aVeryLongApiToken-1234}"]}
"""
TOKEN = "aVeryLongApiToken-1234"


def config(limits: dict, listen: str = "") -> str:
    return BASE + "limits: " + json.dumps(limits) + "\n" + listen


async def ws(http, d, headers=None) -> Client:
    client = Client(await http.ws_connect(f"http://127.0.0.1:{d.port}/ws", headers=headers))
    await client.recv_type("server-list")
    return client


async def refused(http, d, headers=None) -> int:
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await http.ws_connect(f"http://127.0.0.1:{d.port}/ws", headers=headers)
    return caught.value.status


async def eof_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    return await asyncio.wait_for(reader.read(), seconds)


@pytest.mark.parametrize("limits", [{"max_connections_per_address": 3}, {"max_connections": 3}])
async def test_a_cap_refuses_with_503_and_recovers(start_daemon, http, limits):
    d = await start_daemon(text=config(limits))
    async with aiohttp.ClientSession() as other:  # a session of its own: its pool holds no connection
        clients = [await ws(other, d) for _ in range(3)]
        assert await refused(other, d) == 503
        reader, writer = await asyncio.open_connection("127.0.0.1", d.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = await eof_within(reader, RECV_TIMEOUT)
        assert answer.startswith(b"HTTP/1.1 503") and answer.endswith(b"Too many connections")
        writer.close()
        await clients[0].ws.close()
        for _ in range(100):  # the daemon sees the close
            if d.health()["connections"] == 2:
                break
            await asyncio.sleep(0.01)
        again = await ws(other, d)
        assert (await again.connect("a"))["type"] == "server-join"
        for c in clients[1:] + [again]:
            await c.assert_quiet()  # nobody else was disturbed


async def test_forwarded_for_counts_only_behind_a_trusted_proxy(start_daemon, captured_logs):
    d = await start_daemon(text=config({"max_connections_per_address": 2},
                                       "listen: {trusted_proxies: [127.0.0.0/8]}\n"))
    async with aiohttp.ClientSession() as http:
        a = [await ws(http, d, {"X-Forwarded-For": "203.0.113.7"}) for _ in range(2)]
        assert await refused(http, d, {"X-Forwarded-For": "198.51.100.1, 203.0.113.7"}) == 503
        b = await ws(http, d, {"X-Forwarded-For": "203.0.113.8"})  # another client behind the same proxy
        for c in a + [b]:
            await c.assert_quiet()
    opened = [e["peer"] for e in events(captured_logs, "socket.opened")]
    assert opened == ["203.0.113.7", "203.0.113.8"]  # one line a minute per address


async def test_forwarded_for_from_anyone_else_is_ignored(start_daemon, captured_logs):
    d = await start_daemon(text=config({"max_connections_per_address": 2},
                                       "listen: {trusted_proxies: [192.0.2.1]}\n"))
    async with aiohttp.ClientSession() as http:
        [await ws(http, d, {"X-Forwarded-For": f"203.0.113.{i}"}) for i in range(2)]
        assert await refused(http, d, {"X-Forwarded-For": "203.0.113.9"}) == 503  # all of them are 127.0.0.1
    assert {e["peer"] for e in events(captured_logs, "socket.opened")} == {"127.0.0.1"}


async def test_a_client_trickling_its_headers_is_closed(start_daemon):
    d = await start_daemon(text=config({"header_timeout": 0.3}))
    reader, writer = await asyncio.open_connection("127.0.0.1", d.port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    assert await eof_within(reader, RECV_TIMEOUT) == b""
    writer.close()


async def test_a_client_idling_on_tcp_is_closed(start_daemon):
    d = await start_daemon(text=config({"header_timeout": 0.3}))
    idle = [await asyncio.open_connection("127.0.0.1", d.port) for _ in range(20)]
    for reader, writer in idle:
        assert await eof_within(reader, RECV_TIMEOUT) == b""
        writer.close()
    assert d.health()["connections"] == 0


async def unfinished_post(d, length: int) -> tuple:
    """A connection that sent an API request's head and the start of a body of `length` bytes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", d.port)
    writer.write(f"POST /api/servers/a/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                 f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n{{\"uid\": ".encode())
    return reader, writer


async def test_a_slow_body_is_answered_408_and_closed(start_daemon):
    d = await start_daemon(text=config({"body_timeout": 0.3}))
    reader, writer = await unfinished_post(d, 100)
    answer = await eof_within(reader, RECV_TIMEOUT)  # the whole answer, then the end of the connection
    assert answer.startswith(b"HTTP/1.1 408") and b"limits.body_timeout" in answer
    writer.close()


async def test_the_connection_ends_with_the_408_not_a_body_timeout_later(start_daemon):
    d = await start_daemon(text=config({"body_timeout": 3}))
    reader, writer = await unfinished_post(d, 100)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), RECV_TIMEOUT)
    assert head.startswith(b"HTTP/1.1 408")
    await eof_within(reader, 1.5)  # not another body_timeout spent throwing away what still comes
    writer.close()


async def test_a_too_large_content_length_is_answered_413_and_closed(start_daemon):
    d = await start_daemon(text=config({"body_timeout": 30}))
    reader, writer = await unfinished_post(d, 100000000)
    answer = await eof_within(reader, RECV_TIMEOUT)  # at once, not after body_timeout
    assert answer.startswith(b"HTTP/1.1 413") and b"api.max_body_bytes" in answer
    writer.close()


def test_the_file_limit_is_raised_to_fit_the_connections():
    resource = pytest.importorskip("resource")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 2000
    if hard != resource.RLIM_INFINITY and hard < wanted + fdlimit.RESERVE:
        pytest.skip("the hard limit here is too low to show it")
    resource.setrlimit(resource.RLIMIT_NOFILE, (512, hard))
    try:
        got, _, room = fdlimit.raise_for(wanted)
        assert got == wanted + fdlimit.RESERVE == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        assert room == wanted
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_the_daemon_logs_the_file_limit_it_got(start_daemon, captured_logs):
    d = await start_daemon(text=config({"max_connections": 100}))
    started = events(captured_logs, "daemon.started")[-1]
    assert started["file_limit"] >= 100 + fdlimit.RESERVE
    assert d.health()["status"] == "ok"



async def test_ipv6_addresses_of_one_64_count_as_one_address(start_daemon):
    d = await start_daemon(text=config({"max_connections_per_address": 2},
                                       "listen: {trusted_proxies: [127.0.0.0/8]}\n"))
    async with aiohttp.ClientSession() as http:
        a = [await ws(http, d, {"X-Forwarded-For": f"2001:db8:1:2::{i}"}) for i in (1, 2)]
        assert await refused(http, d, {"X-Forwarded-For": "2001:db8:1:2:ffff:ffff:ffff:9"}) == 503  # the same /64
        b = await ws(http, d, {"X-Forwarded-For": "2001:db8:1:3::1"})  # the next /64 is someone else
        for c in a + [b]:
            await c.assert_quiet()


async def test_ipv6_addresses_of_one_64_share_one_socket_rate(start_daemon):
    d = await start_daemon(text=config({"sockets_per_second": 0.001, "sockets_burst": 2},
                                       "listen: {trusted_proxies: [127.0.0.0/8]}\n"))
    async with aiohttp.ClientSession() as http:
        opened = [await ws(http, d, {"X-Forwarded-For": f"2001:db8:1:2::{i}"}) for i in (1, 2)]
        assert await refused(http, d, {"X-Forwarded-For": "2001:db8:1:2::3"}) == 429  # the same /64
        opened.append(await ws(http, d, {"X-Forwarded-For": "2001:db8:1:3::1"}))
        for c in opened:
            await c.assert_quiet()


def test_the_address_key_is_the_ipv4_address_or_the_ipv6_64():
    from dbackd.edge.peers import address_key

    assert address_key("203.0.113.7") == "203.0.113.7"
    assert address_key("2001:db8:1:2::1") == address_key("2001:DB8:1:2:ffff::1") == "2001:db8:1:2::/64"
    assert address_key("::ffff:203.0.113.7") == "203.0.113.7"  # IPv4 written as IPv6 is that IPv4 address
    assert address_key("not an address") == "not an address"


async def test_the_operators_probes_get_in_when_the_public_took_every_other_connection(start_daemon):
    d = await start_daemon(text=config({"max_connections": 6, "reserved_connections": 2}))

    async def status(path: str, local: str) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", d.port, local_addr=(local, 0))
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        answer = await eof_within(reader, RECV_TIMEOUT)
        writer.close()
        return answer.split(b"\r\n", 1)[0]

    # the public (127.0.0.2 is not one of the default operators, 127.0.0.1 and ::1) opens as many
    # idle connections as there are: it gets 4 of them
    public = [await asyncio.open_connection("127.0.0.1", d.port, local_addr=("127.0.0.2", 0)) for _ in range(6)]
    assert await status("/healthz", "127.0.0.2") == b"HTTP/1.1 503 Service Unavailable"
    assert await status("/healthz", "127.0.0.1") == b"HTTP/1.1 200 OK"
    assert await status("/metrics", "127.0.0.1") == b"HTTP/1.1 200 OK"
    held = [await asyncio.open_connection("127.0.0.1", d.port) for _ in range(2)]  # the reserve, taken
    assert await status("/healthz", "127.0.0.1") == b"HTTP/1.1 503 Service Unavailable"  # the total still holds
    for _, writer in public + held:
        writer.close()



async def test_an_address_reconnecting_writes_a_line_a_minute_not_lines_per_socket(start_daemon, captured_logs):
    d = await start_daemon(text=config({"sockets_per_second": 0.01, "sockets_burst": 5},
                                       "listen: {trusted_proxies: [127.0.0.1]}\n"))
    behind = {"X-Forwarded-For": "203.0.113.7"}
    async with aiohttp.ClientSession() as http:
        for _ in range(5):  # a client that reconnects after every close
            client = await ws(http, d, behind)
            assert (await client.connect("a"))["type"] == "server-join"
            await client.ws.close()
        for _ in range(3):
            assert await refused(http, d, behind) == 429
        for _ in range(3):
            async with http.get(f"http://127.0.0.1:{d.port}/nowhere", headers=behind) as r:
                assert r.status == 404
        other = await ws(http, d, {"X-Forwarded-For": "203.0.113.8"})  # another address: its own lines
        await other.ws.close()
    for _ in range(100):  # the last close is logged once its handler ends
        if len(events(captured_logs, "socket.opened")) == 2:
            break
        await asyncio.sleep(0.01)
    for name in ("socket.opened", "socket.joined", "socket.closed", "socket.refused_address", "http.error"):
        lines = [(e["peer"], e["count"]) for e in events(captured_logs, name)]
        assert lines[:1] == [("203.0.113.7", 1)] and len([p for p, _ in lines if p == "203.0.113.7"]) == 1, (name, lines)
    assert [e["status"] for e in events(captured_logs, "http.error")] == [404]  # no second line for a refusal
