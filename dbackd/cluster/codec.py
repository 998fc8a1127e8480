"""The live changes a cluster shares, as compact JSON: the one form they take in Redis.

Shapes only; it decides nothing about who publishes or applies them. What comes back
from Redis is checked as the HTTP API checks a request (the API schema's own definitions):
anyone who can write to Redis could have written it, and an entry that fails is refused
(BadEntry), never applied.
"""
from __future__ import annotations

import json
from typing import Any, Optional

from dbackd.config import Config, Server
from dbackd.config.sections import sections
from dbackd.core.events import ClientIdChanged, Event, MessageSent, PresenceChanged
from dbackd.core.layers import Layer
from dbackd.sources import apischema
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


class BadEntry(ValueError):
    """What Redis held is not a change this daemon writes; the message says why (never quoting it whole)."""


# Each kind's short keys and the API's names for them, with the API definition that checks them.
_KINDS = {
    "p": ("presence", {"u": "uid", "s": "status", "n": "username", "c": "roleColor", "d": "delete"}),
    "m": ("message", {"u": "uid", "m": "message", "ch": "channel"}),
    "i": ("clientId", {"i": None}),
}


def _checked(text: Any) -> tuple[str, Any]:
    """The kind and the API-shaped body of an entry, checked by the API's validator."""
    if not isinstance(text, str):
        raise BadEntry("no change in the entry")
    try:
        data = json.loads(text)
    except ValueError:
        raise BadEntry("not JSON") from None
    if not isinstance(data, dict) or data.get("k") not in _KINDS:
        raise BadEntry("not a change of a known kind")
    kind = data.pop("k")
    definition, names = _KINDS[kind]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise BadEntry(f"unknown fields {unknown[:5]}")
    if kind == "i":
        body: Any = data.get("i")
    else:
        body = {names[key]: value for key, value in data.items()}
        if body.get("delete") == 1 and not isinstance(body["delete"], bool):
            body["delete"] = True  # written as 1 to keep entries short
    try:
        apischema.check(definition, body)
    except apischema.InvalidRequest as exc:
        raise BadEntry(str(exc)[:300]) from None
    return kind, body


def decode(server: str, text: Any) -> Event:
    """An event of `server` back from its JSON. Raises BadEntry for anything the API would refuse."""
    kind, body = _checked(text)
    if kind == "p":
        return PresenceChanged(server, body["uid"], body["status"], body.get("username"), body.get("roleColor"),
                               body.get("delete", False))
    if kind == "m":
        return MessageSent(server, body["uid"], body["message"], body["channel"])
    return ClientIdChanged(server, body)


def layer_text(layer: Optional[Layer]) -> str:
    """A source's layer of the declaration (servers it names or adds: a guild's name, auto servers)."""
    if layer is None:
        return ""
    servers = {sf: [server.id, server.name, sorted(keys), server.source] for sf, (server, keys) in layer.servers.items()}
    return json.dumps(servers, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def layer_from(text: str, config: Config) -> Optional[Layer]:
    """The layer back; a server of a source's section takes that section's defaults in this node's config.
    Raises BadEntry."""
    if not text:
        return None
    servers = {}
    try:
        for sf, (server_id, name, keys, source) in json.loads(text).items():
            section, settings = sections().get(source), config.section(source)
            options = section.options({}, settings) if section is not None and settings is not None else None
            servers[sf] = (Server(sf, server_id, name, source=source, options=options), frozenset(keys))
    except (ValueError, TypeError, AttributeError, KeyError):
        raise BadEntry("the layer is not a mapping of servers to [id, name, keys, source]") from None
    return Layer(servers=servers)


def client_id_from(text: Any) -> str:
    """A snapshot's client id back; raises BadEntry for anything the API would refuse."""
    try:
        apischema.check("clientId", text)
    except apischema.InvalidRequest as exc:
        raise BadEntry(str(exc)[:300]) from None
    return text


def user_text(user: UserState) -> str:
    """A user as the state snapshot keeps it."""
    return json.dumps([user.username, user.status, user.role_color], ensure_ascii=False, separators=(",", ":"))


def user_from(uid: str, text: str) -> UserState:
    """A user of a snapshot back; raises BadEntry for anything the API would refuse."""
    try:
        username, status, color = json.loads(text)
    except (ValueError, TypeError):
        raise BadEntry("a snapshot's user is not [username, status, colour]") from None
    try:
        apischema.check("presence", {"uid": uid, "status": status, "username": username, "roleColor": color})
    except apischema.InvalidRequest as exc:
        raise BadEntry(str(exc)[:300]) from None
    return UserState(uid, username, status, color)
