"""The live world: the current config, every server, its users and their status. The single source of truth.

Sources make changes with `World.apply(event)`; the convenience methods build the event
and apply it. State changes in one place, `World.commit(event)`, and each committed event
is handed to the subscribers (the hub fans it out to sockets; whatever depends on the
config reacts to `ConfigReplaced`). Alone, apply commits at once. In a cluster a shared
`Log` is attached: live changes (presences, messages, client ids) go to it, and every
node commits them as the log hands them back, in one order for all; `committed()`
awaits that. Moving to a new declaration is a sequence of events (`transition`) that a
source may apply in slices. The world never writes to a socket, never reads a clock, and
awaits only in `committed()` and `current()`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Protocol

import structlog

from dbackd.config import STATUSES, Config, Server
from dbackd.config.diff import ConfigDiff, diff
from dbackd.config.values import WHITE, color
from dbackd.core.events import (ClientIdChanged, ConfigReplaced, Event, MessageSent, PresenceChanged, ServerClosed,
                     ServerListChanged)

Subscriber = Callable[[Event], None]

log = structlog.get_logger("dbackd.world")


# The changes a cluster shares through its log; the rest follows from each node's own config.
SHARED = (PresenceChanged, MessageSent, ClientIdChanged)


class Unavailable(RuntimeError):
    """The shared log cannot take changes now (its Redis is unreachable): nothing was changed."""


class Log(Protocol):
    """Where a cluster's live changes go before any node commits them (cluster/backplane.py)."""

    def submit(self, event: Event, declared: bool) -> None:
        """Take a change (raise Unavailable if it cannot); `declared`: it follows from the declaration."""

    async def committed(self) -> None:
        """Until every change submitted so far is committed here."""

    async def current(self) -> None:
        """Until this node holds the cluster's current state (after a start or a reconnect)."""


class UnknownServer(LookupError):
    pass


class UnknownUser(LookupError):
    pass


class DeclaredUser(ValueError):
    """A change only the declaration may make (removing a user the config or a provider declares)."""


@dataclass(slots=True)
class UserState:
    """A user as it is now; changed in place, so a stream of presence changes allocates
    nothing that outlives its event."""

    uid: str
    username: str
    status: str
    role_color: str


Wanted = tuple[str, str, str]  # (status, username, role_color) a source wants a user to have


def toward(server: str, uid: str, live: Optional[UserState], wanted: Optional[Wanted]) -> Optional[PresenceChanged]:
    """The change that makes a live user (None: not there) what is wanted (None: gone), or None if
    it already is. A source that holds its own picture of a server (a guild, a cluster's
    snapshot) reconciles the world with it through this one diff."""
    if wanted is None:
        return PresenceChanged(server, uid, live.status, delete=True) if live is not None else None
    status, username, role_color = wanted
    if live is None:
        return PresenceChanged(server, uid, status, username, role_color)
    if (live.status, live.username, live.role_color) == wanted:
        return None
    return PresenceChanged(server, uid, status, username if username != live.username else None,
                           role_color if role_color != live.role_color else None)


class ServerState:
    """One server's declaration plus its live members."""

    def __init__(self, info: Server, populate: bool = True):
        """`populate`: take the declared users now; False leaves them to PresenceChanged events
        (a server added by a reload, whose users a transition adds in slices)."""
        self.info = info
        self.users: dict[str, UserState] = {}
        self.client_id: Optional[str] = info.oauth.client_id  # update-clientid may change it later
        self._declared: tuple[Optional[Server], frozenset[str]] = (None, frozenset())
        if populate:
            for u in info.users:
                self.put(UserState(u.uid, u.username, u.status, u.role_color))

    @property
    def snowflake(self) -> str:
        return self.info.snowflake

    def put(self, user: UserState) -> None:
        """Store a new or changed user."""
        self.users[user.uid] = user

    def drop(self, uid: str) -> None:
        self.users.pop(uid, None)

    def declared(self, uid: str) -> bool:
        """True for a user the declaration (config, providers) names; False for a runtime user."""
        info, uids = self._declared
        if info is not self.info:  # the declaration was replaced since the last question
            uids = frozenset(u.uid for u in self.info.users)
            self._declared = (self.info, uids)
        return uid in uids


