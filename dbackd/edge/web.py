"""HTTP and WebSocket on one port: the routes, and static files.

Routes: /healthz, /metrics, the HTTP API's sub-application under /api/ (which has the
public /api/version), and one catch-all for everything else: a socket upgrade on a
socket path, the host program's static hook, then the static mounts. Mounts, socket
paths and the metrics switch are read from the world's current config at each request,
so reloads apply at once; each new connection gets the header timeout then in force.
A request aiohttp cannot parse is answered without quoting it (a header line can hold a
token). Nothing here changes the world.
"""
from __future__ import annotations

import asyncio
import re
from http import HTTPStatus
from typing import Any, Awaitable, Callable, Optional, Union

import structlog
from aiohttp import WSCloseCode, web

from dbackd.config import Mount
from dbackd.edge import static
from dbackd.edge.peers import client_address
from dbackd.sources.api import HttpApi
from dbackd.sources.callbacks import Callbacks
from dbackd.fanout.hub import Hub
from dbackd.ops.logs import PerAddress
from dbackd.ops.metrics import Metrics
from dbackd.core.rates import Tally
from dbackd.edge.websocket import Refusal, SocketEndpoint
from dbackd.core.world import World

log = structlog.get_logger("dbackd.web")

# The built-in page runs no inline script or style and talks only to its own daemon and to the
# socket origins its mount lists: a login typed on it can reach no other site. Only the sites its
# mount lists may frame it (none unless listed), so no other page can overlay or click through it.
CSP = ("default-src 'self'; connect-src 'self'{sockets}; img-src 'self' data:; style-src 'self'; "
       "script-src 'self'; base-uri 'none'; frame-ancestors {frames}")
PAGE_SOCKETS = "/sockets.json"  # under a built-in mount: the socket origins the page may use besides its own
# Under a built-in mount: a member's avatar, fetched and kept by the daemon (the page never asks Discord).
PAGE_FACE = re.compile(r"/faces/([0-9]{1,20})/([0-9]{1,20})\.png")
FACE_MAX_AGE = 3600  # seconds a browser keeps a face

FaceLookup = Callable[[str, str], Awaitable[Union[bytes, None, bool]]]  # False: this server has no faces
# Under a built-in mount: what the members of a server are doing, by uid (`discord.activities`).
PAGE_ACTIVITIES = re.compile(r"/activities/([0-9]{1,20})\.json")
ActivityLookup = Callable[[str], Union[dict, bool]]  # False: this server shows no activities


def builtin_headers(mount: Mount) -> dict[str, str]:
    return {
        "Content-Security-Policy": CSP.format(sockets="".join(" " + o for o in mount.sockets),
                                              frames=" ".join(mount.frame_ancestors) or "'none'"),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }


PUBLIC_HEALTH = {"status": "ok"}  # /healthz for anyone not in `listen.operators`
LOGGED_PATH = 200  # characters of a path in a log line
MAX_LINE_BYTES = 8190  # a request line or one header line; aiohttp's default, said here
LOG_WINDOW = 60.0  # seconds between two log lines about malformed requests


