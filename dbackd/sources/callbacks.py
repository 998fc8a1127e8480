"""Callbacks of a host program, run with a timeout each and their failures contained.

A program that embeds dbackd registers async functions on its Daemon (data providers, an
OAuth validator, a client-id provider, a static-request hook, hooks awaited before a
socket's server list and before each join); this module runs them. A callback that
raises, outlives its timeout or answers something unusable is logged (with its
exception) and counts as "no answer": the callers turn that into the protocol's own
errors, so user code never crashes the daemon or holds up other clients. Every task
started here is owned here and cancelled on stop. Nothing here changes state except
through the world's event builders.
"""
from __future__ import annotations

import asyncio
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Mapping, Optional

import structlog
from aiohttp import web

from dbackd.config.values import is_snowflake
from dbackd.core.tasks import cancel_and_wait

if TYPE_CHECKING:
    from dbackd.edge.access import LoginVerifier
    from dbackd.config import Server
    from dbackd.core.world import ServerState, World

log = structlog.get_logger("dbackd.callbacks")

# Seconds a callback may take before it is cancelled and treated as having failed.
DEFAULT_TIMEOUTS = {
    "on_get_server_data": 10.0,
    "on_get_user_data": 10.0,
    "on_validate_discord_user": 5.0,
    "on_get_client_id": 2.0,
    "on_static_request": 5.0,
    "before_server_list": 10.0,
    "before_join": 10.0,
}
_CLOSE_GRACE = 1.0  # seconds given to cancelled callbacks to finish when the daemon stops


def shape(value: Any) -> str:
    """What a value looks like, without any of its contents (it may hold a password)."""
    if isinstance(value, Mapping):
        return f"a mapping of {len(value)}"
    if isinstance(value, (list, tuple)):
        kinds = sorted({type(v).__name__ for v in value})
        return f"a list of {len(value)}" + (f" ({', '.join(kinds[:3])})" if kinds else "")
    return f"a value of type {type(value).__name__}"


class CallbackFailed(Exception):
    """A callback raised, timed out or answered nonsense; it has been logged already."""


@dataclass(frozen=True)
class Registered:
    fn: Callable[..., Awaitable[Any]]
    timeout: float


def _is_async(fn: Any) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))