class World:
    def __init__(self, config: Config):
        self.config = config  # the effective declaration now in force
        self.servers: dict[str, ServerState] = {s.snowflake: ServerState(s) for s in config.servers}
        self._subscribers: list[Subscriber] = []
        self._server_list: Optional[dict] = None
        self.log: Optional[Log] = None

    # -- reading -------------------------------------------------------------------
    def subscribe(self, fn: Subscriber) -> None:
        self._subscribers.append(fn)

    def unsubscribe(self, fn: Subscriber) -> None:
        self._subscribers.remove(fn)

    def resolve(self, ref: Optional[str]) -> Optional[ServerState]:
        """By short id, "default", or snowflake."""
        info = self.config.server(ref)
        return self.servers.get(info.snowflake) if info else None

    def server_list(self) -> dict:
        if self._server_list is None:
            self._server_list = {s.snowflake: s.info.public_info() for s in self.servers.values()}
        return self._server_list

    def __iter__(self) -> Iterator[ServerState]:
        return iter(self.servers.values())

    def get(self, ref: str) -> ServerState:
        state = self.resolve(ref)
        if state is None:
            raise UnknownServer(f"no server {ref!r} (give its short id, its snowflake or \"default\")")
        return state

    # -- changing ------------------------------------------------------------------
    def apply(self, event: Event, declared: bool = False) -> None:
        """Make a change: committed now, or, in a cluster, once the shared log hands it back.

        `declared`: the change follows from the declaration (a reload, the data providers),
        which every node of a cluster reads for itself; the log decides who publishes it.
        Raises Unavailable when the cluster's log cannot take it.
        """
        if self.log is not None and isinstance(event, SHARED):
            self.log.submit(event, declared)
            return
        self.commit(event)

    async def committed(self) -> None:
        """Until every change applied so far is committed (at once, without a cluster)."""
        if self.log is not None:
            await self.log.committed()

    async def current(self) -> None:
        """Until this node holds the current state (at once, without a cluster)."""
        if self.log is not None:
            await self.log.current()

    def commit(self, event: Event) -> None:
        """The one place the world's state changes. Then every subscriber sees the event."""
        if isinstance(event, PresenceChanged):
            applied = self._presence(event)
            if applied is None:
                return  # changed nothing anyone was shown
            event = applied
        elif isinstance(event, ClientIdChanged):
            target = self.servers.get(event.server)
            if target is None:
                return
            target.client_id = event.client_id
        elif isinstance(event, MessageSent):
            target = self.servers.get(event.server)
            if target is None or event.uid not in target.users:
                return  # from a user who left meanwhile: the frontend would drop it anyway
        elif isinstance(event, ConfigReplaced):
            previous = self.servers
            self.servers = {}
            for info in event.config.servers:
                state = previous.get(info.snowflake) or ServerState(info, populate=False)
                state.info = info
                self.servers[info.snowflake] = state
            self.config = event.config
            self._server_list = None
        elif isinstance(event, (ServerListChanged, ServerClosed)):
            self._server_list = None
        # MessageSent changes no state; it passes through so every listener sees it in order.
        for fn in list(self._subscribers):
            try:
                fn(event)
            except Exception:  # one broken listener must not keep the event from the others
                log.exception("world.subscriber_failed", kind=type(event).__name__)

    def transition(self, new: Config, changes: ConfigDiff) -> Iterator[Event]:
        """The events that move the world from its config to `new` (`changes` = diff(config, new)).

        Apply each event before asking for the next: later ones read the live state the
        earlier ones left. Structural change first (ConfigReplaced), then who loses
        access, then the fresh server list, then one presence per declared user that was
        added, removed or changed. A changed user keeps its live status unless its
        declared status changed. Another source may apply events between two of these
        (a transition can be applied in slices); each is built from the state of its time.
        """
        yield ConfigReplaced(new)
        for snowflake in changes.servers_removed:
            yield ServerClosed(snowflake, removed=True)
        for snowflake in changes.servers_made_private:
            yield ServerClosed(snowflake, removed=False)
        for snowflake in changes.access_changed:
            yield ServerClosed(snowflake, removed=False, everyone=True)
        if changes.server_list_changed:
            yield ServerListChanged()
        for snowflake, client_id in changes.client_ids:
            yield ClientIdChanged(snowflake, client_id)
        for change in changes.users:
            state = self.servers.get(change.server)
            if state is None:
                continue  # removed since (another transition)
            live = state.users.get(change.uid)
            u = change.new
            if u is None:
                if live is not None:
                    yield PresenceChanged(change.server, change.uid, live.status, delete=True)
            elif change.old is None or live is None:
                yield PresenceChanged(change.server, u.uid, u.status, u.username, u.role_color)
            else:
                fields = change.fields
                yield PresenceChanged(
                    change.server, u.uid,
                    u.status if "status" in fields else live.status,
                    u.username if "username" in fields else None,
                    u.role_color if "role_color" in fields else None,
                )

    def _presence(self, event: PresenceChanged) -> Optional[PresenceChanged]:
        """Apply a presence change; the event as applied (what changed), or None if nothing did."""
        state = self.servers.get(event.server)
        if state is None:
            return None  # a server this node no longer has (a change that crossed a reload)
        user = state.users.get(event.uid)
        if event.delete:
            if user is None:
                return None  # a stranger: no client was shown it (the frontend would spawn it)
            state.drop(event.uid)
            return PresenceChanged(event.server, event.uid, event.status, delete=True)
        if user is None:
            if event.username is None:
                # A status for a user who is not (or no longer) here: a change that crossed the user's
                # removal. Shown, it would be a nameless actor.
                return None
            user = UserState(event.uid, event.username, event.status, event.role_color or WHITE)
            state.put(user)
            return PresenceChanged(event.server, event.uid, user.status, user.username, user.role_color)
        renamed = event.username is not None and event.username != user.username
        recoloured = event.role_color is not None and event.role_color != user.role_color
        user.status = event.status
        if renamed:
            user.username = event.username  # type: ignore[assignment]
        if recoloured:
            user.role_color = event.role_color  # type: ignore[assignment]
        state.put(user)
        return PresenceChanged(event.server, event.uid, user.status, user.username if renamed else None,
                               user.role_color if recoloured else None, renamed=renamed)

    def reconfigure(self, new: Config) -> ConfigDiff:
        """Move the world to a new declaration in one step (tools and small configs; the
        daemon's declaration applies the same transition in slices)."""
        changes = diff(self.config, new)
        for event in self.transition(new, changes):
            self.apply(event)
        return changes

    def presence_event(self, server: str, uid: str, status: str, username: Optional[str] = None,
                       role_color: Optional[str] = None, delete: bool = False,
                       exists: Optional[Callable[[str], bool]] = None) -> PresenceChanged:
        """Build (without applying) the event for a presence change, or raise why it cannot apply.

        A new uid needs a username (it becomes a runtime user, drawn #ffffff unless a colour
        is given); only runtime users can be deleted. `exists` answers "is this uid there?"
        in place of the live state, so a batch can be checked as if applied in order.
        """
        state = self.get(server)
        if status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
        known = exists(uid) if exists is not None else uid in state.users
        if delete:
            if not known:
                raise UnknownUser(f"user {uid} is not in server {state.info.id}")
            if state.declared(uid):
                raise DeclaredUser(f"user {uid} is declared for server {state.info.id} (by the config or a data "
                                   "provider) and cannot be removed at runtime: set its status to offline, or "
                                   "remove it from the declaration")
        elif not known:
            if not username:
                raise UnknownUser(f"user {uid} is not in server {state.info.id} (give a username to add it)")
            role_color = role_color or WHITE
        return PresenceChanged(state.snowflake, uid, status, username, color(role_color) if role_color else None,
                               delete)

    def set_presence(self, server: str, uid: str, status: str, username: Optional[str] = None,
                     role_color: Optional[str] = None, delete: bool = False) -> PresenceChanged:
        event = self.presence_event(server, uid, status, username, role_color, delete)
        self.apply(event)
        return event

    def say(self, server: str, uid: str, message: str, channel: str) -> MessageSent:
        state = self.get(server)
        if uid not in state.users:
            raise UnknownUser(f"user {uid} is not in server {state.info.id}")
        event = MessageSent(state.snowflake, uid, message, channel)
        self.apply(event)
        return event

    def set_client_id(self, server: str, client_id: str) -> ClientIdChanged:
        state = self.get(server)
        event = ClientIdChanged(state.snowflake, client_id)
        self.apply(event)
        return event

