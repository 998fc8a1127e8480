"""listen.tls: HTTPS and wss:// on the listening sockets, and a renewed certificate picked up for new connections."""
from __future__ import annotations

import asyncio
import os
import shutil
import ssl
import subprocess

import aiohttp
import pytest

from .conftest import RECV_TIMEOUT, Client

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


def make_cert(directory, name: str) -> tuple:
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


def config(limits: str = "") -> str:
    return f"""
listen: {{host: 127.0.0.1, port: 0, tls: {{cert: cert.pem, key: key.pem}}}}
servers: [{{snowflake: "1", id: a, name: A, default: true, users: [{{uid: "11", username: x}}]}}]
{limits}
"""


def trusting(*certs) -> ssl.SSLContext:
    context = ssl.create_default_context()
    for cert in certs:
        context.load_verify_locations(cafile=str(cert))
    return context


async def peer_name(port: int, *certs) -> str:
    """The CN of the certificate the daemon shows a new connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=trusting(*certs))
    subject = dict(x[0] for x in writer.get_extra_info("peercert")["subject"])
    writer.close()
    return subject["commonName"]


@pytest.fixture
def tls_dir(tmp_path):
    one = make_cert(tmp_path, "one")
    shutil.copy(one[0], tmp_path / "cert.pem")
    shutil.copy(one[1], tmp_path / "key.pem")
    return tmp_path


async def test_wss_and_https_with_a_certificate_renewed_in_place(start_daemon, tls_dir):
    path = tls_dir / "dback.yaml"
    path.write_text(config())
    d = await start_daemon(path)
    assert d.url.startswith("https://")
    async with aiohttp.ClientSession() as http:
        async with http.get(f"https://127.0.0.1:{d.port}/healthz", ssl=trusting(tls_dir / "one.pem")) as r:
            assert (await r.json())["status"] == "ok"
        first = Client(await http.ws_connect(f"wss://127.0.0.1:{d.port}/ws", ssl=trusting(tls_dir / "one.pem")))
        await first.recv_type("server-list")
        assert (await first.connect("a"))["type"] == "server-join"
        two = make_cert(tls_dir, "two")
        shutil.copy(two[1], tls_dir / "key.pem")
        shutil.copy(two[0], tls_dir / "cert.pem")
        for _ in range(200):  # the reload that follows the edit loads the new pair
            if await peer_name(d.port, tls_dir / "one.pem", tls_dir / "two.pem") == "two":
                break
            await asyncio.sleep(0.02)
        assert await peer_name(d.port, tls_dir / "two.pem") == "two"
        await first.assert_quiet()  # the socket opened under the old certificate is still served
    assert (tls_dir / "cert.pem") in d.config_sources()


async def test_a_client_that_never_starts_tls_is_closed_after_the_handshake_timeout(start_daemon, tls_dir):
    path = tls_dir / "dback.yaml"
    path.write_text(config("limits: {handshake_timeout: 0.3}"))
    d = await start_daemon(path)
    reader, writer = await asyncio.open_connection("127.0.0.1", d.port)
    assert await asyncio.wait_for(reader.read(), RECV_TIMEOUT) == b""
    writer.close()


def test_a_key_that_does_not_match_is_a_config_error(tls_dir, capsys):
    from dbackd.cli import main

    two = make_cert(tls_dir, "two")
    shutil.copy(two[1], tls_dir / "key.pem")
    path = tls_dir / "dback.yaml"
    path.write_text(config())
    assert main(["check", "-c", str(path)]) == 1
    captured = capsys.readouterr()
    out = captured.out + captured.err
    assert "listen.tls: cannot use the certificate and key" in out and "BEGIN" not in out


async def test_certbot_live_symlinks_renewed_are_followed(start_daemon, tmp_path):
    """live/cert.pem -> ../archive/cert1.pem; a renewal writes cert2.pem and moves the links."""
    archive, live = tmp_path / "archive", tmp_path / "live"
    archive.mkdir()
    live.mkdir()
    make_cert(archive, "one")
    for name, target in (("cert.pem", "../archive/one.pem"), ("key.pem", "../archive/one.key")):
        os.symlink(target, live / name)
    path = tmp_path / "dback.yaml"
    path.write_text(config().replace("cert: cert.pem, key: key.pem", "cert: live/cert.pem, key: live/key.pem"))
    d = await start_daemon(path)
    make_cert(archive, "two")
    for name, target in (("key.pem", "../archive/two.key"), ("cert.pem", "../archive/two.pem")):
        tmp = live / (name + ".tmp")
        os.symlink(target, tmp)
        os.replace(tmp, live / name)
    for _ in range(200):  # the reload that follows the links loads the new pair
        if await peer_name(d.port, archive / "one.pem", archive / "two.pem") == "two":
            break
        await asyncio.sleep(0.02)
    assert await peer_name(d.port, archive / "two.pem") == "two"
    assert await d.reload() is True  # what SIGHUP does after a renewal
    assert d.health()["restart_required"] == [] and d.health()["reload"]["ok"] is True


async def test_connections_still_in_the_handshake_count_against_the_caps(start_daemon, tls_dir):
    path = tls_dir / "dback.yaml"
    path.write_text(config("limits: {max_connections_per_address: 3}"))
    d = await start_daemon(path)
    healthz = f"https://127.0.0.1:{d.port}/healthz"
    stalled = [await asyncio.open_connection("127.0.0.1", d.port) for _ in range(3)]  # TCP only, no ClientHello
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientError):  # refused at accept: no handshake for a fourth
            async with http.get(healthz, ssl=trusting(tls_dir / "one.pem")) as r:
                await r.read()
        for _, writer in stalled:
            writer.close()
        for _ in range(200):  # the stalled ones are released as their close arrives
            try:
                async with http.get(healthz, ssl=trusting(tls_dir / "one.pem")) as r:
                    assert r.status == 200
                    break
            except aiohttp.ClientError:
                await asyncio.sleep(0.02)
        else:
            raise AssertionError("the address was never let in again")


async def test_a_client_frame_bigger_than_the_tls_read_buffer_arrives_whole(start_daemon, tls_dir):
    path = tls_dir / "dback.yaml"
    path.write_text(config())
    d = await start_daemon(path)
    async with aiohttp.ClientSession() as http:
        client = Client(await http.ws_connect(f"wss://127.0.0.1:{d.port}/ws", ssl=trusting(tls_dir / "one.pem")))
        await client.recv_type("server-list")
        joined = await client.connect("a", padding="x" * 60_000)  # several TLS records, several reads
        assert joined["type"] == "server-join"
