"""Prometheus metrics of one daemon, served as text at GET /metrics.

Each daemon keeps its own numbers (never the process-wide registry), so several daemons
in one process, as in the tests, keep separate counts. The numbers are plain counters
kept here; prometheus-client is loaded, and its registry built, only at the first
scrape, so a daemon that is never scraped never loads it. Counters that other parts
already keep (the hub's frames and drops, open sockets) are read at scrape time; world
events are counted as the world hands them out, reloads as the lifecycle moments tell
them, and the rest when the sessions and the OAuth verifier report them. Nothing here
changes state or writes to a client, and no label ever carries a secret or a value a
client chose freely.
"""
from __future__ import annotations

import bisect
import re
import time
import typing
from typing import Any, Callable, Iterator, Optional

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


class _Counter:
    """A counter by label values, each remembering when it was first counted (its `_created`)."""

    def __init__(self, name: str, doc: str, labels: tuple[str, ...] = ()):
        self.name, self.doc, self.labels = name, doc, labels
        self.values: dict[tuple[str, ...], list[float]] = {}  # label values -> [count, created]

    def child(self, *values: str) -> list[float]:
        entry = self.values.get(values)
        if entry is None:
            entry = self.values[values] = [0.0, time.time()]
        return entry

    def inc(self, *values: str) -> None:
        self.child(*values)[0] += 1

    def family(self, families: Any) -> Any:
        out = families.CounterMetricFamily(self.name, self.doc, labels=list(self.labels))
        for values, (count, created) in self.values.items():
            out.add_metric(list(values), count, created=created)
        return out


class _Live:
    """Numbers read from the running parts at scrape time."""

    def __init__(self, world: World, hub: Hub, uptime: Callable[[], float]):
        self.world = world
        self.hub = hub
        self.uptime = uptime

    def describe(self) -> Iterator[Any]:
        return self._families()

    def collect(self) -> Iterator[Any]:
        return self._families(live=True)

    def _families(self, live: bool = False) -> Iterator[Any]:
        from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily

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


class _Own:
    """The numbers the Metrics keep, as Prometheus families at scrape time."""

    def __init__(self, metrics: "Metrics"):
        self.metrics = metrics

    def describe(self) -> Iterator[Any]:
        return self.collect()

    def collect(self) -> Iterator[Any]:
        from prometheus_client import metrics_core as families
        from prometheus_client.utils import floatToGoString

        m = self.metrics
        for counter in m.counters:
            yield counter.family(families)
        last_ok = families.GaugeMetricFamily("dbackd_config_last_reload_successful",
                                             "1 if the last config reload (or the start-up load) succeeded, else 0.")
        last_ok.add_metric([], m.last_reload_ok)
        yield last_ok
        last_time = families.GaugeMetricFamily("dbackd_config_last_reload_success_timestamp_seconds",
                                               "Unix time of the last successful config load (start-up or reload).")
        last_time.add_metric([], m.last_reload_time)
        yield last_time
        seconds = families.HistogramMetricFamily("dbackd_oauth_verification_seconds",
                                                 "Time taken by one OAuth2 verification.")
        cumulative, buckets = 0, []
        for bound, count in zip((*OAUTH_BUCKETS, float("inf")), m.oauth_buckets):
            cumulative += count
            buckets.append((floatToGoString(bound), cumulative))
        seconds.add_metric([], buckets, m.oauth_sum)
        yield seconds
        build = families.GaugeMetricFamily("dbackd_build_info", "Always 1; the version in a label.", labels=["version"])
        build.add_metric([__version__], 1)
        yield build


