"""A fake Discord (REST API and gateway) that tests start on 127.0.0.1.

Its job: hold a small Discord world (guilds, roles, channels, members, presences), serve the
REST calls and the gateway protocol (HELLO, heartbeats, IDENTIFY, READY, GUILD_CREATE, RESUME
with replay, invalid sessions, member chunking, zlib-stream / zstd-stream compression) with
real payload shapes, and let a test script events and wait on what happened, so a real
`discord.Client` can run against it.

It must not: listen anywhere but loopback, import discord.py (it is a protocol fake, usable
with any client; only `point_discord_py_at` imports it, when called), keep anything unbounded
(queues, buffers and records all have limits), or sleep to wait for luck (tests await the
conditions it exposes).
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import json
import logging
import random
import uuid
import zlib
from typing import Any, Callable, Deque, Dict, Iterable, Iterator, List, Optional, Set, Tuple

from aiohttp import WSMsgType, web

log = logging.getLogger(__name__)

API_VERSION = 10
DISCORD_EPOCH_MS = 1420070400000
# Ids minted by the fake start at 2021-01-01 so they look like real, recent snowflakes.
_SNOWFLAKE_BASE_MS = 1609459200000


class Op:
    DISPATCH = 0
    HEARTBEAT = 1
    IDENTIFY = 2
    PRESENCE_UPDATE = 3
    VOICE_STATE_UPDATE = 4
    RESUME = 6
    RECONNECT = 7
    REQUEST_GUILD_MEMBERS = 8
    INVALID_SESSION = 9
    HELLO = 10
    HEARTBEAT_ACK = 11


class Close:
    UNKNOWN_ERROR = 4000
    UNKNOWN_OPCODE = 4001
    DECODE_ERROR = 4002
    NOT_AUTHENTICATED = 4003
    AUTHENTICATION_FAILED = 4004
    ALREADY_AUTHENTICATED = 4005
    INVALID_SEQ = 4007
    RATE_LIMITED = 4008
    SESSION_TIMED_OUT = 4009
    INVALID_SHARD = 4010
    SHARDING_REQUIRED = 4011
    INVALID_API_VERSION = 4012
    INVALID_INTENTS = 4013
    DISALLOWED_INTENTS = 4014


INTENTS = {
    "guilds": 1 << 0,
    "members": 1 << 1,
    "moderation": 1 << 2,
    "expressions": 1 << 3,
    "integrations": 1 << 4,
    "webhooks": 1 << 5,
    "invites": 1 << 6,
    "voice_states": 1 << 7,
    "presences": 1 << 8,
    "guild_messages": 1 << 9,
    "guild_reactions": 1 << 10,
    "guild_typing": 1 << 11,
    "dm_messages": 1 << 12,
    "dm_reactions": 1 << 13,
    "dm_typing": 1 << 14,
    "message_content": 1 << 15,
    "guild_scheduled_events": 1 << 16,
    "auto_moderation_configuration": 1 << 20,
    "auto_moderation_execution": 1 << 21,
    "guild_message_polls": 1 << 24,
    "dm_message_polls": 1 << 25,
}
PRIVILEGED_INTENTS = ("members", "presences", "message_content")
# The application flags Discord sets when a privileged intent is switched on in the portal.
_APPLICATION_FLAGS = {"presences": 1 << 12, "members": 1 << 14, "message_content": 1 << 18}

# Which intent a session needs to be sent each guild event; GUILD_CREATE and GUILD_DELETE
# are part of connecting, so every session gets them.
_EVENT_INTENT = {
    "GUILD_UPDATE": INTENTS["guilds"],
    "GUILD_ROLE_CREATE": INTENTS["guilds"],
    "GUILD_ROLE_UPDATE": INTENTS["guilds"],
    "GUILD_ROLE_DELETE": INTENTS["guilds"],
    "CHANNEL_CREATE": INTENTS["guilds"],
    "CHANNEL_UPDATE": INTENTS["guilds"],
    "CHANNEL_DELETE": INTENTS["guilds"],
    "GUILD_MEMBER_ADD": INTENTS["members"],
    "GUILD_MEMBER_UPDATE": INTENTS["members"],
    "GUILD_MEMBER_REMOVE": INTENTS["members"],
    "PRESENCE_UPDATE": INTENTS["presences"],
    "MESSAGE_CREATE": INTENTS["guild_messages"],
}

STATUSES = ("online", "idle", "dnd", "offline")
CHUNK_SIZE = 1000  # members per GUILD_MEMBERS_CHUNK, as Discord sends them
MAX_CLIENT_PAYLOAD = 4096  # Discord closes with 4002 on a larger frame from the client
_UNSET: Any = object()


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _dumps_with(data: dict, **encoded: str) -> str:
    """`data` as JSON with more fields that are JSON already."""
    text = _dumps(data)
    extra = ",".join(f'"{key}":{value}' for key, value in encoded.items())
    if not extra:
        return text
    return text[:-1] + ("," if len(text) > 2 else "") + extra + "}"


def _sid(value: Any) -> str:
    return str(int(value))


def _iso(ms: int) -> str:
    import datetime

    moment = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.timezone.utc)
    return moment.isoformat(timespec="microseconds")


# ---------------------------------------------------------------------------------------------
# Payload builders: Discord's own shapes, for tests to pass to `add_guild` and the event methods.


def user(id: Any, username: str, *, global_name: Optional[str] = None, bot: bool = False,
         avatar: Optional[str] = None) -> dict:
    return {"id": _sid(id), "username": username, "global_name": global_name, "discriminator": "0",
            "avatar": avatar, "bot": bot, "public_flags": 0}


def member(id: Any, username: str, *, nick: Optional[str] = None, roles: Iterable[Any] = (),
           global_name: Optional[str] = None, bot: bool = False, avatar: Optional[str] = None,
           joined_at: Optional[str] = None) -> dict:
    return {"user": user(id, username, global_name=global_name, bot=bot, avatar=avatar), "nick": nick,
            "roles": [_sid(r) for r in roles], "joined_at": joined_at}


def role(id: Any, name: str, *, color: int = 0, position: int = 0, hoist: bool = False,
         permissions: Any = "0", mentionable: bool = False, managed: bool = False) -> dict:
    return {"id": _sid(id), "name": name, "color": int(color),
            # discord.py 2.7 reads the colour from `colors.primary_color`, older clients from `color`.
            "colors": {"primary_color": int(color), "secondary_color": None, "tertiary_color": None},
            "hoist": hoist, "icon": None, "unicode_emoji": None, "position": position,
            "permissions": str(permissions), "managed": managed, "mentionable": mentionable, "flags": 0}


def text_channel(id: Any, name: str, *, position: int = 0, parent_id: Any = None,
                 topic: Optional[str] = None, nsfw: bool = False) -> dict:
    return {"id": _sid(id), "type": 0, "name": name, "position": position, "permission_overwrites": [],
            "parent_id": None if parent_id is None else _sid(parent_id), "topic": topic, "nsfw": nsfw,
            "last_message_id": None, "rate_limit_per_user": 0, "flags": 0}


def voice_channel(id: Any, name: str, *, position: int = 0, parent_id: Any = None,
                  bitrate: int = 64000, user_limit: int = 0) -> dict:
    return {"id": _sid(id), "type": 2, "name": name, "position": position, "permission_overwrites": [],
            "parent_id": None if parent_id is None else _sid(parent_id), "bitrate": bitrate,
            "user_limit": user_limit, "rtc_region": None, "nsfw": False, "flags": 0}


def category(id: Any, name: str, *, position: int = 0) -> dict:
    return {"id": _sid(id), "type": 4, "name": name, "position": position, "permission_overwrites": [],
            "parent_id": None, "nsfw": False, "flags": 0}


def presence(user_id: Any, status: str = "online", *, client_status: Optional[dict] = None,
             activities: Iterable[dict] = ()) -> dict:
    if status not in STATUSES:
        raise ValueError(f"unknown status {status!r}")
    return {"user": {"id": _sid(user_id)}, "status": status,
            "client_status": _client_status(status, client_status), "activities": list(activities)}


def _client_status(status: str, given: Optional[dict]) -> dict:
    if given is not None:
        return dict(given)
    return {} if status == "offline" else {"desktop": status}


# ---------------------------------------------------------------------------------------------
# State. Members are compact records rather than payload dicts so a 100,000-member guild stays
# small; payloads are built when something is sent.


class _User:
    __slots__ = ("id", "username", "global_name", "bot", "avatar")

    def __init__(self, id: str, username: str, global_name: Optional[str] = None, bot: bool = False,
                 avatar: Optional[str] = None):
        self.id, self.username, self.global_name, self.bot, self.avatar = id, username, global_name, bot, avatar

    @classmethod
    def from_payload(cls, data: dict) -> "_User":
        return cls(_sid(data["id"]), data["username"], data.get("global_name"), bool(data.get("bot", False)),
                   data.get("avatar"))

    def payload(self) -> dict:
        return {"id": self.id, "username": self.username, "global_name": self.global_name,
                "discriminator": "0", "avatar": self.avatar, "bot": self.bot, "public_flags": 0}


class _Member:
    __slots__ = ("user", "nick", "roles", "joined_at", "_json")

    def __init__(self, user: _User, nick: Optional[str], roles: Tuple[str, ...], joined_at: str):
        self.user, self.nick, self.roles, self.joined_at = user, nick, roles, joined_at
        self._json: Optional[str] = None

    def json(self) -> str:
        """The payload as JSON, kept until the member changes: chunking a 100,000-member guild
        is then mostly joining strings."""
        if self._json is None:
            self._json = _dumps(self.payload())
        return self._json

    def changed(self) -> None:
        self._json = None

    def partial(self) -> dict:
        """The member without its user, as in a message's `member` field."""
        return {"roles": list(self.roles), "nick": self.nick, "avatar": None, "banner": None,
                "joined_at": self.joined_at, "premium_since": None, "deaf": False, "mute": False,
                "flags": 0, "pending": False, "communication_disabled_until": None}

    def payload(self) -> dict:
        data = self.partial()
        data["user"] = self.user.payload()
        return data


