"""The cluster's backplane: one ordered log of live changes per server, and each server's state, in Redis.

It is the world's `Log` (world.py). A live change (a presence, a message, a client id),
whichever node and source made it, is appended to its server's stream (XADD); every node,
the one that made it included, commits what the streams hand back, in stream order: so
every client of a server, on any node, sees every change exactly once and in the same
order. Changes that follow from the declaration (a reload) are published by the leader
alone, since every node reads the config for itself; changes of the producers (the live
sources) are fenced by the lease, so a leader that lost it publishes nothing. What the
producers add to the declaration (each source's layer: servers it found, names it learnt)
is shared by the layer's name: the leader writes it, every other node lays it over its own.

Each server's state is kept as a snapshot (a hash: uid → user, and the id of the last
change it holds), written by the leader about once a second with what changed, and the
stream is trimmed behind it. A node that starts or comes back reads the snapshot and the
changes after it before it answers a join (`current()`); one that finds it fell behind a
trim, or that Redis lost its data (the `epoch` key changed), does the same again.

While Redis cannot be reached, nodes serve what they have, changes are refused
(`Unavailable`), and they try again with backoff; `status()` and the metrics say so.
Whatever Redis hands back is checked as API input is (codec.py): an entry that fails is
skipped and counted, and no entry, nor a bug, ends the connection task for good: it is
taken as Redis being down (changes refused), and tried again. It never writes to a
socket and never logs the Redis URL (it may carry a password).
"""
from __future__ import annotations

import asyncio
import json
import os
import secrets
import socket
import time
from collections import deque
from datetime import datetime, timezone
from typing import Any, Iterator, Optional

import structlog
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from redis import asyncio as aioredis
from redis.exceptions import RedisError

from dbackd.config import ConfigError
from dbackd.core.backoff import Backoff
from dbackd.config.model import Cluster
from dbackd.core.declaration import Declaration
from dbackd.core.events import ClientIdChanged, ConfigReplaced, Event, PresenceChanged
from dbackd.core.rates import Tally
from dbackd.core.tasks import TaskSet
from dbackd.core.world import Unavailable, World, toward
from dbackd.cluster import codec
from dbackd.cluster.agreement import fingerprint
from dbackd.cluster.producing import PRODUCING

log = structlog.get_logger("dbackd.cluster")


OUTBOX_LIMIT = 100_000  # changes waiting to be appended; past it, changes are refused
READ_COUNT = 1000  # stream entries per read
READ_BLOCK_MS = 1000
SNAPSHOT_EVERY = 1.0  # seconds between two snapshots of what changed (leader)
REGISTRY_EVERY = 2.0  # seconds between two heartbeats in the node registry
NODE_STALE = 15.0  # seconds after which a silent node is no longer listed
STREAM_MAXLEN = 200_000  # a bound on a stream whatever happens to the snapshots
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 10.0
START_WAIT = 5.0  # seconds start() waits for the first catch-up before serving what it has
LOG_WINDOW = 60.0  # seconds between two log lines about skipped entries

# Append a change, unless it needs the lease and this node does not hold it (then: nil).
_APPEND = """
if ARGV[3] == '1' and redis.call('GET', KEYS[2]) ~= ARGV[2] then return false end
return redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], '*', 'e', ARGV[1], 'n', ARGV[2])
"""


