"""The socket endpoint: the upgrade, the reader loop of each client, and its end.

For each upgrade it prepares aiohttp's WebSocketResponse (as wire.py's contract asks),
gives the socket a Wire and a Connection in the hub (which sends the server list first,
once the host program's hook before the server list, if any, has run),
and hands every frame the client sends to that socket's Session. Only this handler task
reads from the socket. It sends nothing itself.
"""
from __future__ import annotations

import structlog
from aiohttp import web

from .access import Access
from .callbacks import Callbacks
from .hub import Connection, Hub
from .metrics import Metrics
from .session import Session
from .wire import Wire
from .world import World

log = structlog.get_logger("dbackd.web")


class SocketEndpoint:
    def __init__(self, world: World, hub: Hub, access: Access, callbacks: Callbacks, metrics: Metrics):
        self.world = world
        self.hub = hub
        self.access = access
        self.callbacks = callbacks
        self.metrics = metrics

    def paths(self) -> set[str]:
        """Where the upgrade is accepted: /ws, / and <mount>/ws of every static mount (they change on reload)."""
        return {"/", "/ws"} | {m.ws_path for m in self.world.config.static}

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        config = self.world.config
        ws = web.WebSocketResponse(
            autoping=False,  # pings, pongs and the heartbeat go through the hub (see wire.py)
            heartbeat=None,
            max_msg_size=config.limits.max_message_bytes,
            compress=config.websocket.compression,
        )
        await ws.prepare(request)
        transport = request.transport
        if transport is None:  # the client went away during the handshake
            return ws
        conn = Connection(Wire(ws, transport), request.remote)
        session = Session(conn, self.world, self.hub, self.access, self.callbacks, self.metrics)
        hub = self.hub
        log.info("socket.opened", conn=conn.id, peer=conn.peer, path=request.path)
        try:
            await self.callbacks.before_server_list()
            hub.add(conn)
            async for msg in ws:
                if not await session.receive(msg):
                    break
        finally:
            hub.remove(conn)
            await conn.wire.release()
            log.info("socket.closed", conn=conn.id, code=ws.close_code, frames=conn.frames)
        return ws
