"""Plain copies of the world as it is now, for the Python and HTTP APIs (changing them changes nothing).

Reads the world and a count of the sockets joined to each server (given by the caller); changes nothing.
"""
from __future__ import annotations

from typing import Any, Callable, TypedDict, Union

from dbackd.core.world import World

Ref = Union[str, int]
Counts = Callable[[str], int]  # a server's snowflake -> how many sockets are joined to it


class ServerSnapshot(TypedDict):
    """A server as it is now. A copy: changing it changes nothing."""

    snowflake: str
    id: str
    name: str
    default: bool
    passworded: bool
    users: int  # how many users it has
    clients: int  # how many sockets are joined to it


class UserEntry(TypedDict):
    """A user as the frontend's users map, the APIs and d-back's callbacks show it."""

    uid: str
    username: str
    status: str
    roleColor: str


class UserSnapshot(UserEntry):
    """A user as it is now. A copy: changing it changes nothing."""

    declared: bool  # named by the config or a data provider (False: a runtime user)


def entry(user: Any) -> UserEntry:
    """A user (live, or declared by the config) as it is shown: the one place `role_color` is `roleColor`."""
    return UserEntry(uid=user.uid, username=user.username, status=user.status, roleColor=user.role_color)


def text(value: Ref) -> str:
    """Ids may be given as ints, as Discord libraries often hold them."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value  # type: ignore[return-value]


def servers(world: World, counts: Counts) -> list[ServerSnapshot]:
    """Every server as it is now, in declaration order."""
    return [ServerSnapshot(snowflake=s.snowflake, id=s.info.id, name=s.info.name, default=s.info.default,
                           passworded=s.info.passworded, users=len(s.users), clients=counts(s.snowflake))
            for s in world]


def users(world: World, server: Ref) -> list[UserSnapshot]:
    """Every user of a server as it is now. Raises UnknownServer."""
    state = world.get(text(server))
    return [UserSnapshot(**entry(u), declared=state.declared(u.uid))
            for u in state.users.values()]