class _Presence:
    __slots__ = ("status", "client_status", "activities")

    def __init__(self, status: str, client_status: dict, activities: List[dict]):
        self.status, self.client_status, self.activities = status, client_status, activities


class FakeGuild:
    """One guild's state. Read it freely; change it through FakeDiscord's event methods so
    connected clients hear about the change."""

    def __init__(self, id: str, name: str, *, owner_id: str, joined_at: str):
        self.id = id
        self.name = name
        self.owner_id = owner_id
        self.joined_at = joined_at
        self.icon: Optional[str] = None
        self.description: Optional[str] = None
        self.features: List[str] = []
        self.unavailable = False
        self.roles: Dict[str, dict] = {}
        self.channels: Dict[str, dict] = {}
        self.members: Dict[str, _Member] = {}
        self.presences: Dict[str, _Presence] = {}  # a member with no entry is offline

    @property
    def member_count(self) -> int:
        return len(self.members)

    def status(self, user_id: Any) -> str:
        entry = self.presences.get(_sid(user_id))
        return "offline" if entry is None else entry.status

    def member(self, user_id: Any) -> dict:
        return self.members[_sid(user_id)].payload()

    def presence(self, user_id: Any, *, with_guild_id: bool = False) -> dict:
        uid = _sid(user_id)
        entry = self.presences.get(uid)
        if entry is None:
            data = {"user": {"id": uid}, "status": "offline", "client_status": {}, "activities": []}
        else:
            data = {"user": {"id": uid}, "status": entry.status, "client_status": dict(entry.client_status),
                    "activities": list(entry.activities)}
        if with_guild_id:
            data["guild_id"] = self.id
        return data

    def payload(self) -> dict:
        """The guild object as GUILD_UPDATE and GET /guilds/{id} carry it."""
        return {
            "id": self.id, "name": self.name, "icon": self.icon, "description": self.description,
            "splash": None, "discovery_splash": None, "banner": None, "owner_id": self.owner_id,
            "afk_channel_id": None, "afk_timeout": 300, "verification_level": 0,
            "default_message_notifications": 0, "explicit_content_filter": 0,
            "roles": [dict(r) for r in self.roles.values()], "emojis": [], "stickers": [],
            "features": list(self.features), "mfa_level": 0, "application_id": None,
            "system_channel_id": None, "system_channel_flags": 0, "rules_channel_id": None,
            "vanity_url_code": None, "premium_tier": 0, "premium_subscription_count": 0,
            "preferred_locale": "en-US", "public_updates_channel_id": None, "nsfw_level": 0,
            "premium_progress_bar_enabled": False, "safety_alerts_channel_id": None,
            "max_members": 500000, "max_video_channel_users": 25, "widget_enabled": False,
        }

    def create_json(self, *, intents: int, large_threshold: int, bot_id: str, joined: bool = False,
                    huge_threshold: int = 75_000) -> str:
        """GUILD_CREATE as a session with these intents gets it: a large guild carries only the
        members who are not offline (and the bot), as Discord does past `large_threshold`.
        `unavailable: false` marks a guild the session knew as unavailable (READY, an outage);
        a guild the bot has just joined has no `unavailable`, which is how clients tell."""
        large = self.member_count > large_threshold
        has_members = bool(intents & INTENTS["members"])
        has_presences = bool(intents & INTENTS["presences"])
        if self.member_count > huge_threshold:
            # Discord's GUILD_CREATE documentation: "If your bot does not have the GUILD_PRESENCES
            # Gateway Intent, or if the guild has over 75k members, members and presences returned
            # in this event will only contain your bot and users in voice channels" (the fake has
            # no voice states, so: the bot alone). Statuses then come from Request Guild Members
            # with `presences: true` and from PRESENCE_UPDATE.
            chosen = []
        elif has_members and not large:
            chosen = list(self.members.values())
        elif has_presences:
            chosen = [self.members[uid] for uid in self.presences if uid in self.members]
        else:
            chosen = []
        if bot_id in self.members and not any(m.user.id == bot_id for m in chosen):
            chosen.append(self.members[bot_id])
        data = self.payload()
        data.update({
            "joined_at": self.joined_at, "large": large,
            "member_count": self.member_count, "voice_states": [],
            "channels": [dict(c) for c in self.channels.values()], "threads": [],
            "presences": [self.presence(m.user.id) for m in chosen if m.user.id in self.presences]
            if has_presences else [],
            "stage_instances": [], "guild_scheduled_events": [], "soundboard_sounds": [],
            "embedded_activities": [],
        })
        if not joined:
            data["unavailable"] = False
        return _dumps_with(data, members="[" + ",".join(m.json() for m in chosen) + "]")


# ---------------------------------------------------------------------------------------------
# Records for assertions.


@dataclasses.dataclass(frozen=True)
class Frame:
    """One gateway payload the fake sent or received. `n` orders all frames of the fake; pass
    `FakeDiscord.mark()` as `since` to look only at what comes later."""

    n: int
    direction: str  # "sent" or "received"
    connection: int
    op: Optional[int]
    t: Optional[str]
    s: Optional[int]
    raw: str

    @property
    def d(self) -> Any:
        """The payload's `d`, or None for a frame that was not JSON."""
        try:
            return json.loads(self.raw).get("d")
        except (ValueError, AttributeError):
            return None


@dataclasses.dataclass
class ConnectionInfo:
    number: int
    path: str
    query: Dict[str, str]
    compress: Optional[str]
    session_id: Optional[str] = None
    closed_by: Optional[str] = None  # "client", "fake" or "dropped"
    close_code: Optional[int] = None
    open: bool = True


@dataclasses.dataclass(frozen=True)
class Request:
    method: str
    path: str
    status: int


class _Signal:
    """Wakes every waiter when something changes; waiters re-check their own condition."""

    def __init__(self) -> None:
        self._waiters: Set[asyncio.Future] = set()

    def notify(self) -> None:
        for future in self._waiters:
            if not future.done():
                future.set_result(None)
        self._waiters.clear()

    async def wait_for(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            result = predicate()
            if result:
                return result
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise asyncio.TimeoutError(f"timed out after {timeout}s waiting for {what}")
            future = loop.create_future()
            self._waiters.add(future)
            try:
                await asyncio.wait_for(future, remaining)
            except asyncio.TimeoutError:
                pass
            finally:
                self._waiters.discard(future)


# ---------------------------------------------------------------------------------------------
# Gateway sessions and connections.


def _compressor(kind: Optional[str], level: int) -> Optional[Callable[[str], bytes]]:
    if kind is None:
        return None
    if kind == "zlib-stream":
        # One zlib stream per connection; each payload ends with a sync flush (00 00 ff ff),
        # which is how clients tell where a payload ends.
        context = zlib.compressobj(level)
        return lambda raw: context.compress(raw.encode()) + context.flush(zlib.Z_SYNC_FLUSH)
    if kind == "zstd-stream":
        try:
            from compression import zstd  # type: ignore  # Python 3.14+

            stdlib = zstd.ZstdCompressor()
            return lambda raw: stdlib.compress(raw.encode(), mode=zstd.ZstdCompressor.FLUSH_BLOCK)
        except ImportError:
            pass
        try:
            import zstandard  # type: ignore

            stream = zstandard.ZstdCompressor().compressobj()
            return lambda raw: stream.compress(raw.encode()) + stream.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
        except ImportError:
            pass
    raise ValueError(kind)


class _Connection:
    def __init__(self, number: int, request: web.Request, ws: web.WebSocketResponse, info: ConnectionInfo,
                 compress: Optional[Callable[[str], bytes]], queue_limit: int, rate: Tuple[int, float]):
        self.number = number
        self.request = request
        self.ws = ws
        self.info = info
        self.compress = compress
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=queue_limit)
        self.session: Optional[_Session] = None
        self.closing = False  # nothing more is sent: a close is queued, or the socket is gone
        self.close_queued = False
        self.finished = asyncio.Event()
        self.rate_limit, self.rate_window = rate
        self.sends: Deque[float] = collections.deque(maxlen=max(1, self.rate_limit))

    def enqueue(self, item: tuple) -> None:
        if self.closing:
            return
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            # A client this far behind is dropped, as Discord drops slow consumers; its session
            # stays resumable while the replay buffer still covers what it missed.
            log.warning("gateway connection %d is too slow; dropping it", self.number)
            self.abort("dropped")

    def send_op(self, op: int, d: Any) -> None:
        self.enqueue(("frame", _dumps({"op": op, "d": d, "s": None, "t": None}), op, None, None))

    def close_with(self, code: int, reason: str) -> None:
        """Close after what is already queued has been sent."""
        self.enqueue(("close", code, reason))
        self.closing = self.close_queued = True

    def close_now(self, code: int, reason: str) -> None:
        """Close before anything still queued is sent."""
        while not self.queue.empty():
            self.queue.get_nowait()
        self.closing = False
        self.close_with(code, reason)

    def abort(self, closed_by: str = "fake") -> None:
        self.closing = True
        if self.info.closed_by is None:
            self.info.closed_by = closed_by
        transport = self.request.transport
        if transport is not None:
            transport.abort()


class _Session:
    def __init__(self, id: str, *, intents: int, shard: Tuple[int, int], large_threshold: int,
                 replay_limit: int):
        self.id = id
        self.intents = intents
        self.shard = shard
        self.large_threshold = large_threshold
        self.connection: Optional[_Connection] = None
        self.seq = 0
        self.buffer: Deque[Tuple[int, str, str]] = collections.deque(maxlen=replay_limit)
        self.evicted_upto = 0  # a RESUME from below this sequence cannot be replayed
        self.guild_ids: Set[str] = set()
        self.invalid = False

    def in_shard(self, guild_id: str) -> bool:
        shard_id, count = self.shard
        return (int(guild_id) >> 22) % count == shard_id

    def dispatch(self, t: str, d_json: str) -> None:
        self.seq += 1
        raw = '{"op":0,"s":%d,"t":"%s","d":%s}' % (self.seq, t, d_json)
        if len(self.buffer) == self.buffer.maxlen:
            self.evicted_upto = self.buffer[0][0]
        self.buffer.append((self.seq, t, raw))
        if self.connection is not None:
            self.connection.enqueue(("frame", raw, Op.DISPATCH, t, self.seq))

    def can_resume_from(self, seq: Any) -> bool:
        return (not self.invalid and isinstance(seq, int) and not isinstance(seq, bool)
                and self.evicted_upto <= seq <= self.seq)


