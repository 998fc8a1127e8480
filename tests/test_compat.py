"""dbackd.compat: programs written for d-back 0.0.18 run on dbackd by changing one import.

Two kinds of program run here unchanged, on real sockets on loopback:

- d-back's own documented examples, transcribed from its README, docs/user-guide/*.md and
  the API reference generated from its docstrings (github.com/NNTin/d-back), each marked
  with where it comes from. Two adaptations only, both outside the examples' text: their
  `asyncio.run(main())` becomes a task of the test's loop, and their `WebSocketServer` is
  the layer's, which here records each instance and binds a free loopback port when it
  starts (so the examples keep their port 3000 and host as written).
- a program shaped like the dworld cog of NNTin/d-cogs, the main real user of d-back:
  providers registered before the bot has guilds, the server started in a task of its
  own, listeners that broadcast presence changes, members joining and leaving, and
  messages, and the cog's commands that broadcast a new client id.

Where a test expects exact frames from d-back's mock world, its simulation cannot add any:
the classic rhythm is fixed, so its first status change comes 4 s after the start.

Not transcribed: examples that need discord.com or a database (the OAuth2 validators
calling Discord, the asyncpg provider), and those that fail on d-back itself (the hybrid
provider awaits `get_mock_user_data`, which returns a dict; the "Integration Testing"
snippet expects a `user_data` reply d-back never sends).
"""
from __future__ import annotations

import asyncio
import enum
import json
import mimetypes
import os
import signal
from dataclasses import dataclass, field, replace
from types import SimpleNamespace
from typing import Any, Optional

import aiohttp
import pytest
import structlog

from dbackd import compat
from dbackd.fanout import protocol
from dbackd.compat import MockDataProvider, lenient
from dbackd.compat.standins import StandIns

from .conftest import RECV_TIMEOUT, ROOT, Client

DWORLD = "232769614004748288"  # d-back's mock D-World
VEGETA = "123456789012345001"  # one of its users


# -- the examples' WebSocketServer -----------------------------------------------------------

class Made:
    """The programs a test runs, and every WebSocketServer they made, in order."""

    def __init__(self) -> None:
        self.servers: list[compat.WebSocketServer] = []
        self.queue: asyncio.Queue = asyncio.Queue()
        self.tasks: list[asyncio.Task] = []

    def run(self, program) -> asyncio.Task:
        """Run a program (a coroutine) in a task of its own, as `asyncio.run` would run it alone."""
        task = asyncio.ensure_future(program)
        self.tasks.append(task)
        return task

    async def next(self) -> compat.WebSocketServer:
        """The next server a program makes, once it is serving."""
        server = await asyncio.wait_for(self.queue.get(), RECV_TIMEOUT)
        await asyncio.wait_for(server.wait_until_serving(), RECV_TIMEOUT)
        return server


MADE: Optional[Made] = None


class WebSocketServer(compat.WebSocketServer):
    """The layer's WebSocketServer, recorded, and on a free loopback port once it starts."""

    def __init__(self, port: int = 3000, host: str = "localhost"):
        super().__init__(port, host)
        if MADE is not None:
            MADE.servers.append(self)
            MADE.queue.put_nowait(self)

    async def start(self) -> None:
        self.port, self.host = 0, "127.0.0.1"
        await super().start()


@pytest.fixture
async def programs():
    """programs.run(coro) runs a program in a task; programs.next() is the next server it serves.
    At the end every server is stopped and every program must have ended without an error."""
    global MADE
    made = MADE = Made()
    try:
        yield made
    finally:
        MADE = None
        for server in made.servers:
            await server.stop()
        if made.tasks:
            done, pending = await asyncio.wait(made.tasks, timeout=RECV_TIMEOUT)
            for task in pending:
                task.cancel()
            assert not pending, "a program did not end when its server stopped"
            for task in done:
                task.result()


def port(server: compat.WebSocketServer) -> int:
    return server.server.port


async def socket(http, server: compat.WebSocketServer, path: str = "/") -> tuple[Client, dict]:
    """A client of the server, and the server list it was sent first."""
    c = Client(await http.ws_connect(f"http://127.0.0.1:{port(server)}{path}"))
    return c, (await c.recv_type("server-list"))["data"]


# -- a few Discord objects, as discord.py shapes them ------------------------------------------

class Status(enum.Enum):
    online = "online"
    offline = "offline"
    idle = "idle"
    dnd = "dnd"
    invisible = "invisible"

    def __str__(self) -> str:
        return self.value


@dataclass
class Colour:
    value: int = 0


@dataclass
class Role:
    color: Colour = field(default_factory=Colour)


@dataclass(eq=False)
class Member:
    id: int
    display_name: str
    status: Status = Status.online
    roles: list = field(default_factory=list)
    bot: bool = False
    guild: Any = None

    @property
    def top_role(self) -> Role:
        return self.roles[-1] if self.roles else Role()


@dataclass(eq=False)
class Guild:
    id: int
    name: str
    members: list = field(default_factory=list)

    def add(self, member: Member) -> Member:
        member.guild = self
        self.members.append(member)
        return member

    def get_member(self, uid: int) -> Optional[Member]:
        return next((m for m in self.members if m.id == uid), None)


@dataclass
class Message:
    author: Member
    guild: Optional[Guild]
    channel: Any
    content: str


class Intents(SimpleNamespace):
    @classmethod
    def default(cls) -> "Intents":
        return cls()

    @classmethod
    def all(cls) -> "Intents":
        return cls(presences=True, members=True)


class Bot:
    """commands.Bot as the examples use it: guilds, get_guild, @bot.event, start()."""

    def __init__(self, command_prefix: str = "!", intents: Any = None):
        self.guilds: list[Guild] = []
        self.user: Optional[str] = None
        self.events: dict[str, Any] = {}

    def event(self, fn):
        self.events[fn.__name__] = fn
        return fn

    def get_guild(self, gid: int) -> Optional[Guild]:
        return next((g for g in self.guilds if g.id == gid), None)

    async def start(self, token: str) -> None:
        self.user = "d-world-bot#0001"
        await self.events["on_ready"]()


discord = SimpleNamespace(Status=Status, Intents=Intents)
commands = SimpleNamespace(Bot=Bot)


def moved(member: Member, **changes: Any) -> Member:
    """The member after an update (discord.py hands over a copy, the guild keeps the new one)."""
    after = replace(member, **changes)
    guild = member.guild
    guild.members[guild.members.index(member)] = after
    return after


# -- d-back's README -------------------------------------------------------------------------

async def my_user_data_callback(server_id):
    # README, "Custom Data Providers" (under the name "Programmatic Usage" gives it)
    return {
        "user123": {
            "uid": "user123",
            "username": "MyUser",
            "status": "online",
            "roleColor": "#ff6b6b"
        }
    }


async def my_server_data_callback():
    # docs/user-guide/callbacks.md, "on_get_server_data Callback" (get_my_servers)
    return {
        "232769614004748288": {
            "id": "232769614004748288",
            "name": "d-world",
            "passworded": False,
            "default": True
        }
    }


