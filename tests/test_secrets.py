"""Secrets never reach a log line, a response body, /healthz or `dbackd check`, whatever path they take."""
from __future__ import annotations

import asyncio
import logging

import pytest

from dbackd.ops import logs
from dbackd.cli import main as cli_main
from dbackd.config import load_text

from .conftest import RECV_TIMEOUT, ROOT

API_TOKEN = "SECRET-api-token-4f9a2c71"
CONFIG = f"""
servers:
  - {{snowflake: "1", id: a, name: A, default: true}}
api: {{tokens: ["{API_TOKEN}"]}}
"""


async def raw_request(port: int, head: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /api/servers HTTP/1.1\r\nHost: x\r\n" + head + b"Connection: close\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), RECV_TIMEOUT)
    writer.close()
    return answer


@pytest.mark.parametrize("header", [
    b"Authorization: Bearer " + API_TOKEN.encode() + b"\x01\r\n",  # one byte a header may not hold
    b"Authorization: Bearer " + API_TOKEN.encode() + b"\r\nBad Header\r\n",
    b"Authorization: Bearer " + API_TOKEN.encode() + b"x" * 9000 + b"\r\n",  # a line past the limit
    b"Authorization: Bearer " + API_TOKEN.encode() + b"\r\n" + b"X-Many: 1\r\n" * 200,
])
async def test_a_malformed_request_never_echoes_the_token(start_daemon, captured_logs, header):
    d = await start_daemon(load_text(CONFIG, "t.yaml", ROOT))
    answer = await raw_request(d.port, header)
    assert answer.split(b" ", 2)[1] != b"500"  # refused (aiohttp before 3.14 takes any number of headers)
    assert API_TOKEN.encode() not in answer
    await d.stop()
    out = captured_logs.getvalue()
    assert API_TOKEN not in out and "Traceback" not in out


async def test_a_header_that_is_not_utf8_is_refused_not_a_500(start_daemon, captured_logs):
    d = await start_daemon(load_text(CONFIG, "t.yaml", ROOT))
    for header in (b"Authorization: Bearer \xff\xfe" + API_TOKEN.encode() + b"\r\n",
                   b"Authorization: \xc3\x28 " + API_TOKEN.encode() + b"\r\n"):
        answer = await raw_request(d.port, header)
        assert answer.split(b" ", 2)[1] in (b"400", b"401", b"403"), answer[:100]
    await d.stop()
    assert "Traceback" not in captured_logs.getvalue() and API_TOKEN not in captured_logs.getvalue()


def test_library_records_are_reshaped_and_cut_down(capsys):
    """What aiohttp or asyncio log themselves goes through the same filter (a record per kind and minute)."""
    import io

    stream = io.StringIO()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        logs.configure("info", "json", stream)
        noisy = logging.getLogger("asyncio")
        for _ in range(1000):
            noisy.error("socket.accept() out of system resource", exc_info=OSError(24, "Too many open files"))
        logging.getLogger("aiohttp.server").error("header line: Authorization: Bearer %s", API_TOKEN)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert API_TOKEN not in stream.getvalue() and "[redacted]" in lines[1]


MOCK = """
servers:
  - snowflake: "1"
    id: a
    name: A
    default: true
    passworded: true
    access: {any_discord_user: true}
    oauth:
      provider: mock
      tokens:
        SECRET-mock-token-ok-1: {id: "5", username: five}
        SECRET-mock-token-bad-2: {id: "not a snowflake", username: 6}
        "": {id: "7", username: seven}
"""


def test_check_names_a_broken_mock_token_by_its_position(tmp_path, capsys):
    path = tmp_path / "dback.yaml"
    path.write_text(MOCK)
    assert cli_main(["check", "-c", str(path)]) == 1
    out = capsys.readouterr()
    text = out.out + out.err
    assert "SECRET-mock-token" not in text
    assert "servers[0].oauth.tokens.<token #2>.id" in text and "servers[0].oauth.tokens.<token #3>" in text


async def test_healthz_names_a_broken_mock_token_by_its_position(start_daemon, tmp_path, http):
    path = tmp_path / "dback.yaml"
    path.write_text(MOCK.replace('        SECRET-mock-token-bad-2: {id: "not a snowflake", username: 6}\n', "")
                    .replace('        "": {id: "7", username: seven}\n', ""))
    d = await start_daemon(path)
    path.write_text(MOCK)
    await asyncio.wait_for(d.reloader.wait_attempts(1), RECV_TIMEOUT)
    async with http.get(f"http://127.0.0.1:{d.port}/healthz") as r:
        body = await r.text()
    assert "SECRET-mock-token" not in body and "<token #2>" in body


def test_a_secret_value_is_never_quoted_in_a_problem():
    from dbackd.config import ConfigError

    text = 'servers: [{snowflake: "1", id: a, name: A, passworded: true, password: "SECRET-pw-too-short"}]\n' \
           'api: {tokens: ["SECRET-api-\\u0001-token-with-a-control-char"]}\n'
    with pytest.raises(ConfigError) as caught:
        load_text(text, "t.yaml", ROOT)
    assert "SECRET" not in str(caught.value)