class Callbacks:
    def __init__(self, world: "World"):
        self.world = world
        self.registered: dict[str, Registered] = {}
        self._tasks: set[asyncio.Task] = set()
        self._closed = False

    # -- registration --------------------------------------------------------------
    def register(self, name: str, fn: Callable[..., Awaitable[Any]], timeout: Optional[float] = None) -> None:
        if not callable(fn) or not _is_async(fn):
            raise TypeError(f"{name} needs an async function (async def), not {fn!r}")
        if timeout is not None and not timeout > 0:
            raise ValueError(f"{name}: timeout must be a positive number of seconds, not {timeout!r}")
        self.registered[name] = Registered(fn, float(timeout or DEFAULT_TIMEOUTS[name]))

    def has(self, name: str) -> bool:
        return name in self.registered

    @property
    def running(self) -> int:
        """How many callbacks are running now."""
        return len(self._tasks)

    # -- running -------------------------------------------------------------------
    async def call(self, name: str, *args: Any) -> Any:
        """Run a registered callback; its result, or CallbackFailed (already logged)."""
        entry = self.registered[name]
        if self._closed:  # the daemon is stopping: no new user code runs
            raise CallbackFailed(name)
        try:
            task = asyncio.ensure_future(entry.fn(*args))
        except Exception as exc:  # a wrong signature, or a function that returned no awaitable
            log.error("callback.failed", callback=name, error=repr(exc), exc_info=exc)
            raise CallbackFailed(name) from None
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        try:
            done, _ = await asyncio.wait({task}, timeout=entry.timeout)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if not done:
            # Not awaited: a callback that ignores cancellation must not hold up its caller.
            task.cancel()
            log.error("callback.timeout", callback=name, timeout=entry.timeout)
            raise CallbackFailed(name)
        if task.cancelled():
            log.error("callback.failed", callback=name, error="cancelled")
            raise CallbackFailed(name)
        error = task.exception()
        if error is not None:
            log.error("callback.failed", callback=name, error=repr(error), exc_info=error)
            raise CallbackFailed(name)
        return task.result()

    def bad_answer(self, name: str, answer: Any, expected: str) -> CallbackFailed:
        # By shape only: an answer can hold a password or a token.
        log.error("callback.bad_answer", callback=name, answer=shape(answer), expected=expected)
        return CallbackFailed(name)

    def open(self) -> None:
        self._closed = False

    async def close(self) -> None:
        """Cancel every callback still running and start no more (the daemon is stopping)."""
        self._closed = True
        stuck = await cancel_and_wait(list(self._tasks), _CLOSE_GRACE)
        if stuck:
            log.warning("callback.still_running", count=stuck)

    # -- the hooks, as the rest of the daemon asks them ------------------------------
    def login_verifier(self, fallback: "LoginVerifier") -> "LoginVerifier":
        """The one verifier of Discord logins: the host program's validator once it is registered, else `fallback`."""
        async def verify(server: "Server", token: str, claimed: dict) -> bool:
            if "on_validate_discord_user" in self.registered:
                return await self.validate_login(server, token, claimed)
            return await fallback(server, token, claimed)

        return verify

    async def validate_login(self, server: "Server", token: str, claimed: dict) -> bool:
        """The host program's validator decides; a failure is a no."""
        name = "on_validate_discord_user"
        try:
            answer = await self.call(name, token, claimed, server.snowflake)
        except CallbackFailed:
            return False
        if not isinstance(answer, bool):
            self.bad_answer(name, answer, "True or False")
            return False
        return answer

    async def ask_client_id(self, state: "ServerState") -> None:
        """Consult the client-id provider for a join; a new id goes through the world
        (members get update-clientid, the joining socket gets it in server-join)."""
        name = "on_get_client_id"
        if name not in self.registered:
            return
        try:
            answer = await self.call(name, state.snowflake)
            if answer is None:
                return
            if isinstance(answer, int) and not isinstance(answer, bool):
                answer = str(answer)
            if not is_snowflake(answer):
                raise self.bad_answer(name, answer, "an application id (a string of digits) or None")
        except CallbackFailed:
            return  # the join goes on with the client id the world has
        current = self.world.servers.get(state.snowflake)
        if current is not None and current.client_id != answer:
            self.world.set_client_id(state.snowflake, answer)

    async def before_server_list(self) -> None:
        """The host program's hook before a new socket is sent its server list, if one is registered.

        Awaited (with its timeout), so what it changes in the world is in that list; its
        answer is ignored, and a failure is logged and the list goes out as the world has it.
        """
        await self._hook("before_server_list")

    async def before_join(self, server: str) -> None:
        """The host program's hook at each `connect`, before the server asked for is looked up."""
        await self._hook("before_join", server)

    async def _hook(self, name: str, *args: Any) -> None:
        if name not in self.registered:
            return
        try:
            await self.call(name, *args)
        except CallbackFailed:
            pass  # logged by call(); the socket goes on with the world as it is

    async def static_response(self, path: str) -> Optional[web.StreamResponse]:
        """The static hook's answer for a path; None to fall through to the static files."""
        name = "on_static_request"
        if name not in self.registered:
            return None
        try:
            answer = await self.call(name, path)
            if answer is None:
                return None
            if (isinstance(answer, tuple) and len(answer) == 2 and isinstance(answer[0], str)
                    and isinstance(answer[1], (bytes, str, Path))):
                content_type, body = answer
                if isinstance(body, Path):  # a file to send (a missing one is a 404)
                    return web.FileResponse(body, headers={"Content-Type": content_type})
                data = body.encode("utf-8") if isinstance(body, str) else body
                return web.Response(body=data, headers={"Content-Type": content_type})
            raise self.bad_answer(name, answer, "None or (content type, body as bytes, str or Path)")
        except CallbackFailed:
            return web.Response(status=500, text="Internal Server Error")
