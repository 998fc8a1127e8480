"""Static mounts over real HTTP: right files, right types, and never a byte from outside a root."""
from __future__ import annotations

import asyncio
import os

import aiohttp
import pytest

from dbackd.config import load_text

SECRET = b"TOP-SECRET-BYTES"


@pytest.fixture
def site(tmp_path):
    www = tmp_path / "www"
    (www / "sub").mkdir(parents=True)
    (www / "index.html").write_text("<h1>d-zone</h1>")
    (www / "discord-callback.html").write_text("<p>callback</p>")
    (www / "sub" / "style.css").write_text("body{}")
    (www / "sub" / "app.js").write_text("let x=1")
    (www / "sub" / "index.html").write_text("sub index")
    (tmp_path / "secret.txt").write_bytes(SECRET)
    os.symlink(tmp_path / "secret.txt", www / "link.txt")
    os.symlink(tmp_path, www / "up")
    other = tmp_path / "other"
    other.mkdir()
    (other / "index.html").write_text("other root")
    text = f"""
static:
  - {{path: /, dir: "{www}"}}
  - {{path: /dzone/, dir: "{other}"}}
servers: [{{snowflake: "1", id: a, name: A, default: true}}]
"""
    return load_text(text, str(tmp_path / "t.yaml"), tmp_path)


async def raw_get(port: int, target: str) -> tuple[int, bytes]:
    """Send a request line exactly as written (clients would normalise it)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode("latin-1"))
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    status = int(data.split(b" ", 2)[1])
    return status, data


@pytest.mark.parametrize("path, status, ctype, body", [
    ("/", 200, "text/html", b"<h1>d-zone</h1>"),
    ("/index.html", 200, "text/html", b"<h1>d-zone</h1>"),
    ("/discord-callback.html", 200, "text/html", b"<p>callback</p>"),
    ("/sub/style.css", 200, "text/css", b"body{}"),
    ("/sub/app.js", 200, "javascript", b"let x=1"),
    ("/sub/", 200, "text/html", b"sub index"),
    ("/dzone/", 200, "text/html", b"other root"),
    ("/missing.png", 404, None, None),
])
async def test_files(start_daemon, http, site, path, status, ctype, body):
    d = await start_daemon(site)
    async with http.get(f"http://127.0.0.1:{d.port}{path}") as r:
        assert r.status == status
        if ctype:
            assert ctype in r.headers["Content-Type"]
            assert await r.read() == body


async def test_mount_without_slash_redirects(start_daemon, http, site):
    d = await start_daemon(site)
    async with http.get(f"http://127.0.0.1:{d.port}/dzone", allow_redirects=False) as r:
        assert r.status == 301 and r.headers["Location"] == "/dzone/"


@pytest.mark.parametrize("target", [
    "/../secret.txt",
    "/sub/../../secret.txt",
    "/%2e%2e/secret.txt",
    "/%2E%2E/%2e%2e/secret.txt",
    "/sub/%2e%2e%2f%2e%2e%2fsecret.txt",
    "/..%2fsecret.txt",
    "/..\\secret.txt",
    "/sub\\..\\..\\secret.txt",
    "/%5c..%5csecret.txt",
    "//etc/passwd",
    "/etc/passwd",
    "/link.txt",
    "/up/secret.txt",
    "/dzone/../secret.txt",
    "/dzone/%2e%2e/www/link.txt",
    "/index.html%00.png",
    "/C:/secret.txt",
])
async def test_traversal_never_serves_outside(start_daemon, site, target):
    d = await start_daemon(site)
    status, data = await raw_get(d.port, target)
    assert SECRET not in data
    assert b"root:" not in data
    assert status in (400, 403, 404), (target, status)


async def test_builtin_page(start_daemon, http):
    d = await start_daemon(text='servers: [{snowflake: "1", id: a, name: A}]')
    async with http.get(f"http://127.0.0.1:{d.port}/") as r:
        assert r.status == 200 and "text/html" in r.headers["Content-Type"]
        assert "dbackd" in await r.text()


async def test_builtin_page_lists_only_the_socket_origins_of_its_mount(start_daemon, http):
    d = await start_daemon(text="""
servers: [{snowflake: "1", id: a, name: A}]
static:
  - {path: /, builtin: true}
  - {path: /wall, builtin: true, sockets: ["wss://Dzone.Example.com:443", "ws://127.0.0.1:4000"]}
""")
    async with http.get(f"http://127.0.0.1:{d.port}/sockets.json") as r:
        assert await r.json() == {"sockets": []}
        assert "connect-src 'self';" in r.headers["Content-Security-Policy"]
    async with http.get(f"http://127.0.0.1:{d.port}/wall/sockets.json") as r:
        assert await r.json() == {"sockets": ["wss://dzone.example.com", "ws://127.0.0.1:4000"]}
    async with http.get(f"http://127.0.0.1:{d.port}/wall/") as r:
        csp = r.headers["Content-Security-Policy"]
        assert "connect-src 'self' wss://dzone.example.com ws://127.0.0.1:4000;" in csp, csp


async def test_builtin_page_may_be_framed_only_by_the_origins_its_mount_lists(start_daemon, http):
    d = await start_daemon(text="""