async def readme_programmatic_usage():
    # README, "Programmatic Usage"
    # Create server instance
    server = WebSocketServer(port=3000, host="localhost")

    # Optional: Set up custom callbacks
    server.on_get_user_data = my_user_data_callback
    server.on_get_server_data = my_server_data_callback

    # Start the server
    print("Starting d-back server...")
    await server.start()


async def test_readme_programmatic_usage(programs, http, capsys):
    programs.run(readme_programmatic_usage())
    server = await programs.next()
    assert "Starting d-back server..." in capsys.readouterr().out
    c, listed = await socket(http, server)
    # The provider's servers are the whole list: d-back's mock servers are gone.
    assert listed == {DWORLD: {"id": DWORLD, "name": "d-world", "default": True, "passworded": False}}
    join = await c.connect("default")
    # "user123" is no Discord id: it is shown under a stand-in (with one warning), as d-back showed it.
    (uid, user), = join["data"]["users"].items()
    assert user == {"uid": uid, "username": "MyUser", "status": "online", "roleColor": "#ff6b6b"}
    assert int(uid) < 2 ** 22 and join["data"]["serverName"] == "d-world"
    assert server.ignored.get("users.stand_in", 0) >= 1


async def test_readme_testing_the_websocket_connection(programs, http):
    # README, "Testing the WebSocket Connection" (its JavaScript client, in Python)
    programs.run(WebSocketServer(port=3000, host="localhost").start())
    server = await programs.next()
    socket_ = Client(await http.ws_connect(f"http://127.0.0.1:{port(server)}"))
    listed = (await socket_.recv())["data"]  # 'Connected to d-back!' (the server list comes first)
    assert {s["id"] for s in listed.values()} == {"dworld", "docs", "oauth", "repos"}  # the mock servers
    await socket_.send(json.dumps({
        "type": 'get_user_data',
        "serverId": '232769614004748288'
    }))
    assert await socket_.recv() == {"type": "error", "data": {"message": "Unknown event type"}}  # as on d-back


def test_readme_environment_variables(monkeypatch):
    # README, "Environment Variables" (and docs/user-guide/configuration.md)
    monkeypatch.setenv("D_BACK_PORT", "8080")
    # Example: Use environment variables
    port = int(os.getenv('D_BACK_PORT', 3000))
    host = os.getenv('D_BACK_HOST', 'localhost')

    server = WebSocketServer(port=port, host=host)
    assert (server.port, server.host) == (8080, "localhost")


async def test_readme_custom_data_providers(programs, http):
    # README, "Custom Data Providers"
    async def my_user_data_provider(server_id):
        # Your custom logic here
        return {
            "user123": {
                "uid": "user123",
                "username": "MyUser",
                "status": "online",
                "roleColor": "#ff6b6b"
            }
        }

    server = WebSocketServer()
    server.on_get_user_data = my_user_data_provider

    programs.run(server.start())
    await programs.next()
    c, listed = await socket(http, server)
    assert len(listed) == 4  # a user provider alone keeps d-back's mock servers...
    users = (await c.connect("dworld"))["data"]["users"]
    # ...and replaces their users (here with one that is not a Discord id: under its stand-in)
    assert [u["username"] for u in users.values()] == ["MyUser"]
    await c.assert_quiet()  # and no mock life: d-back ran it only without any provider


# -- docs/user-guide/callbacks.md --------------------------------------------------------------

async def test_callbacks_guide_each_callback(programs, http):
    import json  # the guide's snippets use it

    # "on_get_server_data Callback"
    async def get_my_servers():
        """Fetch available Discord servers from a database."""
        # Your custom logic here
        return {
            "232769614004748288": {
                "id": "232769614004748288",
                "name": "d-world",
                "passworded": False,
                "default": True
            }
        }

    server = WebSocketServer()
    server.on_get_server_data(get_my_servers)

    # "on_static_request Callback"
    async def custom_static_handler(path: str):
        """Dynamically generate or route static files."""
        if path == "/api/status":
            # Return dynamic JSON
            data = {"status": "ok", "version": "1.0.0"}
            return ("application/json", json.dumps(data))

        # Return None to use default static file serving
        return None

    server.on_static_request(custom_static_handler)

    # "on_get_client_id Callback"
    async def get_client_id(server_id: str) -> str:
        """Return OAuth2 client ID for a server."""
        # Could fetch from database or configuration
        client_ids = {
            "232769614004748288": "123456789012345678",
            "482241773318701056": "987654321098765432"
        }
        return client_ids.get(server_id, "default_client_id")

    server.on_get_client_id(get_client_id)

    programs.run(server.start())
    await programs.next()
    c, listed = await socket(http, server)
    assert list(listed) == [DWORLD]
    join = (await c.connect("232769614004748288"))["data"]
    assert join["clientId"] == "123456789012345678" and join["users"] == {}  # no user provider: no users
    base = f"http://127.0.0.1:{port(server)}"
    async with http.get(base + "/") as r:  # None: the static files (here the built-in page)
        assert r.status == 200 and b"dbackd" in await r.read()
    async with http.get(base + "/api/status") as r:
        # d-back 0.0.18 takes the second item for a file path, so this is a 404 there too.
        assert r.status == 404


