"""The HTTP API under /api/ (except the public /api/version): scripts and bots change the world.

Off (404) while the running config has no `api.tokens`; the settings are read at every
request, so reloads take effect at the next one. Each request is, in order: routed
(404, 405), authenticated (`Authorization: Bearer`, compared in constant time: 401
without a usable header, 403 for a token that is not configured), rate limited per
token (429 with Retry-After), its body checked (415, 413, 400 against
schemas/api.schema.json), then applied through the world's event builders (404 unknown
server or user, 409 a change only the declaration may make). Errors are JSON
`{"error": "..."}`. It never writes to a socket; the world and the hub do that. The
presence path is kept cheap: a benchmark posts to it while thousands of sockets listen.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import math
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Optional, Sequence

import structlog
from aiohttp import web

from . import __version__, apischema
from .apischema import InvalidRequest
from .config import Api
from .events import PresenceChanged
from .world import DeclaredUser, UnknownServer, UnknownUser

if TYPE_CHECKING:
    from .daemon import Daemon

log = structlog.get_logger("dbackd.api")

API_OFF = "the HTTP API is off: set api.tokens in the config to turn it on"


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: Optional[dict[str, str]] = None):
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


def _error(status: int, message: str, headers: Optional[dict[str, str]] = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


class RateLimiter:
    """A token bucket per key: `burst` requests at once, refilled at `per_second`."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._buckets: dict[bytes, tuple[float, float]] = {}  # key -> (tokens, when)

    def take(self, key: bytes, per_second: float, burst: int) -> float:
        """Take one request's worth; 0.0 if allowed, else the seconds until one is available."""
        now = self.clock()
        tokens, when = self._buckets.get(key, (float(burst), now))
        tokens = min(float(burst), tokens + (now - when) * per_second)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / per_second

    def keep_only(self, keys: set[bytes]) -> None:
        """Forget the buckets of tokens that were removed."""
        for key in [k for k in self._buckets if k not in keys]:
            del self._buckets[key]


def _digest(token: str) -> bytes:
    # Hashing first makes the comparison independent of the tokens' lengths.
    return hashlib.sha256(token.encode("utf-8")).digest()


Handler = Callable[[web.Request, list[str]], Awaitable[web.StreamResponse]]


