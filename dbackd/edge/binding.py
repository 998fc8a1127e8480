"""Binding the listening sockets: every address a host name resolves to (as asyncio's
create_server does), with SO_REUSEADDR, and SO_REUSEPORT when asked (several processes
sharing one port).

Kept apart from the serving (listener.py) and free of the web stack, so the command line
can bind its port before it loads the rest: from then on the kernel accepts connections,
and they wait in the backlog until the daemon serves them. It binds and listens, nothing more.
"""
from __future__ import annotations

import socket
from typing import Optional

BACKLOG = 1024


def bind(host: Optional[str], port: int, reuse_port: bool = False, backlog: int = BACKLOG) -> list[socket.socket]:
    """Listening sockets for (host, port). Raises OSError (a taken port, an unknown host...)."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    families = {info[0] for info in infos}
    sockets: list[socket.socket] = []
    seen = set()
    try:
        for family, kind, proto, _, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6 and socket.AF_INET in families:
                # Both families are bound separately; the v6 socket must not claim v4 too.
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(sockets) > 1:
                address = (address[0], sockets[0].getsockname()[1], *address[2:])  # the port the first one got
            sock.bind(address)
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets
