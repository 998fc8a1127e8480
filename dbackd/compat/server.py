"""d-back 0.0.18's `WebSocketServer` on dbackd: a program written for d-back runs by changing one import.

It keeps d-back's constructor and defaults, its attributes (`port`, `host`,
`static_dir`, `connections`, `server`, `mock_provider`), its five callbacks and their
timing (the server provider at every socket open and join, the user provider at every
join), its three broadcasts and their leniency (they never raise), and its lifecycle
(`start()` serves until `stop()`). Underneath is a `dbackd.Daemon`, one per start,
driven through its Python API; lenient.py makes what the program hands over acceptable
to it, and what is repaired or left out is logged once per kind. docs/migration.md
lists every deliberate difference.

This layer adds no behaviour to the daemon: it must not change the daemon's parts or
reach into them, save the hub's set of open sockets for the live `connections` view.
"""
from __future__ import annotations

import asyncio
import dataclasses
import inspect
from collections.abc import Set
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional

import structlog

from dbackd.sources.apischema import InvalidRequest
from dbackd.config import Config, load_data
from dbackd.edge.binding import bind
from dbackd.edge.static import BUILTIN_ROOT
from dbackd.core.tasks import TaskSet
from dbackd.core.world import DeclaredUser, UnknownServer, UnknownUser
from dbackd.compat import lenient
from dbackd.compat.mock import MockDataProvider, mock_world
from dbackd.compat.refresh import Refresher
from dbackd.compat.standins import StandIns

if TYPE_CHECKING:
    from dbackd.daemon import Daemon

log = structlog.get_logger("dbackd.compat")

PROVIDERS = ("on_get_server_data", "on_get_user_data")
CALLBACKS = (*PROVIDERS, "on_static_request", "on_validate_discord_user", "on_get_client_id")
REFRESH_WINDOW = 1.0  # seconds a refresh is reused for the sockets that open or join after it
BIG_ANSWER = 2000  # entries from which an answer is repaired in a thread, off the loop
REMOVAL_REFRESH_TIMEOUT = 15.0  # longest a removal waits for the providers to be asked again


@lru_cache(maxsize=1)
def _provided_world() -> Config:
    """No servers of its own: the server provider's answer is the whole server list, as in d-back.

    The schema asks a config file for at least one server (a daemon with none serves
    nothing), so the model is loaded with a placeholder that is then taken out.
    """
    loaded = load_data({"servers": [{"snowflake": "1", "id": "placeholder", "name": "placeholder"}]})
    return dataclasses.replace(loaded, servers=())


@lru_cache(maxsize=1)
def _mock_servers_only() -> Config:
    """d-back's mock servers without their users or life: a user provider alone fills them."""
    world = mock_world()
    return dataclasses.replace(world, servers=tuple(dataclasses.replace(s, users=(), simulation=None)
                                                    for s in world.servers))


async def _call(fn: Callable[..., Any], *args: Any) -> Any:
    """A d-back callback's answer; a plain function is taken too (its answer is used as is)."""
    answer = fn(*args)
    if inspect.isawaitable(answer):
        answer = await answer
    return answer


class _Notes:
    """What the layer repaired or left out, by kind: each counted, the first of each kind logged."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def add(self, found: lenient.Found) -> None:
        for kind, fields in found:
            n = self.counts.get(kind, 0) + 1
            self.counts[kind] = n
            if n == 1:
                log.warning("compat.lenient", kind=kind, **fields, note="logged once per kind")


class _Connections(Set):
    """The sockets open now, live and read-only (d-back's `connections`). Each is a dbackd
    connection (`id`, `peer`, `server`), not a websocket: nothing can be sent through it."""

    def __init__(self, owner: "WebSocketServer"):
        self._owner = owner

    def _live(self) -> Set:
        daemon = self._owner.server
        return daemon.hub.connections if daemon is not None else frozenset()

    def __len__(self) -> int:
        return len(self._live())

    def __iter__(self) -> Iterator[Any]:
        return iter(list(self._live()))

    def __contains__(self, item: object) -> bool:
        return item in self._live()

    @classmethod
    def _from_iterable(cls, items: Any) -> frozenset:  # what `view & other` and friends build
        return frozenset(items)

    def __repr__(self) -> str:
        return f"<connections: {len(self)} open>"


class _Slot:
    """A d-back callback: `server.on_x(fn)` registers `fn`, and so does `server.on_x = fn`, as
    d-back's README writes it (where d-back itself quietly ignored the assignment)."""

    def __init__(self, name: str, doc: str):
        self.name = name
        self.__doc__ = doc

    def __get__(self, obj: Optional["WebSocketServer"], owner: Any = None) -> Any:
        if obj is None:
            return self
        name = self.name

        def register(callback: Callable[..., Any]) -> Callable[..., Any]:
            obj._register(name, callback)
            return callback

        register.__name__, register.__doc__ = name, self.__doc__
        return register

    def __set__(self, obj: "WebSocketServer", callback: Callable[..., Any]) -> None:
        obj._register(self.name, callback)


@dataclass
class _Run:
    """What lives from one start() to its stop()."""

    daemon: "Daemon"
    tasks: TaskSet
    refresher: Refresher
    stopped: asyncio.Event  # set once everything is stopped
    bound: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)  # the daemon's start() is over
    base: Optional[Config] = None  # what the providers' answers are laid over (the world chosen by the callbacks)
    hooked: bool = False  # the refresh hooks are registered
    closing: Optional[asyncio.Future] = None


