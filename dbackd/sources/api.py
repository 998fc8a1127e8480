"""The HTTP API under /api/ (except the public /api/version): scripts and bots change the world.

A source of world changes: it applies events through the world's event builders. Off
(404) while the running config has no `api.tokens`; the settings are read at every
request, so reloads take effect at the next one. Each request is, in order: routed by
aiohttp's router (404, 405), authenticated (`Authorization: Bearer`, compared in constant time: 401
without a usable header, 403 for a token that is not configured), rate limited per
token (429 with Retry-After), its body checked (415, 413, 400 against
schemas/api.schema.json), then applied through the world's event builders (404 unknown
server or user, 409 a change only the declaration may make). Errors are JSON
`{"error": "..."}`. It never writes to a socket; the world and the hub do that. The
presence path is kept cheap: a benchmark posts to it while thousands of sockets listen.
"""
from __future__ import annotations

import math
import time
from typing import Any, Awaitable, Callable, Optional, Sequence

import structlog
from aiohttp import web

from dbackd.version import __version__
from dbackd.sources import apischema
from dbackd.core import jsontext, snapshots, tokens
from dbackd.sources.apischema import InvalidRequest
from dbackd.edge.bodies import TooLarge, TooSlow, read_limited
from dbackd.config import Api
from dbackd.core.events import PresenceChanged
from dbackd.core.rates import RateLimiter
from dbackd.core.world import DeclaredUser, Unavailable, UnknownServer, UnknownUser, World

log = structlog.get_logger("dbackd.api")

API_OFF = "the HTTP API is off: set api.tokens in the config to turn it on"


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: Optional[dict[str, str]] = None, close: bool = False):
        super().__init__(message)
        self.status = status
        self.headers = headers or {}
        self.close = close  # the connection cannot be used again (a body left unread): it ends with the answer


def _error(status: int, message: str, headers: Optional[dict[str, str]] = None, close: bool = False) -> web.Response:
    response = web.json_response({"error": message}, status=status, headers=headers)
    if close:
        response.force_close()
    return response