class Site:
    """The aiohttp application of one daemon, from the parts it serves."""

    def __init__(self, world: World, hub: Hub, sockets: SocketEndpoint, api: HttpApi, metrics: Metrics,
                 callbacks: Callbacks, health: Callable[[], dict[str, Any]], face: Optional[FaceLookup] = None,
                 activities: Optional[ActivityLookup] = None):
        self.world = world
        self.face = face
        self.activities = activities
        self.hub = hub
        self.sockets = sockets
        self.metrics = metrics
        self.callbacks = callbacks
        self.health = health
        self._errors = PerAddress(log)
        app = web.Application(middlewares=[self._log_http_errors])
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", self.metrics_page)
        app.add_subapp("/api/", api.app())
        app.router.add_get("/{tail:.*}", self.dispatch)
        app.on_shutdown.append(self._close_sockets)
        self.app = app
        self._bad_requests = Tally(LOG_WINDOW)

    def protocol(self, server: web.Server) -> web.RequestHandler:
        """aiohttp's protocol for one new connection (the factory `loop.create_server` calls)."""
        limits = self.world.config.limits
        # lingering_time: how long a body nobody reads is still taken (and thrown away) before
        # the connection is closed; no longer than a body is given to arrive at all.
        return QuietRequestHandler(server, self._bad_requests, loop=asyncio.get_running_loop(),
                                   keepalive_timeout=limits.header_timeout, lingering_time=limits.body_timeout,
                                   max_line_size=MAX_LINE_BYTES, max_field_size=MAX_LINE_BYTES, access_log=None)

    async def healthz(self, request: web.Request) -> web.Response:
        """The full report for `listen.operators`; the public is told only that the daemon answers
        (the report names the config file, the files it follows and the daemon's innards)."""
        listen = self.world.config.listen
        forwarded = request.headers.get("X-Forwarded-For")
        address = client_address(listen, request.remote, forwarded)
        # A trusted proxy forwards the public with X-Forwarded-For (the documented nginx and Caddy
        # set it); a request from its host without one is the operator's own, e.g. curl on the host.
        own = not forwarded and listen.trusts(request.remote) and listen.operator(request.remote, proxies=True)
        if not (own or listen.operator(address)):
            return web.json_response(PUBLIC_HEALTH)
        return web.json_response(self.health())

    async def metrics_page(self, request: web.Request) -> web.StreamResponse:
        """Prometheus exposition; with `metrics.enabled: false` the path is an ordinary static path."""
        if not self.world.config.metrics.enabled or _is_upgrade(request):
            return await self.dispatch(request)
        body, content_type = self.metrics.render(request.headers.get("Accept", ""))
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        """One catch-all, because mounts (and so socket paths) can change on reload."""
        path = request.path
        if _is_upgrade(request):
            if path in self.sockets.paths():
                return await self.sockets.handle(request)
            raise web.HTTPNotFound()
        if self.callbacks.has("on_static_request"):
            response = await self.callbacks.static_response(path)
            if response is not None:
                return response
        found = static.mount_for(self.world.config.static, path)
        if found is None:
            raise web.HTTPNotFound()
        mount, rest = found
        if mount.dir is None and rest == PAGE_SOCKETS:
            return web.json_response({"sockets": list(mount.sockets)}, headers=builtin_headers(mount))
        if mount.dir is None and (wanted := PAGE_FACE.fullmatch(rest)) is not None:
            return await self._face(mount, wanted.group(1), wanted.group(2))
        if mount.dir is None and (wanted := PAGE_ACTIVITIES.fullmatch(rest)) is not None:
            doing = self.activities(wanted.group(1)) if self.activities is not None else False
            # {"off": true}: the page asks no more for this server
            return web.json_response({"off": True} if doing is False else {"activities": doing},
                                     headers={**builtin_headers(mount), "Cache-Control": "no-store"})
        if rest == "" and mount.path != "/":
            raise web.HTTPMovedPermanently(mount.path + "/")  # so relative links resolve inside the mount
        try:
            file = static.resolve(mount, rest)
        except static.Forbidden:
            raise web.HTTPForbidden() from None
        if file is None:
            raise web.HTTPNotFound()
        return web.FileResponse(file, headers=builtin_headers(mount) if mount.dir is None else None)

    async def _face(self, mount: Mount, server: str, uid: str) -> web.Response:
        """A member's face, or 204: no face (yet), and the page draws a plain figure (a 404 would be
        an error in the browser's console for every member without one)."""
        body = await self.face(server, uid) if self.face is not None else False
        headers = builtin_headers(mount)
        if body is False:  # the page asks no more for this server
            return web.Response(status=204, headers={**headers, "Cache-Control": "no-store", "X-Faces": "off"})
        if not isinstance(body, bytes):
            return web.Response(status=204, headers={**headers, "Cache-Control": "no-store"})
        return web.Response(body=body, content_type="image/png",
                            headers={**headers, "Cache-Control": f"max-age={FACE_MAX_AGE}"})

    async def _close_sockets(self, app: web.Application) -> None:
        await self.hub.close_all(WSCloseCode.GOING_AWAY, "server shutting down")

    @web.middleware
    async def _log_http_errors(self, request: web.Request,
                               handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        """`http.error` for an answer of 400 or more: once a minute per client address (behind a
        trusted proxy, the forwarded one) with a count; not for a refusal logged as such already."""
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if exc.status >= 400:
                self._http_error(request, exc.status)
            raise
        if isinstance(response, web.StreamResponse) and response.status >= 400 and not isinstance(response, Refusal):
            self._http_error(request, response.status)
        return response

    def _http_error(self, request: web.Request, status: int) -> None:
        listen = self.world.config.listen
        address = client_address(listen, request.remote, request.headers.get("X-Forwarded-For"))
        self._errors.info("http.error", address, method=request.method, path=request.path[:LOGGED_PATH],
                          status=status)


class QuietRequestHandler(web.RequestHandler):
    """aiohttp's protocol, answering a request it cannot parse (or a handler's failure) with
    the bare status: its own answer quotes the offending line, in the body and in an error
    log line with a traceback, and a header line can hold a token."""

    __slots__ = ("_tally",)

    def __init__(self, manager: web.Server, tally: Tally, **kwargs: Any):
        super().__init__(manager, **kwargs)
        self._tally = tally

    def handle_error(self, request: Any, status: int = 500, exc: Optional[BaseException] = None,
                     message: Optional[str] = None) -> web.StreamResponse:
        error = type(exc).__name__ if exc is not None else None
        if status >= 500:
            log.error("http.failed", status=status, error=error, peer=request.remote, exc_info=exc)
        else:
            count = self._tally.note(asyncio.get_running_loop().time())
            if count:  # by its kind only: the message quotes what the client sent
                log.info("http.bad_request", status=status, error=error, peer=request.remote, count=count)
        if request.writer.output_size > 0:
            raise ConnectionError("part of the response was sent already")
        response = web.Response(status=status, text=f"{status} {HTTPStatus(status).phrase}\n")
        response.force_close()
        return response

    async def finish_response(self, request: web.BaseRequest, resp: web.StreamResponse,
                              start_time: Optional[float]) -> tuple[web.StreamResponse, bool]:
        """An answer that ends the connection (a 408 or 413 with the body unread) ends it once
        sent: aiohttp would first read and throw away what still comes, for lingering_time."""
        result = await super().finish_response(request, resp, start_time)
        if not resp.keep_alive and not request.content.is_eof():
            self.force_close()
        return result


def _is_upgrade(request: web.Request) -> bool:
    return request.headers.get("Upgrade", "").lower() == "websocket"