def _key_id(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


class Backplane:
    def __init__(self, world: World, declaration: Declaration, settings: Cluster, layers: tuple[str, ...] = ()):
        """`layers`: the names of the declaration layers the producers make, shared from the leader."""
        self.world = world
        self.declaration = declaration
        self.settings = settings
        self.node = settings.node or f"{socket.gethostname()}-{os.getpid()}"
        self.prefix = settings.prefix
        self.up = False
        self.is_leader = False  # set by the lease (leadership.py)
        self.leader: Optional[str] = None
        self.since = datetime.now(timezone.utc)
        self.error: Optional[str] = None
        self.nodes: dict[str, dict] = {}
        self.published = self.applied = self.resyncs = self.refused = self.fenced = 0
        self.skipped = 0  # entries from Redis refused by the checks (or that failed to apply)
        self._skips = Tally(LOG_WINDOW)
        self._task: Optional[asyncio.Task] = None
        self.redis: Optional[aioredis.Redis] = None  # commands (the lease uses it too)
        self._reader: Optional[aioredis.Redis] = None  # the blocking reads
        self._append: Any = None
        self._outbox: deque[tuple[str, str, bool]] = deque()
        self._wake_publisher = asyncio.Event()
        self._last: dict[str, str] = {}  # snowflake -> id of the last entry committed here
        self._own: dict[str, str] = {}  # snowflake -> id of the last entry this node appended
        self._submitted = self._appended = 0
        self._progress = asyncio.Condition()
        self._current = asyncio.Event()
        self._epoch: Optional[str] = None
        self._dirty: dict[str, set[str]] = {}  # snowflake -> uids changed since the last snapshot
        self._trim_at: dict[str, str] = {}  # snowflake -> id of the previous snapshot (trimmed up to)
        self._servers: frozenset[str] = frozenset()
        self._tasks = TaskSet("cluster")
        self._down_count = 0
        self._fingerprint = fingerprint(world.config)
        self.layers = tuple(layers)
        self._layers: dict[str, str] = {}  # layer name -> its text as last written (leader) or taken (follower)

    # -- keys ----------------------------------------------------------------------
    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    # -- lifecycle -----------------------------------------------------------------
    async def start(self) -> None:
        self.world.log = self
        self.world.subscribe(self._on_event)
        self._task = self._tasks.spawn(self._run(), name="dbackd-cluster")
        self._task.add_done_callback(self._ended)
        try:  # serve with the cluster's state if it comes quickly, with the declaration's if not
            await asyncio.wait_for(self._current.wait(), START_WAIT)
        except asyncio.TimeoutError:
            log.warning("cluster.start_without_redis", node=self.node, error=self.error)

    def _ended(self, task: asyncio.Task) -> None:
        """The connection task never ends but by stop(); if it did, changes are refused and /healthz says so."""
        if not task.cancelled() and task.exception() is not None:
            log.error("cluster.task_ended", node=self.node, error=type(task.exception()).__name__)
        if self.up:
            self._set_down("the cluster task ended")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.remove_done_callback(self._ended)
        await self._tasks.cancel()
        self.world.unsubscribe(self._on_event)
        self.world.log = None
        for client in (self.redis, self._reader):
            if client is not None:
                try:
                    await asyncio.wait_for(client.aclose(), self.settings.timeout)
                except (RedisError, OSError, asyncio.TimeoutError):
                    pass
        self.redis = self._reader = None
        self.up = False
        self._current.clear()
        self._down_count += 1
        self._notify()

    def _on_event(self, event: Event) -> None:
        if isinstance(event, ConfigReplaced):
            self._fingerprint = fingerprint(event.config)  # the new servers are caught up by the reader

    # -- the Log -------------------------------------------------------------------
    def submit(self, event: Event, declared: bool) -> None:
        if declared and not self.is_leader:
            return  # every node reads the config: the leader alone publishes what follows from it
        if not self.up:
            self.refused += 1
            raise Unavailable("the cluster's Redis cannot be reached")
        if len(self._outbox) >= OUTBOX_LIMIT:
            self.refused += 1
            raise Unavailable("the cluster's Redis is too far behind")
        server = event.server  # type: ignore[union-attr]
        self._outbox.append((server, codec.encode(event), declared or PRODUCING.get()))
        self._submitted += 1
        self._wake_publisher.set()

    async def committed(self) -> None:
        target, down = self._submitted, self._down_count

        def done() -> bool:
            if self._down_count != down:
                return True
            if self._appended < target:
                return False
            # What this node appended has come back through the reader and is committed here.
            return all(_key_id(self._last.get(s, "0-0")) >= _key_id(i) for s, i in self._own.items()
                       if s in self._last)

        async with self._progress:
            await self._progress.wait_for(done)
        if self._down_count != down:
            raise Unavailable("the cluster's Redis went away before the change was shared")

    async def current(self) -> None:
        if self.up:
            try:
                await asyncio.wait_for(self._current.wait(), self.settings.timeout)
            except asyncio.TimeoutError:
                pass  # answer with what is here rather than not at all

    # -- the connection ------------------------------------------------------------
    async def _run(self) -> None:
        backoff = Backoff(BACKOFF_FIRST, BACKOFF_MAX)
        while True:
            try:
                await self._connect()
                await self._catch_up(self._wanted())
                self._set_up()
                backoff.reset()
                await self._serve()
            except (RedisError, OSError, asyncio.TimeoutError) as exc:
                self._set_down(type(exc).__name__)
            except Exception as exc:  # a bug, or something in Redis no check foresaw: never the end of sharing
                log.exception("cluster.failed", node=self.node)
                self._set_down(f"internal error: {type(exc).__name__}")
            await asyncio.sleep(backoff.next())

    async def _connect(self) -> None:
        timeout = self.settings.timeout
        for client in (self.redis, self._reader):
            if client is not None:
                try:
                    await client.aclose()
                except (RedisError, OSError):
                    pass
        options = dict(socket_connect_timeout=timeout, decode_responses=True, retry_on_timeout=False)
        self.redis = aioredis.Redis.from_url(self.settings.redis, socket_timeout=timeout, **options)
        # Blocking reads wait READ_BLOCK_MS for entries; their socket may take that long.
        self._reader = aioredis.Redis.from_url(self.settings.redis, socket_timeout=timeout + READ_BLOCK_MS / 1000,
                                               **options)
        await asyncio.wait_for(self.redis.ping(), timeout)
        self._append = self.redis.register_script(_APPEND)

    async def _serve(self) -> None:
        tasks = [asyncio.ensure_future(coro) for coro in (self._read_loop(), self._publish_loop(),
                                                           self._registry_loop(), self._snapshot_loop())]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # raises what ended it
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _set_up(self) -> None:
        if not self.up:
            self.since = datetime.now(timezone.utc)
            log.info("cluster.connected", node=self.node, servers=len(self._servers))
        self.up, self.error = True, None
        self._current.set()

    def _set_down(self, reason: str) -> None:
        was = self.up
        self.up, self.error = False, reason
        self._current.clear()
        self._down_count += 1
        dropped = len(self._outbox)
        self._outbox.clear()
        if was:
            self.since = datetime.now(timezone.utc)
            log.warning("cluster.disconnected", node=self.node, reason=reason, changes_dropped=dropped)
        self._notify()

    def _notify(self) -> None:
        async def tell() -> None:
            async with self._progress:
                self._progress.notify_all()

        try:
            asyncio.get_running_loop().create_task(tell())
        except RuntimeError:
            pass

    # -- catching up -----------------------------------------------------------------
    def _wanted(self) -> frozenset[str]:
        return frozenset(self.world.servers)

    async def _catch_up(self, servers: frozenset[str]) -> None:
        """Each server's snapshot, then the changes after it; the world moves to that, locally."""
        assert self.redis is not None
        self._epoch = await self.redis.get(self.key("epoch"))
        for snowflake in servers:
            await self._catch_up_server(snowflake)
        self._servers = frozenset(self._last)

    async def _catch_up_server(self, snowflake: str) -> None:
        assert self.redis is not None
        state = await self.redis.hgetall(self.key("state", snowflake))
        last = state.pop("~last", None)
        client_id = state.pop("~client", None)
        if client_id is not None:
            try:
                client_id = codec.client_id_from(client_id)
            except codec.BadEntry as exc:
                self._skip(snowflake, "~client", str(exc))
                client_id = None
        if last is not None:
            users = {}
            for uid, text in state.items():
                try:
                    users[uid] = codec.user_from(uid, text)
                except codec.BadEntry as exc:
                    self._skip(snowflake, f"user {uid[:40]!r}", str(exc))
            self._reconcile(snowflake, users, client_id)
        start = last or "0-0"
        entries = await self.redis.xrange(self.key("events", snowflake), min=f"({start}", max="+")
        self._last[snowflake] = start
        self._commit(snowflake, entries)
        self.resyncs += 1

    def _reconcile(self, snowflake: str, users: dict, client_id: Optional[str]) -> None:
        """Make this node's users of a server the snapshot's, as local events (clients here see the difference)."""
        world = self.world
        server = world.servers.get(snowflake)
        if server is None:
            return
        for uid in [u for u in server.users if u not in users]:
            world.commit(PresenceChanged(snowflake, uid, server.users[uid].status, delete=True))
        for uid, user in users.items():
            event = toward(snowflake, uid, server.users.get(uid), (user.status, user.username, user.role_color))
            if event is not None:
                world.commit(event)
        if client_id and server.client_id != client_id:
            world.commit(ClientIdChanged(snowflake, client_id))
        self._dirty.pop(snowflake, None)

    def _commit(self, snowflake: str, entries: list) -> None:
        for entry_id, fields in entries:
            self._last[snowflake] = entry_id  # read past it whatever it holds: a bad one is not read again
            try:
                event = codec.decode(snowflake, fields.get("e"))
                self.world.commit(event)
            except codec.BadEntry as exc:
                self._skip(snowflake, entry_id, str(exc))
                continue
            except Exception as exc:  # a bug on the way: that entry only is lost, never the cluster task
                log.exception("cluster.apply_failed", server=snowflake, id=entry_id)
                self._skip(snowflake, entry_id, f"cannot apply: {type(exc).__name__}")
                continue
            self.applied += 1
            if isinstance(event, PresenceChanged):
                self._dirty.setdefault(snowflake, set()).add(event.uid)
            elif isinstance(event, ClientIdChanged):
                self._dirty.setdefault(snowflake, set()).add("~client")

    def _skip(self, snowflake: str, where: str, reason: str) -> None:
        self.skipped += 1
        count = self._skips.note(time.monotonic())
        if count:
            log.error("cluster.bad_entry", node=self.node, server=snowflake, entry=where, reason=reason, count=count)

    # -- the loops while connected -----------------------------------------------------
    async def _read_loop(self) -> None:
        assert self._reader is not None and self.redis is not None
        while True:
            wanted = self._wanted()
            new = wanted - self._servers
            if new:  # servers a reload added: their state first
                for snowflake in new:
                    await self._catch_up_server(snowflake)
            for gone in self._servers - wanted:
                self._last.pop(gone, None)
                self._dirty.pop(gone, None)
            self._servers = frozenset(self._last)
            if not self._last:
                await asyncio.sleep(READ_BLOCK_MS / 1000)
                continue
            streams = {self.key("events", s): self._last[s] for s in self._last}
            answer = await self._reader.xread(streams, count=READ_COUNT, block=READ_BLOCK_MS)
            for stream, entries in answer or ():
                snowflake = stream.rsplit(":", 1)[1]
                if snowflake not in self._last:
                    continue
                if await self._fell_behind(snowflake, stream, entries):
                    await self._catch_up_server(snowflake)
                    continue
                self._commit(snowflake, entries)
                await asyncio.sleep(0)
            async with self._progress:
                self._progress.notify_all()

    async def _fell_behind(self, snowflake: str, stream: str, entries: list) -> bool:
        """Whether entries this node had not read yet were trimmed away (it lagged past a snapshot)."""
        assert self.redis is not None
        info = await self.redis.xinfo_stream(stream)
        deleted = info.get("max-deleted-entry-id")
        return bool(deleted) and _key_id(deleted) > _key_id(self._last[snowflake])

    async def _publish_loop(self) -> None:
        assert self.redis is not None
        leader_key, node, maxlen = self.key("leader"), self.node, str(STREAM_MAXLEN)
        while True:
            await self._wake_publisher.wait()
            self._wake_publisher.clear()
            while self._outbox:
                batch = [self._outbox.popleft() for _ in range(min(len(self._outbox), 500))]
                async with self.redis.pipeline(transaction=False) as pipe:
                    for server, text, fenced in batch:
                        await self._append(keys=[self.key("events", server), leader_key],
                                           args=[text, node, "1" if fenced else "0", maxlen], client=pipe)
                    ids = await pipe.execute()
                for (server, _, _), entry_id in zip(batch, ids):
                    if entry_id is None:
                        self.fenced += 1  # this node had lost the lease: the producer's change is not shared
                        continue
                    self._own[server] = entry_id
                    self.published += 1
                self._appended += len(batch)
                async with self._progress:
                    self._progress.notify_all()

    async def _snapshot_loop(self) -> None:
        """The leader writes what changed into each server's snapshot, then trims its stream."""
        assert self.redis is not None
        while True:
            await asyncio.sleep(SNAPSHOT_EVERY)
            if not self.is_leader:
                continue
            await self.write_snapshots()

    async def write_snapshots(self, everything: bool = False) -> None:
        assert self.redis is not None
        for snowflake in list(self._last):
            server = self.world.servers.get(snowflake)
            if server is None:
                continue
            dirty = (set(server.users) | {"~client"}) if everything else self._dirty.pop(snowflake, set())
            if not dirty and not everything:
                continue
            state_key = self.key("state", snowflake)
            last = self._last[snowflake]
            async with self.redis.pipeline(transaction=True) as pipe:
                if everything:
                    pipe.delete(state_key)
                for uid in dirty:
                    if uid == "~client":
                        if server.client_id:
                            pipe.hset(state_key, "~client", server.client_id)
                    elif uid in server.users:
                        pipe.hset(state_key, uid, codec.user_text(server.users[uid]))
                    else:
                        pipe.hdel(state_key, uid)
                pipe.hset(state_key, "~last", last)
                previous = self._trim_at.get(snowflake)
                if previous is not None:  # one snapshot's worth of slack for a node reading behind
                    pipe.xtrim(self.key("events", snowflake), minid=previous, approximate=False)
                await pipe.execute()
            self._trim_at[snowflake] = last

    async def initialise(self) -> None:
        """A new leader: if Redis holds no cluster state (new, or its data was lost), write it whole."""
        assert self.redis is not None
        epoch = await self.redis.get(self.key("epoch"))
        if epoch is None:
            await self.write_snapshots(everything=True)
            epoch = secrets.token_hex(8)
            await self.redis.set(self.key("epoch"), epoch)
            log.info("cluster.state_written", node=self.node, servers=len(self._last))
        self._epoch = epoch

    async def _registry_loop(self) -> None:
        assert self.redis is not None
        nodes_key = self.key("nodes")
        while True:
            now = time.time()
            me = {"fingerprint": self._fingerprint, "at": now, "leader": self.is_leader, "pid": os.getpid()}
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hset(nodes_key, self.node, json.dumps(me))
                pipe.hgetall(nodes_key)
                pipe.get(self.key("leader"))
                pipe.get(self.key("epoch"))
                for name in self.layers:
                    pipe.get(self.key("layer", name))
                _, nodes, leader, epoch, *stored = await pipe.execute()
            for name, text in zip(self.layers, stored):
                await self._share_layer(name, text or "")
            seen: dict[str, dict] = {}
            for name, text in nodes.items():
                try:
                    info = json.loads(text)
                    at = float(info.get("at", 0))
                except (ValueError, TypeError, AttributeError):
                    continue
                if now - at < NODE_STALE:
                    seen[name] = info
                else:
                    await self.redis.hdel(nodes_key, name)
            self.nodes, self.leader = seen, leader
            if epoch is not None and self._epoch is not None and epoch != self._epoch:
                log.warning("cluster.resync", node=self.node, reason="the cluster's state was written anew")
                self._epoch = epoch
                await self._catch_up(self._wanted())
            elif epoch is not None and self._epoch is None:
                self._epoch = epoch
            await asyncio.sleep(REGISTRY_EVERY)

    async def _share_layer(self, name: str, stored: str) -> None:
        """A producer's layer (only the leader runs the producers); every node's declaration needs it."""
        assert self.redis is not None
        if self.is_leader:
            mine = codec.layer_text(self.declaration.layers.get(name))
            if mine != stored:
                await self.redis.set(self.key("layer", name), mine)
            self._layers[name] = mine
        elif stored != self._layers.get(name, ""):
            self._layers[name] = stored
            try:
                await self.declaration.set_layer(name, codec.layer_from(stored, self.world.config))
            except ConfigError as exc:
                log.error("cluster.layer_refused", layer=name, errors=[p.message for p in exc.problems][:5])
            except codec.BadEntry as exc:
                self._skip("*", f"layer {name}", str(exc))

    # -- reporting -----------------------------------------------------------------
    def differs(self) -> list[str]:
        """Nodes whose config disagrees with this one's on servers and simulation."""
        return sorted(n for n, info in self.nodes.items() if info.get("fingerprint") != self._fingerprint)

    def status(self) -> dict[str, Any]:
        return {"node": self.node, "redis": "up" if self.up else "down", "since": self.since.isoformat(),
                "error": self.error, "leader": self.leader, "is_leader": self.is_leader,
                "nodes": sorted(self.nodes), "config_agrees": not self.differs(), "differs": self.differs(),
                "published": self.published, "applied": self.applied, "refused": self.refused,
                "skipped": self.skipped,
                "task": "running" if self._task is not None and not self._task.done() else "stopped"}

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("dbackd_cluster_redis_up", "1 while the cluster's Redis is reachable, else 0.")
        up.add_metric([], 1 if self.up else 0)
        leader = GaugeMetricFamily("dbackd_cluster_leader", "1 while this node holds the lease (runs the producers).")
        leader.add_metric([], 1 if self.is_leader else 0)
        agrees = GaugeMetricFamily("dbackd_cluster_config_agrees",
                                   "1 when every node's servers and simulation match this one's, else 0.")
        agrees.add_metric([], 0 if self.differs() else 1)
        nodes = GaugeMetricFamily("dbackd_cluster_nodes", "Nodes heard from in the registry.")
        nodes.add_metric([], len(self.nodes))
        published = CounterMetricFamily("dbackd_cluster_published", "Changes this node appended to the shared log.")
        published.add_metric([], self.published)
        applied = CounterMetricFamily("dbackd_cluster_applied", "Changes committed here from the shared log.")
        applied.add_metric([], self.applied)
        refused = CounterMetricFamily("dbackd_cluster_refused", "Changes refused while Redis could not take them.")
        refused.add_metric([], self.refused)
        resyncs = CounterMetricFamily("dbackd_cluster_resyncs", "Servers caught up from their snapshot.")
        resyncs.add_metric([], self.resyncs)
        skipped = CounterMetricFamily("dbackd_cluster_skipped", "Entries read from Redis and skipped: refused by "
                                      "the API's checks, or not applicable.")
        skipped.add_metric([], self.skipped)
        yield from (up, leader, agrees, nodes, published, applied, refused, resyncs, skipped)

    def describe(self) -> Iterator[Metric]:
        return iter(())