class WebSocketServer:
    """d-back's WebSocketServer: `WebSocketServer(port=3000, host="localhost")`."""

    def __init__(self, port: int = 3000, host: str = "localhost"):
        self.port = port
        self.host = host
        self.static_dir: Path = BUILTIN_ROOT  # set another directory before start() to serve it at /
        self.mock_provider = MockDataProvider(self)
        self.refresh_window = REFRESH_WINDOW
        self._callbacks: dict[str, Callable[..., Any]] = {}
        self._notes = _Notes()
        self._run: Optional[_Run] = None
        self._serving = asyncio.Event()
        self._last_servers: dict[str, dict] = {}
        self._last_users: dict[str, dict] = {}
        self._ids = StandIns()  # Discord ids standing in for the program's placeholders, kept across starts

    # -- attributes -----------------------------------------------------------------------
    @property
    def connections(self) -> Set:
        """The sockets open now: a live, read-only set (`len(server.connections)`)."""
        return _Connections(self)

    @property
    def server(self) -> Optional["Daemon"]:
        """The dbackd daemon while serving, else None (d-back's websockets server)."""
        return self._run.daemon if self._run is not None else None

    @property
    def data_provider(self) -> MockDataProvider:
        """The mock data provider, under the name d-back's configuration guide gives it."""
        return self.mock_provider

    @property
    def serving(self) -> bool:
        return self._serving.is_set()

    @property
    def ignored(self) -> dict[str, int]:
        """How many times each kind of input was repaired or left out (a copy)."""
        return dict(self._notes.counts)

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Serve until stop(), as d-back's start() does; then return.

        Raises OSError if the port cannot be bound, RuntimeError if this server is already
        serving. Cancelling it stops the server too.
        """
        if self._run is not None:
            raise RuntimeError("this WebSocketServer is already serving; stop() it first")
        # The port first, as d-back bound it at once: a client that connects while the daemon
        # loads waits in the backlog instead of being refused.
        sockets = bind(self.host, self.port)
        try:
            run = self._open(sockets)
        except BaseException:
            for sock in sockets:
                sock.close()
            raise
        self._run = run
        try:
            await run.daemon.start()
        except BaseException:
            self._run = None
            raise
        finally:
            run.bound.set()
        if run.closing is None:
            self._serving.set()
        try:
            await run.stopped.wait()
        finally:
            await self._close(run)

    async def run_forever(self) -> None:
        """Serve until stop() (d-back's run_forever(), which nothing could stop)."""
        await self.start()

    async def stop(self) -> None:
        """Close every socket (1001), stop serving and cancel everything started; start() returns."""
        run = self._run
        if run is not None:
            await self._close(run)

    async def wait_until_serving(self) -> None:
        """Return once the port is served (start() runs in another task, as a cog runs it)."""
        await self._serving.wait()

    def _world(self) -> Config:
        """What d-back served with the providers registered now: its mock world with none, only the
        server provider's servers with one, the mock servers (without users or life) with a user
        provider alone."""
        provided = [name for name in PROVIDERS if name in self._callbacks]
        return (mock_world() if not provided else _provided_world() if "on_get_server_data" in provided
                else _mock_servers_only())

    def _open(self, sockets: list) -> _Run:
        from dbackd.daemon import Daemon  # the web stack: loaded by the first start(), after the bind

        world = self._world()
        daemon = Daemon(world, host=self.host, port=self.port, static_dir=self._static_override(), watch=False,
                        sockets=sockets)
        tasks = TaskSet("compat")

        async def refresh() -> bool:
            return await self._refresh(run)

        run = _Run(daemon, tasks, Refresher(refresh, tasks), asyncio.Event(), base=world)
        for name in self._callbacks:
            self._attach(run, name)
        return run

    async def _refresh(self, run: _Run) -> bool:
        """Ask the providers. A provider registered while serving changes what their answers are
        laid over (d-back served from it alone from then on): the switch is made with the answer,
        in one step, so the clients see one change."""
        wanted = self._world()
        if wanted is run.base:
            return await run.daemon.refresh()
        ok = await run.daemon.refresh(base=wanted)
        if ok:
            run.base = wanted
        return ok

    def _static_override(self) -> Optional[str]:
        directory = Path(self.static_dir)
        if directory == BUILTIN_ROOT:
            return None
        if not directory.is_dir():
            # d-back's own command line did the same with a --static-dir that is not a directory.
            self._notes.add([("static_dir.missing", {"now": "the built-in page"})])
            return None
        return str(directory)

    async def _close(self, run: _Run) -> None:
        if run.closing is None:
            run.closing = asyncio.ensure_future(self._shutdown(run))
        await asyncio.shield(run.closing)

    async def _shutdown(self, run: _Run) -> None:
        await run.bound.wait()  # a stop() while start() binds stops what the start made
        self._serving.clear()
        await run.tasks.cancel()
        await run.daemon.stop()
        if self._run is run:
            self._run = None
        run.stopped.set()

    # -- callbacks ------------------------------------------------------------------------
    on_get_server_data = _Slot("on_get_server_data", """Register `async fn() -> {snowflake: {id, name, default?,
passworded?, password?}}`: the whole server list (the mock servers are not shown). Asked at
every socket open and every join.""")
    on_get_user_data = _Slot("on_get_user_data", """Register `async fn(server_snowflake) -> {uid: {uid, username,
status, roleColor}}`: a server's members. Asked, for every server, at every socket open and join.""")
    on_static_request = _Slot("on_static_request", """Register `async fn(path) -> None | (content_type, file_path)`:
None serves the static files; a path serves that file (404 if there is none).""")
    on_validate_discord_user = _Slot("on_validate_discord_user", """Register `async fn(token, user_info,
server_snowflake) -> bool`: whether a Discord login may see a passworded server.""")
    on_get_client_id = _Slot("on_get_client_id", """Register `async fn(server_snowflake) -> str`: the OAuth2
application id sent in server-join; "" or None: none.""")

    def _register(self, name: str, callback: Callable[..., Any]) -> None:
        if not callable(callback):
            raise TypeError(f"{name} needs a function (async def), not {callback!r}")
        self._callbacks[name] = callback
        run = self._run
        if run is not None:  # registered while serving: from the next request on
            self._attach(run, name)
            if name in PROVIDERS:
                self._refresh_soon(run)

    @staticmethod
    def _refresh_soon(run: _Run) -> None:
        """Ask a provider registered while serving now, so the clients already there see its world."""
        try:
            now = asyncio.get_running_loop().time()
        except RuntimeError:  # registered from outside the loop: the next open or join asks it
            return
        run.tasks.spawn(run.refresher.since(now), name="dbackd.compat.registered")

    def _attach(self, run: _Run, name: str) -> None:
        """Give the daemon this callback through its Python API, wrapped in d-back's meaning."""
        daemon = run.daemon
        wrapper = {
            "on_get_server_data": self._servers,
            "on_get_user_data": self._users,
            "on_static_request": self._static,
            "on_validate_discord_user": self._validate,
            "on_get_client_id": self._client_id,
        }[name]
        getattr(daemon, name)(wrapper)
        if name in PROVIDERS and not run.hooked:
            run.hooked = True
            refresher = run.refresher

            async def fresh(*_: Any) -> None:
                await refresher.recent(self.refresh_window)

            daemon.before_server_list(fresh)
            daemon.before_join(fresh)

    async def _servers(self) -> dict:
        answer = await _call(self._callbacks["on_get_server_data"])
        fixed = await self._repair(lambda found: lenient.servers(answer, self._ids, found), lenient.size(answer))
        if fixed is None:  # not a server list at all: keep the last one
            return self._last_servers
        self._last_servers = fixed
        return fixed

    async def _users(self, server: str) -> dict:
        answer = await _call(self._callbacks["on_get_user_data"], self._ids.original(server))
        fixed = await self._repair(lambda found: lenient.users(server, answer, self._ids, found), lenient.size(answer))
        if fixed is None:
            return self._last_users.get(server, {})
        self._last_users[server] = fixed
        return fixed

    async def _repair(self, fix: Callable[[lenient.Found], Any], size: int) -> Any:
        found: lenient.Found = []
        if size >= BIG_ANSWER:
            fixed = await asyncio.to_thread(fix, found)
        else:
            fixed = fix(found)
        self._notes.add(found)
        return fixed

    async def _static(self, path: str) -> Any:
        return lenient.static(await _call(self._callbacks["on_static_request"], path))

    async def _validate(self, token: str, user: dict, server: str) -> bool:
        if not token or not user or not user.get("id") or not user.get("username"):
            return False  # d-back refused these before asking its validator
        return bool(await _call(self._callbacks["on_validate_discord_user"], token, user, self._ids.original(server)))

    async def _client_id(self, server: str) -> Optional[str]:
        found: lenient.Found = []
        answer = lenient.client_id(await _call(self._callbacks["on_get_client_id"], self._ids.original(server)),
                                   self._ids, "get_client_id", found)
        self._notes.add(found)
        return answer

    # -- broadcasts -----------------------------------------------------------------------
    # Lenient as d-back's: they never raise. d-back sent whatever it was given to the
    # sockets of that server; here what dbackd cannot apply is repaired or dropped, and
    # the first of each kind is logged.

    async def broadcast_message(self, server: str, uid: str, message: str, channel: str) -> None:
        """Show `message` in a bubble over user `uid` of `server` (a guild snowflake)."""
        daemon, target = self.server, self._target(server, "message")
        if daemon is None or target is None:
            return
        found: lenient.Found = []
        args = lenient.message(uid, message, channel, self._ids, found)
        self._notes.add(found)
        if args is not None:
            await self._apply("message", daemon.broadcast_message(target, **args))

    async def broadcast_presence(self, server: str, uid: str, status: str, username: Optional[str] = None,
                                 role_color: Optional[str] = None, delete: bool = False) -> None:
        """Set a user's status (name and colour too), add a user (with `username`), or remove one (`delete`)."""
        daemon, target = self.server, self._target(server, "presence")
        if daemon is None or target is None:
            return
        found: lenient.Found = []
        args = lenient.presence(uid, status, username, role_color, delete, self._ids, found)
        self._notes.add(found)
        if args is None:
            return
        try:
            await daemon.broadcast_presence(target, **args)
        except DeclaredUser:
            await self._remove_declared(target, args["uid"], args["status"])
        except (UnknownServer, UnknownUser, InvalidRequest) as exc:
            self._dropped("presence", exc)

    async def broadcast_client_id_update(self, server: str, client_id: str) -> None:
        """Set a server's OAuth2 application id: its clients get update-clientid."""
        daemon, target = self.server, self._target(server, "client_id_update")
        if daemon is None or target is None:
            return
        found: lenient.Found = []
        value = lenient.client_id(client_id, self._ids, "client_id_update", found)
        if value is None and not found:
            found.append(("client_id_update.empty", {}))
        self._notes.add(found)
        if value is not None:
            await self._apply("client_id_update", daemon.broadcast_client_id_update(target, value))

    def _target(self, server: Any, what: str) -> Optional[str]:
        target = lenient.ref(server)
        if not target:
            self._notes.add([(f"{what}.bad_server", {"given": lenient.shape(server)})])
            return None
        return self._ids.get(target) or target  # a placeholder key of the server provider: its stand-in

    async def _apply(self, what: str, change: Any) -> None:
        try:
            await change
        except (UnknownServer, UnknownUser, InvalidRequest, DeclaredUser) as exc:
            self._dropped(what, exc)

    def _dropped(self, what: str, exc: Exception) -> None:
        kind = {UnknownServer: "unknown_server", UnknownUser: "unknown_user"}.get(type(exc), "invalid")
        # The exception's text is not logged: it may quote what was given.
        self._notes.add([(f"{what}.{kind}", {})])

    async def _remove_declared(self, server: str, uid: str, status: str) -> None:
        """A user the providers (or the mock world) declare is removed by them, not by a presence.

        d-back's host programs remove a member when it leaves the guild (the cog's
        on_member_remove), after which their provider no longer lists it: ask the providers
        again now, and if the user is still declared, give it the status that came with the
        removal (offline) instead.
        """
        run = self._run
        if run is None:
            return
        self._notes.add([("presence.delete_declared", {
            "now": "the providers are asked again" if run.hooked else "its status is set instead"})])
        if run.hooked:
            try:
                await asyncio.wait_for(run.refresher.since(asyncio.get_running_loop().time()),
                                       REMOVAL_REFRESH_TIMEOUT)
            except asyncio.TimeoutError:
                log.warning("compat.removal_refresh_timeout", server=server, timeout=REMOVAL_REFRESH_TIMEOUT)
        try:
            await run.daemon.broadcast_presence(server, uid, status)
        except (UnknownServer, UnknownUser):
            pass  # the refresh removed it
