"""What changed between two config models, in terms a reload (or a person) can act on.

Pure comparison of declarations: it does not know the live world (statuses moved by
the simulation or the API), so it reports declared changes and leaves turning them
into events to the world.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from dbackd.config.model import Config, User


@dataclass(frozen=True)
class UserChange:
    server: str  # snowflake
    uid: str
    old: Optional[User]  # None: added
    new: Optional[User]  # None: removed

    @property
    def fields(self) -> tuple[str, ...]:
        """Which declared fields differ (for a changed user)."""
        if self.old is None or self.new is None:
            return ()
        return tuple(f for f in ("username", "status", "role_color") if getattr(self.old, f) != getattr(self.new, f))


@dataclass(frozen=True)
class ConfigDiff:
    servers_added: tuple[str, ...] = ()
    servers_removed: tuple[str, ...] = ()
    servers_made_private: tuple[str, ...] = ()
    access_changed: tuple[str, ...] = ()  # private servers whose password or access rules changed
    client_ids: tuple[tuple[str, str], ...] = ()  # (snowflake, new client id)
    server_list_changed: bool = False
    users: tuple[UserChange, ...] = ()
    static_changed: bool = False
    limits_changed: bool = False
    websocket_changed: bool = False
    api_changed: bool = False
    restart_required: tuple[str, ...] = field(default=())  # keys that only take effect on restart


def diff(old: Config, new: Config) -> ConfigDiff:
    before = {s.snowflake: s for s in old.servers}
    after = {s.snowflake: s for s in new.servers}
    users: list[UserChange] = []
    for snowflake, new_server in after.items():
        old_server = before.get(snowflake)
        if old_server is None:  # a new server's users arrive as additions, like any other
            users.extend(UserChange(snowflake, u.uid, None, u) for u in new_server.users)
            continue
        old_users = {u.uid: u for u in old_server.users}
        new_users = {u.uid: u for u in new_server.users}
        for uid in list(old_users) + [u for u in new_users if u not in old_users]:
            a, b = old_users.get(uid), new_users.get(uid)
            if a != b:
                users.append(UserChange(snowflake, uid, a, b))
    restart = []
    if old.listen.bound != new.listen.bound:
        restart.append("listen")
    if old.logging != new.logging:
        restart.append("logging")
    if old.cluster != new.cluster:
        restart.append("cluster")
    if old.workers != new.workers:
        restart.append("workers")
    return ConfigDiff(
        servers_added=tuple(s for s in after if s not in before),
        servers_removed=tuple(s for s in before if s not in after),
        servers_made_private=tuple(
            s for s in after if s in before and after[s].passworded and not before[s].passworded
        ),
        access_changed=tuple(
            s for s in after if s in before and after[s].passworded and before[s].passworded
            and after[s].gate != before[s].gate
        ),
        client_ids=tuple(
            (s, after[s].oauth.client_id) for s in after
            if s in before and after[s].oauth.client_id and after[s].oauth.client_id != before[s].oauth.client_id
        ),
        server_list_changed=[(s.snowflake, s.public_info()) for s in old.servers]
        != [(s.snowflake, s.public_info()) for s in new.servers],
        users=tuple(users),
        static_changed=old.static != new.static,
        limits_changed=old.limits != new.limits,
        websocket_changed=old.websocket != new.websocket,
        api_changed=old.api != new.api,
        restart_required=tuple(restart),
    )


def describe(d: ConfigDiff, old: Config, new: Config) -> list[str]:
    """One line per change, for `dbackd check --diff` and the reload log."""
    names = {s.snowflake: s.id for s in old.servers} | {s.snowflake: s.id for s in new.servers}
    counts = {s.snowflake: len(s.users) for s in new.servers}
    added = set(d.servers_added)
    lines = [f"+ server {names[s]} ({s}, {counts[s]} user{'s' if counts[s] != 1 else ''})" for s in d.servers_added]
    lines += [f"- server {names[s]} ({s}): its clients get an error and lose their join" for s in d.servers_removed]
    lines += [f"~ server {names[s]} is now private: clients that did not authenticate lose their join"
              for s in d.servers_made_private]
    lines += [f"~ server {names[s]}: password or access rules changed: every client must authenticate again"
              for s in d.access_changed]
    lines += [f"~ server {names[s]}: OAuth client id is now {cid} (clients get update-clientid)" for s, cid in d.client_ids]
    if d.server_list_changed:
        lines.append("~ server list changed: every client gets a fresh server-list and rejoins")
    for c in d.users:
        if c.server in added:
            continue  # counted on the server's own line
        where = names[c.server]
        if c.old is None:
            lines.append(f"+ user {where}/{c.uid} {c.new.username} ({c.new.status}, {c.new.role_color})")  # type: ignore[union-attr]
        elif c.new is None:
            lines.append(f"- user {where}/{c.uid} {c.old.username}")
        else:
            changes = ", ".join(f"{f}: {getattr(c.old, f)} -> {getattr(c.new, f)}" for f in c.fields)
            lines.append(f"~ user {where}/{c.uid} {changes}")
    if d.static_changed:
        lines.append("~ static mounts changed: served from the next request")
    if d.limits_changed:
        lines.append("~ limits changed: rates, caps, buffer limits and heartbeat apply now; the frame size limit and "
                     "the join and header timeouts to new sockets")
    if d.websocket_changed:
        lines.append("~ websocket options changed: new sockets use them, open ones keep what they negotiated")
    if d.api_changed:
        lines.append("~ api settings changed: tokens and limits apply from the next request")  # never the tokens
    lines += [f"! {key} changed: takes effect only after a restart" for key in d.restart_required]
    return lines or ["no changes"]


def summary(lines: list[str], first: int = 10) -> dict:
    """A change list as a log line can hold it: how many, and the first few."""
    out: dict = {"count": len(lines) if lines != ["no changes"] else 0, "changes": lines[:first]}
    if len(lines) > first:
        out["more"] = len(lines) - first
    return out