async def test_callbacks_guide_complete_example_and_broadcasts(programs, http):
    from typing import Any, Dict  # noqa: F401  (the guide's snippets use them)

    # "Complete Example with Multiple Callbacks"
    # Define callbacks
    async def get_servers():
        return {
            "232769614004748288": {
                "id": "232769614004748288",
                "name": "d-world",
                "passworded": False,
                "default": True
            }
        }

    async def get_users(server_id: str):
        # Fetch from database or Discord API
        return {
            "user123": {
                "uid": "user123",
                "username": "TestUser",
                "status": "online",
                "roleColor": "#ff6b6b"
            }
        }

    async def validate_user(token: str, user_info: Dict[str, Any], server_id: str):
        # Implement real OAuth2 validation
        return True

    # Create and configure server
    async def main():
        server = WebSocketServer(port=3000, host="localhost")

        # Register callbacks
        server.on_get_server_data(get_servers)
        server.on_get_user_data(get_users)
        server.on_validate_discord_user(validate_user)

        # Start server
        await server.start()

    programs.run(main())
    server = await programs.next()
    c, listed = await socket(http, server)
    assert listed[DWORLD]["name"] == "d-world"
    join = await c.connect("default")
    assert join["type"] == "server-join"
    # "user123" is a placeholder no Discord bot sends; it is shown under a stand-in Discord id.
    (uid, user), = join["data"]["users"].items()
    assert user == {"uid": uid, "username": "TestUser", "status": "online", "roleColor": "#ff6b6b"}

    # "Broadcasting Methods": all four arrive, as on d-back, the placeholders under their stand-ins.
    with structlog.testing.capture_logs() as logs:
        # When a Discord message is received
        await server.broadcast_message(
            server="232769614004748288",
            uid="user123",
            message="Hello, d-zone!",
            channel="channel456"
        )
        assert await c.recv() == {"type": "message", "server": DWORLD,
                                  "data": {"uid": uid, "message": "Hello, d-zone!", "channel": "channel456"}}
        await server.broadcast_presence(
            server="232769614004748288",
            uid="user123",
            status="online",
            username="CoolUser",
            role_color="#ff6b6b"
        )
        renamed = await c.recv_renamed()  # the frontend shows a new name only on a fresh actor
        assert renamed["data"] == {"uid": uid, "status": "online", "username": "CoolUser", "roleColor": "#ff6b6b"}
        await server.broadcast_presence(
            server="232769614004748288",
            uid="user123",
            status="offline",
            delete=True
        )
        # The provider still lists user123: a declared user is not removed by a broadcast, it goes offline.
        assert await c.recv() == {"type": "presence", "server": DWORLD, "data": {"uid": uid, "status": "offline"}}
        # When OAuth2 configuration changes
        await server.broadcast_client_id_update(
            server="232769614004748288",
            client_id="new_client_id_here"
        )
        update = await c.recv_type("update-clientid")
        assert int(update["data"]["clientId"]) < 2 ** 22
    await c.assert_quiet()
    kinds = [e["kind"] for e in logs if e["event"] == "compat.lenient"]
    assert kinds == ["message.stand_in", "presence.stand_in", "presence.delete_declared",
                     "client_id_update.stand_in"]  # once per kind
    assert not any("Hello" in json.dumps(e, default=str) for e in logs)  # ids and shapes, never what was said


async def test_the_class_docstrings_example_serves_its_placeholder_ids(programs, http):
    seen = []

    # WebSocketServer's docstring, "With custom data callbacks" (d-back 0.0.18)
    def get_servers():
        return {
            "server1": {"id": "server1", "name": "My Server", "default": True}
        }

    def get_users(server_id):
        seen.append(server_id)
        return {
            "user123": {
                "uid": "user123",
                "username": "JohnDoe",
                "status": "online",
                "roleColor": "#3498db"
            }
        }

    server = WebSocketServer()
    server.on_get_server_data(get_servers)
    server.on_get_user_data(get_users)
    programs.run(server.run_forever())
    await programs.next()
    c, listed = await socket(http, server)
    (key, entry), = listed.items()
    assert entry == {"id": "server1", "name": "My Server", "default": True, "passworded": False}
    join = await c.connect("default")
    assert join["data"]["serverName"] == "My Server" and join["data"]["request"] == {"server": "default"}
    assert [u["username"] for u in join["data"]["users"].values()] == ["JohnDoe"]
    assert set(seen) == {"server1"}  # the program is asked with its own ids
    # Its broadcasts name the server and the user by the same placeholders, and arrive.
    await server.broadcast_presence("server1", "user123", "idle")
    (uid,) = join["data"]["users"]
    assert await c.recv() == {"type": "presence", "server": key, "data": {"uid": uid, "status": "idle"}}
    # The same placeholder gets the same stand-in in a new run.
    assert StandIns().assign("user123") == uid


# -- the API reference (d-back's docstrings) --------------------------------------------------------

async def test_api_reference_broadcast_examples_on_the_mock_world(programs, http):
    programs.run(WebSocketServer(port=5555).run_forever())
    server = await programs.next()
    c, _ = await socket(http, server)
    await c.connect("dworld")
    # WebSocketServer.broadcast_presence, "Broadcast user coming online"
    await server.broadcast_presence(
        server="232769614004748288",
        uid="123456789012345001",
        status="online",
        username="vegeta897",
        role_color="#ff6b6b"
    )
    # "Broadcast user going offline": a user the mock world declares is not removed, it goes offline
    await server.broadcast_presence(
        server="232769614004748288",
        uid="123456789012345001",
        status="offline",
        delete=True
    )
    # WebSocketServer.broadcast_client_id_update
    await server.broadcast_client_id_update(
        server="232769614004748288",
        client_id="123456789012345678"
    )
    got = [await c.recv() for _ in range(3)]
    assert got == [
        # A presence carries what changed: the name and colour are the ones the actor has.
        {"type": "presence", "server": DWORLD, "data": {"uid": VEGETA, "status": "online"}},
        {"type": "presence", "server": DWORLD, "data": {"uid": VEGETA, "status": "offline"}},
        {"type": "update-clientid", "server": DWORLD, "data": {"clientId": "123456789012345678"}},
    ]
    assert server.ignored == {"presence.delete_declared": 1}


def test_mock_data_provider_is_d_backs():
    # d_back.mock.MockDataProvider, "Basic usage"
    server = WebSocketServer()
    mock_provider = MockDataProvider(server)
    users = mock_provider.get_mock_user_data("232769614004748288")
    servers = mock_provider.get_mock_server_data()
    assert users[VEGETA] == {"uid": VEGETA, "username": "vegeta897", "status": "online", "roleColor": "#ff6b6b"}
    assert len(mock_provider.get_mock_user_data("987654321098765432")) == 21
    assert mock_provider.get_mock_user_data("1") == {}
    assert servers[DWORLD] == {"id": "dworld", "name": "D-World", "default": True, "passworded": False}
    assert servers["123456789012345678"] == {"id": "oauth", "name": "OAuth2 Protected Server", "passworded": True}


# -- docs/user-guide/configuration.md ------------------------------------------------------------

def test_configuration_guide_accessing_server_attributes(capsys):
    # "Accessing Server Attributes"
    server = WebSocketServer(port=3000, host="localhost")

    # Access configuration
    print(f"Server will run on {server.host}:{server.port}")

    # Access connections (set of connected WebSocket clients)
    print(f"Active connections: {len(server.connections)}")

    # Access data provider
    print(f"Using data provider: {server.data_provider}")

    out = capsys.readouterr().out
    assert "Server will run on localhost:3000" in out and "Active connections: 0" in out
    assert "Using data provider: <dbackd.compat.mock.MockDataProvider" in out


async def test_configuration_guide_static_directory_from_the_environment(programs, http, tmp_path, monkeypatch):
    (tmp_path / "index.html").write_text("<p>my frontend</p>")
    monkeypatch.setenv("D_BACK_STATIC_DIR", str(tmp_path))
    from pathlib import Path

    # "Example: Full Environment Variable Integration"
    async def main():
        # Read configuration from environment
        port = int(os.getenv('D_BACK_PORT', 3000))
        host = os.getenv('D_BACK_HOST', 'localhost')
        static_dir = os.getenv('D_BACK_STATIC_DIR')

        # Create server
        server = WebSocketServer(port=port, host=host)

        # Configure static directory if provided
        if static_dir:
            server.static_dir = Path(static_dir)

        # Start server
        await server.start()

    programs.run(main())
    server = await programs.next()
    base = f"http://127.0.0.1:{port(server)}"
    async with http.get(base + "/") as r:
        assert r.status == 200 and await r.text() == "<p>my frontend</p>"
    async with http.get(base + "/../../../etc/passwd") as r:
        assert r.status in (403, 404)  # "Requests like /../../../etc/passwd are automatically blocked."
    c, listed = await socket(http, server)  # the socket is still at /
    assert len(listed) == 4