class Metrics(Listener):
    """The daemon's metrics; its methods are what other parts call to report."""

    def __init__(self, world: World, hub: Hub, moments: Moments, uptime: Callable[[], float], loaded_at: float):
        """`loaded_at`: the Unix time the running config was loaded."""
        self.joins = _Counter("dbackd_joins", "Sockets that joined a server, by server id and how (public or auth).",
                              ("server", "via"))
        self.refusals = _Counter("dbackd_join_refusals", "connect requests refused, by reason.", ("reason",))
        self.events = _Counter("dbackd_world_events", "Changes applied to the world, by kind.", ("kind",))
        self.reloads = _Counter("dbackd_config_reloads", "Config reloads attempted.")
        self.reloads_failed = _Counter("dbackd_config_reloads_failed", "Config reloads that failed (the old config stays).")
        self.oauth = _Counter("dbackd_oauth_verifications", "Discord OAuth2 verifications, by outcome.", ("outcome",))
        self.oauth_guard = _Counter("dbackd_oauth_discord_guard",
                                    "Discord's invalid request limit: answers that count against it (invalid), and "
                                    "requests not sent because half the limit was reached (refused).", ("kind",))
        self.connections_refused = _Counter("dbackd_connections_refused",
                                            "Connections answered 503 at accept, by reason (full, address_full).",
                                            ("reason",))
        self.counters = (self.joins, self.refusals, self.events, self.reloads, self.reloads_failed, self.oauth,
                         self.oauth_guard, self.connections_refused)
        self.oauth_buckets = [0] * (len(OAUTH_BUCKETS) + 1)  # per bucket, the last one +Inf
        self.oauth_sum = 0.0
        self.last_reload_ok = 1  # a daemon only exists once its config loaded
        self.last_reload_time = loaded_at
        for counter in (self.reloads, self.reloads_failed):
            counter.child()
        for kind in ("invalid", "refused"):
            self.oauth_guard.child(kind)
        for reason in REFUSAL_REASONS:
            self.refusals.child(reason)
        for outcome in OAUTH_OUTCOMES:
            self.oauth.child(outcome)
        # One counter per event class, looked up once: the world hands out thousands a second.
        self._per_event = {cls: self.events.child(event_kind(cls)) for cls in typing.get_args(Event)}
        self._collectors: list[object] = [_Own(self), _Live(world, hub, uptime)]
        self._registry: Any = None  # prometheus-client's, made at the first scrape
        world.subscribe(self.on_event)
        moments.listen(self)

    def register(self, collector: object) -> None:
        """Numbers another part keeps, read at scrape time (an object with collect() and describe())."""
        self._collectors.append(collector)
        if self._registry is not None:
            self._registry.register(collector)

    # -- reported by other parts -----------------------------------------------------
    def joined(self, server: str, via: str) -> None:
        self.joins.inc(server, via)

    def refused(self, reason: str) -> None:
        self.refusals.inc(reason)

    def oauth_verification(self, outcome: str, seconds: float) -> None:
        """One OAuth2 check: outcome is one of a small fixed set (allowed, denied, error, ...)."""
        self.oauth.inc(outcome)
        self.oauth_buckets[bisect.bisect_left(OAUTH_BUCKETS, seconds)] += 1
        self.oauth_sum += seconds

    def oauth_guarded(self, kind: str) -> None:
        self.oauth_guard.inc(kind)

    def connection_refused(self, reason: str) -> None:
        self.connections_refused.inc(reason)

    def on_event(self, event: Event) -> None:
        self._per_event[type(event)][0] += 1

    # -- daemon lifecycle -------------------------------------------------------------
    def on_reload_finished(self, ok: bool, error: Optional[str]) -> None:
        self.reloads.inc()
        self.last_reload_ok = 1 if ok else 0
        if ok:
            self.last_reload_time = time.time()
        else:
            self.reloads_failed.inc()

    # -- exposition -------------------------------------------------------------------
    def render(self, accept: str = "") -> tuple[bytes, str]:
        """The exposition for an Accept header: (body, content type)."""
        from prometheus_client.exposition import choose_encoder

        encoder, content_type = choose_encoder(accept)
        return encoder(self._scraped()), content_type

    def _scraped(self) -> Any:
        if self._registry is None:
            from prometheus_client import CollectorRegistry, ProcessCollector

            registry = CollectorRegistry()
            for collector in self._collectors:
                registry.register(collector)  # type: ignore[arg-type]
            ProcessCollector(registry=registry)  # memory, CPU, open files of this process (Linux)
            self._registry = registry
        return self._registry
