"""World changes as explicit, immutable event objects.

Every change to the world is one of these. The world applies them and hands them to
its subscribers (the hub, later other nodes); they carry plain data only, so they
can be serialised and published elsewhere. Nothing here knows about sockets.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Union

if TYPE_CHECKING:
    from dbackd.config import Config


@dataclass(frozen=True)
class PresenceChanged:
    """A user's status changed, or the user appeared (with username), or left (delete).

    As a source asks for it, `username` and `role_color` are what it wants set. As the world
    hands it out (applied), they are exactly what changed: an arrival carries both, a user
    whose name changed is `renamed`, and a change to a uid the server does not have (a
    delete of a stranger) is not handed out at all.
    """

    server: str  # guild snowflake
    uid: str
    status: str
    username: Optional[str] = None
    role_color: Optional[str] = None
    delete: bool = False
    renamed: bool = False


@dataclass(frozen=True)
class MessageSent:
    server: str
    uid: str
    message: str
    channel: str


@dataclass(frozen=True)
class ClientIdChanged:
    server: str
    client_id: str


@dataclass(frozen=True)
class ServerListChanged:
    """Servers were added, removed, renamed or changed privacy; clients get a fresh list."""


@dataclass(frozen=True)
class ServerClosed:
    """A server was removed or made private: its unauthenticated viewers lose their join."""

    server: str
    removed: bool  # True: gone; False: made private
    everyone: bool = False  # also the sockets that had authenticated (its access rules changed)


@dataclass(frozen=True)
class ConfigReplaced:
    """A new declaration took over: servers are added, removed or updated in place.

    Declared user changes follow as their own PresenceChanged events; live statuses of
    users whose declaration did not change stay as they are.
    """

    config: "Config"


Event = Union[PresenceChanged, MessageSent, ClientIdChanged, ServerListChanged, ServerClosed, ConfigReplaced]