async def test_configuration_guide_static_directory_that_does_not_exist(programs, http):
    # "Custom Static Directory", programmatic
    from pathlib import Path
    server = WebSocketServer(port=3000, host="localhost")
    server.static_dir = Path("./my-frontend-build")

    programs.run(server.start())
    await programs.next()
    async with http.get(f"http://127.0.0.1:{port(server)}/") as r:  # the built-in page, as d-back's CLI did
        assert r.status == 200 and b"dbackd" in await r.read()
    assert server.ignored == {"static_dir.missing": 1}


async def test_configuration_guide_complete_lifecycle_example(programs, http):
    loop_ = asyncio.get_running_loop()

    # "Complete Lifecycle Example"
    async def main():
        server = WebSocketServer(port=3000, host="localhost")

        # Setup signal handler for graceful shutdown
        loop = asyncio.get_event_loop()

        def signal_handler():
            print("\nReceived shutdown signal...")
            asyncio.create_task(server.stop())

        loop.add_signal_handler(signal.SIGINT, signal_handler)
        loop.add_signal_handler(signal.SIGTERM, signal_handler)

        # Start server
        print("Starting server...")
        await server.start()

        # Run forever
        await server.run_forever()

    program = programs.run(main())
    try:
        server = await programs.next()
        c, _ = await socket(http, server)
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl+C: start() returns...
        closing = await asyncio.wait_for(c.ws.receive(), RECV_TIMEOUT)
        assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 1001
        await asyncio.wait_for(server.wait_until_serving(), RECV_TIMEOUT)  # ...and run_forever() serves again
        c, _ = await socket(http, server)
        os.kill(os.getpid(), signal.SIGTERM)  # stop() ends run_forever() too (on d-back nothing could)
        await asyncio.wait_for(program, RECV_TIMEOUT)
    finally:
        loop_.remove_signal_handler(signal.SIGINT)
        loop_.remove_signal_handler(signal.SIGTERM)


# -- docs/user-guide/custom-data-providers.md ------------------------------------------------------

def discord_bot_example(os, discord, commands, WebSocketServer):
    """"Complete Discord Bot Example", with its module-level code in this function."""
    from typing import Any, Dict  # noqa: F401

    # Create Discord bot
    intents = discord.Intents.default()
    intents.presences = True
    intents.members = True
    bot = commands.Bot(command_prefix="!", intents=intents)

    # Create WebSocket server
    ws_server = WebSocketServer(port=3000, host="0.0.0.0")

    # Data provider functions
    async def get_discord_user_data(server_id: str) -> Dict[str, Any]:
        """Fetch real-time user data from Discord bot."""
        try:
            guild = bot.get_guild(int(server_id))
            if not guild:
                return {}

            users = {}
            for member in guild.members:
                # Skip bots
                if member.bot:
                    continue

                # Get status
                status_map = {
                    discord.Status.online: "online",
                    discord.Status.idle: "idle",
                    discord.Status.dnd: "dnd",
                    discord.Status.offline: "offline"
                }
                status = status_map.get(member.status, "offline")

                # Get role color
                role_color = "#99AAB5"  # Default gray
                if member.roles:
                    # Get highest role with a color
                    for role in reversed(member.roles):
                        if role.color.value != 0:
                            role_color = f"#{role.color.value:06x}"
                            break

                users[str(member.id)] = {
                    "uid": str(member.id),
                    "username": member.display_name,
                    "status": status,
                    "roleColor": role_color
                }

            return users

        except Exception as e:
            print(f"Error fetching user data: {e}")
            return {}

    async def get_discord_servers() -> Dict[str, Any]:
        """Fetch Discord guilds from bot."""
        try:
            servers = {}
            for guild in bot.guilds:
                servers[str(guild.id)] = {
                    "id": str(guild.id),
                    "name": guild.name,
                    "passworded": False,
                    "default": False
                }

            # Set first server as default
            if servers:
                first_id = next(iter(servers))
                servers[first_id]["default"] = True

            return servers

        except Exception as e:
            print(f"Error fetching servers: {e}")
            return {}

    # Register callbacks
    ws_server.on_get_user_data(get_discord_user_data)
    ws_server.on_get_server_data(get_discord_servers)

    # Discord bot events
    @bot.event
    async def on_ready():
        """Start WebSocket server when bot is ready."""
        print(f"Bot logged in as {bot.user}")
        print("Starting WebSocket server...")
        await ws_server.start()

    @bot.event
    async def on_presence_update(before, after):
        """Broadcast presence changes to d-zone."""
        if before.status != after.status:
            status_map = {
                discord.Status.online: "online",
                discord.Status.idle: "idle",
                discord.Status.dnd: "dnd",
                discord.Status.offline: "offline"
            }

            await ws_server.broadcast_presence(
                server=str(after.guild.id),
                uid=str(after.id),
                status=status_map.get(after.status, "offline"),
                username=after.display_name,
                role_color=get_role_color(after)
            )

    @bot.event
    async def on_message(message):
        """Broadcast messages to d-zone."""
        if message.author.bot:
            return

        await ws_server.broadcast_message(
            server=str(message.guild.id),
            uid=str(message.author.id),
            message=message.content,
            channel=str(message.channel.id)
        )

    def get_role_color(member) -> str:
        """Extract role color from member."""
        if member.roles:
            for role in reversed(member.roles):
                if role.color.value != 0:
                    return f"#{role.color.value:06x}"
        return "#99AAB5"

    # Main entry point
    async def main():
        """Start both Discord bot and WebSocket server."""
        bot_token = os.getenv("DISCORD_BOT_TOKEN")
        if not bot_token:
            raise ValueError("DISCORD_BOT_TOKEN environment variable not set")

        # Start bot (this will trigger on_ready which starts WS server)
        await bot.start(bot_token)

    return SimpleNamespace(bot=bot, main=main, on_presence_update=on_presence_update, on_message=on_message)


