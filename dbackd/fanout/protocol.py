"""The d-zone wire protocol: message shapes, wording, and encoding to frames.

Builds and parses messages only. It holds no state and never touches a socket; the
hub decides who receives what. The wording of errors is the original backend's,
which the frontend shows as it is.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

from dbackd.core import jsontext, snapshots
from dbackd.core.events import ClientIdChanged, MessageSent, PresenceChanged

UNKNOWN_SERVER = "Sorry, couldn't connect to that Discord server."
AUTH_FAILED = "Discord authentication failed. Please try logging in again."
AUTH_REQUIRED = "This server requires Discord authentication. Please login with Discord."
INVALID_JSON = "Invalid JSON"
INVALID_BINARY = "Invalid binary encoding"
UNKNOWN_TYPE = "Unknown event type"
SERVER_GONE = "This server is no longer available."
SERVER_PRIVATE = "This server now requires Discord authentication. Please login with Discord."
ACCESS_CHANGED = "Who may see this server has changed. Please login with Discord again."
TOO_FAST = "Too many messages. Please reload the page."
TOO_MANY_JOINS = "Too many server changes at once. Please wait a moment."


def encode(message: Mapping[str, Any]) -> bytes:
    """Serialise a message once, compactly, as UTF-8 JSON."""
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def text_frame(payload: bytes) -> bytes:
    """A complete, unmasked, uncompressed WebSocket text frame (RFC 6455 §5.2).

    Server-to-client frames are never masked, so the same bytes can be written to
    every socket that does not use compression: one encode per broadcast.
    """
    return frame_header(len(payload)) + payload


def frame_header(n: int) -> bytes:
    """The header of a final, unmasked text frame of an `n`-byte payload."""
    if n < 126:
        return struct.pack("!BB", 0x81, n)
    if n < 65536:
        return struct.pack("!BBH", 0x81, 126, n)
    return struct.pack("!BBQ", 0x81, 127, n)


def control_frame(opcode: int, payload: bytes = b"") -> bytes:
    """A ping (0x9), pong (0xA) or close (0x8) frame; control payloads are at most 125 bytes."""
    return struct.pack("!BB", 0x80 | opcode, len(payload[:125])) + payload[:125]


@dataclass(frozen=True)
class Outgoing:
    """A message encoded once; `frame` is what goes on the wire."""

    payload: bytes  # a memoryview of `frame` for a big join (protocol.server_join)
    frame: bytes
    kind: str
    control: bool = False  # a ping or pong: never compressed, written as it is

    @classmethod
    def ping(cls) -> "Outgoing":
        return cls(b"", control_frame(0x9), "ping", control=True)

    @classmethod
    def pong(cls, data: bytes) -> "Outgoing":
        return cls(data, control_frame(0xA, data), "pong", control=True)

    @classmethod
    def of(cls, message: Mapping[str, Any]) -> "Outgoing":
        payload = encode(message)
        return cls(payload, text_frame(payload), str(message["type"]))

    @classmethod
    def raw(cls, kind: str, payload: bytes) -> "Outgoing":
        return cls(payload, text_frame(payload), kind)


def server_list(servers: Mapping[str, Mapping[str, Any]]) -> dict:
    return {"type": "server-list", "data": dict(servers)}


def error(message: str) -> dict:
    return {"type": "error", "data": {"message": message}}


def server_join(users: Sequence[bytes], request_server: str, server_name: str, client_id: Optional[str]) -> Outgoing:
    """server-join around a users map already encoded in pieces (each a run of '"uid":{...}' entries
    joined with commas; joins.py keeps them). Header and payload are written once, into one buffer:
    the payload is a view of the frame, so a 10 MB join is copied once, not three times."""
    tail: dict[str, Any] = {"request": {"server": request_server}, "serverName": server_name}
    if client_id:
        tail["clientId"] = client_id
    parts = [b'{"type":"server-join","data":{"users":{']
    for i, piece in enumerate(users):
        if i:
            parts.append(b",")
        parts.append(piece)
    parts.append(b"}," + encode(tail)[1:] + b"}")  # '"request":...}' closes "data", then the message
    header = frame_header(sum(len(p) for p in parts))
    frame = b"".join([header, *parts])
    return Outgoing(memoryview(frame)[len(header):], frame, "server-join")  # type: ignore[arg-type]


def entry(user: Any) -> dict:
    """A live user (core/world.py's UserState) as the frontend's users map holds it."""
    return dict(snapshots.entry(user))


def frames_for(event: Any, user: Optional[dict] = None) -> list[dict]:
    """The messages an applied world event becomes for a server's members, in the order the
    d-zone frontend needs them. It never applies a new `username` to an actor it has, so a
    rename is the actor removed and added again (`user`: the renamed user's entry)."""
    if isinstance(event, PresenceChanged) and event.renamed and user is not None:
        return [{"type": "presence", "server": event.server,
                 "data": {"uid": event.uid, "status": event.status, "delete": True}},
                {"type": "presence", "server": event.server,
                 "data": {"uid": event.uid, "status": user["status"], "username": user["username"],
                          "roleColor": user["roleColor"]}}]
    message = for_event(event)
    return [message] if message is not None else []


def for_event(event: Any) -> Optional[dict]:
    """The message a world event describes (one per event: `dbackd simulate` prints these)."""
    if isinstance(event, PresenceChanged):
        data: dict[str, Any] = {"uid": event.uid, "status": event.status}
        if event.username is not None:
            data["username"] = event.username
        if event.role_color is not None:
            data["roleColor"] = event.role_color
        if event.delete:
            data["delete"] = True
        return {"type": "presence", "server": event.server, "data": data}
    if isinstance(event, MessageSent):
        return {"type": "message", "server": event.server,
                "data": {"uid": event.uid, "message": event.message, "channel": event.channel}}
    if isinstance(event, ClientIdChanged):
        return {"type": "update-clientid", "server": event.server, "data": {"clientId": event.client_id}}
    return None


@dataclass(frozen=True)
class Connect:
    """A parsed `connect` request."""

    server: str  # normalised: "default" for null, missing or blank
    password: Optional[str]
    discord_token: Optional[str]
    discord_user: Optional[Mapping[str, Any]]


class ClientError(Exception):
    """A client frame that gets an `error` reply; the socket stays open."""


def parse(text: str) -> tuple[str, Any]:
    """A client frame → (type, parsed request). Raises ClientError with the reply's wording."""
    try:
        message = jsontext.parse(text)
    except jsontext.NotJson:
        raise ClientError(INVALID_JSON) from None
    if not isinstance(message, dict):
        raise ClientError(INVALID_JSON)
    kind = message.get("type")
    if kind == "connect":
        return kind, _parse_connect(message.get("data"))
    raise ClientError(UNKNOWN_TYPE)


def _parse_connect(data: Any) -> Connect:
    if not isinstance(data, dict):
        data = {}
    server = data.get("server")
    if server is None or (isinstance(server, str) and not server.strip()):
        server = "default"
    elif isinstance(server, int) and not isinstance(server, bool):
        server = str(server)  # a snowflake sent as a number (any size: ints are exact)
    elif isinstance(server, float):
        server = str(int(server)) if server.is_integer() else str(server)  # inf and nan are not integers
    else:
        server = str(server).strip()
    password = data.get("password")
    token = data.get("discordToken")
    user = data.get("discordUser")
    return Connect(
        server=server,
        password=password if isinstance(password, str) and password else None,
        discord_token=token if isinstance(token, str) and token else None,
        discord_user=user if isinstance(user, dict) else None,
    )
