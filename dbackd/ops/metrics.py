"""Prometheus metrics of one daemon, served as text at GET /metrics.

Each daemon has its own CollectorRegistry (never the process-wide one), so several
daemons in one process, as in the tests, keep separate numbers. Counters that other
parts already keep (the hub's frames and drops, open sockets) are read at scrape time;
world events are counted as the world hands them out, reloads as the lifecycle moments
tell them, and the rest when the sessions and the OAuth verifier report them. Nothing
here changes state or writes to a client, and no label ever carries a secret or a value
a client chose freely.
"""
from __future__ import annotations

import re
import time
import typing
from typing import Callable, Iterator, Optional

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from dbackd.version import __version__
from dbackd.core.events import Event
from dbackd.fanout.hub import Hub
from dbackd.core.lifecycle import Listener, Moments
from dbackd.core.world import World

# Refusal reasons the session reports (access.Verdict values and unknown_server).
REFUSAL_REASONS = ("unknown_server", "auth_failed", "auth_required", "throttled", "too_many_joins")
# OAuth outcomes present at zero from the start; other names appear when first reported.
OAUTH_OUTCOMES = ("allowed", "denied", "invalid_token", "mismatch", "discord_error", "timeout", "rate_limited")
# Seconds; a call to Discord usually takes tens to hundreds of milliseconds.
OAUTH_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def event_kind(cls: type) -> str:
    """PresenceChanged -> presence_changed: the `kind` label of an event class."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", cls.__name__).lower()


class _Live:
    """Numbers read from the running parts at scrape time."""

    def __init__(self, world: World, hub: Hub, uptime: Callable[[], float]):
        self.world = world
        self.hub = hub
        self.uptime = uptime

    def describe(self) -> Iterator[Metric]:
        return self._families()

    def collect(self) -> Iterator[Metric]:
        return self._families(live=True)

    def _families(self, live: bool = False) -> Iterator[Metric]:
        open_ = GaugeMetricFamily("dbackd_connections", "Open WebSocket connections, joined to a server or not.")
        members = GaugeMetricFamily("dbackd_server_connections", "Open WebSocket connections joined to each server.",
                                    labels=["server"])
        servers = GaugeMetricFamily("dbackd_servers", "Servers in the world.")
        frames = CounterMetricFamily("dbackd_frames_sent", "WebSocket frames written to clients.")
        slow = CounterMetricFamily("dbackd_slow_clients_dropped",
                                   "Clients disconnected (1013) because their outbound buffer passed the limit.")
        uptime = GaugeMetricFamily("dbackd_uptime_seconds", "Seconds since the daemon started listening.")
        if live:
            hub, world = self.hub, self.world
            open_.add_metric([], len(hub.connections))
            for state in world:
                members.add_metric([state.info.id], hub.count(state.snowflake))
            servers.add_metric([], len(world.servers))
            frames.add_metric([], hub.frames_sent)
            slow.add_metric([], hub.slow_dropped)
            uptime.add_metric([], self.uptime())
        yield from (open_, members, servers, frames, slow, uptime)


class Metrics(Listener):
    """The daemon's metrics; its methods are what other parts call to report."""

    def __init__(self, world: World, hub: Hub, moments: Moments, uptime: Callable[[], float], loaded_at: float):
        """`loaded_at`: the Unix time the running config was loaded."""
        self.registry = CollectorRegistry()
        r = self.registry
        self.joins = Counter("dbackd_joins", "Sockets that joined a server, by server id and how (public or auth).",
                             ["server", "via"], registry=r)
        self.refusals = Counter("dbackd_join_refusals", "connect requests refused, by reason.", ["reason"], registry=r)
        self.events = Counter("dbackd_world_events", "Changes applied to the world, by kind.", ["kind"], registry=r)
        self.reloads = Counter("dbackd_config_reloads", "Config reloads attempted.", registry=r)
        self.reloads_failed = Counter("dbackd_config_reloads_failed", "Config reloads that failed (the old config stays).",
                                      registry=r)
        self.last_reload_ok = Gauge("dbackd_config_last_reload_successful",
                                    "1 if the last config reload (or the start-up load) succeeded, else 0.", registry=r)
        self.last_reload_time = Gauge("dbackd_config_last_reload_success_timestamp_seconds",
                                      "Unix time of the last successful config load (start-up or reload).", registry=r)
        self.oauth = Counter("dbackd_oauth_verifications", "Discord OAuth2 verifications, by outcome.", ["outcome"],
                             registry=r)
        self.oauth_seconds = Histogram("dbackd_oauth_verification_seconds", "Time taken by one OAuth2 verification.",
                                       buckets=OAUTH_BUCKETS, registry=r)
        self.oauth_guard = Counter("dbackd_oauth_discord_guard",
                                   "Discord's invalid request limit: answers that count against it (invalid), and "
                                   "requests not sent because half the limit was reached (refused).", ["kind"],
                                   registry=r)
        for kind in ("invalid", "refused"):
            self.oauth_guard.labels(kind)
        self.connections_refused = Counter("dbackd_connections_refused",
                                           "Connections answered 503 at accept, by reason (full, address_full).",
                                           ["reason"], registry=r)
        Gauge("dbackd_build_info", "Always 1; the version in a label.", ["version"], registry=r).labels(__version__).set(1)
        r.register(_Live(world, hub, uptime))
        ProcessCollector(registry=r)  # memory, CPU, open files of this process (Linux)

        for reason in REFUSAL_REASONS:
            self.refusals.labels(reason)
        for outcome in OAUTH_OUTCOMES:
            self.oauth.labels(outcome)
        # One counter per event class, looked up once: the world hands out thousands a second.
        self._per_event = {cls: self.events.labels(event_kind(cls)) for cls in typing.get_args(Event)}
        self.last_reload_ok.set(1)  # a daemon only exists once its config loaded
        self.last_reload_time.set(loaded_at)
        world.subscribe(self.on_event)
        moments.listen(self)

    def register(self, collector: object) -> None:
        """Numbers another part keeps, read at scrape time (an object with collect() and describe())."""
        self.registry.register(collector)  # type: ignore[arg-type]

    # -- reported by other parts -----------------------------------------------------
    def joined(self, server: str, via: str) -> None:
        self.joins.labels(server, via).inc()

    def refused(self, reason: str) -> None:
        self.refusals.labels(reason).inc()

    def oauth_verification(self, outcome: str, seconds: float) -> None:
        """One OAuth2 check: outcome is one of a small fixed set (allowed, denied, error, ...)."""
        self.oauth.labels(outcome).inc()
        self.oauth_seconds.observe(seconds)

    def oauth_guarded(self, kind: str) -> None:
        self.oauth_guard.labels(kind).inc()

    def connection_refused(self, reason: str) -> None:
        self.connections_refused.labels(reason).inc()

    def on_event(self, event: Event) -> None:
        self._per_event[type(event)].inc()

    # -- daemon lifecycle -------------------------------------------------------------
    def on_reload_finished(self, ok: bool, error: Optional[str]) -> None:
        self.reloads.inc()
        self.last_reload_ok.set(1 if ok else 0)
        if ok:
            self.last_reload_time.set(time.time())
        else:
            self.reloads_failed.inc()

    # -- exposition -------------------------------------------------------------------
    def render(self, accept: str = "") -> tuple[bytes, str]:
        """The exposition for an Accept header: (body, content type)."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type
