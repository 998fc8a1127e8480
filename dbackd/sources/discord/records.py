"""What the gateway worker hands to the daemon: plain, immutable records of a guild, one JSON line each.

They carry what the mapping needs already worked out from discord.py's objects (a member's
shown name, colour and status, its roles by id and name), so the daemon never touches
discord.py. `encode` and `decode` are the two ends of the pipe between the processes.
Records only; nothing here decides what is shown.
"""
from __future__ import annotations

import json
from dataclasses import astuple, dataclass, fields
from typing import Any, NamedTuple, Optional, Union


class MemberRec(NamedTuple):
    uid: str
    name: str  # nick, else global name, else username
    color: str  # #rrggbb of the highest coloured role, else the default
    status: str  # online | idle | dnd | offline
    roles: tuple[str, ...]  # role ids
    role_names: tuple[str, ...]
    bot: bool
    avatar: str = ""  # the avatar's path on Discord's CDN (/avatars/<uid>/<hash>.png?size=64)
    activity: str = ""  # what they are doing, worded: "Playing Chess" ("" for nothing)
    custom: str = ""  # their custom status, their own words ("" for none)


@dataclass(frozen=True)
class SessionStarting:
    """A new gateway session is being set up (not a resume): whole guilds are about to arrive."""


@dataclass(frozen=True)
class GuildSnapshot:
    """A guild as the worker knows it now; its members arrive in parts (`part` of `parts`, 0-based).
    `complete` when Discord has listed every member (GUILD_CREATE of a small guild, or every chunk
    of one request); otherwise it is who is known so far, and nobody absent from it has left."""

    guild: str
    name: str
    members: tuple[MemberRec, ...]
    part: int
    parts: int
    complete: bool


@dataclass(frozen=True)
class MembersChanged:
    guild: str
    members: tuple[MemberRec, ...]  # new or changed (nick, roles, a role's colour, the user's name)


@dataclass(frozen=True)
class MemberLeft:
    guild: str
    uid: str


@dataclass(frozen=True)
class PresenceChanged:
    guild: str
    uid: str
    status: str


@dataclass(frozen=True)
class GuildRenamed:
    guild: str
    name: str


@dataclass(frozen=True)
class GuildUnavailable:
    """The guild has an outage on Discord's side (GUILD_DELETE with `unavailable: true`): the bot is
    still in it, and its GUILD_CREATE comes back when the outage ends."""

    guild: str


@dataclass(frozen=True)
class GuildGone:
    """The bot left the guild, or the guild was deleted."""

    guild: str


@dataclass(frozen=True)
class MessageRec:
    guild: str
    channel: str
    channel_name: str
    parent: Optional[str]  # a thread's channel
    parent_name: Optional[str]
    author: str
    text: str  # mentions already written as names


@dataclass(frozen=True)
class Connected:
    """Ready (a new session, every guild sent) or resumed."""

    guilds: tuple[str, ...]
    resumed: bool


@dataclass(frozen=True)
class Disconnected:
    reason: str


@dataclass(frozen=True)
class Failed:
    """The connection cannot work until the config changes (a refused token, intents not enabled)."""

    kind: str  # token | intents | api
    message: str


@dataclass(frozen=True)
class CommandAsked:
    """A member used the slash command; the daemon answers `ask` with the reply's text."""

    ask: str
    guild: str
    user: str


Record = Union[CommandAsked, SessionStarting, GuildSnapshot, MembersChanged, MemberLeft, PresenceChanged, GuildRenamed, GuildGone,
               GuildUnavailable, MessageRec, Connected, Disconnected, Failed]


_KINDS: dict[str, type] = {cls.__name__: cls for cls in (CommandAsked, SessionStarting, GuildSnapshot, MembersChanged, MemberLeft,
                                                         PresenceChanged, GuildRenamed, GuildGone, GuildUnavailable,
                                                         MessageRec, Connected, Disconnected, Failed)}
_MEMBERS = {"GuildSnapshot", "MembersChanged"}


def encode(record: Record) -> bytes:
    """One record as one line of JSON: [kind, field, field, ...]."""
    return json.dumps([type(record).__name__, *astuple(record)], ensure_ascii=False,
                      separators=(",", ":")).encode("utf-8") + b"\n"


def decode(line: bytes) -> Record:
    """A line written by `encode` back into its record. Raises ValueError for anything else."""
    data = json.loads(line)
    if not isinstance(data, list) or not data or data[0] not in _KINDS:
        raise ValueError("not a gateway record")
    kind, values = data[0], data[1:]
    cls = _KINDS[kind]
    names = [f.name for f in fields(cls)]
    if len(values) != len(names):
        raise ValueError(f"a {kind} record with {len(values)} fields")
    given: dict[str, Any] = dict(zip(names, values))
    if kind in _MEMBERS:
        given["members"] = tuple(MemberRec(m[0], m[1], m[2], m[3], tuple(m[4]), tuple(m[5]), bool(m[6]),
                                           *(str(v) for v in m[7:10]))
                                 for m in given["members"])
    elif kind == "Connected":
        given["guilds"] = tuple(given["guilds"])
    return cls(**given)
