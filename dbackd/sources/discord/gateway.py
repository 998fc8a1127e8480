"""The bot's gateway connection: discord.py's Client, run by the gateway worker process (worker.py).

discord.py parses every gateway message and builds an object per member; for a
100,000-member guild that is seconds of work, and parsing one large message holds the
interpreter lock for tens of milliseconds. So it runs in a process of its own, and what
happens in the guild leaves it as plain records (records.py) through `post`.
discord.py does the resuming and reconnecting; this adds what it does not: asking `GET
/gateway/bot` (endpoints.py), identifying as many shards at once as its `max_concurrency`
allows, asking for each guild's members until one answer is complete (chunks.py), retrying
with backoff while Discord is unreachable, and stopping for good (a `Failed` record) on a
refused token or privileged intents not enabled. It never logs the token.
"""
from __future__ import annotations

import asyncio
from typing import Any, Callable, Optional

import structlog

from dbackd.core.backoff import Backoff
from dbackd.sources.discord import chunks, records as r
from dbackd.sources.discord.chunks import Chunker
from dbackd.sources.discord.command import SlashCommands
from dbackd.sources.discord.endpoints import GatewayLookupFailed, bot_gateway, point_at
from dbackd.sources.discord.mapping import color_of, status_of

log = structlog.get_logger("dbackd.discord")

IDENTIFY_DELAY = 5.0  # seconds before a new IDENTIFY after the first (Discord allows one per 5 s)
GUILD_READY_TIMEOUT = 2.0  # discord.py's wait after the last GUILD_CREATE before it is ready
SNAPSHOT_PART = 1000  # members per GuildSnapshot record
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 60.0  # seconds between attempts while Discord cannot be reached
STARTS_KEPT = 2  # session starts of the daily budget never used: a token reset costs more than a wait

Post = Callable[[r.Record], None]


class Wants:
    """Which gateway intents the servers' options need."""

    def __init__(self, messages: bool, content: bool):
        self.messages = messages
        self.content = content

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Wants) and (self.messages, self.content) == (other.messages, other.content)

    def covers(self, other: "Wants") -> bool:
        """True when a connection made with these intents also serves `other` (no reconnect needed)."""
        return (self.messages or not other.messages) and (self.content or not other.content)

    def intents(self) -> Any:
        import discord

        intents = discord.Intents.none()
        intents.guilds = intents.members = intents.presences = True
        intents.guild_messages = self.messages
        intents.message_content = self.content
        return intents


FACE_SIZE = 64  # px of the avatars the page is given (its figures draw them at about 13 px)
ACTIVITY_MAX = 80  # characters of an activity line

# How Discord's clients word an activity, by its type (0 playing ... 5 competing; 4, a custom
# status, is free text the member wrote, not what they do: it travels apart, as `custom_of`).
ACTIVITY_WORDS = {0: "Playing", 1: "Streaming", 2: "Listening to", 3: "Watching", 5: "Competing in"}


def activity_of(member: Any) -> str:
    for activity in getattr(member, "activities", ()) or ():
        kind = getattr(getattr(activity, "type", None), "value", None)
        name = getattr(activity, "name", None)
        if kind in ACTIVITY_WORDS and name:
            text = f"{ACTIVITY_WORDS[kind]} {name}"
            return text if len(text) <= ACTIVITY_MAX else text[:ACTIVITY_MAX - 1] + "…"
    return ""


def custom_of(member: Any) -> str:
    """A member's custom status, their own words (type 4's `state`), cut like an activity line."""
    for activity in getattr(member, "activities", ()) or ():
        if getattr(getattr(activity, "type", None), "value", None) == 4:
            text = (getattr(activity, "state", None) or "").strip()
            return text if len(text) <= ACTIVITY_MAX else text[:ACTIVITY_MAX - 1] + "…"
    return ""


