"""The Discord source: a live guild's members, statuses, colours and chatter, as world events.

A source of world changes, on the daemon's event loop. It runs one gateway connection
(gateway.py, in a worker process of its own: process.py) for every `source: discord`
server, takes the records it hands over (bounded, in order), keeps a mirror of each guild, and changes the
world through events applied in slices: a guild's members through one `View` per server
(the filters and `max_actors`), its chat through the server's `messages` rule. Guild
names (for servers the config does not name) and, with `auto_servers`, whole servers go
to the declaration as a layer of their own, since the declaration says who exists.
Config changes arrive as `ConfigReplaced`: new options re-filter the mirror live, a new
token or more intents reconnect, anything else keeps the connection. While Discord is
unreachable the servers keep their last known state and `status()` says so. It never
logs the token and never shows a message's words unless the server's `messages` says so.
"""
from __future__ import annotations

import asyncio
import re
import threading
from collections import deque
from datetime import datetime, timezone
from typing import Any, Iterator, Optional, Union
from urllib.parse import quote

import structlog

from dbackd.core import bulk
from dbackd.config import Config, Server
from dbackd.core.declaration import Declaration
from dbackd.core.events import ConfigReplaced, Event, MessageSent, PresenceChanged
from dbackd.core.layers import Layer
from dbackd.core.slices import sliced
from dbackd.core.tasks import TaskSet
from dbackd.core.world import World, toward
from dbackd.sources.discord import records as r
from dbackd.sources.discord.gateway import Wants
from dbackd.sources.discord.faces import Faces
from dbackd.sources.discord.process import GatewayProcess
from dbackd.sources.discord.mapping import channel_allowed, doing, message_text
from dbackd.sources.discord.settings import KEY, DiscordOptions, options_of, settings_of
from dbackd.sources.discord.view import Change, View

log = structlog.get_logger("dbackd.discord")

INBOX_LIMIT = 200_000  # records waiting for the loop; past it, deltas are dropped and guilds resent whole
MEMBERS_PER_SLICE = 250  # members of a snapshot taken between two yields
BULK_WINDOW = 300.0  # seconds a session's initial load may keep the cycle collector paused, at most
LAYER = KEY  # the declaration layer of the guilds' names and auto servers