async def test_custom_data_providers_guide_discord_bot(programs, http, monkeypatch):
    monkeypatch.setenv("DISCORD_BOT_TOKEN", "a-token-for-the-fake-bot")
    example = discord_bot_example(os, discord, commands, WebSocketServer)
    guild = Guild(300000000000000001, "Terrarium")
    ann = guild.add(Member(300000000000000011, "ann", Status.idle, [Role(Colour(0x3498DB))]))
    guild.add(Member(300000000000000012, "helper-bot", bot=True))
    example.bot.guilds.append(guild)
    programs.run(example.main())
    server = await programs.next()
    c, listed = await socket(http, server)
    assert listed == {"300000000000000001": {"id": "300000000000000001", "name": "Terrarium", "default": True,
                                             "passworded": False}}
    join = (await c.connect("default"))["data"]
    assert join["users"] == {"300000000000000011": {"uid": "300000000000000011", "username": "ann",
                                                    "status": "idle", "roleColor": "#3498db"}}
    await example.on_presence_update(ann, moved(ann, status=Status.dnd))
    channel = SimpleNamespace(id=400000000000000001)
    await example.on_message(Message(ann, guild, channel, "hello from discord"))
    assert [await c.recv() for _ in range(2)] == [
        {"type": "presence", "server": "300000000000000001",
         "data": {"uid": "300000000000000011", "status": "dnd"}},  # only what changed
        {"type": "message", "server": "300000000000000001",
         "data": {"uid": "300000000000000011", "message": "hello from discord", "channel": "400000000000000001"}},
    ]


def forwarding_discord_events(discord, commands, WebSocketServer, get_role_color):
    """"Real-Time Updates: Forwarding Discord Events", with its module-level code in this function."""
    bot = commands.Bot(command_prefix="!", intents=discord.Intents.all())
    ws_server = WebSocketServer(port=3000, host="0.0.0.0")

    @bot.event
    async def on_presence_update(before, after):
        """Forward presence changes to connected clients."""
        # Only broadcast if status actually changed
        if before.status == after.status:
            return

        status_map = {
            discord.Status.online: "online",
            discord.Status.idle: "idle",
            discord.Status.dnd: "dnd",
            discord.Status.offline: "offline"
        }

        # Get role color
        role_color = "#99AAB5"
        for role in reversed(after.roles):
            if role.color.value != 0:
                role_color = f"#{role.color.value:06x}"
                break

        # Broadcast to all connected clients
        await ws_server.broadcast_presence(
            server=str(after.guild.id),
            uid=str(after.id),
            status=status_map.get(after.status, "offline"),
            username=after.display_name,
            role_color=role_color,
            delete=(after.status == discord.Status.offline)
        )

    @bot.event
    async def on_member_join(member):
        """Broadcast when a user joins."""
        await ws_server.broadcast_presence(
            server=str(member.guild.id),
            uid=str(member.id),
            status="online",
            username=member.display_name,
            role_color=get_role_color(member)
        )

    @bot.event
    async def on_member_remove(member):
        """Broadcast when a user leaves."""
        await ws_server.broadcast_presence(
            server=str(member.guild.id),
            uid=str(member.id),
            status="offline",
            delete=True
        )

    return SimpleNamespace(bot=bot, ws_server=ws_server, **{k: v for k, v in locals().items() if k.startswith("on_")})


async def test_custom_data_providers_guide_forwarding_events_on_the_mock_world(programs, http):
    def get_role_color(member) -> str:  # from the guide's previous example
        if member.roles:
            for role in reversed(member.roles):
                if role.color.value != 0:
                    return f"#{role.color.value:06x}"
        return "#99AAB5"

    example = forwarding_discord_events(discord, commands, WebSocketServer, get_role_color)
    programs.run(example.ws_server.start())  # the snippet registers no provider: d-back's mock world
    server = await programs.next()
    c, _ = await socket(http, server)
    await c.connect("dworld")
    dworld = Guild(int(DWORLD), "D-World")
    vegeta = dworld.add(Member(int(VEGETA), "vegeta897", Status.online, [Role(Colour(0xFF6B6B))]))
    newcomer = dworld.add(Member(123456789012345099, "newcomer", Status.online))
    await example.on_presence_update(vegeta, moved(vegeta, status=Status.offline))  # delete=True: offline
    await example.on_member_join(newcomer)
    await example.on_member_remove(newcomer)
    assert [(await c.recv())["data"] for _ in range(3)] == [
        {"uid": VEGETA, "status": "offline"},  # a declared user stays, with the status that came with it
        {"uid": "123456789012345099", "status": "online", "username": "newcomer", "roleColor": "#99aab5"},
        {"uid": "123456789012345099", "status": "offline", "delete": True},
    ]


# -- a program shaped like the dworld cog ----------------------------------------------------------

STATUS_TEXT = {"online": "online", "idle": "idle", "dnd": "dnd", "offline": "offline", "invisible": "offline"}


class CogSettings:
    """What the cog keeps in Red's Config, in memory."""

    def __init__(self) -> None:
        self.client_id = ""  # Red's default: nothing set
        self.static_path: Optional[str] = None
        self.protected: set[int] = set()
        self.colours: dict[int, str] = {}


class ServerManager:
    """Builds the server and answers its callbacks from the bot's cache."""

    def __init__(self, bot: Bot, settings: CogSettings):
        self.bot = bot
        self.settings = settings
        self.server = WebSocketServer(port=3000, host="localhost")
        self.server.on_get_server_data(self.server_data)
        self.server.on_get_user_data(self.user_data)
        self.server.on_validate_discord_user(self.validate_user)
        self.server.on_get_client_id(self.client_id)
        self.server.on_static_request(self.static_file)

    async def server_data(self) -> dict:
        data = {}
        for guild in self.bot.guilds:
            data[str(guild.id)] = {"id": guild.name[:1].upper(), "name": guild.name, "default": False,
                                   "passworded": guild.id in self.settings.protected}
        if data:
            data[next(iter(data))]["default"] = True
        return data

    async def user_data(self, guild_id: Optional[str] = None) -> dict:
        guild = self.bot.get_guild(int(guild_id)) if guild_id else None
        if guild is None:
            return {}
        return {str(m.id): {"uid": str(m.id), "username": m.display_name,
                            "status": STATUS_TEXT.get(str(m.status), "offline"),
                            "roleColor": await self.role_color(m)} for m in guild.members}

    async def validate_user(self, token: str, user_info: dict, guild_id: str) -> bool:
        # The cog asks Discord whose token it is; a table of tokens stands in for that here.
        guild = self.bot.get_guild(int(guild_id))
        who = {"good-token": user_info.get("id")}.get(token)
        return guild is not None and who is not None and guild.get_member(int(who)) is not None

    async def client_id(self, guild_id: Optional[str] = None) -> str:
        return self.settings.client_id

    async def role_color(self, member: Member) -> str:
        custom = self.settings.colours.get(member.id)
        if custom:
            return custom
        if member.top_role.color.value:
            return f"#{member.top_role.color.value:06x}"
        return "#ffffff"

    async def static_file(self, path: str):
        root = self.settings.static_path
        if not root:
            return None
        path = path.lstrip("/")
        if ".." in path:
            return None
        full = os.path.join(root, path or "index.html")
        return (mimetypes.guess_type(full)[0] or "application/octet-stream", full)