def member_rec(member: Any) -> r.MemberRec:
    import discord

    roles = member.roles[1:]  # the first is @everyone
    # The server avatar if any, else the account's, else Discord's default; as a path on the CDN,
    # whose base the daemon's config gives.
    face = member.display_avatar.with_static_format("png").with_size(FACE_SIZE).url
    face = face[len(discord.Asset.BASE):] if face.startswith(discord.Asset.BASE) else ""
    return r.MemberRec(str(member.id), member.display_name, color_of(member.colour.value), status_of(member.status),
                       tuple(str(role.id) for role in roles), tuple(role.name for role in roles), member.bot, face,
                       activity_of(member), custom_of(member))


def _client_class(identify_delay: float, chunk_interval: float, chunk_stall: float) -> type:
    import discord
    from discord.state import ChunkRequest

    # A bot that only watches a guild needs no voice: no warning that its libraries are missing.
    for flag in ("warn_nacl", "warn_dave"):
        if hasattr(discord.VoiceClient, flag):
            setattr(discord.VoiceClient, flag, False)

    class Client(discord.AutoShardedClient):
        """discord.py's client, with each event it hands on turned into a record. Sharded as
        `/gateway/bot` recommends (one shard a 2,500 guilds; past that Discord closes with 4011).
        It chunks guilds itself (chunks.py), never through discord.py, which gives up silently."""

        def __init__(self, post: Post, slash: SlashCommands, max_concurrency: int = 1, **options: Any):
            super().__init__(**options)
            self.post = post
            self.slash = slash
            slash.attach(self)
            self.max_concurrency = max(1, max_concurrency)
            self._identify_locks: dict[int, asyncio.Lock] = {}
            self._identify_next: dict[int, float] = {}  # by bucket: when it may IDENTIFY again
            self.chunker = Chunker(self._request_members, interval=chunk_interval, stall=chunk_stall)
            self._loads: dict[int, asyncio.Task] = {}  # by guild id: its chunking and snapshot
            self.whole: set[int] = set()  # guilds whose members all came (GUILD_CREATE or a complete chunking)
            self._watch_chunks()

        def _watch_chunks(self) -> None:
            # discord.py parses each chunk (and caches its members for a request it knows); the
            # chunker is told which part of which request came. RATE_LIMITED is a dispatch
            # discord.py does not know at all.
            state = self._connection
            parse_chunk = state.parsers["GUILD_MEMBERS_CHUNK"]

            def on_chunk(data: dict) -> None:
                parse_chunk(data)
                self.chunker.on_chunk(int(data["guild_id"]), data.get("nonce"), int(data.get("chunk_index", 0)),
                                      int(data.get("chunk_count", 1)))

            def on_rate_limited(data: dict) -> None:
                meta = data.get("meta") or {}
                if data.get("opcode") == 8 and meta.get("guild_id") is not None:
                    self.chunker.on_rate_limited(int(meta["guild_id"]), meta.get("nonce"),
                                                 float(data.get("retry_after") or 0))

            state.parsers["GUILD_MEMBERS_CHUNK"] = on_chunk
            state.parsers["RATE_LIMITED"] = on_rate_limited

        async def _request_members(self, guild_id: int, shard_id: int, nonce: str) -> bool:
            # Past 75,000 members Discord's GUILD_CREATE holds no presences (only the bot's and voice
            # members'): the statuses come with the chunks when asked for.
            state = self._connection
            try:
                await state.chunker(guild_id, "", 0, state._intents.presences, shard_id=shard_id, nonce=nonce)
                return True
            except (discord.ConnectionClosed, ConnectionError, RuntimeError, KeyError):
                return False  # the connection is going: asked again once it is back

        def _load(self, guild: Any) -> None:
            """The guild arrived (GUILD_CREATE): send it as it is, and whole once chunked."""
            old = self._loads.pop(guild.id, None)
            if old is not None:
                old.cancel()
            self.whole.discard(guild.id)
            task = self._loads[guild.id] = asyncio.ensure_future(self._chunk_and_send(guild.id, guild.shard_id))
            task.add_done_callback(lambda t, gid=guild.id: self._loads.pop(gid, None) if self._loads.get(gid) is t
                                   else None)

        async def _chunk_and_send(self, guild_id: int, shard_id: int) -> None:
            guild = self.get_guild(guild_id)
            if guild is None:
                return
            if guild.chunked:  # GUILD_CREATE listed everyone (a guild below large_threshold)
                self.whole.add(guild_id)
                await self.snapshot(guild, complete=True)
                return
            await self.snapshot(guild, complete=False)  # who is online now; the rest follow
            state = self._connection
            # discord.py's own table of chunk requests by nonce: a request entered there gets its chunks.
            pending = state._chunk_requests
            asked: dict[str, Any] = {}

            def on_request(nonce: str) -> None:
                old = asked.pop("request", None)
                if old is not None:
                    pending.pop(old.nonce, None)
                request = ChunkRequest(guild_id, shard_id, asyncio.get_running_loop(), state._get_guild, cache=True)
                request.nonce = nonce
                pending[nonce] = request
                now = self.get_guild(guild_id)
                asked.update(request=request, before=set(now._members) if now is not None else set())

            try:
                await self.chunker.chunk(guild_id, shard_id, on_request)
            finally:
                request = asked.get("request")
                if request is not None:
                    pending.pop(request.nonce, None)
            guild = self.get_guild(guild_id)
            if guild is None:
                return
            # Members cached when the request went out that Discord's complete answer no longer
            # lists left unseen (while the bot was away); those who joined since stay.
            listed = {m.id for m in asked["request"].buffer}
            for uid in asked["before"] - listed:
                guild._remove_member(discord.Object(uid))
            self.whole.add(guild_id)
            await self.snapshot(guild, complete=True)

        async def snapshot(self, guild: Any, complete: bool) -> None:
            members = list(guild.members)
            parts = max(1, -(-len(members) // SNAPSHOT_PART))
            for i in range(parts):
                # One that left while earlier parts went out is not sent again.
                part = tuple(member_rec(m) for m in members[i * SNAPSHOT_PART:(i + 1) * SNAPSHOT_PART]
                             if guild.get_member(m.id) is not None)
                self.post(r.GuildSnapshot(str(guild.id), guild.name, part, i, parts, complete))
                await asyncio.sleep(0)  # the gateway's own messages go on meanwhile

        async def before_identify_hook(self, shard_id: Optional[int], *, initial: bool = False) -> None:
            # discord.py waits 5 s before every IDENTIFY but the first, whatever /gateway/bot says.
            # Discord allows `max_concurrency` per 5 s, one for each bucket (shard_id % max_concurrency),
            # so a bot with many shards would take max_concurrency times too long to connect.
            bucket = (shard_id or 0) % self.max_concurrency
            lock = self._identify_locks.setdefault(bucket, asyncio.Lock())
            async with lock:
                loop = asyncio.get_running_loop()
                wait = self._identify_next.get(bucket, 0.0) - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                self._identify_next[bucket] = loop.time() + identify_delay

        async def close(self) -> None:
            for task in list(self._loads.values()):
                task.cancel()
            await super().close()

        async def on_connect(self) -> None:
            if not self.is_ready():
                self.post(r.SessionStarting())

        async def on_ready(self) -> None:
            self.post(r.Connected(tuple(str(g.id) for g in self.guilds), resumed=False))
            await self.slash.sync()

        async def on_resumed(self) -> None:
            self.post(r.Connected(tuple(str(g.id) for g in self.guilds), resumed=True))

        async def on_disconnect(self) -> None:
            self.post(r.Disconnected("the gateway connection was lost"))

        async def on_guild_available(self, guild: Any) -> None:
            self._load(guild)

        async def on_guild_join(self, guild: Any) -> None:
            self._load(guild)
            await self.slash.sync()

        async def on_guild_unavailable(self, guild: Any) -> None:
            self.post(r.GuildUnavailable(str(guild.id)))

        async def on_guild_remove(self, guild: Any) -> None:
            task = self._loads.pop(guild.id, None)
            if task is not None:
                task.cancel()
            self.whole.discard(guild.id)
            self.post(r.GuildGone(str(guild.id)))

        async def on_guild_update(self, before: Any, after: Any) -> None:
            if before.name != after.name:
                self.post(r.GuildRenamed(str(after.id), after.name))

        async def on_member_join(self, member: Any) -> None:
            self.post(r.MembersChanged(str(member.guild.id), (member_rec(member),)))

        async def on_member_update(self, before: Any, after: Any) -> None:
            self.post(r.MembersChanged(str(after.guild.id), (member_rec(after),)))

        async def on_user_update(self, before: Any, after: Any) -> None:
            for guild in self.guilds:
                member = guild.get_member(after.id)
                if member is not None:
                    self.post(r.MembersChanged(str(guild.id), (member_rec(member),)))

        async def on_raw_member_remove(self, payload: Any) -> None:
            self.post(r.MemberLeft(str(payload.guild_id), str(payload.user.id)))

        async def on_presence_update(self, before: Any, after: Any) -> None:
            if activity_of(before) != activity_of(after) or custom_of(before) != custom_of(after):
                self.post(r.MembersChanged(str(after.guild.id), (member_rec(after),)))  # the status with it
            elif before.status != after.status:
                self.post(r.PresenceChanged(str(after.guild.id), str(after.id), status_of(after.status)))

        async def _changed(self, guild: Any, members: list) -> None:
            # A role's colour, name or place changed (or it went): its holders may look different.
            # In parts as a snapshot is, so no record line grows with the guild (the pipe has a limit).
            for i in range(0, len(members), SNAPSHOT_PART):
                self.post(r.MembersChanged(str(guild.id), tuple(member_rec(m) for m in members[i:i + SNAPSHOT_PART])))
                await asyncio.sleep(0)

        async def on_guild_role_update(self, before: Any, after: Any) -> None:
            if (before.colour, before.name, before.position) != (after.colour, after.name, after.position):
                await self._changed(after.guild, list(after.members))

        async def on_guild_role_delete(self, role: Any) -> None:
            # discord.py has already dropped the role: who held it is no longer known, so everyone.
            await self._changed(role.guild, list(role.guild.members))

        async def on_message(self, message: Any) -> None:
            if message.guild is None or message.webhook_id is not None:
                return
            channel = message.channel
            parent = getattr(channel, "parent", None)
            # A thread whose parent is not cached still names it by id: the filter must know it is a thread.
            parent_id = parent.id if parent is not None else getattr(channel, "parent_id", None)
            self.post(r.MessageRec(str(message.guild.id), str(channel.id), getattr(channel, "name", "") or "",
                                   str(parent_id) if parent_id is not None else None,
                                   parent.name if parent is not None else None,
                                   str(message.author.id), message.clean_content))

    return Client


class Gateway:
    """One gateway connection, until `stop()`: login, connect, and try again while Discord is away."""

    def __init__(self, token: str, api_base: str, timeout: float, wants: Wants, post: Post, *,
                 identify_delay: float = IDENTIFY_DELAY, guild_ready_timeout: float = GUILD_READY_TIMEOUT,
                 backoff_first: float = BACKOFF_FIRST, chunk_interval: float = chunks.REQUEST_INTERVAL,
                 chunk_stall: float = chunks.STALL, commands: Optional[dict] = None):
        self.api_base = api_base
        self.slash = SlashCommands(commands, post)
        self.timeout = timeout
        self.wants = wants
        self._token = token
        self._post = post
        self._identify_delay = identify_delay
        self._guild_ready_timeout = guild_ready_timeout
        self._backoff_first = backoff_first
        self._chunking = (chunk_interval, chunk_stall)
        self._stop = asyncio.Event()
        self._client: Any = None

    async def run(self) -> None:
        backoff = Backoff(self._backoff_first, BACKOFF_MAX)
        while not self._stop.is_set():
            outcome = await self._attempt()
            if outcome == "stopped" or self._stop.is_set():
                return
            if outcome == "failed":
                await self._stop.wait()  # nothing changes until the config does (a new worker)
                return
            wait = backoff.next()
            log.warning("discord.retrying", after_seconds=round(wait, 1))
            try:
                await asyncio.wait_for(self._stop.wait(), wait)
            except asyncio.TimeoutError:
                pass

    async def _attempt(self) -> str:
        """One login and connection; "stopped", "failed" (for good) or "retry"."""
        import discord

        try:
            url, starts, max_concurrency = await bot_gateway(self.api_base, self._token, self.timeout)
        except GatewayLookupFailed as exc:
            if exc.status in (401, 403):
                return self._fail("token", "Discord refused the bot token (check DISCORD_BOT_TOKEN, or the "
                                           "token of Bot → Reset Token in the Developer Portal)")
            self._post(r.Disconnected(str(exc)))
            return "retry"
        if starts is not None and starts[0] <= STARTS_KEPT:
            # Identifying past the budget makes Discord reset the bot's token: wait for the reset.
            remaining, total, reset = starts
            self._post(r.Disconnected(f"the identify budget is spent ({remaining} of {total} session starts left): "
                                      f"not connecting until Discord resets it in {round(reset)} s"))
            try:
                await asyncio.wait_for(self._stop.wait(), reset + 1)
                return "stopped"
            except asyncio.TimeoutError:
                return "retry"
        point_at(self.api_base, url)
        client = _client_class(self._identify_delay, *self._chunking)(self._post, self.slash, max_concurrency, intents=self.wants.intents(),
                                                                      chunk_guilds_at_startup=False, max_messages=None,
                                                                      guild_ready_timeout=self._guild_ready_timeout)
        self._client = client
        try:
            await client.start(self._token)
            return "stopped" if self._stop.is_set() else "retry"
        except discord.LoginFailure:
            return self._fail("token", "Discord refused the bot token (check DISCORD_BOT_TOKEN)")
        except discord.PrivilegedIntentsRequired:
            needed = ["Presence Intent", "Server Members Intent"] + (["Message Content Intent"] if self.wants.content
                                                                     else [])
            return self._fail("intents", "Discord closed the gateway with 4014: privileged intents are not enabled. "
                                         f"In the Developer Portal, Bot → Privileged Gateway Intents, enable: "
                                         f"{', '.join(needed)}")
        except discord.ConnectionClosed as exc:
            if exc.code == 4004:
                return self._fail("token", "Discord refused the bot token on the gateway (4004)")
            if exc.code == 4011:
                # Another connection asks /gateway/bot again, whose shard count follows the guilds.
                self._post(r.Disconnected("Discord closed the gateway with 4011, sharding required: the bot is in "
                                          "more guilds than one shard may hold (2,500); connecting again with the "
                                          "shard count /gateway/bot recommends"))
                return "retry"
            if exc.code in (4010, 4012, 4013):
                return self._fail("api", f"Discord refused the gateway connection ({exc.code})")
            self._post(r.Disconnected(f"the gateway closed ({exc.code})"))
            return "retry"
        except (OSError, asyncio.TimeoutError, discord.HTTPException, discord.GatewayNotFound) as exc:
            self._post(r.Disconnected(f"cannot reach Discord: {type(exc).__name__}"))
            return "retry"
        finally:
            self._client = None
            if not client.is_closed():
                await client.close()

    def _fail(self, kind: str, message: str) -> str:
        self._post(r.Failed(kind, message))
        return "failed"

    async def resync(self) -> None:
        """Send every guild again, whole (after records had to be dropped)."""
        client = self._client
        if client is not None and client.is_ready():
            for guild in list(client.guilds):
                await client.snapshot(guild, complete=guild.id in client.whole)

    async def stop(self) -> None:
        self._stop.set()
        client = self._client
        if client is not None:
            await client.close()
