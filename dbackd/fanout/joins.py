"""Join frames: each server's `server-join`, built from the world and kept current from its events.

The world holds state and hands out events; this module turns a server's users into
the bytes of its join and keeps them, so that no join holds the event loop for long,
however big the server:

- one encoded fragment per user, re-encoded only when an event says that user changed;
- the fragments joined in chunks of CHUNK users, a chunk re-joined only when one of its
  users changed, so the users map is one join of a few dozen chunks;
- `ready()` does the encoding and the chunks a slice per loop turn before a join, and
  builds the frame (header and payload in one buffer, one copy) in a turn of its own;
- a big server's frame (BIG_SERVER users or more) is kept and reused by later joins,
  followed by the presence frames of the changes since it was built (what its members
  were sent meanwhile), until TAIL_LIMIT changes make it worth building again. A smaller
  server's join is built again after any change: it is cheap, and its users map is then
  exactly the current state.

It reads the world and never changes it, and writes to no socket (the hub sends what
it builds).
"""
from __future__ import annotations

import asyncio
from typing import Optional

from dbackd.core.events import Event, PresenceChanged
from dbackd.core.world import ServerState, World
from dbackd.fanout import protocol
from dbackd.fanout.protocol import Outgoing

CHUNK = 2000  # users per encoded chunk of a users map (~240 KB for a Discord guild's members)
ENCODE_PER_TURN = 2000  # fragments encoded between two yields (~4 us each)
JOIN_PER_TURN = 20_000  # users' worth of chunks joined between two yields (joining is ~10x cheaper)
MAX_TURNS = 200  # slices before a join; a storm of changes cannot keep it waiting longer
BIG_SERVER = 10_000  # users from which a server's join frame is kept and followed by the changes since
TAIL_LIMIT = 1000  # changes sent after a kept frame before the frame is built again
KEYS_PER_SERVER = 2  # kept frames per server (a client may ask by short id, snowflake or "default")

_Key = tuple[str, str, Optional[str]]  # (what the client asked for, server name, client id)


class _Chunk:
    __slots__ = ("uids", "data")

    def __init__(self) -> None:
        self.uids: dict[str, None] = {}  # in the world's order
        self.data: Optional[bytes] = None  # the fragments joined with ",", or None after a change


class _Server:
    """One server's encoded users and its kept frames."""

    __slots__ = ("state", "fragments", "stale", "chunk_of", "chunks", "dirty", "kept")

    def __init__(self, state: ServerState):
        self.state = state  # the ServerState these bytes describe (a reload may replace it)
        self.fragments: dict[str, bytes] = {}  # uid -> encoded '"uid":{...}', kept across changes
        self.stale: set[str] = set(state.users)  # uids whose fragment must be encoded (again)
        self.chunk_of: dict[str, _Chunk] = {}
        self.chunks: list[_Chunk] = []
        self.dirty: set[_Chunk] = set()  # chunks whose data must be joined (again)
        self.kept: dict[_Key, tuple[Outgoing, list[Outgoing]]] = {}  # key -> (frame, the changes since)
        uids = list(state.users)
        for i in range(0, len(uids), CHUNK):  # in C, a chunk at a time: a 100,000-user server in a few ms
            chunk = _Chunk()
            chunk.uids = dict.fromkeys(uids[i:i + CHUNK])
            self.chunks.append(chunk)
            self.chunk_of.update(dict.fromkeys(chunk.uids, chunk))
        self.dirty.update(self.chunks)

    def place(self, uid: str) -> None:
        """A user new to the map goes to the end, as in the world's dict."""
        chunk = self.chunks[-1] if self.chunks and len(self.chunks[-1].uids) < CHUNK else None
        if chunk is None:
            chunk = _Chunk()
            self.chunks.append(chunk)
        chunk.uids[uid] = None
        self.chunk_of[uid] = chunk

    def changed(self, uid: str) -> None:
        if uid not in self.chunk_of:
            self.place(uid)
        self.stale.add(uid)
        chunk = self.chunk_of[uid]
        chunk.data = None
        self.dirty.add(chunk)

    def removed(self, uid: str) -> None:
        self.fragments.pop(uid, None)
        self.stale.discard(uid)
        chunk = self.chunk_of.pop(uid, None)
        if chunk is None:
            return
        del chunk.uids[uid]
        chunk.data = None
        self.dirty.add(chunk)
        if not chunk.uids and chunk is not self.chunks[-1]:
            self.chunks.remove(chunk)
            self.dirty.discard(chunk)

    def encode(self, limit: Optional[int]) -> None:
        stale, fragments, users = self.stale, self.fragments, self.state.users
        for _ in range(len(stale) if limit is None else min(limit, len(stale))):
            uid = stale.pop()
            fragments[uid] = protocol.encode({uid: protocol.entry(users[uid])})[1:-1]

    def join_chunks(self, limit: Optional[int]) -> None:
        """Join dirty chunks, about `limit` users' worth (None: all); fragments must be encoded."""
        fragments, budget = self.fragments, limit
        while self.dirty and (budget is None or budget > 0):
            chunk = self.dirty.pop()
            chunk.data = b",".join([fragments[uid] for uid in chunk.uids])
            if budget is not None:
                budget -= max(1, len(chunk.uids))

    def build(self, key: _Key) -> Outgoing:
        """The whole frame from clean chunks."""
        return protocol.server_join([c.data for c in self.chunks if c.uids], *key)  # type: ignore[misc]