servers: [{snowflake: "1", id: a, name: A}]
static:
  - {path: /, builtin: true}
  - {path: /wall, builtin: true, frame_ancestors: ["https://Community.Example.com:443", "http://127.0.0.1:8080"]}
""")
    async with http.get(f"http://127.0.0.1:{d.port}/") as r:
        assert r.headers["Content-Security-Policy"].endswith("; frame-ancestors 'none'")
    async with http.get(f"http://127.0.0.1:{d.port}/wall/") as r:
        csp = r.headers["Content-Security-Policy"]
        assert csp.endswith("; frame-ancestors https://community.example.com http://127.0.0.1:8080"), csp


async def test_version_and_health(start_daemon, http):
    from dbackd import __version__

    d = await start_daemon(text='servers: [{snowflake: "1", id: a, name: A}]')
    async with http.get(f"http://127.0.0.1:{d.port}/api/version") as r:
        assert await r.json() == {"version": __version__}
    async with http.ws_connect(f"http://127.0.0.1:{d.port}/ws"):
        async with http.get(f"http://127.0.0.1:{d.port}/healthz") as r:
            health = await r.json()
    assert health["status"] == "ok" and health["config"] == "test.yaml"
    assert health["servers"] == 1 and health["connections"] == 1
    assert health["loaded_at"].endswith("+00:00")


async def test_head_range_and_validators(start_daemon, http, site):
    d = await start_daemon(site)
    url = f"http://127.0.0.1:{d.port}/sub/style.css"
    async with http.head(url) as r:
        assert r.status == 200 and r.headers["Content-Length"] == "6" and await r.read() == b""
        etag, modified = r.headers["ETag"], r.headers["Last-Modified"]
    async with http.get(url, headers={"Range": "bytes=1-3"}) as r:
        assert r.status == 206 and await r.read() == b"ody" and r.headers["Content-Range"] == "bytes 1-3/6"
    async with http.get(url, headers={"Range": "bytes=10-20"}) as r:
        assert r.status == 416
    async with http.get(url, headers={"If-None-Match": etag}) as r:
        assert r.status == 304 and await r.read() == b""
    async with http.get(url, headers={"If-Modified-Since": modified}) as r:
        assert r.status == 304


async def test_a_404_is_small_and_quotes_nothing(start_daemon, site):
    d = await start_daemon(site)
    status, data = await raw_get(d.port, "/" + "A" * 200)
    assert status == 404 and len(data) < 500 and b"AAAA" not in data
    status, data = await raw_get(d.port, "/" + "A" * 8000)  # a name longer than the file system allows
    assert status in (403, 404)
    assert len(data) < 500 and b"AAAA" not in data
    status, data = await raw_get(d.port, "/" + "A" * 9000)  # past the line limit: refused before any lookup
    assert status == 400 and len(data) < 500 and b"AAAA" not in data


async def test_healthz_tells_the_public_only_that_it_answers(start_daemon):
    d = await start_daemon(text="""
servers: [{snowflake: "1", id: a, name: A}]
listen: {trusted_proxies: [127.0.0.3], operators: [127.0.0.1/32, 10.0.0.0/8]}
""")

    async def health(local: str, forwarded: str = "") -> dict:
        connector = aiohttp.TCPConnector(local_addr=(local, 0))
        async with aiohttp.ClientSession(connector=connector) as http:
            headers = {"X-Forwarded-For": forwarded} if forwarded else {}
            async with http.get(f"http://127.0.0.1:{d.port}/healthz", headers=headers) as r:
                assert r.status == 200
                return await r.json()

    public = {"status": "ok"}
    assert await health("127.0.0.2") == public
    assert await health("127.0.0.3", "203.0.113.9") == public  # the public through the proxy
    assert await health("127.0.0.3") == public  # a proxy's host that is not the operators'
    for inside in (await health("127.0.0.1"), await health("127.0.0.3", "10.1.2.3")):
        assert inside["config"] == "test.yaml" and "tasks" in inside and "reload" in inside


async def test_healthz_in_full_on_the_proxys_host_when_the_proxy_forwards_nobody(start_daemon):
    d = await start_daemon(text="""
servers: [{snowflake: "1", id: a, name: A}]
listen: {trusted_proxies: [127.0.0.1]}
""")
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{d.port}/healthz") as r:  # curl on the host
            assert "config" in await r.json()
        async with http.get(f"http://127.0.0.1:{d.port}/healthz", headers={"X-Forwarded-For": "203.0.113.9"}) as r:
            assert await r.json() == {"status": "ok"}  # the public, through the proxy