class HttpApi:
    """The API as a sub-application mounted at /api/: aiohttp's router finds the endpoint, a
    middleware turns the API off and on with the config, authenticates and rate-limits."""

    def __init__(self, world: World, counts: snapshots.Counts, clock: Callable[[], float] = time.monotonic):
        self.world = world
        self.counts = counts  # sockets joined per server (the hub's)
        self.limiter = RateLimiter(clock)
        self._settings: Optional[Api] = None
        self._digests: tuple[tuple[bytes, bytes], ...] = ()

    async def start(self) -> None:
        """Nothing runs between requests: every change is made while answering one."""

    async def stop(self) -> None:
        pass

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._gate])
        r = app.router
        r.add_get("/version", self.version)
        r.add_get("/openapi.json", self.openapi)
        r.add_get("/servers", self.list_servers)
        r.add_get("/servers/{server}/users", self.list_users)
        r.add_post("/servers/{server}/presence", self.post_presence)
        r.add_post("/servers/{server}/messages", self.post_message)
        r.add_put("/servers/{server}/users/{uid}", self.put_user)
        r.add_delete("/servers/{server}/users/{uid}", self.delete_user)
        return app

    @web.middleware
    async def _gate(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                    ) -> web.StreamResponse:
        """In order: the public version, the API switch, the endpoint (404, 405), the token
        (401, 403), the rate (429); then the handler checks the body and the world."""
        public = request.path == "/api/version"
        settings = self.world.config.api
        if not public and not settings.tokens:
            return _error(404, API_OFF)
        try:
            route = request.match_info.http_exception
            if route is not None:
                raise route
            if not public and request.path != "/api/openapi.json":
                key = self._authenticate(request, settings)
                wait = self.limiter.take(key, settings.rate.per_second, settings.rate.burst)
                if wait:
                    retry = max(1, math.ceil(wait))
                    raise ApiError(429, f"too many requests for this token: retry after {retry} s",
                                   {"Retry-After": str(retry)})
            return await handler(request)
        except web.HTTPMethodNotAllowed as exc:
            allowed = ", ".join(sorted(exc.allowed_methods))
            return _error(405, f"{request.method} is not allowed on {request.path} (allowed: {allowed})",
                          {"Allow": allowed})
        except web.HTTPNotFound:
            return _error(404, f"no such endpoint: {request.path} (see /api/openapi.json)")
        except ApiError as exc:
            return _error(exc.status, str(exc), exc.headers, exc.close)
        except InvalidRequest as exc:
            return _error(400, str(exc))
        except (UnknownServer, UnknownUser) as exc:
            return _error(404, exc.args[0] if exc.args else "not found")
        except DeclaredUser as exc:
            return _error(409, str(exc))
        except Unavailable:
            return _error(503, "the cluster's Redis cannot be reached: nothing was changed; try again shortly",
                          {"Retry-After": "2"})

    # -- checks ----------------------------------------------------------------------
    def _authenticate(self, request: web.Request, settings: Api) -> bytes:
        """The caller's key (its token's digest), or ApiError 401/403."""
        if settings is not self._settings:  # the config was reloaded: tokens may have changed
            self._settings = settings
            self._digests = tuple((tokens.digest(t), tokens.digest(t)) for t in settings.tokens)
            self.limiter.keep_only({d for d, _ in self._digests})
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise ApiError(401, "missing bearer token: send the header `Authorization: Bearer <token>`",
                           {"WWW-Authenticate": 'Bearer realm="dbackd"'})
        match = tokens.find(tokens.digest(token), self._digests)
        if match is None:
            raise ApiError(403, "this token is not allowed (it is not one of api.tokens)")
        return match

    async def _json(self, request: web.Request, definition: str) -> Any:
        if request.content_type != "application/json":
            got = request.headers.get("Content-Type", "no Content-Type")
            raise ApiError(415, f"the body must be JSON sent with Content-Type: application/json (got {got})")
        config = self.world.config
        limit = config.api.max_body_bytes
        try:
            body = await read_limited(request.content, limit, request.content_length, config.limits.body_timeout)
        except TooLarge:
            raise ApiError(413, f"the body is larger than api.max_body_bytes ({limit} bytes)", close=True) from None
        except TooSlow:
            raise ApiError(408, f"the body did not arrive within limits.body_timeout "
                                f"({config.limits.body_timeout:g} s)", close=True) from None
        try:
            data = jsontext.parse(body)
        except jsontext.NotJson as exc:
            raise ApiError(400, f"the body is not valid JSON: {exc}") from None
        apischema.check(definition, data)
        return data

    # -- endpoints -------------------------------------------------------------------
    async def version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": __version__})

    async def openapi(self, request: web.Request) -> web.Response:
        return web.json_response(apischema.openapi(__version__))

    async def list_servers(self, request: web.Request) -> web.Response:
        return web.json_response({"servers": snapshots.servers(self.world, self.counts)})

    async def list_users(self, request: web.Request) -> web.Response:
        state = self.world.get(request.match_info["server"])
        return web.json_response({"server": state.snowflake, "users": snapshots.users(self.world, state.snowflake)})

    async def post_presence(self, request: web.Request) -> web.Response:
        body = await self._json(request, "presenceRequest")
        world = self.world
        state = world.get(request.match_info["server"])
        items = body["presences"] if "presences" in body else (body,)
        if len(items) == 1:
            p = items[0]
            events = [world.presence_event(state.snowflake, p["uid"], p["status"], p.get("username"),
                                           p.get("roleColor"), p.get("delete", False))]
        else:
            events = self._batch(state.snowflake, items)
        for event in events:  # nothing awaited since the checks: the batch is applied as checked
            world.apply(event)
        await world.committed()
        return web.json_response({"applied": len(events)})

    def _batch(self, snowflake: str, items: Sequence[dict]) -> list[PresenceChanged]:
        """Every event of a batch, checked as if the earlier ones were applied; none is applied here."""
        world = self.world
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

    async def post_message(self, request: web.Request) -> web.Response:
        body = await self._json(request, "message")
        self.world.say(request.match_info["server"], body["uid"], body["message"], body["channel"])
        await self.world.committed()
        return web.json_response({"applied": 1})

    async def put_user(self, request: web.Request) -> web.Response:
        server, uid = request.match_info["server"], request.match_info["uid"]
        try:
            apischema.check("uid", uid)
        except InvalidRequest as exc:
            raise InvalidRequest(f"uid in the path: {exc}") from None
        body = await self._json(request, "userUpdate")
        world = self.world
        state = world.get(server)
        live = state.users.get(uid)
        status = body.get("status") or (live.status if live else "online")
        world.set_presence(state.snowflake, uid, status, body["username"], body.get("roleColor"))
        await world.committed()
        user = state.users[uid]
        entry = {**snapshots.entry(user), "declared": state.declared(uid)}
        log.info("api.user_put", server=state.info.id, uid=uid, created=live is None)
        return web.json_response(entry, status=200 if live else 201)

    async def delete_user(self, request: web.Request) -> web.StreamResponse:
        server, uid = request.match_info["server"], request.match_info["uid"]
        world = self.world
        state = world.get(server)
        live = state.users.get(uid)
        if live is None:
            raise UnknownUser(f"user {uid} is not in server {state.info.id}")
        world.set_presence(state.snowflake, uid, live.status, delete=True)
        await world.committed()
        log.info("api.user_deleted", server=state.info.id, uid=uid)
        return web.Response(status=204)

