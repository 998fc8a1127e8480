"""Declarations from a host program's data providers: asked, checked, and laid over the config's declaration.

The server provider answers `{snowflake: {id, name, default?, passworded?, password?}}`
(the original backend's shape) or a list of config-shaped servers; the user provider
answers, for one server snowflake, `{uid: {username, status?, roleColor?}}` or a list of
config-shaped users. The overlay:

- a provided server whose snowflake the config declares changes the fields it gives;
  any other provided server is added;
- provided users are added to their server; a uid the config also declares takes the
  provider's fields.

Only what the providers supplied is checked, against the config schema's own `server`
and `user` definitions and the rules across servers (unique ids, one default), in time
linear in what they supplied; every problem is named by server and user. `collect` asks
on the event loop; `check` is plain CPU work for a thread (the declaration runs it in
one, and keeps only the checked result, a layer (core/layers.py) of model objects shared
with the effective config, never the answers themselves). Nothing here applies the result.
"""
from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional

from dbackd.sources.callbacks import Callbacks, shape
from dbackd.config import Config, ConfigError, Problem, Server, User, load_data
from dbackd.config.schema import check_part
from dbackd.config.values import color
from dbackd.core.layers import Layer, Problems, merge

_CONCURRENT_USER_CALLS = 8
_PATH = re.compile(r"^servers\[(\d+)\](?:\.(.*))?$")


class BadAnswer(Exception):
    """A provider answered something of the wrong shape (not a mapping or list of entries)."""

    def __init__(self, callback: str, expected: str, answer: Any):
        super().__init__(f"{callback} answered {shape(answer)}, not {expected}")
        self.callback = callback
        self.expected = expected
        self.answer = answer
        self.shape = shape(answer)


@dataclass(frozen=True)
class Provided:
    """The providers' answers as they gave them: checked and merged by `overlay`, off the loop."""

    servers: Any = None  # the server provider's answer (None: no server provider)
    users: Mapping[str, Any] = field(default_factory=dict)  # snowflake -> the user provider's answer

    @property
    def empty(self) -> bool:
        return self.servers is None and not self.users

    def size(self) -> int:
        """About how many entries the answers hold (to tell a bulk load from a small one)."""
        return sum(len(a) for a in self.users.values() if isinstance(a, (Mapping, list, tuple)))

    def layer(self, base: Config) -> Layer:
        """The answers as the declaration's layer over `base` (see `check`; off the event loop)."""
        return check(base, self)


async def collect(callbacks: Callbacks, configured: Iterable[str]) -> Provided:
    """Ask the registered providers: the servers, then the users of every configured and
    provided server. Raises CallbackFailed (logged) if any of them fails."""
    servers = None
    if callbacks.has("on_get_server_data"):
        servers = await callbacks.call("on_get_server_data")
    users: dict[str, Any] = {}
    if callbacks.has("on_get_user_data"):
        snowflakes = list(dict.fromkeys([*configured, *_snowflakes(servers)]))
        limit = asyncio.Semaphore(_CONCURRENT_USER_CALLS)

        async def ask(snowflake: str) -> Any:
            async with limit:
                return await callbacks.call("on_get_user_data", snowflake)

        answers = await asyncio.gather(*(ask(s) for s in snowflakes), return_exceptions=True)
        for snowflake, answer in zip(snowflakes, answers):
            if isinstance(answer, BaseException):
                raise answer  # CallbackFailed, already logged
            users[snowflake] = answer
    return Provided(servers, users)


def _snowflakes(servers: Any) -> list[str]:
    if isinstance(servers, Mapping):
        return [str(k) for k in servers]
    if isinstance(servers, (list, tuple)):
        return [str(s["snowflake"]) for s in servers if isinstance(s, Mapping) and "snowflake" in s]
    return []