# ---------------------------------------------------------------------------------------------


class FakeDiscord:
    """A fake Discord on 127.0.0.1: REST under `api_base`, the gateway at `gateway_url`.

    Use it as `async with FakeDiscord(...) as fake:`; add guilds, point a client at it, then
    script events (`presence_update`, `member_add`, ...) and await conditions (`wait_identified`,
    `wait_resumed`, `wait_op`, ...). Event methods change the fake's state and dispatch to every
    session that should hear of it, connected or waiting to resume.
    """

    def __init__(
        self,
        *,
        token: str = "bot-token",
        intents_enabled: Iterable[str] = PRIVILEGED_INTENTS,
        heartbeat_interval: float = 41.25,
        bot_id: Any = None,
        bot_name: str = "dbackd-test",
        application_name: str = "dbackd test application",
        replay_limit: int = 5000,
        send_queue_limit: int = 20000,
        record_limit: int = 20000,
        max_sessions: int = 32,
        send_timeout: float = 5.0,
        wait_timeout: float = 5.0,
        gateway_rate_limit: Tuple[int, float] = (120, 60.0),
        compression_level: int = 6,
        huge_threshold: int = 75_000,
        recommended_shards: int = 1,
        guilds_per_shard: int = 2500,
        session_starts_left: int = 999,
        max_concurrency: int = 1,
        identify_window: float = 0.0,
        chunk_delay: float = 0.0,
        member_request_interval: float = 30.0,
        interaction_deadline: float = 3.0,
    ):
        enabled = set(intents_enabled)
        unknown = enabled - set(PRIVILEGED_INTENTS)
        if unknown:
            raise ValueError(f"only privileged intents are switched on or off: {sorted(unknown)}")
        self.token = token
        self.intents_enabled = enabled
        self.heartbeat_interval = heartbeat_interval
        self.replay_limit = replay_limit
        self.send_queue_limit = max(send_queue_limit, replay_limit + 100)
        self.max_sessions = max_sessions
        self.send_timeout = send_timeout
        self.wait_timeout = wait_timeout
        self.gateway_rate_limit = gateway_rate_limit
        self.compression_level = compression_level
        self.huge_threshold = huge_threshold  # Discord's 75k; tests lower it to stay small
        self.recommended_shards = recommended_shards
        self.guilds_per_shard = guilds_per_shard
        self.session_starts_left = session_starts_left
        self.max_concurrency = max_concurrency
        # Discord's 5 s between two IDENTIFYs of one bucket (0: not enforced, for tests that
        # reconnect quickly); see `_identify`.
        self.identify_window = identify_window
        self._identified_at: Dict[int, float] = {}  # rate-limit bucket -> when it last identified
        self.identifies: List[Tuple[int, float]] = []  # (shard id, loop time) of every IDENTIFY taken
        self.chunk_delay = chunk_delay  # seconds between two GUILD_MEMBERS_CHUNKs of one answer
        # Discord's limit on asking for all of a guild's members (see `_request_members`).
        self.member_request_interval = member_request_interval
        self._all_members_asked: Dict[str, float] = {}  # guild id -> when all its members were last asked for
        self._chunkers: Set[asyncio.Task] = set()

        self._snowflake_counter = 0
        self.bot = _User(_sid(bot_id) if bot_id is not None else self.snowflake(), bot_name, bot=True)
        self.owner = _User(self.snowflake(), "owner")
        self.application_id = self.bot.id  # as for every application made since 2020
        self.application_name = application_name

        self.guilds: Dict[str, FakeGuild] = {}
        self._users: Dict[str, _User] = {self.bot.id: self.bot}  # one record per user, shared by guilds
        self._sessions: "collections.OrderedDict[str, _Session]" = collections.OrderedDict()
        self._connections: Dict[int, _Connection] = {}
        self._connection_numbers = 0
        self._frame_numbers = 0

        self.sent: Deque[Frame] = collections.deque(maxlen=record_limit)
        self.received: Deque[Frame] = collections.deque(maxlen=record_limit)
        self.connections: Deque[ConnectionInfo] = collections.deque(maxlen=record_limit)
        self.requests: Deque[Request] = collections.deque(maxlen=record_limit)
        self.counts: collections.Counter = collections.Counter()
        self._signal = _Signal()

        # Application commands by guild id, as registered over REST (name -> command object).
        self.commands: Dict[str, Dict[str, dict]] = {}
        self.interaction_deadline = interaction_deadline
        self._interactions: "collections.OrderedDict[str, dict]" = collections.OrderedDict()  # id -> open interaction
        self.interaction_replies: Deque[dict] = collections.deque(maxlen=record_limit)  # callbacks taken

        self._accepting = asyncio.Event()
        self._accepting.set()
        self._runner: Optional[web.AppRunner] = None
        self._port: Optional[int] = None
        self._closing = False

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> "FakeDiscord":
        app = web.Application(middlewares=[self._rest_middleware])
        app.router.add_get("/gateway", self._gateway)
        app.router.add_get("/resume-gateway", self._gateway)
        base = f"/api/v{API_VERSION}"
        app.router.add_get(base + "/gateway", self._get_gateway)
        app.router.add_get(base + "/gateway/bot", self._get_gateway_bot)
        app.router.add_get(base + "/users/@me", self._get_me)
        app.router.add_get(base + "/users/@me/guilds", self._get_my_guilds)
        app.router.add_get(base + "/users/{user_id}", self._get_user)
        app.router.add_get(base + "/oauth2/applications/@me", self._get_application)
        app.router.add_get(base + "/applications/@me", self._get_application)
        app.router.add_get(base + "/guilds/{guild_id}", self._get_guild)
        app.router.add_get(base + "/guilds/{guild_id}/roles", self._get_roles)
        app.router.add_get(base + "/guilds/{guild_id}/channels", self._get_channels)
        app.router.add_get(base + "/guilds/{guild_id}/members", self._get_members)
        app.router.add_get(base + "/guilds/{guild_id}/members/{user_id}", self._get_member)
        # Discord's CDN (cdn.discordapp.com) on the same port, at the root:
        # https://discord.com/developers/docs/reference#image-formatting
        app.router.add_get("/avatars/{user_id}/{file}", self._cdn_avatar)
        app.router.add_get("/guilds/{guild_id}/users/{user_id}/avatars/{file}", self._cdn_avatar)
        app.router.add_get("/embed/avatars/{file}", self._cdn_default_avatar)
        commands = base + "/applications/{application_id}/guilds/{guild_id}/commands"
        app.router.add_get(commands, self._get_commands)
        app.router.add_put(commands, self._put_commands)
        app.router.add_post(commands, self._post_command)
        app.router.add_post(base + "/interactions/{interaction_id}/{token}/callback", self._interaction_callback)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = self._runner.addresses[0][1]
        return self

    async def close(self) -> None:
        self._closing = True
        self._accepting.set()
        for task in list(self._chunkers):
            task.cancel()
        await asyncio.gather(*self._chunkers, return_exceptions=True)
        live = list(self._connections.values())
        for conn in live:
            conn.abort("fake")
        await _all_finished(live, self.send_timeout)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> "FakeDiscord":
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    # -- addresses ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the fake is not started")
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base(self) -> str:
        return f"{self.base_url}/api/v{API_VERSION}"

    @property
    def gateway_url(self) -> str:
        """What GET /gateway/bot answers; clients add ?v=10&encoding=json[&compress=...]."""
        return f"ws://127.0.0.1:{self.port}/gateway"

    @property
    def resume_gateway_url(self) -> str:
        """What READY names for resuming: a different path, so tests see which URL a client used."""
        return f"ws://127.0.0.1:{self.port}/resume-gateway"

    # -- building the world ------------------------------------------------------------------

    def snowflake(self) -> str:
        """A new unique id, shaped like Discord's (a timestamp in the high bits)."""
        n = self._snowflake_counter
        self._snowflake_counter += 1
        ms = _SNOWFLAKE_BASE_MS + (n >> 12)
        return str(((ms - DISCORD_EPOCH_MS) << 22) | (n & 0xFFF))

    def add_guild(self, id: Any = None, name: str = "Guild", *, roles: Iterable[dict] = (),
                  channels: Iterable[dict] = (), members: Iterable[dict] = (),
                  presences: Iterable[dict] = (), owner_id: Any = None, icon: Optional[str] = None,
                  features: Iterable[str] = (), with_bot: bool = True) -> FakeGuild:
        """Add a guild from payload dicts (see `member`, `role`, `text_channel`, `presence`).
        It gets an @everyone role (id = guild id) unless given one, and the bot as a member
        unless `with_bot=False`. Sessions already connected get a GUILD_CREATE for it."""
        guild = self._new_guild(id, name, owner_id=owner_id, icon=icon, features=features)
        for data in roles:
            guild.roles[_sid(data["id"])] = dict(data)
        for data in channels:
            guild.channels[_sid(data["id"])] = dict(data)
        for data in members:
            record = self._member_from_payload(data)
            guild.members[record.user.id] = record
        for data in presences:
            self._set_presence(guild, data["user"]["id"], data["status"], data.get("client_status"),
                               data.get("activities"))
        return self._finish_guild(guild, with_bot)

    def add_large_guild(self, id: Any = None, name: str = "Large guild", *, members: int = 100_000,
                        roles: int = 20, channels: int = 5, online_fraction: float = 0.2,
                        roles_per_member: int = 2, nick_fraction: float = 0.1, seed: int = 0,
                        with_bot: bool = True) -> FakeGuild:
        """A generated guild: `members` members named user000000..., each with up to
        `roles_per_member` of the `roles` roles; `online_fraction` of them online, idle or dnd.
        Deterministic for a seed, and cheap: 100,000 members take about a second and 60 MB."""
        rng = random.Random(seed)
        guild = self._new_guild(id, name, owner_id=None, icon=None, features=())
        role_ids = []
        for index in range(roles):
            rid = self.snowflake()
            role_ids.append(rid)
            guild.roles[rid] = role(rid, f"role-{index}", color=rng.randrange(0x1000000), position=index + 1,
                                    hoist=index < 3)
        for index in range(channels):
            cid = self.snowflake()
            guild.channels[cid] = text_channel(cid, f"channel-{index}", position=index)
        joined = [_iso(_SNOWFLAKE_BASE_MS + day * 86_400_000) for day in range(365)]
        online_statuses = ("online", "online", "online", "idle", "dnd")
        client_statuses = {status: {"desktop": status} for status in online_statuses}
        draw = rng.random
        n_roles = len(role_ids)
        guild_members, guild_presences, users = guild.members, guild.presences, self._users
        for index in range(members):
            uid = self.snowflake()
            member_roles: Tuple[str, ...] = ()
            if n_roles:
                count = int(draw() * (roles_per_member + 1))
                if count:
                    member_roles = tuple(dict.fromkeys(role_ids[int(draw() * n_roles)] for _ in range(count)))
            account = users[uid] = _User(uid, f"user{index:06d}")
            nick = f"nick{index}" if draw() < nick_fraction else None
            guild_members[uid] = _Member(account, nick, member_roles, joined[index % 365])
            if draw() < online_fraction:
                status = online_statuses[index % 5]
                guild_presences[uid] = _Presence(status, client_statuses[status], [])
        return self._finish_guild(guild, with_bot)

    def guild(self, guild_id: Any) -> FakeGuild:
        return self.guilds[_sid(guild_id)]

    def _new_guild(self, id: Any, name: str, *, owner_id: Any, icon: Optional[str],
                   features: Iterable[str]) -> FakeGuild:
        gid = _sid(id) if id is not None else self.snowflake()
        if gid in self.guilds:
            raise ValueError(f"guild {gid} exists")
        guild = FakeGuild(gid, name, owner_id=_sid(owner_id) if owner_id is not None else self.owner.id,
                          joined_at=_iso(_SNOWFLAKE_BASE_MS))
        guild.icon = icon
        guild.features = list(features)
        return guild

    def _finish_guild(self, guild: FakeGuild, with_bot: bool) -> FakeGuild:
        if guild.id not in guild.roles:
            everyone = role(guild.id, "@everyone", permissions="1071698660929")
            guild.roles = {guild.id: everyone, **guild.roles}
        if with_bot and self.bot.id not in guild.members:
            guild.members[self.bot.id] = _Member(self.bot, None, (), guild.joined_at)
        self.guilds[guild.id] = guild
        for session in list(self._sessions.values()):
            if session.in_shard(guild.id):
                session.guild_ids.add(guild.id)
                self._send_guild_create(session, guild, joined=True)
        return guild

    def _member_from_payload(self, data: dict) -> _Member:
        if "user" not in data:
            raise ValueError("a member needs a 'user' (see tests.fakes.discord.member)")
        given = _User.from_payload(data["user"])
        account = self._users.setdefault(given.id, given)
        if account is not given and account is not self.bot:
            # The newest payload of a user wins, as the same user is one account across guilds.
            account.username, account.global_name, account.avatar = given.username, given.global_name, given.avatar
            self._user_changed(account.id)
        return _Member(account, data.get("nick"), tuple(_sid(r) for r in data.get("roles", ())),
                       data.get("joined_at") or _iso(_SNOWFLAKE_BASE_MS))

    def _user_changed(self, user_id: str) -> None:
        for guild in self.guilds.values():
            record = guild.members.get(user_id)
            if record is not None:
                record.changed()

    @staticmethod
    def _set_presence(guild: FakeGuild, user_id: Any, status: str, client_status: Optional[dict],
                      activities: Optional[Iterable[dict]]) -> None:
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        uid = _sid(user_id)
        if status == "offline":
            guild.presences.pop(uid, None)
        else:
            guild.presences[uid] = _Presence(status, _client_status(status, client_status), list(activities or ()))

    # -- events ------------------------------------------------------------------------------

    def presence_update(self, guild_id: Any, user_id: Any, status: str, *, client_status: Optional[dict] = None,
                        activities: Optional[Iterable[dict]] = None) -> dict:
        guild = self.guild(guild_id)
        uid = _sid(user_id)
        if uid not in guild.members:
            raise KeyError(f"{uid} is not a member of {guild.id}")
        self._set_presence(guild, uid, status, client_status, activities)
        data = guild.presence(uid, with_guild_id=True)
        self._broadcast(guild.id, "PRESENCE_UPDATE", data)
        return data

    def member_add(self, guild_id: Any, data: dict) -> dict:
        """`data` as `member(...)` makes it."""
        guild = self.guild(guild_id)
        record = self._member_from_payload(data)
        if record.user.id in guild.members:
            raise ValueError(f"{record.user.id} is already a member of {guild.id}")
        guild.members[record.user.id] = record
        event = record.payload()
        event["guild_id"] = guild.id
        self._broadcast(guild.id, "GUILD_MEMBER_ADD", event)
        return event

    def member_update(self, guild_id: Any, user_id: Any, *, nick: Any = _UNSET, roles: Any = _UNSET,
                      username: Any = _UNSET, global_name: Any = _UNSET, avatar: Any = _UNSET) -> dict:
        guild = self.guild(guild_id)
        record = guild.members[_sid(user_id)]
        if nick is not _UNSET:
            record.nick = nick
        if roles is not _UNSET:
            record.roles = tuple(_sid(r) for r in roles)
        if username is not _UNSET:
            record.user.username = username
        if global_name is not _UNSET:
            record.user.global_name = global_name
        if avatar is not _UNSET:
            record.user.avatar = avatar
        record.changed()
        if {username, global_name, avatar} != {_UNSET}:
            self._user_changed(record.user.id)
        event = record.payload()
        event["guild_id"] = guild.id
        self._broadcast(guild.id, "GUILD_MEMBER_UPDATE", event)
        return event

    def member_remove(self, guild_id: Any, user_id: Any) -> dict:
        guild = self.guild(guild_id)
        record = guild.members.pop(_sid(user_id))
        guild.presences.pop(record.user.id, None)
        event = {"guild_id": guild.id, "user": record.user.payload()}
        self._broadcast(guild.id, "GUILD_MEMBER_REMOVE", event)
        return event

    def role_create(self, guild_id: Any, data: dict) -> dict:
        """`data` as `role(...)` makes it."""
        guild = self.guild(guild_id)
        guild.roles[_sid(data["id"])] = dict(data)
        event = {"guild_id": guild.id, "role": dict(data)}
        self._broadcast(guild.id, "GUILD_ROLE_CREATE", event)
        return event

    def role_update(self, guild_id: Any, role_id: Any, **changes: Any) -> dict:
        """Change any of name, color, position, hoist, permissions, mentionable, icon, unicode_emoji."""
        guild = self.guild(guild_id)
        data = guild.roles[_sid(role_id)]
        allowed = {"name", "color", "position", "hoist", "permissions", "mentionable", "icon", "unicode_emoji"}
        unknown = set(changes) - allowed
        if unknown:
            raise TypeError(f"unknown role fields {sorted(unknown)}")
        data.update(changes)
        if "color" in changes:
            data["color"] = int(changes["color"])
            data["colors"] = {**data.get("colors", {}), "primary_color": int(changes["color"])}
        if "permissions" in changes:
            data["permissions"] = str(changes["permissions"])
        event = {"guild_id": guild.id, "role": dict(data)}
        self._broadcast(guild.id, "GUILD_ROLE_UPDATE", event)
        return event

    def role_delete(self, guild_id: Any, role_id: Any) -> dict:
        guild = self.guild(guild_id)
        rid = _sid(role_id)
        del guild.roles[rid]
        # Discord drops a deleted role from its members without a member update.
        for record in guild.members.values():
            if rid in record.roles:
                record.roles = tuple(r for r in record.roles if r != rid)
                record.changed()
        event = {"guild_id": guild.id, "role_id": rid}
        self._broadcast(guild.id, "GUILD_ROLE_DELETE", event)
        return event

    def channel_create(self, guild_id: Any, data: dict) -> dict:
        guild = self.guild(guild_id)
        guild.channels[_sid(data["id"])] = dict(data)
        event = {**data, "guild_id": guild.id}
        self._broadcast(guild.id, "CHANNEL_CREATE", event)
        return event

    def channel_delete(self, guild_id: Any, channel_id: Any) -> dict:
        guild = self.guild(guild_id)
        data = guild.channels.pop(_sid(channel_id))
        event = {**data, "guild_id": guild.id}
        self._broadcast(guild.id, "CHANNEL_DELETE", event)
        return event

    def guild_update(self, guild_id: Any, *, name: Any = _UNSET, icon: Any = _UNSET, description: Any = _UNSET,
                     owner_id: Any = _UNSET, features: Any = _UNSET) -> dict:
        guild = self.guild(guild_id)
        if name is not _UNSET:
            guild.name = name
        if icon is not _UNSET:
            guild.icon = icon
        if description is not _UNSET:
            guild.description = description
        if owner_id is not _UNSET:
            guild.owner_id = _sid(owner_id)
        if features is not _UNSET:
            guild.features = list(features)
        event = guild.payload()
        self._broadcast(guild.id, "GUILD_UPDATE", event)
        return event

    def guild_delete(self, guild_id: Any, *, unavailable: bool = False) -> dict:
        """The bot leaves the guild (or, with `unavailable=True`, the guild has an outage:
        it stays in the state, and `guild_available` ends the outage)."""
        guild = self.guild(guild_id)
        event: dict = {"id": guild.id}
        if unavailable:
            event["unavailable"] = True
            guild.unavailable = True
            self._broadcast(guild.id, "GUILD_DELETE", event)
        else:
            self._broadcast(guild.id, "GUILD_DELETE", event)
            del self.guilds[guild.id]
            for session in self._sessions.values():
                session.guild_ids.discard(guild.id)
        return event

    def guild_available(self, guild_id: Any) -> None:
        guild = self.guild(guild_id)
        guild.unavailable = False
        for session in list(self._sessions.values()):
            if guild.id in session.guild_ids:
                self._send_guild_create(session, guild)

    def message_create(self, guild_id: Any, channel_id: Any, author_id: Any, content: str, *,
                       mentions: Iterable[Any] = (), mention_roles: Iterable[Any] = (),
                       mention_everyone: bool = False, id: Any = None) -> dict:
        """A message by a member of the guild. Sessions without the message_content intent get it
        with empty content unless it mentions the bot, as from Discord."""
        guild = self.guild(guild_id)
        cid = _sid(channel_id)
        if cid not in guild.channels:
            raise KeyError(f"no channel {cid} in guild {guild.id}")
        author = guild.members[_sid(author_id)]
        mentioned = [guild.members[_sid(u)] for u in mentions]
        message_id = _sid(id) if id is not None else self.snowflake()
        event = {
            "id": message_id, "type": 0, "channel_id": cid, "guild_id": guild.id,
            "author": author.user.payload(), "member": author.partial(), "content": content,
            "timestamp": _iso(((int(message_id) >> 22) + DISCORD_EPOCH_MS)), "edited_timestamp": None,
            "tts": False, "mention_everyone": mention_everyone,
            "mentions": [{**m.user.payload(), "member": m.partial()} for m in mentioned],
            "mention_roles": [_sid(r) for r in mention_roles], "mention_channels": [],
            "attachments": [], "embeds": [], "reactions": [], "pinned": False, "flags": 0,
            "components": [], "nonce": None,
        }
        sees_content = author.user.id == self.bot.id or any(m.user.id == self.bot.id for m in mentioned)
        hidden = {**event, "content": "", "embeds": [], "attachments": [], "components": []}

        def variant(session: _Session) -> Tuple[str, dict]:
            if sees_content or session.intents & INTENTS["message_content"]:
                return "full", event
            return "hidden", hidden

        self._broadcast(guild.id, "MESSAGE_CREATE", event, variant)
        return event

    def _broadcast(self, guild_id: str, t: str, data: dict,
                   variant: Optional[Callable[["_Session"], Tuple[str, dict]]] = None) -> None:
        needed = _EVENT_INTENT.get(t, 0)
        encoded: Dict[str, str] = {}
        for session in list(self._sessions.values()):
            if guild_id not in session.guild_ids or (needed and not session.intents & needed):
                continue
            key, body = variant(session) if variant else ("", data)
            if key not in encoded:
                encoded[key] = _dumps(body)
            session.dispatch(t, encoded[key])
        self._signal.notify()

    def _send_guild_create(self, session: _Session, guild: FakeGuild, *, joined: bool = False) -> None:
        session.dispatch("GUILD_CREATE", guild.create_json(intents=session.intents,
                                                           large_threshold=session.large_threshold,
                                                           huge_threshold=self.huge_threshold,
                                                           bot_id=self.bot.id, joined=joined))

    # -- connection control ------------------------------------------------------------------

    async def drop_connection(self, code: Optional[int] = None) -> None:
        """Cut every gateway connection: abruptly (no close frame; the client sees 1006) or, with
        `code`, with a close frame before anything still queued. Sessions stay resumable, and
        whatever is dispatched from here on waits in their replay buffers."""
        live = list(self._connections.values())
        for conn in live:
            if conn.session is not None and conn.session.connection is conn:
                conn.session.connection = None
            if code is None:
                conn.abort("dropped")
            else:
                conn.info.closed_by = "dropped"
                conn.close_now(code, "dropped by the test")
        await _all_finished(live, self.send_timeout * 2)

    def invalidate_session(self, *, now: bool = False, resumable: bool = False) -> None:
        """By default, mark every session invalid: the next RESUME is answered with op 9 d=false.
        With `now=True`, send op 9 to every connected session at once (d=`resumable`)."""
        for session in list(self._sessions.values()):
            if now:
                conn = session.connection
                if conn is not None:
                    conn.send_op(Op.INVALID_SESSION, resumable)
                    self.counts["invalid_session"] += 1
                if not resumable:
                    self._end_session(session)
            else:
                session.invalid = True

    def request_reconnect(self) -> None:
        """Send op 7 RECONNECT on every connection: clients close and resume."""
        for conn in list(self._connections.values()):
            conn.send_op(Op.RECONNECT, None)

    def request_heartbeat(self) -> None:
        """Send op 1 on every connection: clients must heartbeat at once."""
        for conn in list(self._connections.values()):
            conn.send_op(Op.HEARTBEAT, None)

    @contextlib.contextmanager
    def hold_connections(self) -> Iterator[None]:
        """While held, new gateway connections are accepted but get no HELLO, so nothing can
        IDENTIFY or RESUME: what is dispatched meanwhile is certain to be missed, not delivered
        live. Leaving the block lets them go on."""
        self._accepting.clear()
        try:
            yield
        finally:
            self._accepting.set()

    @property
    def live_connections(self) -> int:
        return len(self._connections)

    @property
    def sessions(self) -> List[str]:
        return list(self._sessions)

    # -- waiting -----------------------------------------------------------------------------

    def mark(self) -> int:
        """A point in the frame record; frames after it have a larger `n`."""
        return self._frame_numbers

    def frames(self, op: Optional[int] = None, *, t: Optional[str] = None, direction: str = "received",
               since: int = 0) -> List[Frame]:
        record = self.received if direction == "received" else self.sent
        return [f for f in record if f.n > since and (op is None or f.op == op) and (t is None or f.t == t)]

    async def wait_until(self, predicate: Callable[[], Any], *, timeout: Optional[float] = None,
                         what: str = "a condition") -> Any:
        """Await until `predicate()` is true (it is checked whenever the fake's state, records or
        connections change); returns its value."""
        return await self._signal.wait_for(predicate, self.wait_timeout if timeout is None else timeout, what)

    async def wait_op(self, op: int, *, t: Optional[str] = None, direction: str = "received", since: int = 0,
                      timeout: Optional[float] = None) -> Frame:
        """The first frame with this op (and event name) the fake received (or sent) after `since`."""
        def found() -> Optional[Frame]:
            matches = self.frames(op, t=t, direction=direction, since=since)
            return matches[0] if matches else None

        return await self.wait_until(found, timeout=timeout, what=f"op {op} {t or ''} {direction}".strip())

    async def wait_identified(self, count: int = 1, *, timeout: Optional[float] = None) -> None:
        """Until `count` IDENTIFYs in all have been answered with READY and every GUILD_CREATE."""
        await self.wait_until(lambda: self.counts["identified"] >= count, timeout=timeout,
                              what=f"{count} identified session(s)")

    async def wait_resumed(self, count: int = 1, *, timeout: Optional[float] = None) -> None:
        """Until `count` RESUMEs in all have been answered with the replay and RESUMED."""
        await self.wait_until(lambda: self.counts["resumed"] >= count, timeout=timeout,
                              what=f"{count} resumed session(s)")

    async def wait_connections(self, count: int, *, timeout: Optional[float] = None) -> None:
        """Until exactly `count` gateway connections are open."""
        await self.wait_until(lambda: len(self._connections) == count, timeout=timeout,
                              what=f"{count} open gateway connection(s)")

    # -- records -----------------------------------------------------------------------------

    def _record(self, direction: str, conn: _Connection, op: Optional[int], t: Optional[str],
                s: Optional[int], raw: str) -> None:
        self._frame_numbers += 1
        frame = Frame(self._frame_numbers, direction, conn.number, op, t, s, raw)
        (self.sent if direction == "sent" else self.received).append(frame)
        self._signal.notify()

    def _count(self, what: str) -> None:
        self.counts[what] += 1
        self._signal.notify()

    # -- gateway -----------------------------------------------------------------------------

    async def _gateway(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(compress=False, autoping=True, timeout=self.send_timeout,
                                   max_msg_size=1 << 16)
        await ws.prepare(request)
        self._connection_numbers += 1
        query = dict(request.query)
        info = ConnectionInfo(self._connection_numbers, request.path, query, query.get("compress"))
        self.connections.append(info)
        problem = None
        try:
            compress = _compressor(query.get("compress"), self.compression_level)
        except ValueError:
            compress, problem = None, (Close.DECODE_ERROR, "Unknown compression.")
        if query.get("encoding", "json") != "json":
            problem = (Close.DECODE_ERROR, "This gateway speaks JSON only.")
        if query.get("v", str(API_VERSION)) not in ("9", "10"):
            problem = (Close.INVALID_API_VERSION, "Invalid API version.")
        conn = _Connection(info.number, request, ws, info, compress, self.send_queue_limit, self.gateway_rate_limit)
        self._connections[conn.number] = conn
        self._signal.notify()
        writer = asyncio.ensure_future(self._write(conn))
        try:
            if not self._accepting.is_set():
                await self._accepting.wait()
            if self._closing:
                conn.close_with(1001, "Going away.")
            elif problem:
                conn.close_with(*problem)
            else:
                conn.send_op(Op.HELLO, {"heartbeat_interval": int(self.heartbeat_interval * 1000),
                                        "_trace": ["fake-gateway"]})
                await self._read(conn)
            if conn.close_queued:
                await asyncio.wait([writer], timeout=self.send_timeout * 2)
        finally:
            self._detach(conn)
            writer.cancel()
            if not ws.closed:
                conn.abort()
            await asyncio.gather(writer, return_exceptions=True)
            conn.finished.set()
            self._signal.notify()
        return ws

    async def _write(self, conn: _Connection) -> None:
        try:
            while True:
                item = await conn.queue.get()
                kind = item[0]
                if kind == "frame":
                    _, raw, op, t, s = item
                    if conn.compress is None:
                        send = conn.ws.send_str(raw)
                    else:
                        send = conn.ws.send_bytes(conn.compress(raw))
                    await asyncio.wait_for(send, self.send_timeout)
                    self._record("sent", conn, op, t, s, raw)
                elif kind == "call":
                    item[1]()
                elif kind == "close":
                    _, code, reason = item
                    if conn.info.closed_by is None:
                        conn.info.closed_by = "fake"
                    conn.info.close_code = code
                    try:
                        await asyncio.wait_for(conn.ws.close(code=code, message=reason.encode()), self.send_timeout)
                    except asyncio.TimeoutError:
                        conn.abort()
                    return
        except asyncio.TimeoutError:
            log.warning("gateway connection %d: a send timed out; dropping it", conn.number)
            conn.abort()
        except (ConnectionError, RuntimeError):
            conn.abort()

    async def _read(self, conn: _Connection) -> None:
        # Discord drops a connection that stops heartbeating; the margin covers a slow test machine.
        timeout = self.heartbeat_interval * 1.5 + 2.0
        while not conn.closing:
            try:
                msg = await asyncio.wait_for(conn.ws.receive(), timeout)
            except asyncio.TimeoutError:
                if conn.session is not None:
                    self._end_session(conn.session)
                conn.close_with(Close.SESSION_TIMED_OUT, "Session timed out.")
                return
            if msg.type == WSMsgType.TEXT:
                await self._handle_text(conn, msg.data)
            elif msg.type == WSMsgType.BINARY:
                self._record("received", conn, None, None, None, _dumps({"binary": msg.data[:64].hex()}))
                conn.close_with(Close.DECODE_ERROR, "Error while decoding payload.")
            elif msg.type == WSMsgType.CLOSING:
                return  # the fake's own close is under way
            else:
                if msg.type == WSMsgType.CLOSE and conn.info.closed_by is None:
                    conn.info.closed_by = "client"
                    conn.info.close_code = msg.data
                elif conn.info.closed_by is None:
                    conn.info.closed_by = "client"
                    conn.info.close_code = conn.ws.close_code
                return

    async def _handle_text(self, conn: _Connection, text: str) -> None:
        try:
            payload = json.loads(text)
            op = payload["op"]
            d = payload.get("d")
        except (ValueError, KeyError, TypeError):
            self._record("received", conn, None, None, None, text[:200])
            conn.close_with(Close.DECODE_ERROR, "Error while decoding payload.")
            return
        self._record("received", conn, op, None, None, text)
        if len(text.encode()) > MAX_CLIENT_PAYLOAD:
            conn.close_with(Close.DECODE_ERROR, "Payload too large.")
            return
        if op == Op.HEARTBEAT:
            # Heartbeats do not count against the rate limit, so tests can use short intervals.
            conn.send_op(Op.HEARTBEAT_ACK, None)
            return
        if self._rate_limited(conn):
            # Discord's Gateway docs, Rate Limiting: "apps can send 120 gateway events per
            # connection every 60 seconds"; past it the connection is closed with 4008 "Rate
            # limited". discord.py keeps its own sends to 110 per 60 s in fixed windows, which can
            # still put 220 into 60 sliding seconds; the fake counts sliding, as the rule is worded.
            conn.close_with(Close.RATE_LIMITED, "You are being rate limited.")
            return
        if op == Op.IDENTIFY:
            self._identify(conn, d if isinstance(d, dict) else {})
        elif op == Op.RESUME:
            self._resume(conn, d if isinstance(d, dict) else {})
        elif op in (Op.PRESENCE_UPDATE, Op.VOICE_STATE_UPDATE, Op.REQUEST_GUILD_MEMBERS):
            if conn.session is None:
                conn.close_with(Close.NOT_AUTHENTICATED, "Not authenticated.")
            elif op == Op.REQUEST_GUILD_MEMBERS:
                await self._request_members(conn, conn.session, d if isinstance(d, dict) else {})
        else:
            conn.close_with(Close.UNKNOWN_OPCODE, "Unknown opcode.")

    def _rate_limited(self, conn: _Connection) -> bool:
        now = asyncio.get_running_loop().time()
        if conn.rate_limit <= 0:
            return False
        if len(conn.sends) == conn.sends.maxlen and now - conn.sends[0] < conn.rate_window:
            return True
        conn.sends.append(now)
        return False

    def _token_ok(self, token: Any) -> bool:
        if not isinstance(token, str):
            return False
        if token.startswith("Bot "):
            token = token[4:]
        return token == self.token

    def _identify(self, conn: _Connection, d: dict) -> None:
        self.session_starts_left = max(0, self.session_starts_left - 1)
        if conn.session is not None:
            conn.close_with(Close.ALREADY_AUTHENTICATED, "Already authenticated.")
            return
        if not self._token_ok(d.get("token")):
            conn.close_with(Close.AUTHENTICATION_FAILED, "Authentication failed.")
            return
        intents = d.get("intents")
        if not isinstance(intents, int) or isinstance(intents, bool) or intents < 0:
            conn.close_with(Close.INVALID_INTENTS, "Invalid intent(s).")
            return
        if any(intents & INTENTS[name] for name in PRIVILEGED_INTENTS if name not in self.intents_enabled):
            conn.close_with(Close.DISALLOWED_INTENTS, "Disallowed intent(s).")
            return
        shard = d.get("shard", [0, 1])
        if (not isinstance(shard, list) or len(shard) != 2 or not all(isinstance(x, int) for x in shard)
                or not 0 <= shard[0] < shard[1]):
            conn.close_with(Close.INVALID_SHARD, "Invalid shard.")
            return
        if self.identify_window > 0:
            # Discord's Gateway docs, Sharding / max_concurrency: "the number of identify requests
            # allowed per 5 seconds"; shards go by rate_limit_key = shard_id % max_concurrency, one
            # IDENTIFY per bucket per 5 s. An IDENTIFY past it is answered with op 9 Invalid Session.
            bucket = shard[0] % max(1, self.max_concurrency)
            now = asyncio.get_running_loop().time()
            last = self._identified_at.get(bucket)
            if last is not None and now - last < self.identify_window:
                conn.send_op(Op.INVALID_SESSION, False)
                self._count("identify_too_soon")
                return
            self._identified_at[bucket] = now
        self.identifies.append((shard[0], asyncio.get_running_loop().time()))
        threshold = d.get("large_threshold", 50)
        threshold = min(250, max(50, threshold if isinstance(threshold, int) else 50))
        session = _Session(uuid.uuid4().hex, intents=intents, shard=(shard[0], shard[1]),
                           large_threshold=threshold, replay_limit=self.replay_limit)
        session.guild_ids = {gid for gid in self.guilds if session.in_shard(gid)}
        if len(session.guild_ids) > self.guilds_per_shard:
            # Discord's close codes: 4011 "Sharding required: the session would have handled too
            # many guilds - you are required to shard your connection" (2,500 guilds a shard).
            conn.close_with(Close.SHARDING_REQUIRED, "Sharding required.")
            return
        self._add_session(session)
        conn.session = session
        conn.info.session_id = session.id
        session.connection = conn
        ready = {
            "v": API_VERSION, "user": self.bot.payload(), "user_settings": {}, "session_type": "normal",
            "session_id": session.id, "resume_gateway_url": self.resume_gateway_url,
            "guilds": [{"id": gid, "unavailable": True} for gid in self.guilds if gid in session.guild_ids],
            "application": {"id": self.application_id, "flags": self._application_flags()},
            "private_channels": [], "relationships": [], "presences": [], "guild_join_requests": [],
            "geo_ordered_rtc_regions": [], "auth": {}, "_trace": ["fake-gateway"],
        }
        if "shard" in d:
            ready["shard"] = list(shard)
        session.dispatch("READY", _dumps(ready))
        for gid in list(session.guild_ids):
            guild = self.guilds[gid]
            if not guild.unavailable:
                self._send_guild_create(session, guild)
        conn.enqueue(("call", lambda: self._count("identified")))

    def _resume(self, conn: _Connection, d: dict) -> None:
        if conn.session is not None:
            conn.close_with(Close.ALREADY_AUTHENTICATED, "Already authenticated.")
            return
        if not self._token_ok(d.get("token")):
            conn.close_with(Close.AUTHENTICATION_FAILED, "Authentication failed.")
            return
        session = self._sessions.get(d.get("session_id"))  # type: ignore[arg-type]
        seq = d.get("seq")
        if session is None or not session.can_resume_from(seq):
            if session is not None:
                self._end_session(session)
            # Discord answers a RESUME it cannot honour with op 9 d=false and lets the client close.
            conn.send_op(Op.INVALID_SESSION, False)
            conn.enqueue(("call", lambda: self._count("invalid_session")))
            return
        old = session.connection
        if old is not None and old is not conn:
            old.session = None
            old.abort("fake")
        self._sessions.move_to_end(session.id)
        session.connection = conn
        conn.session = session
        conn.info.session_id = session.id
        # Replay and RESUMED are queued in one go, so anything dispatched later follows them.
        for s, t, raw in list(session.buffer):
            if s > seq:
                conn.enqueue(("frame", raw, Op.DISPATCH, t, s))
        conn.enqueue(("frame", _dumps({"op": 0, "s": None, "t": "RESUMED", "d": {"_trace": ["fake-gateway"]}}),
                      Op.DISPATCH, "RESUMED", None))
        conn.enqueue(("call", lambda: self._count("resumed")))

    async def _request_members(self, conn: _Connection, session: _Session, d: dict) -> None:
        raw_ids = d.get("guild_id")
        guild_ids = raw_ids if isinstance(raw_ids, list) else [raw_ids]
        want_presences = bool(d.get("presences"))
        user_ids = d.get("user_ids")
        query = d.get("query")
        if want_presences and not session.intents & INTENTS["presences"]:
            conn.close_with(Close.INVALID_INTENTS, "Presences need the GUILD_PRESENCES intent.")
            return
        if user_ids is None and query in ("", None) and not session.intents & INTENTS["members"]:
            conn.close_with(Close.INVALID_INTENTS, "Listing members needs the GUILD_MEMBERS intent.")
            return
        for raw_id in guild_ids:
            try:
                gid = _sid(raw_id)
            except (TypeError, ValueError):
                continue
            if gid not in session.guild_ids or gid not in self.guilds:
                continue
            if user_ids is None and query in ("", None) and not d.get("limit"):
                # Discord's Gateway Events, Request Guild Members (2025-08 change log "Introducing
                # Rate Limit When Requesting All Guild Members"): asking for ALL members (`query`
                # "" and `limit` 0) is limited to 1 request per guild per bot every 30 seconds;
                # past it the answer is a RATE_LIMITED dispatch (`opcode` 8, `retry_after` in
                # seconds, `meta` with the `guild_id` and the request's `nonce`) and no chunks.
                now = asyncio.get_running_loop().time()
                last = self._all_members_asked.get(gid)
                if last is not None and now - last < self.member_request_interval:
                    meta: dict = {"guild_id": gid}
                    if d.get("nonce") is not None:
                        meta["nonce"] = d["nonce"]
                    session.dispatch("RATE_LIMITED", _dumps({
                        "opcode": Op.REQUEST_GUILD_MEMBERS,
                        "retry_after": round(self.member_request_interval - (now - last), 3), "meta": meta}))
                    self._count("rate_limited")
                    continue
                self._all_members_asked[gid] = now
            if self.chunk_delay > 0:
                # Discord streams a big guild's chunks over seconds while the connection goes on.
                task = asyncio.ensure_future(self._send_chunks(session, self.guilds[gid], d, want_presences))
                self._chunkers.add(task)
                task.add_done_callback(self._chunkers.discard)
            else:
                await self._send_chunks(session, self.guilds[gid], d, want_presences)

    async def _send_chunks(self, session: _Session, guild: FakeGuild, d: dict, want_presences: bool) -> None:
        not_found: List[str] = []
        if d.get("user_ids") is not None:
            ids = d["user_ids"] if isinstance(d["user_ids"], list) else [d["user_ids"]]
            matches = []
            for raw in ids[:100]:
                uid = _sid(raw)
                if uid in guild.members:
                    matches.append(guild.members[uid])
                else:
                    not_found.append(uid)
        else:
            query = (d.get("query") or "").lower()
            limit = d.get("limit") or 0
            if query:
                limit = min(limit or 100, 100)
                matches = [m for m in guild.members.values()
                           if m.user.username.lower().startswith(query) or (m.nick or "").lower().startswith(query)]
            else:
                matches = list(guild.members.values())
            if limit:
                matches = matches[:limit]
        count = max(1, -(-len(matches) // CHUNK_SIZE))
        for index in range(count):
            part = matches[index * CHUNK_SIZE:(index + 1) * CHUNK_SIZE]
            chunk: dict = {"guild_id": guild.id, "chunk_index": index, "chunk_count": count}
            if want_presences:
                chunk["presences"] = [guild.presence(m.user.id) for m in part if m.user.id in guild.presences]
            if not_found and index == count - 1:
                chunk["not_found"] = not_found
            if d.get("nonce") is not None:
                chunk["nonce"] = d["nonce"]
            session.dispatch("GUILD_MEMBERS_CHUNK",
                             _dumps_with(chunk, members="[" + ",".join(m.json() for m in part) + "]"))
            self._signal.notify()
            # Let the writer send this chunk before the next is built, as Discord streams them.
            await asyncio.sleep(self.chunk_delay if index + 1 < count else 0)
            if guild.id not in session.guild_ids or session.invalid:
                return

    def _application_flags(self) -> int:
        flags = 0
        for name in self.intents_enabled:
            flags |= _APPLICATION_FLAGS[name]
        return flags

    def _add_session(self, session: _Session) -> None:
        self._sessions[session.id] = session
        while len(self._sessions) > self.max_sessions:
            # Evict the oldest session with no connection; never one in use.
            for sid, old in self._sessions.items():
                if old.connection is None:
                    del self._sessions[sid]
                    break
            else:
                break

    def _end_session(self, session: _Session) -> None:
        session.invalid = True
        self._sessions.pop(session.id, None)

    def _detach(self, conn: _Connection) -> None:
        conn.closing = True
        conn.info.open = False
        self._connections.pop(conn.number, None)
        session = conn.session
        if session is not None and session.connection is conn:
            session.connection = None
            # A client that closes cleanly ends its session, as with Discord; any other
            # ending leaves it resumable.
            if conn.info.closed_by == "client" and conn.info.close_code in (1000, 1001):
                self._end_session(session)

    # -- REST --------------------------------------------------------------------------------

    @web.middleware
    async def _rest_middleware(self, request: web.Request, handler: Callable) -> web.StreamResponse:
        try:
            response = await handler(request)
        except _RestError as exc:
            response = _json(exc.body, status=exc.status)
        except web.HTTPException as exc:
            # Unknown routes and methods get Discord's JSON error body too.
            response = _json({"message": f"{exc.status}: {exc.reason}", "code": 0}, status=exc.status)
        if not isinstance(response, web.WebSocketResponse):
            self.requests.append(Request(request.method, request.path, response.status))
            self._signal.notify()
        return response

    def _authorised(self, request: web.Request) -> None:
        header = request.headers.get("Authorization", "")
        if header != f"Bot {self.token}":
            raise _RestError(401, {"message": "401: Unauthorized", "code": 0})

    async def _get_gateway(self, request: web.Request) -> web.Response:
        return _json({"url": self.gateway_url})

    async def _get_gateway_bot(self, request: web.Request) -> web.Response:
        self._authorised(request)
        # Discord's Get Gateway Bot: "shards: the recommended number of shards to use when connecting".
        # session_start_limit: "total: the total number of session starts the current user is
        # allowed; remaining: the remaining number...; reset_after: the number of milliseconds
        # after which the limit resets". Each IDENTIFY spends one.
        return _json({"url": self.gateway_url, "shards": self.recommended_shards,
                      "session_start_limit": {"total": 1000, "remaining": self.session_starts_left,
                                              "reset_after": 14_400_000,
                                              "max_concurrency": self.max_concurrency}})

    async def _get_me(self, request: web.Request) -> web.Response:
        self._authorised(request)
        data = self.bot.payload()
        data.update({"mfa_enabled": True, "locale": "en-US", "verified": True, "email": None, "flags": 0,
                     "banner": None, "accent_color": None})
        return _json(data)

    async def _get_my_guilds(self, request: web.Request) -> web.Response:
        self._authorised(request)
        return _json([{"id": g.id, "name": g.name, "icon": g.icon, "owner": False, "permissions": "0",
                       "features": list(g.features)} for g in self.guilds.values()])

    async def _get_user(self, request: web.Request) -> web.Response:
        self._authorised(request)
        account = self._users.get(request.match_info["user_id"])
        if account is not None:
            return _json(account.payload())
        raise _RestError(404, {"message": "Unknown User", "code": 10013})

    async def _get_application(self, request: web.Request) -> web.Response:
        self._authorised(request)
        return _json({
            "id": self.application_id, "name": self.application_name, "icon": None, "description": "",
            "summary": "", "type": None, "bot": self.bot.payload(), "bot_public": True,
            "bot_require_code_grant": False, "owner": self.owner.payload(), "team": None,
            "verify_key": "0" * 64, "flags": self._application_flags(), "hook": True,
            "interactions_endpoint_url": None, "redirect_uris": [], "rpc_origins": [], "tags": [],
            "approximate_guild_count": len(self.guilds), "integration_types_config": {},
        })

    # -- the CDN ------------------------------------------------------------------------------
    # "USER_AVATAR: avatars/{user_id}/{user_avatar}.png", "GUILD_MEMBER_AVATAR:
    # guilds/{guild_id}/users/{user_id}/avatars/{member_avatar}.png", "DEFAULT_USER_AVATAR:
    # embed/avatars/{index}.png" (the index is (user_id >> 22) % 6 for users without a
    # discriminator); "?size=" is a power of 2 between 16 and 4096. No token: the CDN is public.

    @property
    def cdn_base(self) -> str:
        return self.base_url

    def _cdn_size(self, request: web.Request) -> int:
        size = request.query.get("size", "128")
        if not size.isdigit() or int(size) not in {2 ** n for n in range(4, 13)}:
            raise _RestError(400, {"message": "Invalid size", "code": 0})
        return min(int(size), 256)  # the fake draws small images only

    async def _cdn_avatar(self, request: web.Request) -> web.Response:
        stem, _, ext = request.match_info["file"].rpartition(".")
        account = self._users.get(request.match_info["user_id"])
        if account is None or account.avatar != stem or ext not in ("png", "webp", "jpg", "jpeg"):
            raise web.HTTPNotFound()
        self._count("cdn_requests")
        return web.Response(body=solid_png(self._cdn_size(request), _colour_of(stem)), content_type="image/png")

    async def _cdn_default_avatar(self, request: web.Request) -> web.Response:
        stem, _, ext = request.match_info["file"].rpartition(".")
        if stem not in {str(n) for n in range(6)} or ext != "png":
            raise web.HTTPNotFound()
        self._count("cdn_requests")
        return web.Response(body=solid_png(self._cdn_size(request), 0x5865F2), content_type="image/png")

    # -- application commands and interactions ------------------------------------------------
    # https://discord.com/developers/docs/interactions/application-commands and
    # https://discord.com/developers/docs/interactions/receiving-and-responding

    def interaction_create(self, guild_id: Any, user_id: Any, name: str, *, channel_id: Any = None) -> dict:
        """A member runs the guild command `name`: INTERACTION_CREATE (type 2, APPLICATION_COMMAND) to
        every session in the guild. Discord sends it to the gateway whatever the intents ("Interactions
        are not tied to any intent"). Returns the interaction (its id and token answer it)."""
        guild = self.guild(guild_id)
        command = self.commands.get(guild.id, {}).get(name)
        if command is None:
            raise KeyError(f"no command {name!r} registered in guild {guild.id}")
        who = guild.members[_sid(user_id)]
        cid = _sid(channel_id) if channel_id is not None else next(iter(guild.channels), self.snowflake())
        interaction = {
            "id": self.snowflake(), "application_id": self.application_id, "type": 2,
            "data": {"id": command["id"], "name": name, "type": 1, "guild_id": guild.id},
            "guild_id": guild.id, "guild": {"id": guild.id, "locale": "en-US", "features": list(guild.features)},
            "channel_id": cid, "channel": {"id": cid, "type": 0, "guild_id": guild.id},
            "member": {**who.payload(), "permissions": "0"}, "token": uuid.uuid4().hex + uuid.uuid4().hex,
            "version": 1, "app_permissions": "0", "locale": "en-US", "guild_locale": "en-US",
            "entitlements": [], "authorizing_integration_owners": {"0": guild.id}, "context": 0,
            "attachment_size_limit": 10_485_760,
        }
        # "Interaction tokens are valid for 15 minutes", but the first response must come within
        # 3 seconds or the token is invalidated for it.
        loop = asyncio.get_running_loop()
        self._interactions[interaction["id"]] = {"token": interaction["token"], "answered": False,
                                                 "deadline": loop.time() + self.interaction_deadline}
        while len(self._interactions) > 1000:
            self._interactions.popitem(last=False)
        self._broadcast(guild.id, "INTERACTION_CREATE", interaction)
        return interaction

    def _command_guild(self, request: web.Request) -> FakeGuild:
        self._authorised(request)
        if request.match_info["application_id"] != self.application_id:
            raise _RestError(403, {"message": "Missing Access", "code": 50001})
        guild = self.guilds.get(request.match_info["guild_id"])
        if guild is None or self.bot.id not in guild.members:
            raise _RestError(403, {"message": "Missing Access", "code": 50001})
        return guild

    def _command(self, guild: FakeGuild, body: Any, old: Optional[dict]) -> dict:
        """One command object as Discord stores it; `_RestError` 400 (code 50035) for what it refuses."""
        if not isinstance(body, dict):
            raise _RestError(400, {"message": "Invalid Form Body", "code": 50035})
        name, description, kind = body.get("name"), body.get("description", ""), body.get("type", 1)
        # "CHAT_INPUT command names ... must match ^[-_'\p{L}\p{N}\p{sc=Deva}\p{sc=Thai}]{1,32}$"
        # and be lowercase; a CHAT_INPUT command's description is 1-100 characters.
        if not (isinstance(name, str) and 1 <= len(name) <= 32 and name == name.lower()
                and all(c.isalnum() or c in "-_'" for c in name)):
            raise _RestError(400, {"message": "Invalid Form Body", "code": 50035,
                                   "errors": {"name": {"_errors": [{"code": "APPLICATION_COMMAND_INVALID_NAME"}]}}})
        if kind == 1 and not (isinstance(description, str) and 1 <= len(description) <= 100):
            raise _RestError(400, {"message": "Invalid Form Body", "code": 50035,
                                   "errors": {"description": {"_errors": [{"code": "BASE_TYPE_BAD_LENGTH"}]}}})
        return {"id": old["id"] if old else self.snowflake(), "application_id": self.application_id,
                "guild_id": guild.id, "type": kind, "name": name, "name_localizations": None,
                "description": description, "description_localizations": None,
                "options": body.get("options", []), "default_member_permissions": body.get("default_member_permissions"),
                "nsfw": bool(body.get("nsfw", False)), "version": self.snowflake()}

    async def _get_commands(self, request: web.Request) -> web.Response:
        guild = self._command_guild(request)
        return _json(list(self.commands.get(guild.id, {}).values()))

    async def _put_commands(self, request: web.Request) -> web.Response:
        """Bulk Overwrite Guild Application Commands: "Takes a list of application commands, overwriting
        the existing command list for this application for the targeted guild"; at most 100."""
        guild = self._command_guild(request)
        body = await request.json()
        if not isinstance(body, list) or len(body) > 100:
            raise _RestError(400, {"message": "Invalid Form Body", "code": 50035})
        old = self.commands.get(guild.id, {})
        new: Dict[str, dict] = {}
        for item in body:
            command = self._command(guild, item, old.get(item.get("name")) if isinstance(item, dict) else None)
            new[command["name"]] = command
        self.commands[guild.id] = new
        self._count("commands_registered")
        return _json(list(new.values()))

    async def _post_command(self, request: web.Request) -> web.Response:
        """Create Guild Application Command: "Creating a command with the same name as an existing
        command for your application will overwrite the old command"; 201 when new, 200 when not."""
        guild = self._command_guild(request)
        body = await request.json()
        existing = self.commands.setdefault(guild.id, {})
        old = existing.get(body.get("name")) if isinstance(body, dict) else None
        command = self._command(guild, body, old)
        existing[command["name"]] = command
        self._count("commands_registered")
        return _json(command, status=200 if old else 201)

    async def _interaction_callback(self, request: web.Request) -> web.Response:
        """Create Interaction Response: no bot token (the interaction's token is the credential); one
        response per interaction, within 3 s; with `?with_response=true` the body is an interaction
        callback response, else 204."""
        open_ = self._interactions.get(request.match_info["interaction_id"])
        if open_ is None or open_["token"] != request.match_info["token"] \
                or asyncio.get_running_loop().time() > open_["deadline"]:
            raise _RestError(404, {"message": "Unknown interaction", "code": 10062})
        if open_["answered"]:
            raise _RestError(400, {"message": "Interaction has already been acknowledged.", "code": 40060})
        body = await request.json()
        if not isinstance(body, dict) or body.get("type") not in (1, 4, 5, 6, 7, 8, 9, 12):
            raise _RestError(400, {"message": "Invalid Form Body", "code": 50035})
        open_["answered"] = True
        self.interaction_replies.append({"id": request.match_info["interaction_id"], "type": body["type"],
                                         "data": body.get("data") or {}})
        self._count("interaction_replies")
        if request.query.get("with_response", "").lower() not in ("1", "true"):
            return web.Response(status=204)
        flags = int((body.get("data") or {}).get("flags") or 0)
        return _json({"interaction": {"id": request.match_info["interaction_id"], "type": 2,
                                      "response_message_id": self.snowflake(),
                                      "response_message_loading": body["type"] == 5,
                                      "response_message_ephemeral": bool(flags & 64)}})

    def _guild_or_404(self, request: web.Request) -> FakeGuild:
        self._authorised(request)
        guild = self.guilds.get(request.match_info["guild_id"])
        if guild is None:
            raise _RestError(404, {"message": "Unknown Guild", "code": 10004})
        return guild

    async def _get_guild(self, request: web.Request) -> web.Response:
        guild = self._guild_or_404(request)
        data = guild.payload()
        if request.query.get("with_counts") == "true":
            data["approximate_member_count"] = guild.member_count
            data["approximate_presence_count"] = len(guild.presences)
        return _json(data)

    async def _get_roles(self, request: web.Request) -> web.Response:
        return _json([dict(r) for r in self._guild_or_404(request).roles.values()])

    async def _get_channels(self, request: web.Request) -> web.Response:
        guild = self._guild_or_404(request)
        return _json([{**c, "guild_id": guild.id} for c in guild.channels.values()])

    async def _get_members(self, request: web.Request) -> web.Response:
        guild = self._guild_or_404(request)
        if "members" not in self.intents_enabled:
            raise _RestError(403, {"message": "Missing Access", "code": 50001})
        try:
            limit = int(request.query.get("limit", "1"))
            after = int(request.query.get("after", "0"))
        except ValueError:
            raise _RestError(400, {"message": "Invalid Form Body", "code": 50035})
        if not 1 <= limit <= 1000:
            raise _RestError(400, {"message": "Invalid Form Body", "code": 50035})
        ordered = sorted((int(uid), record) for uid, record in guild.members.items() if int(uid) > after)
        return _json([record.payload() for _, record in ordered[:limit]])

    async def _get_member(self, request: web.Request) -> web.Response:
        guild = self._guild_or_404(request)
        record = guild.members.get(request.match_info["user_id"])
        if record is None:
            raise _RestError(404, {"message": "Unknown Member", "code": 10007})
        return _json(record.payload())


async def _all_finished(connections: List[_Connection], timeout: float) -> None:
    """Wait, at most `timeout`, until these connections' handlers have finished."""
    waiters = [asyncio.ensure_future(c.finished.wait()) for c in connections]
    if not waiters:
        return
    _, pending = await asyncio.wait(waiters, timeout=timeout)
    for waiter in pending:
        waiter.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


class _RestError(Exception):
    """An error answered with Discord's JSON error body."""

    def __init__(self, status: int, body: dict):
        super().__init__(status, body)
        self.status = status
        self.body = body


def _colour_of(text: str) -> int:
    return zlib.crc32(text.encode()) & 0xFFFFFF


def solid_png(size: int, rgb: int) -> bytes:
    """A square PNG of one colour: an avatar the fake's CDN can serve without an image library."""
    import struct

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" + bytes(((rgb >> 16) & 255, (rgb >> 8) & 255, rgb & 255)) * size
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(row * size))
            + chunk(b"IEND", b""))


def _json(data: Any, *, status: int = 200) -> web.Response:
    # Exactly "application/json", without a charset: discord.py parses a body only then.
    return web.Response(body=_dumps(data).encode(), status=status, content_type="application/json")


@contextlib.contextmanager
def point_discord_py_at(fake: FakeDiscord, *, gateway_url: Optional[str] = None) -> Iterator[None]:
    """Point discord.py (in this process) at the fake: its REST base and its default gateway,
    which a plain `discord.Client` uses without asking GET /gateway/bot. Restores both on exit."""
    import yarl
    from discord.gateway import DiscordWebSocket
    from discord.http import Route

    saved = Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY
    Route.BASE = fake.api_base
    DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url or fake.gateway_url)
    try:
        yield
    finally:
        Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY = saved