class Listeners:
    def __init__(self, server: WebSocketServer, role_color):
        self.server = server
        self.role_color = role_color

    async def member_update(self, before: Member, after: Member) -> None:
        if before.status != after.status:
            await self.server.broadcast_presence(server=str(after.guild.id), uid=str(after.id),
                                                 status=STATUS_TEXT.get(str(after.status), "offline"),
                                                 username=after.display_name, role_color=await self.role_color(after))

    async def member_join(self, member: Member) -> None:
        await self.server.broadcast_presence(server=str(member.guild.id), uid=str(member.id),
                                             status=STATUS_TEXT.get(str(member.status), "offline"),
                                             username=member.display_name, role_color=await self.role_color(member))

    async def member_remove(self, member: Member) -> None:
        await self.server.broadcast_presence(server=str(member.guild.id), uid=str(member.id), status="offline",
                                             delete=True)

    async def message(self, message: Message) -> None:
        if message.author.bot or not message.guild:
            return
        await self.server.broadcast_message(server=str(message.guild.id), uid=str(message.author.id),
                                            message=message.content, channel=str(message.channel.id))


class DWorldShaped:
    """The cog: components built in __init__, the server started in a task on load, stopped on unload."""

    def __init__(self, bot: Bot):
        self.bot = bot
        self.settings = CogSettings()
        self.manager = ServerManager(bot, self.settings)
        self.listeners = Listeners(self.manager.server, self.manager.role_color)
        self.task: Optional[asyncio.Task] = None

    @property
    def server(self) -> WebSocketServer:
        return self.manager.server

    async def cog_load(self) -> None:
        self.task = asyncio.create_task(self.server.start())

    async def cog_unload(self) -> None:
        await self.server.stop()

    async def set_client_id(self, client_id: str) -> list[str]:
        """The owner's command: store it, tell every guild's clients; the guilds that failed."""
        old, self.settings.client_id = self.settings.client_id, client_id
        failed = []
        if old != client_id:
            for guild in self.bot.guilds:
                try:
                    await self.server.broadcast_client_id_update(str(guild.id), client_id)
                except Exception:
                    failed.append(guild.name)
        return failed

    def status(self) -> str:
        return f"Connected clients: {len(self.server.connections)}"

    async def on_member_update(self, before, after):
        await self.listeners.member_update(before, after)

    async def on_member_join(self, member):
        await self.listeners.member_join(member)

    async def on_member_remove(self, member):
        await self.listeners.member_remove(member)

    async def on_message(self, message):
        await self.listeners.message(message)


@pytest.fixture
async def cog(programs):
    """The cog loaded into a bot that has no guilds yet."""
    cog = DWorldShaped(Bot())
    await cog.cog_load()
    await programs.next()
    yield cog
    await cog.cog_unload()
    await asyncio.wait_for(cog.task, RECV_TIMEOUT)  # start() returned once stop() was done


def guilds() -> tuple[Guild, Guild, Guild]:
    nerds = Guild(500000000000000001, "Nerds")
    nerds.add(Member(500000000000000011, "ann", Status.online, [Role(Colour(0x3498DB))]))
    nerds.add(Member(500000000000000012, "ben", Status.invisible))
    newbies = Guild(500000000000000002, "Newbies")
    newbies.add(Member(500000000000000021, "cat", Status.idle))
    oddland = Guild(500000000000000003, "Ödland")
    oddland.add(Member(500000000000000031, "dan", Status.dnd))
    return nerds, newbies, oddland


async def test_cog_started_before_its_guilds_then_listeners(cog, http):
    server = cog.server
    assert cog.status() == "Connected clients: 0"
    assert server.server.servers() == []  # the providers were asked at start: no guilds yet
    nerds, newbies, oddland = guilds()
    cog.bot.guilds.extend([nerds, newbies, oddland])
    # A new socket sees the guilds: the providers are asked when it opens, no refresh needed.
    d, listed = await socket(http, server)
    assert listed == {
        "500000000000000001": {"id": "N", "name": "Nerds", "default": True, "passworded": False},
        "500000000000000002": {"id": "N-2", "name": "Newbies", "passworded": False},  # "N" was taken
        "500000000000000003": {"id": "500000000000000003", "name": "Ödland", "passworded": False},  # no usable letter
    }
    join = (await d.connect("N"))["data"]
    assert join["users"] == {
        "500000000000000011": {"uid": "500000000000000011", "username": "ann", "status": "online",
                               "roleColor": "#3498db"},
        "500000000000000012": {"uid": "500000000000000012", "username": "ben", "status": "offline",
                               "roleColor": "#ffffff"},
    }
    assert "clientId" not in join  # the cog's "" is none, and no bad answer is logged for it
    assert not [k for k in server.ignored if k.startswith("get_client_id")]
    assert cog.status() == "Connected clients: 1"
    # From here on every open and join asks the providers itself, so the frames are exactly known.
    server.refresh_window = 0

    ann = nerds.members[0]
    await cog.on_member_update(ann, moved(ann, status=Status.idle))
    eve = nerds.add(Member(500000000000000013, "eve", Status.online, [Role(Colour(0x00FF00))]))
    await cog.on_member_join(eve)
    channel = SimpleNamespace(id=600000000000000001)
    await cog.on_message(Message(nerds.members[0], nerds, channel, "hi all"))
    await cog.on_message(Message(Member(1, "a-bot", bot=True), nerds, channel, "beep"))  # the cog skips bots
    assert [(await d.recv())["data"] for _ in range(3)] == [
        {"uid": "500000000000000011", "status": "idle"},  # only what changed
        {"uid": "500000000000000013", "status": "online", "username": "eve", "roleColor": "#00ff00"},
        {"uid": "500000000000000011", "message": "hi all", "channel": "600000000000000001"},
    ]

    # What d-back passed on and dbackd cannot take: no exception, nothing sent, one warning per kind.
    with structlog.testing.capture_logs() as logs:
        await cog.on_message(Message(nerds.members[0], nerds, channel, ""))  # an attachment alone
        await cog.on_message(Message(Member(500000000000000099, "ghost"), nerds, channel, "boo"))  # not a member
        await cog.on_message(Message(nerds.members[0], Guild(700000000000000001, "Elsewhere"), channel, "hm"))
        await server.broadcast_presence(server=str(nerds.id), uid="500000000000000099", status="online")
        await server.broadcast_presence(server="700000000000000001", uid=str(ann.id), status="online")
    await d.assert_quiet()
    assert [e["kind"] for e in logs if e["event"] == "compat.lenient"] == [
        "message.empty", "message.unknown_user", "message.unknown_server",
        "presence.unknown_user", "presence.unknown_server"]
    # ...and what can be repaired is: `invisible` is offline, an over-long message is cut to 2,000.
    await server.broadcast_presence(server=str(nerds.id), uid=str(ann.id), status="invisible")
    await cog.on_message(Message(nerds.members[0], nerds, channel, "x" * 2500))
    assert (await d.recv())["data"] == {"uid": "500000000000000011", "status": "offline"}
    assert (await d.recv())["data"]["message"] == "x" * 2000

    # A new socket asks the providers. What they declare now wins where it changed: ann is idle in
    # the bot's cache (the `invisible` above came from no member update), and eve, listed now,
    # becomes declared.
    e, _ = await socket(http, server)
    assert [(await d.recv())["data"] for _ in range(2)] == [
        {"uid": "500000000000000011", "status": "idle"},
        {"uid": "500000000000000013", "status": "online"},  # its name and colour are what it had
    ]
    # A member leaves: discord.py drops it from the guild, then the cog removes it. The user is
    # declared by the provider, so the providers are asked again, and they no longer list it.
    ben = nerds.members[1]
    nerds.members.remove(ben)
    await cog.on_member_remove(ben)
    assert (await d.recv())["data"] == {"uid": "500000000000000012", "status": "offline", "delete": True}
    await d.assert_quiet()
    assert server.ignored["presence.delete_declared"] == 1