class Inbox:
    """Records from the gateway thread to the loop, in order; `post` may be called from any thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop, wake: asyncio.Event, limit: int = INBOX_LIMIT):
        self._loop = loop
        self._wake = wake
        self._limit = limit
        self._lock = threading.Lock()
        self._items: deque[r.Record] = deque()
        self.dropped = 0  # deltas dropped since the last take
        self.closed = False

    def post(self, record: r.Record) -> None:
        with self._lock:
            if self.closed:
                return
            if len(self._items) >= self._limit and isinstance(record, (r.PresenceChanged, r.MembersChanged,
                                                                        r.MessageRec, r.MemberLeft)):
                self.dropped += 1
                return
            was_empty = not self._items
            self._items.append(record)
        if was_empty:
            try:
                self._loop.call_soon_threadsafe(self._wake.set)
            except RuntimeError:  # the daemon's loop is closing
                pass

    def take(self) -> tuple[list[r.Record], int]:
        with self._lock:
            items, self._items = list(self._items), deque()
            dropped, self.dropped = self.dropped, 0
        return items, dropped


class Guild:
    """What the source knows of one guild."""

    def __init__(self, name: str):
        self.name = name
        self.members: dict[str, r.MemberRec] = {}
        self.loading: Optional[set[str]] = None  # uids of a snapshot arriving in parts
        self.complete = False  # the last snapshot listed every member (else more are on their way)


def wants_of(config: Config) -> Wants:
    servers = [o for o in map(options_of, config.servers) if o is not None]
    settings = settings_of(config)
    defaults = settings.defaults if settings else DiscordOptions()
    if settings is not None and settings.auto_servers:
        servers.append(defaults)
    # Ordinary messages are always asked for (not privileged), so a reload between redact and
    # off never reconnects; the message content only when a server shows it.
    return Wants(messages=True, content=any(o.messages == "content" for o in servers))


def commands_of(config: Config) -> dict:
    """The slash command for the worker: its words, and the guilds of the servers that answer it."""
    settings = settings_of(config)
    words = settings.command if settings is not None else None
    guilds = sorted(s.snowflake for s in config.servers if (options_of(s) or DiscordOptions()).slash_command)
    return {"name": words.name if words else "", "description": words.description if words else "",
            "guilds": guilds if settings is not None and settings.public_url else []}


def short_id(name: str, taken: set[str]) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:32] or "guild"
    candidate, n = base, 1
    while candidate in taken or candidate == "default":
        n += 1
        candidate = f"{base}-{n}"
    return candidate


class DiscordSource:
    name = LAYER  # a source (sources/base.py): the `discord` section, layer and /healthz entry

    def __init__(self, world: World, declaration: Declaration):
        self.world = world
        self.declaration = declaration
        self.state = "off"  # off | connecting | ready | reconnecting | failed
        self.error: Optional[str] = None
        self.since = datetime.now(timezone.utc)
        self.reconnects = 0
        self.dropped = 0
        self.events: dict[str, int] = {}  # records taken, by kind
        self.guilds: dict[str, Guild] = {}
        self.views: dict[str, View] = {}  # by server snowflake (the guild's id)
        self.missing: tuple[str, ...] = ()  # configured servers whose guild the bot is not in
        # Guilds the session's READY listed: the bot is in them even before each one's GUILD_CREATE
        # (which comes later, seconds later for a big guild).
        self.member_of: set[str] = set()
        self.unavailable: set[str] = set()  # guilds in an outage on Discord's side (the world keeps them as they were)
        self._gateway: Optional[GatewayProcess] = None
        self._inbox: Optional[Inbox] = None
        self._wake = asyncio.Event()
        self._config_changed = True
        self._layer: Optional[Layer] = None
        self._tasks = TaskSet("discord")
        self._bulk: Optional[asyncio.TimerHandle] = None
        self._session_ready = False  # the new session's READY came (its guilds may still be arriving)
        self._progress = asyncio.Condition()
        settings = lambda: (s.faces if (s := settings_of(self.world.config)) is not None else None)  # noqa: E731
        self.faces = Faces(settings, self._face_path)

    # -- lifecycle -----------------------------------------------------------------
    async def start(self) -> None:
        # Started afresh (a cluster's new leader, too): the guilds come whole again from the gateway.
        self.guilds.clear()
        self.views.clear()
        self._layer = None
        self._config_changed = True
        self._inbox = Inbox(asyncio.get_running_loop(), self._wake)
        self.world.subscribe(self._on_event)
        self._tasks.spawn(self._work(), name="dbackd-discord")
        self._wake.set()

    async def stop(self) -> None:
        self.world.unsubscribe(self._on_event)
        await self._tasks.cancel()
        await self.faces.close()
        await self._disconnect()
        self._end_bulk()
        if self._inbox is not None:
            self._inbox.closed = True

    def _on_event(self, event: Event) -> None:
        if isinstance(event, ConfigReplaced):
            self._config_changed = True  # handled in the source's own task: never inside an apply
            self._wake.set()

    async def _connect(self, config: Config) -> None:
        settings = settings_of(config)
        assert settings is not None and self._inbox is not None
        self._gateway = GatewayProcess(settings.bot_token, settings.api_base, settings.timeout, wants_of(config),
                                       self._inbox.post, commands_of(config))
        self._set_state("connecting", None)
        await self._gateway.start()
        log.info("discord.connecting", api_base=settings.api_base)

    async def _disconnect(self) -> None:
        gateway, self._gateway = self._gateway, None
        if gateway is not None:
            await gateway.stop()

    # -- the work ------------------------------------------------------------------
    async def _work(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._config_changed:
                self._config_changed = False
                await self._follow_config()
            assert self._inbox is not None
            items, dropped = self._inbox.take()
            if dropped:
                self.dropped += dropped
                log.warning("discord.behind", dropped=dropped, action="every guild is sent again whole")
                if self._gateway is not None:
                    self._gateway.resync()
            async for record in sliced(items):
                kind = type(record).__name__
                self.events[kind] = self.events.get(kind, 0) + 1
                await self._take(record)
            await self._update_layer()
            async with self._progress:
                self._progress.notify_all()

    async def wait_until(self, predicate) -> None:
        """Wait until `predicate()` holds after the source has taken what the gateway sent (tests, tools)."""
        async with self._progress:
            await self._progress.wait_for(predicate)

    async def _follow_config(self) -> None:
        """The world took a new config: reconnect only when the connection itself must change."""
        config = self.world.config
        settings = settings_of(config)
        gateway = self._gateway
        if settings is None:
            if gateway is not None:
                await self._disconnect()
                log.info("discord.stopped", reason="the config has no discord block")
            self.guilds.clear()
            self._set_state("off", None)
        elif gateway is None or (gateway.api_base, gateway.timeout) != (settings.api_base, settings.timeout) \
                or gateway.token_differs(settings.bot_token) or not gateway.wants.covers(wants_of(config)):
            if gateway is not None:
                self.reconnects += 1
                await self._disconnect()
            self.guilds.clear()
            await self._connect(config)
        if self._gateway is not None:
            self._gateway.set_commands(commands_of(config))
        servers = {s.snowflake: s for s in config.servers if options_of(s) is not None}
        for snowflake in [sf for sf in self.views if sf not in servers]:
            del self.views[snowflake]  # the world removed the server with its users
        for snowflake, server in servers.items():
            options = options_of(server)
            assert options is not None
            view = self.views.get(snowflake)
            if view is None:
                view = self.views[snowflake] = View(options)
            elif view.options != options:
                view.options = options  # new filters, live: the mirror is filtered again
            else:
                continue
            guild = self.guilds.get(snowflake)
            if guild is not None:
                await self._refilter(snowflake, guild)
        self._check_missing()

    async def _take(self, record: r.Record) -> None:
        if isinstance(record, r.PresenceChanged):
            guild = self.guilds.get(record.guild)
            member = guild.members.get(record.uid) if guild else None
            if guild is not None and member is not None and member.status != record.status:
                member = guild.members[record.uid] = member._replace(status=record.status)
                await self._member(record.guild, record.uid, member)
        elif isinstance(record, r.MembersChanged):
            guild = self.guilds.get(record.guild)
            if guild is not None:
                for member in record.members:
                    if guild.members.get(member.uid) != member:
                        guild.members[member.uid] = member
                        await self._member(record.guild, member.uid, member)
        elif isinstance(record, r.MemberLeft):
            guild = self.guilds.get(record.guild)
            if guild is not None and guild.members.pop(record.uid, None) is not None:
                await self._member(record.guild, record.uid, None)
        elif isinstance(record, r.MessageRec):
            self._message(record)
        elif isinstance(record, r.CommandAsked):
            if self._gateway is not None:
                self._gateway.answer(record.ask, self._reply(record.guild))
        elif isinstance(record, r.GuildSnapshot):
            await self._snapshot(record)
        elif isinstance(record, r.GuildRenamed):
            if record.guild in self.guilds:
                self.guilds[record.guild].name = record.name
        elif isinstance(record, r.GuildUnavailable):
            self.unavailable.add(record.guild)
            log.warning("discord.guild_unavailable", guild=record.guild)
        elif isinstance(record, r.GuildGone):
            guild = self.guilds.pop(record.guild, None)
            self.member_of.discard(record.guild)
            self.unavailable.discard(record.guild)
            if guild is not None and record.guild in self.views:
                await self._forget(record.guild, guild)
            log.info("discord.guild_gone", guild=record.guild)
            self._check_missing()
        elif isinstance(record, r.SessionStarting):
            self._session_ready = False
            self._begin_bulk()
        elif isinstance(record, r.Connected):
            await self._connected(record)
        elif isinstance(record, r.Disconnected):
            if self.state == "ready":
                self.reconnects += 1
            if self.state != "failed":
                self._set_state("reconnecting" if self.state in ("ready", "reconnecting") else "connecting",
                                record.reason)
                log.warning("discord.disconnected", reason=record.reason)
        elif isinstance(record, r.Failed):
            self._end_bulk()
            self._set_state("failed", record.message)
            servers = sorted(s.id for s in self.world.config.servers if options_of(s) is not None)
            log.error("discord.failed", kind=record.kind, error=record.message, servers=servers)

    async def _connected(self, record: r.Connected) -> None:
        self.member_of = set(record.guilds) if not record.resumed else self.member_of | set(record.guilds)
        if not record.resumed:  # a new session sent every guild the bot is in again
            for gone in [g for g in self.guilds if g not in record.guilds]:
                guild = self.guilds.pop(gone)
                if gone in self.views:
                    await self._forget(gone, guild)
            self._session_ready = True
            self._end_bulk_if_loaded()
        self._set_state("ready", None)
        self._check_missing()
        log.info("discord.ready" if not record.resumed else "discord.resumed", guilds=len(record.guilds),
                 missing=list(self.missing))

    def _check_missing(self) -> None:
        if self.state != "ready":
            return
        missing = tuple(s.id for s in self.world.config.servers
                        if options_of(s) is not None and s.snowflake not in self.guilds
                        and s.snowflake not in self.member_of)
        for server_id in set(missing) - set(self.missing):
            server = self.world.config.server(server_id)
            log.error("discord.guild_missing", server=server_id, guild=server.snowflake if server else None,
                      error="the bot is not in this guild: invite it (Developer Portal, OAuth2 → URL Generator, "
                            "scope bot), or correct the server's snowflake")
        self.missing = missing

    async def _snapshot(self, record: r.GuildSnapshot) -> None:
        """A part of a guild: its members are taken as they come, and once the last part of a
        complete snapshot is in, members it no longer has are gone (a partial one, a chunking
        still under way, removes nobody). O(part) per part, never O(guild)."""
        guild = self.guilds.get(record.guild)
        if guild is None:
            guild = self.guilds[record.guild] = Guild(record.name)
        if record.part == 0:
            guild.loading = set()
            guild.complete = False
            self.unavailable.discard(record.guild)
        if guild.loading is None:
            return  # a part without its beginning: a later snapshot brings the whole guild
        guild.name = record.name
        view = self.views.get(record.guild)
        loading = guild.loading
        async for member in sliced(record.members, MEMBERS_PER_SLICE):
            loading.add(member.uid)
            if guild.members.get(member.uid) != member:
                guild.members[member.uid] = member
                if view is not None:
                    await self._apply(record.guild, view.update(member.uid, member))
        if record.part + 1 == record.parts:
            guild.loading = None
            guild.complete = record.complete
            if record.complete:
                for uid in set(guild.members) - loading:
                    del guild.members[uid]
                    if view is not None:
                        await self._apply(record.guild, view.update(uid, None))
                state = self.world.servers.get(record.guild)
                if view is not None and state is not None:  # users shown before this source started (a new leader)
                    await self._apply(record.guild, [(uid, None, None) for uid in state.users
                                                     if uid not in view.shown])
            self._end_bulk_if_loaded()
        self._check_missing()

    async def _refilter(self, snowflake: str, guild: Guild) -> None:
        """New options for a server: every member is placed again, a slice at a time."""
        view = self.views[snowflake]
        async for uid, member in sliced(list(guild.members.items())):
            await self._apply(snowflake, view.update(uid, member))

    async def _forget(self, snowflake: str, guild: Guild) -> None:
        """The guild is gone: its members leave the server's world, a slice at a time."""
        view = self.views[snowflake]
        async for uid in sliced(list(guild.members)):
            await self._apply(snowflake, view.update(uid, None))

    async def _member(self, snowflake: str, uid: str, member: Optional[r.MemberRec]) -> None:
        view = self.views.get(snowflake)
        if view is not None:
            await self._apply(snowflake, view.update(uid, member))

    def _message(self, record: r.MessageRec) -> None:
        view = self.views.get(record.guild)
        if view is None or record.author not in view.shown or not channel_allowed(record, view.options):
            return
        text = message_text(record, view.options)
        state = self.world.servers.get(record.guild)
        if text is not None and state is not None and record.author in state.users:
            self.world.apply(MessageSent(record.guild, record.author, text, record.channel))

    async def face(self, snowflake: str, uid: str) -> Union[bytes, None, bool]:
        """A shown member's avatar for the built-in page; None when there is none (yet); False when
        the server has no faces at all (not a discord one, private, or faces off), so the page stops asking."""
        settings = settings_of(self.world.config)
        state = self.world.servers.get(snowflake)
        if settings is None or not settings.faces.enabled or snowflake not in self.views or state is None \
                or state.info.passworded:
            return False
        return await self.faces.face(snowflake, uid)

    def activities(self, snowflake: str) -> Union[dict[str, str], bool]:
        """What the members a public server shows are doing (and, as `custom_statuses` says, their
        custom status), by uid (those with something to show); False
        when the server shows no activities (not a discord one, private, or `activities` off)."""
        state = self.world.servers.get(snowflake)
        options = options_of(state.info) if state is not None else None
        guild = self.guilds.get(snowflake)
        if options is None or not options.activities or state is None or state.info.passworded:
            return False
        if guild is None:
            return {}
        shown = {}
        for uid in state.users:
            member = guild.members.get(uid)
            if member is not None and (line := doing(member, options)):
                shown[uid] = line
        return shown

    def _face_path(self, snowflake: str, uid: str) -> Optional[str]:
        # Only members a public server shows: a face must not tell more than the page does.
        state = self.world.servers.get(snowflake)
        guild = self.guilds.get(snowflake)
        if state is None or state.info.passworded or uid not in state.users or guild is None:
            return None
        member = guild.members.get(uid)
        return member.avatar if member is not None and member.avatar else None

    def _reply(self, snowflake: str) -> str:
        """The slash command's answer in a guild: the server's page, who is shown and online, how to log in."""
        settings = settings_of(self.world.config)
        server = next((s for s in self.world.config.servers if s.snowflake == snowflake), None)
        options = options_of(server) if server is not None else None
        state = self.world.servers.get(snowflake)
        if settings is None or not settings.public_url or options is None or not options.slash_command \
                or state is None:
            return "This server's world is not shown here."
        url = f"{settings.public_url}/?s={quote(server.id, safe='')}"
        online = sum(1 for u in state.users.values() if u.status != "offline")
        return settings.command.answer(state.info.name or server.id, url, len(state.users), online, server.passworded)

    async def _apply(self, snowflake: str, changes: list[Change]) -> None:
        """The view's changes as world events, against what the world has now, in slices."""
        async for event in sliced(self._events(snowflake, changes)):
            self.world.apply(event)

    def _events(self, snowflake: str, changes: list[Change]) -> Iterator[PresenceChanged]:
        for uid, old, new in changes:
            state = self.world.servers.get(snowflake)  # read at each step: the slices let others in
            if state is None:
                return
            event = toward(snowflake, uid, state.users.get(uid), None if new is None else (new.status, new.name, new.color))
            if event is not None:
                yield event

    # -- the declaration's discord layer --------------------------------------------
    def _wanted_layer(self) -> Optional[Layer]:
        config = self.world.config
        settings = settings_of(config)
        if settings is None:
            return None
        base = {s.snowflake: s for s in self.declaration.base.servers}
        servers: dict[str, tuple[Server, frozenset[str]]] = {}
        for snowflake, server in base.items():
            guild = self.guilds.get(snowflake)
            if options_of(server) is not None and not server.named and guild is not None:
                servers[snowflake] = (Server(snowflake, server.id, guild.name), frozenset({"name"}))
        if settings.auto_servers:
            taken = {s.id for s in base.values()}
            previous = self._layer.servers if self._layer else {}
            for snowflake in sorted(self.guilds):
                if snowflake in base:
                    continue
                guild = self.guilds[snowflake]
                kept = previous.get(snowflake)
                server_id = kept[0].id if kept is not None and kept[0].id not in taken else short_id(guild.name, taken)
                taken.add(server_id)
                servers[snowflake] = (Server(snowflake, server_id, guild.name, source=KEY,
                                             options=settings.defaults), frozenset())
        return Layer(servers=servers)

    async def _update_layer(self) -> None:
        wanted = self._wanted_layer()
        if wanted == self._layer:
            return
        self._layer = wanted
        lines = await self.declaration.set_layer(LAYER, wanted)
        if lines != ["no changes"]:
            log.info("discord.servers", changes=lines[:10], count=len(lines))

    # -- reporting -----------------------------------------------------------------
    def _set_state(self, state: str, error: Optional[str]) -> None:
        if state != self.state:
            self.since = datetime.now(timezone.utc)
        self.state, self.error = state, error

    def _begin_bulk(self) -> None:
        if self._bulk is None:
            bulk.begin()
            self._bulk = asyncio.get_running_loop().call_later(BULK_WINDOW, self._end_bulk)

    def _end_bulk_if_loaded(self) -> None:
        if self._session_ready and all(g.loading is None and g.complete for g in self.guilds.values()):
            self._end_bulk()

    def _end_bulk(self) -> None:
        if self._bulk is not None:
            self._bulk.cancel()
            self._bulk = None
            bulk.end()

    def health(self) -> Optional[dict[str, Any]]:
        return self.status() if settings_of(self.world.config) is not None else None

    def status(self) -> dict[str, Any]:
        """For /healthz: the connection, and each discord server's guild as the source knows it."""
        servers = {}
        for s in self.world.config.servers:
            if options_of(s) is None:
                continue
            guild = self.guilds.get(s.snowflake)
            view = self.views.get(s.snowflake)
            servers[s.id] = {"guild": s.snowflake, "seen": guild is not None,
                             "state": ("missing" if s.id in self.missing
                                       else "unavailable" if s.snowflake in self.unavailable
                                       else "loading" if guild is None or guild.loading is not None or not guild.complete
                                       else "ready"),
                             "members": len(guild.members) if guild else 0,
                             "shown": len(view.shown) if view else 0}
        problems = [f"{server_id}: " + ("the bot is not in this guild" if s["state"] == "missing"
                                        else "the guild is unavailable on Discord's side (an outage)")
                    for server_id, s in servers.items() if s["state"] in ("missing", "unavailable")]
        return {"state": self.state, "since": self.since.isoformat(), "error": self.error,
                "reconnects": self.reconnects, "dropped_records": self.dropped, "servers": servers,
                "problems": problems}

    def collect(self) -> Iterator[Any]:
        """Prometheus families, read at scrape time (prometheus-client is loaded by the first scrape)."""
        from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily

        connected = GaugeMetricFamily("dbackd_discord_connected",
                                      "1 while the Discord gateway connection is ready, else 0.")
        connected.add_metric([], 1 if self.state == "ready" else 0)
        reconnects = CounterMetricFamily("dbackd_discord_reconnects", "Gateway connections lost or replaced.")
        reconnects.add_metric([], self.reconnects)
        records = CounterMetricFamily("dbackd_discord_records", "What the gateway handed over, by kind.",
                                      labels=["kind"])
        for kind, n in sorted(self.events.items()):
            records.add_metric([kind], n)
        members = GaugeMetricFamily("dbackd_discord_members", "Members of each discord server's guild, and shown.",
                                    labels=["server", "which"])
        guild_state = GaugeMetricFamily("dbackd_discord_guild_state",
                                        "1 for the state each discord server's guild is in: loading (listed by "
                                        "READY, its members not all in yet), ready, unavailable (an outage on "
                                        "Discord's side) or missing (the bot is not in it).",
                                        labels=["server", "state"])
        for server_id, s in self.status()["servers"].items():
            members.add_metric([server_id, "guild"], s["members"])
            members.add_metric([server_id, "shown"], s["shown"])
            for state in ("loading", "ready", "unavailable", "missing"):
                guild_state.add_metric([server_id, state], 1 if s["state"] == state else 0)
        yield from (connected, reconnects, records, members, guild_state)

    def describe(self) -> Iterator[Any]:
        return iter(())
