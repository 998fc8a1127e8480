"""The simulation engine: declared rules in, world events out, driven by virtual time.

One heap of next-due steps serves every server (a handful of entries per server, none
per user). `advance_to(t)` runs every step due up to engine time t, in time order, and
each step changes the world only through `World.apply` with an explicit event, so the
hub broadcasts exactly what the world applied. Each server draws from its own random
streams, seeded from (seed, server snowflake, stream), so the same seed and file give
the same events, and one server's stream does not depend on the others.

The engine is synchronous and never reads a clock or touches a socket: the service
(service.py) or the `simulate` command moves its time. It reads the world's users at
every step (through a roster that is checked against the world before it is trusted),
so users removed by a reload or the API are never picked.
"""
from __future__ import annotations

import heapq
import itertools
import math
import random
import secrets
from dataclasses import dataclass
from typing import Any, Iterable, Optional

import structlog

from dbackd.config import STATUSES, Config, Server
from dbackd.config.model import Rate, Simulation
from dbackd.config.generated import name_for, new_uid
from dbackd.core.events import ConfigReplaced, Event, MessageSent, PresenceChanged
from dbackd.core.world import ServerState, World
from dbackd.sources.simulation.activity import ActivityCurve
from dbackd.sources.simulation.roster import Roster

log = structlog.get_logger("dbackd.simulation")

PRESENCE, MESSAGES, ARRIVALS, DEPARTURES = "presence", "messages", "arrivals", "departures"
KINDS = (PRESENCE, MESSAGES, ARRIVALS, DEPARTURES)


@dataclass
class Stream:
    """One kind of step of one server: its rate and the generation of its pending heap entry."""

    rate: Rate
    gen: int = 0
    weight: float = 1.0  # the server's total weight when it was last scheduled (per: user)
    due: Optional[float] = None


class Runner:
    """One simulated server: its rules, random streams and roster."""

    def __init__(self, server: Server, seed: Any, epoch: float):
        self.snowflake = server.snowflake
        self.id = server.id
        self.alive = True
        self.roster = Roster()
        self.visitors: dict[str, None] = {}  # uids that arrived by churn and are still here, in arrival order
        self.arrived = 0  # running number for visitors' names
        self.rngs: dict[str, random.Random] = {}
        self.seed: Any = None
        self.streams: dict[str, Stream] = {}
        self.apply_rules(server.simulation, seed, epoch)  # type: ignore[arg-type]

    def apply_rules(self, rules: Simulation, seed: Any, epoch: float) -> None:
        self.rules = rules
        if seed != self.seed or not self.rngs:
            self.seed = seed
            self.rngs = {kind: random.Random(f"{seed}:{self.snowflake}:{kind}") for kind in KINDS}
        self.curve = ActivityCurve(rules.activity, epoch) if rules.activity else None
        self.presence_weights = {u.uid: u.weight for u in rules.presence.users if u.weight != 1}
        self.user_rules = {u.uid: u for u in rules.presence.users if u.transitions}
        self.chattiness = {uid: w for uid, w in rules.messages.chattiness if w != 1}
        rates = {PRESENCE: rules.presence.rate, MESSAGES: rules.messages.rate}
        if rules.churn is not None:
            rates[ARRIVALS] = rules.churn.arrivals
            rates[DEPARTURES] = rules.churn.departures
        old = self.streams
        self.streams = {kind: Stream(rate, gen=old[kind].gen if kind in old else 0)
                        for kind, rate in rates.items() if rate.interval > 0}
        for kind, stream in old.items():
            if kind not in self.streams:
                stream.gen += 1  # invalidate what is still on the heap
        self.per_user = [kind for kind, s in self.streams.items() if s.rate.per == "user"]

    def forget_departed(self, state: ServerState) -> None:
        """Visitors who left the world some other way (a reload, the API) are no longer ours."""
        for uid in [u for u in self.visitors if u not in state.users]:
            del self.visitors[uid]

    def weight(self, kind: str) -> float:
        """The server's rate multiplier for a stream: 1, or its users' total weight (per: user)."""
        stream = self.streams[kind]
        if stream.rate.per != "user":
            return 1.0
        if kind == PRESENCE:
            return self.roster.weight(STATUSES, self.presence_weights)
        return self.roster.weight(self.rules.messages.statuses, self.chattiness)