async def test_cog_commands_login_and_static_files(cog, http, tmp_path):
    server, settings = cog.server, cog.settings
    nerds, newbies, oddland = guilds()
    cog.bot.guilds.extend([nerds, newbies, oddland])
    settings.protected.add(newbies.id)
    c, listed = await socket(http, server)
    assert listed["500000000000000002"]["passworded"] is True
    assert (await c.connect("N-2")) == protocol.error(protocol.AUTH_REQUIRED)
    cat = {"id": "500000000000000021", "username": "cat"}
    assert (await c.connect("N-2", discordToken="bad-token", discordUser=cat)) == protocol.error(protocol.AUTH_FAILED)
    join = await c.connect("N-2", discordToken="good-token", discordUser=cat)
    assert join["type"] == "server-join" and join["data"]["users"]["500000000000000021"]["status"] == "idle"
    assert "password" not in json.dumps(join)

    # setclientid: every guild is told; only the joined socket's server reaches it.
    assert await cog.set_client_id("400000000000000001") == []
    assert await c.recv() == {"type": "update-clientid", "server": "500000000000000002",
                              "data": {"clientId": "400000000000000001"}}
    d, _ = await socket(http, server)
    assert (await d.connect("N"))["data"]["clientId"] == "400000000000000001"
    # Not an application id: sent under a stand-in, as d-back sent it as it was (nothing raises).
    assert await cog.set_client_id("not-an-id") == []
    assert await c.recv() == {"type": "update-clientid", "server": "500000000000000002",
                              "data": {"clientId": StandIns().assign("not-an-id")}}
    assert await cog.set_client_id(["not", "text"]) == []  # no id at all: nothing is sent
    await c.assert_quiet()
    assert server.ignored["client_id_update.bad_id"] == 3  # once per guild, logged once

    # setstaticpath: the hook's (content type, path) is the file at that path.
    (tmp_path / "index.html").write_text("<p>custom d-zone</p>")
    (tmp_path / "app.js").write_text("console.log('d-zone')")
    base = f"http://127.0.0.1:{port(server)}"
    async with http.get(base + "/") as r:
        assert r.status == 200 and b"dbackd" in await r.read()  # no path set: the static files
    settings.static_path = str(tmp_path)
    async with http.get(base + "/") as r:
        assert r.status == 200 and await r.text() == "<p>custom d-zone</p>"
    async with http.get(base + "/app.js") as r:
        assert r.status == 200 and r.content_type in ("text/javascript", "application/javascript")
        assert await r.text() == "console.log('d-zone')"
    async with http.get(base + "/missing.js") as r:
        assert r.status == 404
    assert cog.status() == "Connected clients: 2"


async def test_cog_unload_closes_every_socket(cog, http):
    c, _ = await socket(http, cog.server)
    await cog.cog_unload()
    closing = await asyncio.wait_for(c.ws.receive(), RECV_TIMEOUT)
    assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 1001
    await asyncio.wait_for(cog.task, RECV_TIMEOUT)
    assert len(cog.server.connections) == 0 and cog.server.server is None
    await cog.server.broadcast_presence(server="500000000000000001", uid="500000000000000011", status="idle")


# -- lifecycle ---------------------------------------------------------------------------------

async def test_start_twice_stop_while_starting_and_start_again(programs, http):
    server = WebSocketServer()
    first = programs.run(server.start())
    await programs.next()
    with pytest.raises(RuntimeError, match="already serving"):
        await server.start()
    await server.broadcast_presence(server=DWORLD, uid=VEGETA, status="dnd")
    await server.stop()
    await asyncio.wait_for(first, RECV_TIMEOUT)
    assert not server.serving and server.server is None and len(server.connections) == 0

    starting = asyncio.ensure_future(server.start())
    await asyncio.sleep(0)  # let it begin; stop() must end it wherever it is
    await asyncio.wait_for(server.stop(), RECV_TIMEOUT)
    await asyncio.wait_for(starting, RECV_TIMEOUT)
    assert not server.serving and server.server is None

    again = programs.run(server.start())
    await asyncio.wait_for(server.wait_until_serving(), RECV_TIMEOUT)
    c, _ = await socket(http, server)
    users = (await c.connect("dworld"))["data"]["users"]
    assert users[VEGETA]["status"] == "online"  # a fresh daemon: what the last run changed is gone
    await server.stop()
    await asyncio.wait_for(again, RECV_TIMEOUT)


# -- callback timing -------------------------------------------------------------------------

class Counted:
    """A server provider that counts its calls; `answer` is what it says."""

    def __init__(self, answer: Optional[dict] = None):
        self.calls = 0
        self.answer = answer if answer is not None else {DWORLD: {"id": "dworld", "name": "D-World", "default": True}}

    async def __call__(self) -> dict:
        self.calls += 1
        return self.answer


async def test_many_sockets_at_once_share_one_refresh(programs):
    provider = Counted()
    server = WebSocketServer()
    server.on_get_server_data(provider)
    server.refresh_window = 60  # wider than the test can take: every socket below shares one refresh
    programs.run(server.start())
    await programs.next()
    assert provider.calls == 1  # at start
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:  # no pool limit
        opened = await asyncio.wait_for(asyncio.gather(*(socket(http, server) for _ in range(100))), 30)
        assert all(listed == {DWORLD: {"id": "dworld", "name": "D-World", "default": True, "passworded": False}}
                   for _, listed in opened)
        joins = await asyncio.wait_for(asyncio.gather(*(c.connect("dworld") for c, _ in opened)), 30)
        assert {j["type"] for j in joins} == {"server-join"}
        assert provider.calls == 2  # 100 opens and 100 joins: one more
        for c, _ in opened:
            await c.ws.close()


