"""A layer of the declaration: servers and users laid over the config source's own, and how they are laid.

A source that learns who exists (the host program's data providers, the Discord gateway's
guild names and auto servers) hands the declaration a `Layer`: model objects, already
sound on their own. `merge` lays one over a config and checks the rules across servers
that the result may break (unique short ids, one default); every problem is named by
server. Plain CPU work for a thread; nothing here applies the result.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional

from dbackd.config import Config, ConfigError, Problem, Server, User

MAX_PROBLEMS = 50  # a layer that got everything wrong is told the first ones
WHERE = "<provider>"  # what a problem of a layer names as its file


class Problems:
    """Problems of data that has no lines: the n-th problem stands at "line" n, so none hides another."""

    def __init__(self) -> None:
        self.items: list[Problem] = []

    def add(self, message: str) -> None:
        if len(self.items) < MAX_PROBLEMS:
            self.items.append(Problem(WHERE, len(self.items) + 1, 1, "", message))

    def raise_any(self) -> None:
        if self.items:
            raise ConfigError(self.items)


@dataclass(frozen=True)
class Layer:
    """Servers (each with the keys it gives) and users, as model objects, ready to be laid over any base."""

    servers: Mapping[str, tuple[Server, frozenset[str]]] = field(default_factory=dict)
    users: Mapping[str, tuple[User, ...]] = field(default_factory=dict)


def by_uid(*lists: Iterable[User]) -> tuple[User, ...]:
    """The users of every list, one per uid: a later list's user replaces an earlier one's."""
    merged: dict[str, User] = {}
    for users in lists:
        for u in users:
            merged[u.uid] = u
    return tuple(merged.values())


def merge(base: Config, layer: Optional[Layer]) -> Config:
    """`base` with `layer` laid over it: a server the base declares takes the keys the layer
    gives, any other is added; users are added to their server, a uid the base also declares
    takes the layer's fields. Raises ConfigError if the result breaks a rule across servers
    (a short id used twice, two defaults). Users given for a server the base no longer has,
    and the layer does not add, are left out."""
    if layer is None or not (layer.servers or layer.users):
        return base
    own, users = layer.servers, layer.users
    declared = {s.snowflake for s in base.servers}
    merged: list[Server] = []
    for s in base.servers:
        changes: dict[str, Any] = {}
        if s.snowflake in own:
            p, keys = own[s.snowflake]
            changes = {k: getattr(p, k) for k in keys if hasattr(p, k)}
        if s.snowflake in users:
            changes["users"] = by_uid(s.users, users[s.snowflake])
        merged.append(dataclasses.replace(s, **changes) if changes else s)
    for snowflake, (p, _) in own.items():
        if snowflake not in declared:
            merged.append(dataclasses.replace(p, users=by_uid(users.get(snowflake, ()))))
    problems = Problems()
    _check_across(merged, problems)
    problems.raise_any()
    return dataclasses.replace(base, servers=tuple(merged))


def _check_across(servers: list[Server], problems: Problems) -> None:
    """The rules across servers that the merge may have broken: unique short ids, one default."""
    ids: dict[str, str] = {}
    defaults: list[str] = []
    for s in servers:
        if s.id in ids:
            problems.add(f"server {s.snowflake}: id: duplicate server id {s.id!r} (also the id of server {ids[s.id]})")
        ids.setdefault(s.id, s.snowflake)
        if s.default:
            defaults.append(s.id)
    if len(defaults) > 1:
        problems.add(f"default: only one server may be the default (servers {', '.join(defaults)})")