class Engine:
    def __init__(self, world: World, *, seed: Any = None, epoch: float = 0.0,
                 servers: Optional[Iterable[str]] = None):
        """
        seed: replaces every server's seed (None: each server's own, or a random one).
        epoch: the Unix time at engine time 0 (for the activity curve).
        servers: simulate only these snowflakes (None: all).
        """
        self.world = world
        self.now = 0.0
        self.epoch = epoch
        self.seed = seed
        self.random_seed = secrets.randbelow(2**32)  # for servers that name no seed
        self.only = set(servers) if servers is not None else None
        self.runners: dict[str, Runner] = {}
        self.steps = 0
        self.failures = 0
        self._heap: list[tuple[float, int, Runner, str, int]] = []
        self._seq = itertools.count()
        self._dirty: dict[Runner, None] = {}
        self._following = False
        world.subscribe(self._on_world_event)
        self.on_config(world.config)
        self._following = True

    def close(self) -> None:
        self.world.unsubscribe(self._on_world_event)
        for runner in self.runners.values():
            runner.alive = False
        self.runners.clear()
        self._heap.clear()

    # -- following the config ---------------------------------------------------------
    def on_config(self, config: Config) -> None:
        """Follow a new config (the world has applied it; the engine hears it as ConfigReplaced):
        new rules continue from the current statuses, servers that appeared start, servers that
        went (or stopped simulating) stop."""
        wanted = {s.snowflake: s for s in config.servers
                  if s.simulation is not None and (self.only is None or s.snowflake in self.only)
                  and s.snowflake in self.world.servers}
        for snowflake in list(self.runners):
            if snowflake not in wanted:
                runner = self.runners.pop(snowflake)
                runner.alive = False
                self._dirty.pop(runner, None)
                log.info("simulation.server_stopped", server=runner.id)
        for snowflake, server in wanted.items():
            state = self.world.servers[snowflake]
            rules = server.simulation
            assert rules is not None
            runner = self.runners.get(snowflake)
            if runner is None:
                runner = self.runners[snowflake] = Runner(server, self._seed_for(rules), self.epoch)
                runner.roster.rebuild(state.users)
                self._schedule_all(runner, self.now)
                # At start-up the service logs one line for all; later (a reload) each is news.
                (log.info if self._following else log.debug)(
                    "simulation.server_started", server=server.id, seed=runner.seed, users=len(state.users))
                continue
            runner.id = server.id
            runner.roster.sync(state.users)
            runner.forget_departed(state)
            if rules != runner.rules:
                runner.apply_rules(rules, self._seed_for(rules), self.epoch)
                self._schedule_all(runner, self.now)
                log.info("simulation.rules_changed", server=server.id, seed=runner.seed)

    def _seed_for(self, rules: Simulation) -> Any:
        if self.seed is not None:
            return self.seed
        return rules.seed if rules.seed is not None else self.random_seed

    # -- time -------------------------------------------------------------------------
    def next_due(self) -> Optional[float]:
        """Engine time of the next step, or None if nothing is scheduled."""
        heap = self._heap
        while heap:
            _, _, runner, kind, gen = heap[0]
            stream = runner.streams.get(kind)
            if runner.alive and stream is not None and stream.gen == gen:
                return heap[0][0]
            heapq.heappop(heap)
        return None

    def advance_to(self, t: float, max_steps: Optional[int] = None) -> bool:
        """Run every step due up to engine time t. Returns False if it stopped at max_steps
        (call again to go on), True once it has reached t."""
        heap = self._heap
        done = 0
        self._flush_dirty(self.now)
        while heap and heap[0][0] <= t:
            if max_steps is not None and done >= max_steps:
                return False
            due, _, runner, kind, gen = heapq.heappop(heap)
            stream = runner.streams.get(kind)
            if not runner.alive or stream is None or stream.gen != gen:
                continue
            self.now = due
            self._step(runner, kind)
            self._schedule(runner, kind, due)
            if self._dirty:
                self._flush_dirty(due)
            done += 1
        self.steps += done
        if t > self.now:
            self.now = t
        return True

    def _schedule_all(self, runner: Runner, t: float) -> None:
        for kind in runner.streams:
            self._schedule(runner, kind, t)

    def _schedule(self, runner: Runner, kind: str, t: float) -> None:
        stream = runner.streams.get(kind)
        if stream is None:
            return
        stream.gen += 1
        weight = stream.weight = runner.weight(kind)
        if weight <= 0:
            stream.due = None  # nobody to act (per: user); a change in the world wakes it
            return
        gap = stream.rate.interval / weight
        if stream.rate.timing != "fixed":
            gap *= runner.rngs[kind].expovariate(1.0)
        due = runner.curve.advance(t, gap) if runner.curve is not None else t + gap
        stream.due = due
        if due != math.inf:
            heapq.heappush(self._heap, (due, next(self._seq), runner, kind, stream.gen))

    def _flush_dirty(self, t: float) -> None:
        """Per-user rates follow the number of users: re-draw when it changed. Exponential gaps
        are memoryless, so drawing again from now is exact; a fixed gap keeps its phase."""
        dirty, self._dirty = self._dirty, {}
        for runner in dirty:
            if not runner.alive:
                continue
            for kind in runner.per_user:
                stream = runner.streams[kind]
                if runner.weight(kind) == stream.weight:
                    continue
                if stream.rate.timing != "fixed" or stream.due is None:
                    self._schedule(runner, kind, t)

    # -- steps ------------------------------------------------------------------------
    def _step(self, runner: Runner, kind: str) -> None:
        """Decide one step, then apply its event."""
        state = self.world.servers.get(runner.snowflake)
        if state is None:
            return
        try:
            if kind == PRESENCE:
                event = self._presence(runner, state)
            elif kind == MESSAGES:
                event = self._message(runner, state)
            elif kind == ARRIVALS:
                event = self._arrival(runner, state)
            else:
                event = self._departure(runner, state)
        except Exception:  # one bad step must not stop the world; it is logged and skipped
            self.failures += 1
            log.exception("simulation.step_failed", server=runner.id, kind=kind)
            return
        if event is not None:
            self.world.apply(event)

    def _pick(self, runner: Runner, state: ServerState, rng: random.Random, statuses: tuple[str, ...],
              weights: dict[str, float]) -> Optional[str]:
        """A user by the roster, checked against the world; a stale roster is synced first."""
        for _ in range(2):
            uid = runner.roster.pick_weighted(rng, statuses, weights)
            if uid is None:
                return None
            user = state.users.get(uid)
            if user is not None and user.status == runner.roster.status(uid):
                return uid
            runner.roster.sync(state.users)
        return None

    def _presence(self, runner: Runner, state: ServerState) -> Optional[Event]:
        rules = runner.rules.presence
        rng = runner.rngs[PRESENCE]
        uid = self._pick(runner, state, rng, STATUSES, runner.presence_weights)
        if uid is None:
            return None
        row = rules.row(state.users[uid].status, runner.user_rules.get(uid))
        if row is None or not row.values:
            return None  # this status is kept
        return PresenceChanged(state.snowflake, uid, row.pick(rng))

    def _message(self, runner: Runner, state: ServerState) -> Optional[Event]:
        rules = runner.rules.messages
        rng = runner.rngs[MESSAGES]
        uid = self._pick(runner, state, rng, rules.statuses, runner.chattiness)
        if uid is None:
            return None
        line = rules.corpus[rng.randrange(len(rules.corpus))]
        return MessageSent(state.snowflake, uid, line, rules.channels.pick(rng))

    def _arrival(self, runner: Runner, state: ServerState) -> Optional[Event]:
        churn = runner.rules.churn
        assert churn is not None
        runner.forget_departed(state)
        if len(runner.visitors) >= churn.max:
            return None
        rng = runner.rngs[ARRIVALS]
        runner.arrived += 1
        uid = new_uid(rng, state.users.__contains__)
        if isinstance(churn.names, str):
            name = name_for(churn.names, runner.arrived)
        else:
            in_use = {state.users[v].username for v in runner.visitors}
            free = [w for w in churn.names if w not in in_use]
            name = rng.choice(free) if free else f"{rng.choice(churn.names)}-{runner.arrived}"
        colour = churn.colors[rng.randrange(len(churn.colors))]
        runner.visitors[uid] = None
        return PresenceChanged(state.snowflake, uid, churn.status, username=name, role_color=colour)

    def _departure(self, runner: Runner, state: ServerState) -> Optional[Event]:
        runner.forget_departed(state)
        if not runner.visitors:
            return None
        rng = runner.rngs[DEPARTURES]
        uid = list(runner.visitors)[rng.randrange(len(runner.visitors))]
        del runner.visitors[uid]
        return PresenceChanged(state.snowflake, uid, "offline", delete=True)

    # -- watching the world -----------------------------------------------------------
    def _on_world_event(self, event: Event) -> None:
        """Follow config changes, and keep rosters in step with every change, whoever made it."""
        if isinstance(event, ConfigReplaced):
            self.on_config(event.config)
            return
        if not isinstance(event, PresenceChanged):
            return
        runner = self.runners.get(event.server)
        if runner is None:
            return
        if event.delete:
            runner.roster.remove(event.uid)
            runner.visitors.pop(event.uid, None)
        else:
            runner.roster.set(event.uid, event.status)
        if runner.per_user:
            self._dirty[runner] = None
