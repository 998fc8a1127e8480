"""HTTP and WebSocket on one port: the routes, and static files.

Routes: /healthz, /metrics, the HTTP API's sub-application under /api/ (which has the
public /api/version), and one catch-all for everything else: a socket upgrade on a
socket path, the host program's static hook, then the static mounts. Mounts, socket
paths and the metrics switch are read from the world's current config at each request,
so reloads apply at once. Nothing here changes the world.
"""
from __future__ import annotations

from typing import Any, Awaitable, Callable

import structlog
from aiohttp import WSCloseCode, web

from . import static
from .api import HttpApi
from .callbacks import Callbacks
from .hub import Hub
from .metrics import Metrics
from .websocket import SocketEndpoint
from .world import World

log = structlog.get_logger("dbackd.web")

# The built-in page runs no inline script or style and talks only to its own origin.
BUILTIN_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
                               "style-src 'self'; script-src 'self'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class Site:
    """The aiohttp application of one daemon, from the parts it serves."""

    def __init__(self, world: World, hub: Hub, sockets: SocketEndpoint, api: HttpApi, metrics: Metrics,
                 callbacks: Callbacks, health: Callable[[], dict[str, Any]]):
        self.world = world
        self.hub = hub
        self.sockets = sockets
        self.metrics = metrics
        self.callbacks = callbacks
        self.health = health
        app = web.Application(middlewares=[_log_http_errors])
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", self.metrics_page)
        app.add_subapp("/api/", api.app())
        app.router.add_get("/{tail:.*}", self.dispatch)
        app.on_shutdown.append(self._close_sockets)
        self.app = app

    async def healthz(self, request: web.Request) -> web.Response:
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
        if rest == "" and mount.path != "/":
            raise web.HTTPMovedPermanently(mount.path + "/")  # so relative links resolve inside the mount
        try:
            file = static.resolve(mount, rest)
        except static.Forbidden:
            raise web.HTTPForbidden() from None
        if file is None:
            raise web.HTTPNotFound()
        return web.FileResponse(file, headers=BUILTIN_HEADERS if mount.dir is None else None)

    async def _close_sockets(self, app: web.Application) -> None:
        await self.hub.close_all(WSCloseCode.GOING_AWAY, "server shutting down")


def _is_upgrade(request: web.Request) -> bool:
    return request.headers.get("Upgrade", "").lower() == "websocket"


@web.middleware
async def _log_http_errors(request: web.Request,
                           handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status >= 400:
            log.info("http.error", method=request.method, path=request.path, status=exc.status, peer=request.remote)
        raise
    if isinstance(response, web.StreamResponse) and response.status >= 400:
        log.info("http.error", method=request.method, path=request.path, status=response.status, peer=request.remote)
    return response