async def test_each_open_and_join_asks_the_providers_when_nothing_is_reused(programs, http):
    provider = Counted()
    users: dict = {}
    server = WebSocketServer()
    server.on_get_server_data(provider)

    @server.on_get_user_data
    async def members(server_id: str) -> dict:
        return dict(users)

    server.refresh_window = 0
    programs.run(server.start())
    await programs.next()
    c, _ = await socket(http, server)
    users["300000000000000001"] = {"uid": "300000000000000001", "username": "late", "status": "online",
                                   "roleColor": "#123456"}
    join = (await c.connect("dworld"))["data"]["users"]  # the join asked again, before it was answered
    assert join == {"300000000000000001": {"uid": "300000000000000001", "username": "late", "status": "online",
                                           "roleColor": "#123456"}}
    d, _ = await socket(http, server)
    assert provider.calls == 1 + 3  # start, two opens, one join


async def test_a_provider_that_fails_leaves_the_world_and_the_socket_served(programs, http):
    calls = []
    server = WebSocketServer()

    @server.on_get_server_data
    async def servers() -> dict:
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("discord is down")
        return {DWORLD: {"id": "dworld", "name": "D-World", "default": True}}

    server.refresh_window = 0
    programs.run(server.start())
    await programs.next()
    with structlog.testing.capture_logs() as logs:
        c, listed = await socket(http, server)
    assert list(listed) == [DWORLD]  # as it was (d-back closed the socket)
    assert any(e["event"] == "callback.failed" for e in logs)
    assert (await c.connect("dworld"))["type"] == "server-join"


async def test_plain_functions_and_odd_answers_are_taken(programs, http):
    server = WebSocketServer()

    def get_servers():  # d-back's module docstring registers plain functions (d-back could not call them)
        return {DWORLD: {"id": "d world!", "name": "D" * 150, "default": 1, "colour": "red"},
                "482241773318701056": {"id": "default", "name": "", "default": True, "password": "pw"},
                "not-a-snowflake": {"id": "x", "name": "X"}, ("no", "id"): {"id": "y", "name": "Y"}}

    def get_users(server_id):
        return {"300000000000000001": {"username": "pat", "status": "streaming", "roleColor": "red", "avatar": "a"},
                300000000000000002: {"uid": "300000000000000002", "status": "invisible"},
                "someone": {"username": "x"}, 1.5: {"username": "y"}} if server_id == DWORLD else None

    server.on_get_server_data(get_servers)
    server.on_get_user_data(get_users)
    programs.run(server.start())
    await programs.next()
    c, listed = await socket(http, server)
    assert listed == {DWORLD: {"id": "dworld", "name": "D" * 100, "default": True, "passworded": False},
                      "482241773318701056": {"id": "482241773318701056", "name": "482241773318701056",
                                             "passworded": False},
                      StandIns().assign("not-a-snowflake"): {"id": "x", "name": "X", "passworded": False}}
    users = (await c.connect("dworld"))["data"]["users"]
    assert users == {
        "300000000000000001": {"uid": "300000000000000001", "username": "pat", "status": "offline",
                               "roleColor": "#ffffff"},
        "300000000000000002": {"uid": "300000000000000002", "username": "300000000000000002", "status": "offline",
                               "roleColor": "#ffffff"},
        StandIns().assign("someone"): {"uid": StandIns().assign("someone"), "username": "x", "roleColor": "#ffffff",
                                       "status": "online"},
    }
    assert {"servers.bad_id", "servers.long_name", "servers.extra_keys", "servers.extra_default",
            "servers.bad_name", "servers.bad_snowflake", "users.bad_status", "users.bad_color",
            "users.extra_keys", "users.invisible", "users.no_username", "users.bad_uid",
            "users.not_a_mapping"} <= set(server.ignored)


def test_short_ids_are_made_unique_the_same_way_every_time():
    answer = {"1": {"id": "N", "name": "Nerds"}, "2": {"id": "N", "name": "Newbies"}, "3": {"id": "N-2", "name": "x"},
              "4": {"id": "N", "name": "Nomads"}, "5": {"id": "é", "name": "é"}}
    found: lenient.Found = []
    first = lenient.servers(answer, StandIns(), found)
    assert {sf: s["id"] for sf, s in first.items()} == {"1": "N", "2": "N-3", "3": "N-2", "4": "N-4", "5": "5"}
    assert lenient.servers(answer, StandIns(), []) == first
    assert [k for k, _ in found].count("servers.id_taken") == 2


def test_the_migration_guide_is_linked_from_the_readme_and_names_the_layers_logs():
    readme = (ROOT / "README.md").read_text()
    guide = (ROOT / "docs" / "migration.md").read_text()
    assert "(docs/migration.md)" in readme
    assert "from dbackd.compat import WebSocketServer      # was: from d_back.server import WebSocketServer" in guide
    source = "".join(p.read_text() for p in (ROOT / "dbackd" / "compat").glob("*.py"))
    for event in ("compat.lenient", "compat.refresh_failed", "compat.removal_refresh_timeout"):
        assert f'"{event}"' in source and f"`{event}`" in guide


async def test_a_server_provider_registered_after_start_replaces_the_mock_servers(programs, http):
    # As in d-back: from the registration on, the provider's answer is the whole server list,
    # its default server included (laid over the mock world, two defaults were refused whole).
    server = WebSocketServer()
    programs.run(server.start())
    await programs.next()
    early, listed = await socket(http, server)
    assert len(listed) == 4  # d-back's mock servers
    await early.connect("dworld")

    async def get_servers():
        return {"600000000000000001": {"id": "late", "name": "Late", "default": True}}

    with structlog.testing.capture_logs() as logs:
        server.on_get_server_data(get_servers)
        # The socket already there is told that the mock server it was in is gone, and joins the new default.
        assert (await early.recv())["data"] == {"message": "This server is no longer available."}
        moved = await early.recv_type("server-join")
        assert moved["data"]["serverName"] == "Late"
        c, listed = await socket(http, server)
        assert list(listed) == ["600000000000000001"]
        join = await c.connect("default")
    assert join["data"]["serverName"] == "Late" and join["data"]["request"] == {"server": "default"}
    assert not [e for e in logs if e["event"] == "provider.rejected"]


async def test_the_differences_the_migration_guide_lists(programs, http):
    # docs/migration.md, "Deliberate differences": each one as a d-back user sees it.
    server = WebSocketServer()
    assert server.data_provider is server.mock_provider  # d-back's configuration guide uses it; d-back had none
    programs.run(server.start())
    await programs.next()
    c, _ = await socket(http, server)
    await c.send({"type": "connect"})  # no data: the default server (d-back closed the socket)
    join = await c.recv_type("server-join")
    assert join["data"]["request"] == {"server": "default"} and join["data"]["serverName"] == "D-World"
    await server.broadcast_presence(DWORLD, VEGETA, "dnd", role_color="#ABCDEF")
    # Only what changed, the colour in lower case (d-back repeated what it was given, as given).
    assert await c.recv() == {"type": "presence", "server": DWORLD,
                              "data": {"uid": VEGETA, "status": "dnd", "roleColor": "#abcdef"}}
    async with http.get(f"http://127.0.0.1:{port(server)}/no-such-file") as r:
        assert r.status == 404 and r.headers["Content-Type"].startswith("text/plain")  # d-back: text/html
