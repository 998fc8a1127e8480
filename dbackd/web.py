"""HTTP and WebSocket on one port: routes, static files and the socket handler.

The socket handler reads client frames and passes them to the session; every byte
sent to a client goes through the hub. Routes read the world and config through the
daemon and change nothing directly; the HTTP API (api.py) changes the world through its
event builders.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import structlog
from aiohttp import WSCloseCode, WSMsgType, web

from . import __version__, api, static
from .hub import Connection
from .protocol import ClientError

if TYPE_CHECKING:
    from .daemon import Daemon

log = structlog.get_logger("dbackd.web")

DAEMON: web.AppKey["Daemon"] = web.AppKey("daemon")


def create_app(daemon: "Daemon") -> web.Application:
    app = web.Application(middlewares=[_log_http_errors])
    app[DAEMON] = daemon
    app.router.add_get("/api/version", api_version)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    api.register(app, daemon)  # the rest of /api/
    app.router.add_get("/{tail:.*}", dispatch)
    app.on_shutdown.append(_close_sockets)
    return app


@web.middleware
async def _log_http_errors(request: web.Request, handler):
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status >= 400:
            log.info("http.error", method=request.method, path=request.path, status=exc.status, peer=request.remote)
        raise
    if isinstance(response, web.StreamResponse) and response.status >= 400:
        log.info("http.error", method=request.method, path=request.path, status=response.status, peer=request.remote)
    return response


async def api_version(request: web.Request) -> web.Response:
    return web.json_response({"version": __version__})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response(request.app[DAEMON].health())


async def metrics(request: web.Request) -> web.StreamResponse:
    """Prometheus exposition; with `metrics.enabled: false` the path is an ordinary static path.

    Checked per request so a reload can turn it on or off.
    """
    daemon = request.app[DAEMON]
    if not daemon.config.metrics.enabled or _is_upgrade(request):
        return await dispatch(request)
    body, content_type = daemon.metrics.render(request.headers.get("Accept", ""))
    return web.Response(body=body, headers={"Content-Type": content_type})


def _is_upgrade(request: web.Request) -> bool:
    return request.headers.get("Upgrade", "").lower() == "websocket"


async def dispatch(request: web.Request) -> web.StreamResponse:
    """One catch-all, because mounts (and so socket paths) can change on reload."""
    daemon = request.app[DAEMON]
    path = request.path
    if _is_upgrade(request):
        if path in daemon.socket_paths():
            return await socket(request)
        raise web.HTTPNotFound()
    if daemon.callbacks.has("on_static_request"):
        response = await daemon.callbacks.static_response(path)
        if response is not None:
            return response
    found = static.mount_for(daemon.config.static, path)
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
    return web.FileResponse(file)


async def socket(request: web.Request) -> web.WebSocketResponse:
    daemon = request.app[DAEMON]
    limits = daemon.config.limits
    ws = web.WebSocketResponse(
        autoping=False,  # pings, pongs and the heartbeat go through the hub
        max_msg_size=limits.max_message_bytes,
        compress=daemon.config.websocket.compression,
    )
    await ws.prepare(request)
    conn = Connection(ws, request)
    hub, session = daemon.hub, daemon.session
    log.info("socket.opened", conn=conn.id, peer=conn.peer, path=request.path)
    hub.add(conn)
    try:
        async for msg in ws:
            hub.seen(conn)
            if msg.type == WSMsgType.TEXT:
                await session.handle_text(conn, msg.data)
            elif msg.type == WSMsgType.BINARY:
                try:
                    text = session.handle_binary(msg.data)
                except ClientError as exc:
                    log.info("socket.bad_frame", conn=conn.id, reason=str(exc))
                    hub.error(conn, str(exc))
                    continue
                await session.handle_text(conn, text)
            elif msg.type == WSMsgType.PING:
                hub.pong(conn, msg.data)
            elif msg.type == WSMsgType.ERROR:
                log.info("socket.error", conn=conn.id, error=str(ws.exception()))
                break
    finally:
        hub.remove(conn)
        if conn.outbox is not None:
            await conn.outbox.close()
        log.info("socket.closed", conn=conn.id, code=ws.close_code, frames=conn.frames)
    return ws


async def _close_sockets(app: web.Application) -> None:
    await app[DAEMON].hub.close_all(WSCloseCode.GOING_AWAY, "server shutting down")