def _entries(answer: Any, key: str, callback: str) -> list[dict]:
    """{id: {...}} or [{...}] → new dicts carrying `key` (the answer itself is never changed)."""
    if isinstance(answer, Mapping):
        out = []
        for k, v in answer.items():
            if not isinstance(v, Mapping):
                raise BadAnswer(callback, f"a mapping of {key} to objects", answer)
            out.append({**v, key: str(k)})
        return out
    if isinstance(answer, (list, tuple)) and all(isinstance(v, Mapping) for v in answer):
        return [dict(v) for v in answer]
    raise BadAnswer(callback, f"a mapping of {key} to objects, or a list of them", answer)


def _label(entries: list[dict], problem: Problem) -> str:
    """servers[2].name → "server home: name"."""
    m = _PATH.match(problem.path)
    if not m:
        return f"{problem.path}: {problem.message}" if problem.path else problem.message
    index = int(m.group(1))
    entry = entries[index] if index < len(entries) else {}
    where = f"server {entry.get('id') or entry.get('snowflake') or '#' + m.group(1)}"
    return f"{where}: {m.group(2)}: {problem.message}" if m.group(2) else f"{where}: {problem.message}"


def _servers(entries: list[dict], problems: Problems) -> dict[str, tuple[Server, frozenset[str]]]:
    """Provided servers (without their users) checked as a config of their own: snowflake →
    (the server with every default, the keys the provider gave)."""
    if not entries:
        return {}
    bare = [{k: v for k, v in e.items() if k != "users"} for e in entries]
    try:
        config = load_data({"servers": bare})
    except ConfigError as exc:
        for p in exc.problems:
            problems.add(_label(entries, p))
        return {}
    return {s.snowflake: (s, frozenset(e) - {"snowflake", "users"}) for s, e in zip(config.servers, bare)}


def _users(where: str, entries: list[dict], problems: Problems) -> list[User]:
    users: dict[str, User] = {}
    for entry in entries:
        uid = entry.get("uid")
        label = f"{where}, user {uid if isinstance(uid, str) and uid else '?'}"
        found = check_part("user", entry)
        if found:
            for path, message in found:
                problems.add(f"{label}: {path}: {message}" if path else f"{label}: {message}")
            continue
        if uid in users:
            problems.add(f"{label}: duplicate user uid {uid!r}")
            continue
        users[uid] = User(uid=uid, username=entry["username"], status=entry["status"],
                          role_color=color(entry["roleColor"]))
    return list(users.values())


def check(base: Config, provided: Provided) -> Layer:
    """The answers checked like a config (only what they give; `merge` checks the rules across
    servers). Raises ConfigError naming each problem by server and user, or BadAnswer for an
    answer of the wrong shape. Linear in the size of the answers; call it off the event loop."""
    problems = Problems()
    declared = {s.snowflake: s for s in base.servers}
    server_entries = [] if provided.servers is None else _entries(provided.servers, "snowflake", "on_get_server_data")
    own = _servers(server_entries, problems)
    user_entries = {str(sf): _entries(answer, "uid", "on_get_user_data") for sf, answer in provided.users.items()}
    for entry in server_entries:  # a config-shaped server may carry its users itself
        if isinstance(entry.get("users"), list):
            given = [dict(u) if isinstance(u, Mapping) else u for u in entry["users"]]
            user_entries[entry["snowflake"]] = given + user_entries.get(entry["snowflake"], [])
    users: dict[str, tuple[User, ...]] = {}
    for snowflake, entries in user_entries.items():
        if not entries:
            continue
        server = own.get(snowflake, (declared.get(snowflake), None))[0]
        if server is None:
            problems.add(f"server {snowflake}: users given for a server that is neither configured nor provided")
            continue
        users[snowflake] = tuple(_users(f"server {server.id}",
                                        [e if isinstance(e, dict) else {"uid": None} for e in entries], problems))
    problems.raise_any()
    return Layer(own, users)


def overlay(base: Config, provided: Optional[Provided]) -> Config:
    """`base` with the answers checked and laid over it (check, then merge)."""
    if provided is None or provided.empty:
        return base
    return merge(base, check(base, provided))