class HttpApi:
    def __init__(self, daemon: "Daemon"):
        self.daemon = daemon
        self.limiter = RateLimiter()
        self._settings: Optional[Api] = None
        self._digests: tuple[bytes, ...] = ()

    # -- routing ---------------------------------------------------------------------
    def _route(self, parts: list[str]) -> Optional[tuple[dict[str, Handler], list[str]]]:
        """Path segments after /api/ → (handlers by method, path parameters)."""
        n = len(parts)
        if n == 1 and parts[0] == "servers":
            return {"GET": self.list_servers}, []
        if n >= 3 and parts[0] == "servers" and parts[1]:
            if n == 3 and parts[2] == "presence":
                return {"POST": self.post_presence}, [parts[1]]
            if n == 3 and parts[2] == "messages":
                return {"POST": self.post_message}, [parts[1]]
            if n == 3 and parts[2] == "users":
                return {"GET": self.list_users}, [parts[1]]
            if n == 4 and parts[2] == "users" and parts[3]:
                return {"PUT": self.put_user, "DELETE": self.delete_user}, [parts[1], parts[3]]
        return None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Every request under /api/ that no fixed route took."""
        parts = request.match_info["tail"].split("/")
        if parts == ["version"]:  # public, and only GET (its own route): any other method lands here
            return _error(405, f"{request.method} is not allowed on {request.path} (allowed: GET, HEAD)",
                          {"Allow": "GET, HEAD"})
        settings = self.daemon.config.api
        if not settings.tokens:
            return _error(404, API_OFF)
        if parts == ["openapi.json"] and request.method in ("GET", "HEAD"):
            return web.json_response(apischema.openapi(__version__))
        route = self._route(parts)
        if route is None:
            return _error(404, f"no such endpoint: {request.path} (see /api/openapi.json)")
        handlers, params = route
        method = "GET" if request.method == "HEAD" else request.method
        handler = handlers.get(method)
        if handler is None:
            allowed = ", ".join(sorted(set(handlers) | ({"HEAD"} if "GET" in handlers else set())))
            return _error(405, f"{request.method} is not allowed on {request.path} (allowed: {allowed})",
                          {"Allow": allowed})
        try:
            key = self._authenticate(request, settings)
            wait = self.limiter.take(key, settings.rate.per_second, settings.rate.burst)
            if wait:
                retry = max(1, math.ceil(wait))
                raise ApiError(429, f"too many requests for this token: retry after {retry} s",
                               {"Retry-After": str(retry)})
            return await handler(request, params)
        except ApiError as exc:
            return _error(exc.status, str(exc), exc.headers)
        except InvalidRequest as exc:
            return _error(400, str(exc))
        except (UnknownServer, UnknownUser) as exc:
            return _error(404, exc.args[0] if exc.args else "not found")
        except DeclaredUser as exc:
            return _error(409, str(exc))

    # -- checks ----------------------------------------------------------------------
    def _authenticate(self, request: web.Request, settings: Api) -> bytes:
        """The caller's key (its token's digest), or ApiError 401/403."""
        if settings is not self._settings:  # the config was reloaded: tokens may have changed
            self._settings = settings
            self._digests = tuple(_digest(t) for t in settings.tokens)
            self.limiter.keep_only(set(self._digests))
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise ApiError(401, "missing bearer token: send the header `Authorization: Bearer <token>`",
                           {"WWW-Authenticate": 'Bearer realm="dbackd"'})
        presented = _digest(token)
        match = None
        for known in self._digests:  # every token is compared, so timing says nothing about which matched
            if hmac.compare_digest(presented, known):
                match = known
        if match is None:
            raise ApiError(403, "this token is not allowed (it is not one of api.tokens)")
        return match

    async def _json(self, request: web.Request, definition: str) -> Any:
        if request.content_type != "application/json":
            got = request.headers.get("Content-Type", "no Content-Type")
            raise ApiError(415, f"the body must be JSON sent with Content-Type: application/json (got {got})")
        limit = self.daemon.config.api.max_body_bytes
        too_big = ApiError(413, f"the body is larger than api.max_body_bytes ({limit} bytes)")
        if request.content_length is not None and request.content_length > limit:
            raise too_big
        body = bytearray()
        async for chunk in request.content.iter_any():
            body += chunk
            if len(body) > limit:
                raise too_big
        try:
            data = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise ApiError(400, f"the body is not valid JSON: {exc}") from None
        apischema.check(definition, data)
        return data

    # -- endpoints -------------------------------------------------------------------
    async def list_servers(self, request: web.Request, params: list[str]) -> web.Response:
        return web.json_response({"servers": self.daemon.servers()})

    async def list_users(self, request: web.Request, params: list[str]) -> web.Response:
        state = self.daemon.world.get(params[0])
        return web.json_response({"server": state.snowflake, "users": self.daemon.users(state.snowflake)})

    async def post_presence(self, request: web.Request, params: list[str]) -> web.Response:
        body = await self._json(request, "presenceRequest")
        world = self.daemon.world
        state = world.get(params[0])
        items = body["presences"] if "presences" in body else (body,)
        if len(items) == 1:
            p = items[0]
            events = [world.presence_event(state.snowflake, p["uid"], p["status"], p.get("username"),
                                           p.get("roleColor"), p.get("delete", False))]
        else:
            events = self._batch(state.snowflake, items)
        for event in events:  # nothing awaited since the checks: the batch is applied as checked
            world.apply(event)
        return web.json_response({"applied": len(events)})

    def _batch(self, snowflake: str, items: Sequence[dict]) -> list[PresenceChanged]:
        """Every event of a batch, checked as if the earlier ones were applied; none is applied here."""
        world = self.daemon.world
        users = world.servers[snowflake].users
        present: dict[str, bool] = {}

        def exists(uid: str) -> bool:
            return present.get(uid, uid in users)

        events: list[PresenceChanged] = []
        for i, p in enumerate(items):
            try:
                event = world.presence_event(snowflake, p["uid"], p["status"], p.get("username"), p.get("roleColor"),
                                             p.get("delete", False), exists=exists)
            except (UnknownUser, DeclaredUser) as exc:
                raise type(exc)(f"presences[{i}]: {exc.args[0]}") from None
            present[event.uid] = not event.delete
            events.append(event)
        return events

    async def post_message(self, request: web.Request, params: list[str]) -> web.Response:
        body = await self._json(request, "message")
        self.daemon.world.say(params[0], body["uid"], body["message"], body["channel"])
        return web.json_response({"applied": 1})

    async def put_user(self, request: web.Request, params: list[str]) -> web.Response:
        server, uid = params
        try:
            apischema.check("uid", uid)
        except InvalidRequest as exc:
            raise InvalidRequest(f"uid in the path: {exc}") from None
        body = await self._json(request, "userUpdate")
        world = self.daemon.world
        state = world.get(server)
        live = state.users.get(uid)
        status = body.get("status") or (live.status if live else "online")
        world.set_presence(state.snowflake, uid, status, body["username"], body.get("roleColor"))
        user = state.users[uid]
        entry = {"uid": uid, "username": user.username, "status": user.status, "roleColor": user.role_color,
                 "declared": state.declared(uid)}
        log.info("api.user_put", server=state.info.id, uid=uid, created=live is None)
        return web.json_response(entry, status=200 if live else 201)

    async def delete_user(self, request: web.Request, params: list[str]) -> web.StreamResponse:
        server, uid = params
        world = self.daemon.world
        state = world.get(server)
        live = state.users.get(uid)
        if live is None:
            raise UnknownUser(f"user {uid} is not in server {state.info.id}")
        world.set_presence(state.snowflake, uid, live.status, delete=True)
        log.info("api.user_deleted", server=state.info.id, uid=uid)
        return web.Response(status=204)


API: web.AppKey[HttpApi] = web.AppKey("http_api")


def register(app: web.Application, daemon: "Daemon") -> HttpApi:
    """Add the API's routes to the app (before its catch-all)."""
    api = HttpApi(daemon)
    app[API] = api
    app.router.add_route("*", "/api/{tail:.*}", api.handle)
    return api
