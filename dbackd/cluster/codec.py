"""The live changes a cluster shares, as compact JSON: the one form they take in Redis.

Shapes only; it decides nothing about who publishes or applies them.
"""
from __future__ import annotations

import json
from typing import Any, Optional

from dbackd.config import Config, Server
from dbackd.config.sections import sections
from dbackd.core.events import ClientIdChanged, Event, MessageSent, PresenceChanged
from dbackd.core.layers import Layer
from dbackd.core.world import UserState


def encode(event: Event) -> str:
    if isinstance(event, PresenceChanged):
        data: dict[str, Any] = {"k": "p", "u": event.uid, "s": event.status}
        if event.username is not None:
            data["n"] = event.username
        if event.role_color is not None:
            data["c"] = event.role_color
        if event.delete:
            data["d"] = 1
    elif isinstance(event, MessageSent):
        data = {"k": "m", "u": event.uid, "m": event.message, "ch": event.channel}
    elif isinstance(event, ClientIdChanged):
        data = {"k": "i", "i": event.client_id}
    else:
        raise TypeError(f"{type(event).__name__} is not shared")
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def decode(server: str, text: str) -> Event:
    """An event of `server` back from its JSON. Raises ValueError (or KeyError) for anything else."""
    data = json.loads(text)
    kind = data["k"]
    if kind == "p":
        return PresenceChanged(server, data["u"], data["s"], data.get("n"), data.get("c"), bool(data.get("d")))
    if kind == "m":
        return MessageSent(server, data["u"], data["m"], data["ch"])
    if kind == "i":
        return ClientIdChanged(server, data["i"])
    raise ValueError(f"unknown kind {kind!r}")


def layer_text(layer: Optional[Layer]) -> str:
    """A source's layer of the declaration (servers it names or adds: a guild's name, auto servers)."""
    if layer is None:
        return ""
    servers = {sf: [server.id, server.name, sorted(keys), server.source] for sf, (server, keys) in layer.servers.items()}
    return json.dumps(servers, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def layer_from(text: str, config: Config) -> Optional[Layer]:
    """The layer back; a server of a source's section takes that section's defaults in this node's config."""
    if not text:
        return None
    servers = {}
    for sf, (server_id, name, keys, source) in json.loads(text).items():
        section, settings = sections().get(source), config.section(source)
        options = section.options({}, settings) if section is not None and settings is not None else None
        servers[sf] = (Server(sf, server_id, name, source=source, options=options), frozenset(keys))
    return Layer(servers=servers)


def user_text(user: UserState) -> str:
    """A user as the state snapshot keeps it."""
    return json.dumps([user.username, user.status, user.role_color], ensure_ascii=False, separators=(",", ":"))


def user_from(uid: str, text: str) -> UserState:
    username, status, color = json.loads(text)
    return UserState(uid, username, status, color)
