"""The Python API: what a host program (a Discord bot, a script) does with its daemon.

A source of world changes, offered on `dbackd.Daemon` itself. Changes go through the
world as events, exactly like the config, reloads and the HTTP API, so every client
(and every client that joins later) sees the same thing. Arguments are checked against
the API schema; bad input raises a ValueError or LookupError subclass instead of being
dropped. Call these from the loop the daemon runs in. Callbacks registered here are run
by callbacks.py (timeouts, contained failures); the data providers' answers go to the
declaration, which checks them and lays them over the config.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Awaitable, Callable, Optional, TypeVar, Union, overload

import structlog

from dbackd.sources import apischema, providers
from dbackd.core import snapshots
from dbackd.sources.callbacks import CallbackFailed, Callbacks
from dbackd.config import Config, ConfigError
from dbackd.config.diff import summary
from dbackd.core.declaration import Declaration
from dbackd.core.snapshots import Ref, ServerSnapshot, UserSnapshot, text
from dbackd.core.world import World

log = structlog.get_logger("dbackd.host")

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
# What each callback looks like (its arguments and answer).
ServerProvider = TypeVar("ServerProvider", bound=Callable[[], Awaitable[Any]])
UserProvider = TypeVar("UserProvider", bound=Callable[[str], Awaitable[Any]])
Validator = TypeVar("Validator", bound=Callable[[str, dict, str], Awaitable[bool]])
ClientIdProvider = TypeVar("ClientIdProvider", bound=Callable[[str], Awaitable[Optional[str]]])
StaticHook = TypeVar("StaticHook", bound=Callable[[str], Awaitable[Optional[tuple[str, Union[bytes, str, Path]]]]])
OpenHook = TypeVar("OpenHook", bound=Callable[[], Awaitable[Any]])
JoinHook = TypeVar("JoinHook", bound=Callable[[str], Awaitable[Any]])


class HostApi:
    """Broadcasting, reading the world, and callbacks."""

    def __init__(self, world: World, counts: snapshots.Counts, callbacks: Callbacks, declaration: Declaration):
        self.world = world
        self.counts = counts  # sockets joined per server (the hub's)
        self.callbacks = callbacks
        self.declaration = declaration

    async def start(self) -> None:
        """Ask the data providers (if any) for the first time."""
        self.callbacks.open()
        await self.refresh()

    async def stop(self) -> None:
        """Cancel callbacks still running; requests waiting on user code end now."""
        await self.callbacks.close()

    # -- changing the world ------------------------------------------------------------
    async def broadcast_presence(self, server: Ref, uid: Ref, status: str, username: Optional[str] = None,
                                 role_color: Optional[str] = None, delete: bool = False) -> None:
        """Set a user's status (and optionally name and colour), add a runtime user, or remove one.

        `server` is a guild snowflake, a short id or "default". A uid the server does not
        have needs a `username` and becomes a runtime user. `delete=True` removes a runtime
        user; a declared one cannot be removed this way (set it "offline").

        Raises InvalidRequest (bad status, colour, id...), UnknownServer, UnknownUser, or
        DeclaredUser.
        """
        uid = text(uid)
        body: dict[str, Any] = {"uid": uid, "status": status}
        if username is not None:
            body["username"] = username
        if role_color is not None:
            body["roleColor"] = role_color
        if delete:
            body["delete"] = True
        apischema.check("presence", body)
        self.world.set_presence(text(server), uid, status, username, role_color, delete)
        await self.world.committed()

    async def broadcast_message(self, server: Ref, uid: Ref, message: str, channel: Ref) -> None:
        """Show `message` in a speech bubble over user `uid` (who must be in the server).

        Raises InvalidRequest, UnknownServer or UnknownUser.
        """
        uid, channel = text(uid), text(channel)
        apischema.check("message", {"uid": uid, "message": message, "channel": channel})
        self.world.say(text(server), uid, message, channel)
        await self.world.committed()

    async def broadcast_client_id_update(self, server: Ref, client_id: Ref) -> None:
        """Set the Discord OAuth2 application id of a server: its clients get update-clientid,
        later joiners get it in server-join. Raises InvalidRequest or UnknownServer."""
        client_id = text(client_id)
        apischema.check("clientId", client_id)
        self.world.set_client_id(text(server), client_id)
        await self.world.committed()

    # -- reading the world -----------------------------------------------------------
    def servers(self) -> list[ServerSnapshot]:
        """Every server as it is now, in declaration order."""
        return snapshots.servers(self.world, self.counts)

    def users(self, server: Ref) -> list[UserSnapshot]:
        """Every user of a server as it is now. Raises UnknownServer."""
        return snapshots.users(self.world, server)

    # -- callbacks -------------------------------------------------------------------
    def _register(self, name: str, fn: Optional[F], timeout: Optional[float]) -> Any:
        def register(f: F) -> F:
            self.callbacks.register(name, f, timeout)
            return f

        return register if fn is None else register(fn)

    @overload
    def on_get_server_data(self, fn: ServerProvider, *, timeout: Optional[float] = None) -> ServerProvider: ...

    @overload
    def on_get_server_data(self, fn: None = None, *, timeout: Optional[float] = None) -> Callable[[ServerProvider], ServerProvider]: ...

    def on_get_server_data(self, fn: Any = None, *, timeout: Optional[float] = None) -> Any:
        """Register `async fn() -> {snowflake: {id, name, default?, passworded?, password?}}`.

        Its servers are laid over the config's (same snowflake: the fields it gives win;
        others are added), checked like a config, at start and on `refresh()`. Usable as
        a decorator, with or without `(timeout=...)` (default 10 s).
        """
        return self._register("on_get_server_data", fn, timeout)

    @overload
    def on_get_user_data(self, fn: UserProvider, *, timeout: Optional[float] = None) -> UserProvider: ...

    @overload
    def on_get_user_data(self, fn: None = None, *, timeout: Optional[float] = None) -> Callable[[UserProvider], UserProvider]: ...

    def on_get_user_data(self, fn: Any = None, *, timeout: Optional[float] = None) -> Any:
        """Register `async fn(server_snowflake) -> {uid: {username, status?, roleColor?}}`.

        Asked for every server at start and on `refresh()`; its users are added to the
        server's declared users (a uid the config declares too takes these fields).
        """
        return self._register("on_get_user_data", fn, timeout)

    @overload
    def on_validate_discord_user(self, fn: Validator, *, timeout: Optional[float] = None) -> Validator: ...

    @overload
    def on_validate_discord_user(self, fn: None = None, *, timeout: Optional[float] = None) -> Callable[[Validator], Validator]: ...

    def on_validate_discord_user(self, fn: Any = None, *, timeout: Optional[float] = None) -> Any:
        """Register `async fn(token, user, server_snowflake) -> bool` to decide Discord logins.

        Asked when a client sends OAuth credentials for a private server; True lets it in.
        If it raises, times out (default 5 s) or returns anything but a bool, the client
        gets "Discord authentication failed. Please try logging in again."
        """
        return self._register("on_validate_discord_user", fn, timeout)

    @overload
    def on_get_client_id(self, fn: ClientIdProvider, *, timeout: Optional[float] = None) -> ClientIdProvider: ...

    @overload
    def on_get_client_id(self, fn: None = None, *, timeout: Optional[float] = None) -> Callable[[ClientIdProvider], ClientIdProvider]: ...

    def on_get_client_id(self, fn: Any = None, *, timeout: Optional[float] = None) -> Any:
        """Register `async fn(server_snowflake) -> str | None`: the OAuth2 application id.

        Asked at every join; a new answer is applied to the world (members get
        update-clientid) and sent in server-join. None, a failure or a timeout (default
        2 s) keeps the id the world has.
        """
        return self._register("on_get_client_id", fn, timeout)

    @overload
    def on_static_request(self, fn: StaticHook, *, timeout: Optional[float] = None) -> StaticHook: ...

    @overload
    def on_static_request(self, fn: None = None, *, timeout: Optional[float] = None) -> Callable[[StaticHook], StaticHook]: ...

    def on_static_request(self, fn: Any = None, *, timeout: Optional[float] = None) -> Any:
        """Register `async fn(path) -> None | (content_type, body)` for HTTP GETs of static files.

        Asked before the static mounts (not for /api/, /healthz or sockets). None falls
        through to the files; `body` is bytes, str (sent as UTF-8) or a pathlib.Path to a
        file. A failure or timeout (default 5 s) is answered with 500.
        """
        return self._register("on_static_request", fn, timeout)

    @overload
    def before_server_list(self, fn: OpenHook, *, timeout: Optional[float] = None) -> OpenHook: ...

    @overload
    def before_server_list(self, fn: None = None, *, timeout: Optional[float] = None) -> Callable[[OpenHook], OpenHook]: ...

    def before_server_list(self, fn: Any = None, *, timeout: Optional[float] = None) -> Any:
        """Register `async fn()`, awaited before each new socket is sent its server list.

        What it changes in the world (a `refresh()`, say) is in that list. Its answer is
        ignored; if it raises or outlives its timeout (default 10 s) the list goes out as
        the world has it. The socket's frames wait for it; other sockets do not.
        """
        return self._register("before_server_list", fn, timeout)

    @overload
    def before_join(self, fn: JoinHook, *, timeout: Optional[float] = None) -> JoinHook: ...

    @overload
    def before_join(self, fn: None = None, *, timeout: Optional[float] = None) -> Callable[[JoinHook], JoinHook]: ...

    def before_join(self, fn: Any = None, *, timeout: Optional[float] = None) -> Any:
        """Register `async fn(server)`, awaited at each `connect` before the server is looked up.

        `server` is what the client asked for (a short id, a snowflake or "default"), so a
        server the hook brings into the world can be joined. Failures as for
        `before_server_list`: the join goes on with the world as it is.
        """
        return self._register("before_join", fn, timeout)

    async def refresh(self, base: Optional[Config] = None) -> bool:
        """Ask the data providers again and apply their answer as the new declaration.

        With `base`, that model becomes the declaration the answer is laid over, in the same
        step (a host program that started on one config and now provides its servers itself).
        Returns False, changing nothing, if a provider failed or its data is invalid (both
        logged as provider.rejected). Also run by start() when a provider is registered.
        """
        if not (self.callbacks.has("on_get_server_data") or self.callbacks.has("on_get_user_data")):
            if base is not None:
                await self.declaration.replace(base)
            return True
        under = base if base is not None else self.declaration.base
        try:
            provided = await providers.collect(self.callbacks, [s.snowflake for s in under.servers])
        except CallbackFailed as exc:
            log.error("provider.rejected", reason=f"{exc} failed")
            return False
        try:
            lines = await self.declaration.provide(provided, base)
        except providers.BadAnswer as exc:
            self.callbacks.bad_answer(exc.callback, exc.answer, exc.expected)
            log.error("provider.rejected", reason=f"{exc.callback} answered {exc.shape}")
            return False
        except ConfigError as exc:
            log.error("provider.rejected", reason="invalid data", errors=[p.message for p in exc.problems])
            return False
        changes = summary(lines)
        # An answer that changed nothing is routine (a host program may refresh at every socket open).
        (log.info if changes["count"] else log.debug)("provider.applied", **changes)
        return True
