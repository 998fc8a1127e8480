"""Start-up loads only what the config uses: no Discord client, no Redis, no Prometheus client
until a config (or a scrape) asks for them. Checked in fresh interpreters, by sys.modules."""
from __future__ import annotations

import json
from pathlib import Path
import subprocess
import sys
import textwrap

UNUSED = ("discord", "redis", "prometheus_client", "watchfiles", "openapi_spec_validator", "openapi_schema_validator")

CONFIG = """
listen: {host: 127.0.0.1, port: 0}
logging: {level: warning, format: json}
servers:
  - snowflake: "232769614004748288"
    id: dworld
    name: D-World
    default: true
    users:
      - {uid: "123456789012345001", username: vegeta897, status: online}
"""

# Serves CONFIG, joins over a real socket, then reports what was loaded; then scrapes /metrics.
SERVE = textwrap.dedent("""
    import asyncio, json, sys
    import aiohttp
    from dbackd.config import load_text
    from dbackd.daemon import Daemon

    UNUSED = {unused!r}

    def loaded():
        return sorted({{name.split(".")[0] for name in sys.modules}} & set(UNUSED))

    async def main():
        daemon = Daemon(load_text({config!r}, "startup.yaml", __import__("pathlib").Path.cwd()), watch=False)
        await daemon.start()
        try:
            async with aiohttp.ClientSession() as http:
                async with http.ws_connect(f"ws://127.0.0.1:{{daemon.port}}/ws") as ws:
                    first = json.loads((await ws.receive(timeout=10)).data)
                    await ws.send_str(json.dumps({{"type": "connect", "data": {{"server": "default"}}}}))
                    joined = json.loads((await ws.receive(timeout=10)).data)
                    served = loaded()
                async with http.get(f"http://127.0.0.1:{{daemon.port}}/metrics") as response:
                    scraped = response.status
            print("REPORT", json.dumps({{"frames": [first["type"], joined["type"]], "served": served,
                              "scraped": scraped, "after_scrape": loaded()}}))
        finally:
            await daemon.stop()

    asyncio.run(main())
""")


def run(code: str) -> str:
    """The line the program printed after REPORT (the daemon logs to stdout too, unconfigured)."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return next(line.split(" ", 1)[1] for line in done.stdout.splitlines() if line.startswith("REPORT "))


def test_importing_the_command_line_loads_no_optional_client():
    code = f"import sys, dbackd.cli; print('REPORT', sorted({{m.split('.')[0] for m in sys.modules}} & set({UNUSED!r})))"
    assert run(code) == "[]"


def test_a_config_without_discord_cluster_or_scrape_loads_none_of_their_clients():
    report = json.loads(run(SERVE.format(unused=UNUSED, config=CONFIG)))
    assert report["frames"] == ["server-list", "server-join"]
    assert report["served"] == []
    # The metrics are there all along; their client library comes with the first scrape.
    assert report["scraped"] == 200
    assert report["after_scrape"] == ["prometheus_client"]


# Runs the command line with a bind that reports what was loaded when the port was bound, then ends.
BIND = textwrap.dedent("""
    import os, sys
    import dbackd.edge.binding as binding
    from dbackd import cli

    real = binding.bind

    def bind(*args, **kwargs):
        sockets = real(*args, **kwargs)
        print("REPORT", sorted({{"aiohttp", "dbackd.daemon", "structlog"}} & set(sys.modules)), flush=True)
        os._exit(0)

    binding.bind = bind
    cli.main(["--config", {config!r}, "--port", "0", "--no-watch", "--log-level", "warning"])
""")


def test_the_command_line_listens_before_it_loads_the_web_stack(tmp_path):
    """From the bind on, a client's connect waits in the backlog instead of being refused."""
    config = tmp_path / "startup.yaml"
    config.write_text(CONFIG)
    assert run(BIND.format(config=str(config))) == "[]"


async def test_a_daemon_serves_the_sockets_it_is_given(open_client):
    from dbackd.config import load_text
    from dbackd.daemon import Daemon
    from dbackd.edge.binding import bind

    sockets = bind("127.0.0.1", 0)
    port = sockets[0].getsockname()[1]
    daemon = Daemon(load_text(CONFIG, "startup.yaml", Path.cwd()), watch=False, sockets=sockets)
    await daemon.start()
    try:
        assert daemon.port == port
        client = await open_client(daemon)
        assert (await client.connect())["type"] == "server-join"
    finally:
        await daemon.stop()


def test_a_d_back_program_loads_the_web_stack_only_when_it_starts():
    """`from dbackd.compat import WebSocketServer` is light; start() binds, then loads the rest."""
    code = "import sys; from dbackd.compat import WebSocketServer; print('REPORT', 'aiohttp' in sys.modules)"
    assert run(code) == "False"
