"""Declarations from a host program's data providers, laid over the config's declaration.

The server provider answers `{snowflake: {id, name, default?, passworded?, password?}}`
(the original backend's shape) or a list of config-shaped servers; the user provider
answers, for one server snowflake, `{uid: {username, status?, roleColor?}}` or a list of
config-shaped users. Answers are checked exactly like a config file (schema, then the
cross-value rules), and every problem is named by server and user. The overlay:

- a provided server whose snowflake the config declares changes the fields it gives;
  any other provided server is added;
- provided users are added to their server; a uid the config also declares takes the
  provider's fields.

This module asks, checks and merges; applying the result is the daemon's job.
"""
from __future__ import annotations

import asyncio
import dataclasses
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Optional

from .config import Config, ConfigError, Problem, Server, load_data

if TYPE_CHECKING:
    from .callbacks import Callbacks

_CONCURRENT_USER_CALLS = 8
_PATH = re.compile(r"^servers\[(\d+)\](?:\.users\[(\d+)\])?(?:\.(.*))?$")


@dataclass(frozen=True)
class Provided:
    """What the providers answered, as config-shaped plain data (already normalised)."""

    servers: tuple[dict, ...] = ()
    users: Mapping[str, tuple[dict, ...]] = field(default_factory=dict)  # snowflake -> users

    @property
    def empty(self) -> bool:
        return not self.servers and not any(self.users.values())


def _entries(answer: Any, key: str, what: str, callbacks: "Callbacks", name: str) -> tuple[dict, ...]:
    """{id: {...}} or [{...}] → a tuple of dicts carrying `key`."""
    if isinstance(answer, Mapping):
        out = []
        for k, v in answer.items():
            if not isinstance(v, Mapping):
                raise callbacks.bad_answer(name, answer, f"a mapping of {key} to {what} objects")
            out.append({**v, key: str(k)})
        return tuple(out)
    if isinstance(answer, (list, tuple)) and all(isinstance(v, Mapping) for v in answer):
        return tuple(dict(v) for v in answer)
    raise callbacks.bad_answer(name, answer, f"a mapping of {key} to {what} objects, or a list of them")


async def collect(callbacks: "Callbacks", base: Config) -> Provided:
    """Ask the registered providers. Raises CallbackFailed (logged) if any of them fails."""
    servers: tuple[dict, ...] = ()
    if callbacks.has("on_get_server_data"):
        answer = await callbacks.call("on_get_server_data")
        servers = _entries(answer, "snowflake", "server", callbacks, "on_get_server_data")
    users: dict[str, tuple[dict, ...]] = {}
    if callbacks.has("on_get_user_data"):
        snowflakes = [s.snowflake for s in base.servers]
        snowflakes += [str(s["snowflake"]) for s in servers
                       if "snowflake" in s and str(s["snowflake"]) not in snowflakes]
        limit = asyncio.Semaphore(_CONCURRENT_USER_CALLS)

        async def ask(snowflake: str) -> tuple[dict, ...]:
            async with limit:
                answer = await callbacks.call("on_get_user_data", snowflake)
            return _entries(answer, "uid", "user", callbacks, "on_get_user_data")

        answers = await asyncio.gather(*(ask(s) for s in snowflakes), return_exceptions=True)
        for snowflake, answer in zip(snowflakes, answers):
            if isinstance(answer, BaseException):
                raise answer  # CallbackFailed, already logged
            users[snowflake] = answer
    return Provided(servers, users)


def _label(doc: list[dict], problem: Problem) -> str:
    """servers[2].users[5].status → "server home, user 123: status"."""
    m = _PATH.match(problem.path)
    if not m:
        return f"{problem.path}: {problem.message}" if problem.path else problem.message
    server = doc[int(m.group(1))] if int(m.group(1)) < len(doc) else {}
    where = f"server {server.get('id') or server.get('snowflake') or '#' + m.group(1)}"
    if m.group(2) is not None:
        users = server.get("users") or []
        index = int(m.group(2))
        user = users[index] if index < len(users) and isinstance(users[index], Mapping) else {}
        where += f", user {user.get('uid') or '#' + m.group(2)}"
    rest = m.group(3)
    return f"{where}: {rest}: {problem.message}" if rest else f"{where}: {problem.message}"


def _check(doc: list[dict]) -> Config:
    try:
        return load_data({"servers": doc})
    except ConfigError as exc:
        raise ConfigError([Problem("<provider>", 1, 1, "", _label(doc, p)) for p in exc.problems]) from None


def _by_uid(*lists: Any) -> list:
    merged: dict[str, Any] = {}
    for users in lists:
        for u in users:
            merged[u["uid"] if isinstance(u, Mapping) else u.uid] = u
    return list(merged.values())


def _server_data(s: Server) -> dict:
    data: dict[str, Any] = {"snowflake": s.snowflake, "id": s.id, "name": s.name, "default": s.default,
                            "passworded": s.passworded,
                            "users": [{"uid": u.uid, "username": u.username, "status": u.status,
                                       "roleColor": u.role_color} for u in s.users]}
    if s.password:
        data["password"] = s.password
    return data


def overlay(base: Config, provided: Optional[Provided]) -> Config:
    """The base declaration with the provided one laid over it, checked like a config.

    Raises ConfigError naming each problem by server and user.
    """
    if provided is None or provided.empty:
        return base
    declared = {s.snowflake: s for s in base.servers}
    given = {str(s.get("snowflake")): s for s in provided.servers}
    # 1. The providers' answers alone, as a config: servers they give, plus stand-ins
    #    for configured servers they only give users for.
    doc: list[dict] = []
    for given_server in provided.servers:
        users = _by_uid(given_server.get("users") or [], provided.users.get(str(given_server.get("snowflake")), ()))
        doc.append({**given_server, "users": users})
    for snowflake, only_users in provided.users.items():
        if snowflake not in given and only_users:
            info = declared[snowflake]
            doc.append({"snowflake": snowflake, "id": info.id, "name": info.name, "users": list(only_users)})
    own = {s.snowflake: s for s in _check(doc).servers}
    # 2. Laid over the configured servers, field by field.
    merged: list[Server] = []
    for s in base.servers:
        p = own.get(s.snowflake)
        if p is None:
            merged.append(s)
            continue
        changes: dict[str, Any] = {}
        for key in given.get(s.snowflake, {}):
            if key not in ("snowflake", "users") and hasattr(p, key):
                changes[key] = getattr(p, key)
        if p.users:
            changes["users"] = tuple(_by_uid(s.users, p.users))
        merged.append(dataclasses.replace(s, **changes))
    merged += [p for snowflake, p in own.items() if snowflake not in declared]
    # 3. The rules across servers (unique ids, one default) on the whole.
    _check([_server_data(s) for s in merged])
    return dataclasses.replace(base, servers=tuple(merged))