class Joins:
    """The server-join frames of every server a client joined, kept current from the world's events."""

    def __init__(self, world: World):
        self.world = world
        self._servers: dict[str, _Server] = {}
        world.subscribe(self.on_event)

    def on_event(self, event: Event) -> None:
        if not isinstance(event, PresenceChanged):
            return  # a reload's new or removed servers are noticed by identity when next joined
        server = self._servers.get(event.server)
        if server is None:
            return
        live = server.state.users.get(event.uid)
        if event.delete or live is None:
            server.removed(event.uid)
        else:
            server.changed(event.uid)
        if not server.kept:
            return
        if len(server.state.users) < BIG_SERVER:
            server.kept.clear()
            return
        # What the server's members are sent for this change, a later joiner gets after the kept frame.
        entry = protocol.entry(live) if event.renamed and live is not None else None
        changes = [Outgoing.of(m) for m in protocol.frames_for(event, entry)]
        for key, (_, since) in list(server.kept.items()):
            since.extend(changes)
            if len(since) > TAIL_LIMIT:
                del server.kept[key]

    def _server(self, state: ServerState) -> _Server:
        server = self._servers.get(state.snowflake)
        if server is None or server.state is not state:
            server = self._servers[state.snowflake] = _Server(state)
            # Servers a reload removed go with the next new one: this never outgrows the world.
            for snowflake in [s for s in self._servers if s not in self.world.servers]:
                del self._servers[snowflake]
        return server

    @staticmethod
    def _key(state: ServerState, request_server: str) -> _Key:
        return (request_server, state.info.name, state.client_id)

    async def ready(self, state: ServerState, request_server: str) -> None:
        """Bring the join for `request_server` up to date a slice per loop turn, so that the join
        itself (`messages`, right after) only writes. Changes that arrive meanwhile are taken
        in the next slice."""
        server, key = self._server(state), self._key(state, request_server)
        for _ in range(MAX_TURNS):
            if key in server.kept:
                return
            if len(server.stale) > ENCODE_PER_TURN:
                server.encode(ENCODE_PER_TURN)
            elif sum(len(c.uids) for c in server.dirty) > JOIN_PER_TURN:
                server.encode(None)
                server.join_chunks(JOIN_PER_TURN)
            else:  # what is left fits one turn: finish, and build the frame in it
                server.encode(None)
                server.join_chunks(None)
                self._keep(server, key)
            await asyncio.sleep(0)
            if server.state is not state:
                return  # a reload replaced the server meanwhile: the session checks again

    def messages(self, state: ServerState, request_server: str) -> list[Outgoing]:
        """The server-join for a socket that asked for `request_server`, from the server's current
        state, and (for a kept frame of a big server) the changes since it was built. Whatever
        `ready()` left undone is done now."""
        server, key = self._server(state), self._key(state, request_server)
        if key not in server.kept:
            server.encode(None)
            server.join_chunks(None)
            self._keep(server, key)
        frame, since = server.kept[key]
        return [frame, *since]

    def _keep(self, server: _Server, key: _Key) -> None:
        # A frame for the server's old name or client id will not be asked for again.
        for old in [k for k in server.kept if k[1:] != key[1:]]:
            del server.kept[old]
        while len(server.kept) >= KEYS_PER_SERVER:
            del server.kept[next(iter(server.kept))]
        server.kept[key] = (server.build(key), [])
