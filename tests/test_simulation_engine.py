"""The engine alone, in virtual time: determinism, statistics against the declared rules,
churn, reloads, and the classic preset's rhythm."""
from __future__ import annotations

import dataclasses
import math
from collections import Counter, defaultdict
from datetime import datetime, timezone

import pytest

from dbackd.fanout import protocol
from dbackd.config import load_file, load_text
from dbackd.config.model import Activity
from dbackd.core.events import MessageSent, PresenceChanged
from dbackd.sources.simulation import Engine
from dbackd.sources.simulation.activity import ActivityCurve
from dbackd.core.world import World

from .conftest import EXAMPLE, ROOT

JAN_1 = datetime(2026, 1, 1, tzinfo=timezone.utc).timestamp()


def load(text: str):
    return load_text(text, "t.yaml", ROOT, {})


class Recorder:
    """Every event the world applies, with the engine time and the status each user had before."""

    def __init__(self, world: World, engine_ref: list):
        self.world = world
        self.engine_ref = engine_ref
        self.events: list[tuple[float, object, str | None]] = []
        self.status = {sf: {uid: u.status for uid, u in s.users.items()} for sf, s in world.servers.items()}
        world.subscribe(self.on_event)

    def on_event(self, event) -> None:
        if not isinstance(event, (PresenceChanged, MessageSent)):
            return  # a reload's structural events
        before = self.status.setdefault(event.server, {}).get(event.uid)
        if isinstance(event, PresenceChanged):
            if event.delete:
                self.status[event.server].pop(event.uid, None)
            else:
                self.status[event.server][event.uid] = event.status
        self.events.append((self.engine_ref[0].now, event, before))

    def of(self, kind):
        return [(t, e, b) for t, e, b in self.events if isinstance(e, kind)]


def recording(config, **kwargs):
    """A world, an engine on it, and a recorder of what the world applies; nothing run yet."""
    world = World(config)
    ref: list = []
    recorder = Recorder(world, ref)
    engine = Engine(world, epoch=kwargs.pop("epoch", JAN_1), **kwargs)
    ref.append(engine)
    return recorder, engine, world


def simulate(config, seconds: float, **kwargs):
    recorder, engine, world = recording(config, **kwargs)
    engine.advance_to(seconds)
    return recorder, engine, world


def stream(recorder: Recorder) -> list:
    return [(round(t, 9), protocol.for_event(e)) for t, e, _ in recorder.events]


def within(observed: float, expected: float, sigmas: float = 4.5, sd: float | None = None) -> bool:
    return abs(observed - expected) <= sigmas * (sd if sd is not None else math.sqrt(expected))


USERS20 = "\n".join(f'      - {{uid: "{100 + i}", username: u{i}, status: {("online", "idle", "dnd", "offline")[i % 4]}}}'
                    for i in range(20))


def one_server(simulation: str, users: str = USERS20) -> str:
    return f'servers:\n  - snowflake: "1"\n    id: a\n    name: A\n    users:\n{users}\n    simulation:\n{simulation}'


# -- determinism --------------------------------------------------------------------------

LIVELY = ROOT / "examples" / "lively.yaml"


def test_same_seed_same_stream_and_another_seed_another():
    config = load_file(LIVELY, env={})
    a, _, _ = simulate(config, 900)
    b, _, _ = simulate(config, 900)
    assert len(a.events) > 500
    assert stream(a) == stream(b)
    c, _, _ = simulate(config, 900, seed=43)
    assert stream(c) != stream(a)


def test_a_server_alone_gives_the_same_stream_as_with_the_others():
    config = load_file(LIVELY, env={})
    full, _, _ = simulate(config, 600)
    plaza = config.servers[0].snowflake
    alone, _, _ = simulate(config, 600, servers={plaza})
    assert stream(alone) == [x for x in stream(full) if x[1]["server"] == plaza]


def test_advancing_in_small_or_big_steps_gives_the_same_stream():
    config = load_file(LIVELY, env={})
    one, _, _ = simulate(config, 600)
    rec, engine, world = recording(config)
    t = 0.0
    while t < 600:
        t = min(600.0, t + 0.7)
        while not engine.advance_to(t, max_steps=3):
            pass
    assert stream(rec) == stream(one)


# -- statistics ---------------------------------------------------------------------------

TRANSITIONS = {
    "online": {"idle": 3, "dnd": 1, "offline": 1},
    "idle": {"online": 2, "offline": 2},
    "dnd": {"online": 1},
    "offline": {"online": 1, "idle": 1, "dnd": 2},
}


def test_transition_frequencies_follow_the_weights():
    rows = "\n".join(f"          {s}: {{{', '.join(f'{k}: {v}' for k, v in row.items())}}}" for s, row in TRANSITIONS.items())
    config = load(one_server(f"      seed: 11\n      messages: {{interval: 0}}\n      presence:\n"
                             f"        interval: 1\n        transitions:\n{rows}\n"))
    rec, engine, _ = simulate(config, 12000)
    changes = rec.of(PresenceChanged)
    assert len(changes) >= 10000
    seen: dict[str, Counter] = defaultdict(Counter)
    for _, event, before in changes:
        seen[before][event.status] += 1
    for status, row in TRANSITIONS.items():
        n = sum(seen[status].values())
        assert set(seen[status]) <= set(row), (status, seen[status])
        total = sum(row.values())
        for target, weight in row.items():
            p = weight / total
            assert within(seen[status][target], n * p, sd=math.sqrt(n * p * (1 - p))), (status, target, seen[status], n)


def test_exponential_rate_matches_the_interval_and_fixed_is_exact():
    config = load(one_server("      seed: 2\n      presence: {interval: 0.5}\n      messages: {interval: 2, timing: fixed}\n"))
    rec, _, _ = simulate(config, 6000)
    changes = [t for t, _, _ in rec.of(PresenceChanged)]
    expected = 6000 / 0.5
    assert within(len(changes), expected)
    gaps = [b - a for a, b in zip(changes, changes[1:])]
    mean = sum(gaps) / len(gaps)
    sd = math.sqrt(sum((g - mean) ** 2 for g in gaps) / len(gaps))
    assert 0.48 < mean < 0.52 and 0.93 < sd / mean < 1.07  # exponential: spread equal to the mean
    spoken = [t for t, _, _ in rec.of(MessageSent)]
    assert spoken == [2.0 * k for k in range(1, len(spoken) + 1)] and len(spoken) == 3000


def test_per_user_rates_grow_with_the_server():
    config = load(one_server("      seed: 9\n      presence: {interval: 20, per: user}\n      messages: {interval: 0}\n"))
    rec, _, _ = simulate(config, 1000)
    assert within(len(rec.of(PresenceChanged)), 1000 * 20 / 20)  # 20 users, 20 s each: one change a second


def test_activity_curve_scales_the_rates_by_local_hour():
    # New York is UTC-5 in January; the curve is linear between its points.
    hours = {0: 0.2, 6: 0.2, 12: 1.0, 18: 3.0}
    curve_text = ", ".join(f"{h}: {m}" for h, m in hours.items())
    config = load(one_server(f"      seed: 4\n      presence: {{interval: 5}}\n      messages: {{interval: 0}}\n"
                             f"      activity: {{timezone: America/New_York, hours: {{{curve_text}}}}}\n"))
    days = 3
    rec, engine, _ = simulate(config, days * 86400)
    points = sorted(hours.items()) + [(24, hours[0])]

    def m(h: float) -> float:
        for (h0, m0), (h1, m1) in zip(points, points[1:]):
            if h0 <= h <= h1:
                return m0 + (m1 - m0) * (h - h0) / (h1 - h0)
        raise AssertionError(h)

    by_hour = Counter()
    for t, _, _ in rec.of(PresenceChanged):
        by_hour[int(((JAN_1 + t - 5 * 3600) % 86400) // 3600)] += 1
    total_expected = 0.0
    for h in range(24):
        expected = days * 3600 / 5 * (m(h) + m(h + 1)) / 2  # the curve is linear within each hour
        total_expected += expected
        assert within(by_hour[h], expected), (h, by_hour[h], expected)
    assert within(sum(by_hour.values()), total_expected)
    assert sum(by_hour.values()) >= 10000


def test_activity_follows_daylight_saving_time():
    curve = ActivityCurve(Activity("Europe/Berlin", ((0.0, 1.0), (20 * 3600.0, 3.0))), epoch=0.0)
    winter = datetime(2026, 1, 15, 19, 0, tzinfo=timezone.utc).timestamp()  # 20:00 CET
    summer = datetime(2026, 7, 15, 18, 0, tzinfo=timezone.utc).timestamp()  # 20:00 CEST
    assert curve.multiplier(winter) == pytest.approx(3.0)
    assert curve.multiplier(summer) == pytest.approx(3.0)
    assert curve.multiplier(summer + 3600) < 3.0


def test_activity_quiet_hours_are_skipped_by_fixed_timing():
    curve = ActivityCurve(Activity("UTC", ((0.0, 0.0), (1 * 3600.0, 0.0), (2 * 3600.0, 1.0), (23 * 3600.0, 1.0))), epoch=0.0)
    # At 00:30 nothing happens until the curve rises after 01:00: 10 s of activity takes
    # sqrt(2·10·3600) s of the ramp from 01:00.
    t = curve.advance(1800.0, 10.0)
    assert t == pytest.approx(3600 + math.sqrt(2 * 10 * 3600))
    assert curve.advance(12 * 3600.0, 10.0) == pytest.approx(12 * 3600 + 10)


def test_messages_come_only_from_allowed_statuses_and_declared_channels():
    config = load(one_server(
        "      seed: 8\n      presence: {interval: 0.5}\n"
        "      messages:\n        interval: 0.5\n        statuses: [online, dnd]\n"
        '        channels: {"7001": 3, "7002": 1}\n        corpus: [one, two, three]\n'))
    rec, _, world = simulate(config, 6000)
    messages = rec.of(MessageSent)
    assert len(messages) >= 10000
    status_at = {}
    for t, event, before in rec.events:
        if isinstance(event, MessageSent):
            assert before in ("online", "dnd"), (t, event, before)
        status_at[event.uid] = before
    channels = Counter(e.channel for _, e, _ in messages)
    assert set(channels) == {"7001", "7002"}
    assert within(channels["7001"], len(messages) * 0.75, sd=math.sqrt(len(messages) * 0.75 * 0.25))
    assert {e.message for _, e, _ in messages} == {"one", "two", "three"}


def test_per_user_weights_and_chattiness():
    config = load(one_server(
        "      seed: 6\n"
        "      presence:\n        interval: 0.5\n"
        "        transitions: {online: {idle: 1}, idle: {online: 1}, dnd: {online: 1}, offline: {online: 1}}\n"
        '        users:\n          "100": {weight: 0}\n          "101": {weight: 5}\n'
        '          "102": {transitions: {online: {dnd: 1}, idle: {dnd: 1}, dnd: {idle: 1}}}\n'
        "      messages:\n        interval: 0.5\n        statuses: [online, idle, dnd, offline]\n"
        '        chattiness: {"103": 0, "104": 3}\n'))
    rec, _, world = simulate(config, 6000)
    changes = Counter(e.uid for _, e, _ in rec.of(PresenceChanged))
    assert changes["100"] == 0
    weight_total = 19 + 4  # 20 users weigh 1 each, except 100 (0) and 101 (5)
    n = sum(changes.values())
    assert within(changes["101"], n * 5 / weight_total)
    assert within(changes["105"], n / weight_total)
    assert {e.status for _, e, _ in rec.of(PresenceChanged) if e.uid == "102"} <= {"dnd", "idle"}
    spoken = Counter(e.uid for _, e, _ in rec.of(MessageSent))
    m = sum(spoken.values())
    assert spoken["103"] == 0
    assert within(spoken["104"], m * 3 / 22)


# -- churn --------------------------------------------------------------------------------

def test_visitors_arrive_named_and_coloured_and_leave_with_delete_within_the_bound():
    config = load(one_server(
        "      seed: 12\n      presence: {interval: 3}\n      messages: {interval: 2}\n"
        "      churn:\n        arrivals: 2s\n        departures: 5s\n        max: 6\n"
        '        names: "guest-{n}"\n        colors: ["#112233", "#445566"]\n'))
    rec, engine, world = simulate(config, 3000)
    declared = {u.uid for u in config.servers[0].users}
    present: set[str] = set()
    arrivals = departures = 0
    most = 0
    for _, event, before in rec.events:
        if isinstance(event, PresenceChanged) and event.uid not in declared:
            if before is None:
                arrivals += 1
                assert event.username == f"guest-{arrivals}" and event.role_color in ("#112233", "#445566")
                assert event.status == "online" and not event.delete
                present.add(event.uid)
            elif event.delete:
                departures += 1
                assert event.uid in present and event.username is None
                present.remove(event.uid)
            else:
                assert event.uid in present and event.username is None  # an ordinary status change
        if isinstance(event, PresenceChanged):
            assert not (event.delete and event.uid in declared), "declared users never leave"
        most = max(most, len(present))
    assert arrivals > 100 and departures > 100
    assert most == 6
    assert set(world.servers["1"].users) == declared | present


# -- following the config ---------------------------------------------------------------

def test_new_rules_continue_from_the_current_statuses():
    before = load(one_server("      seed: 1\n      presence: {interval: 1}\n      messages: {interval: 0}\n"))
    rec, engine, world = simulate(before, 300)
    statuses = {uid: u.status for uid, u in world.servers["1"].users.items()}
    after = load(one_server("      seed: 1\n      presence:\n        interval: 0.1\n"
                            "        transitions: {online: {dnd: 1}, idle: {dnd: 1}, offline: {dnd: 1}, dnd: {online: 1}}\n"
                            "      messages: {interval: 0}\n"))
    world.reconfigure(after)  # the engine follows the world's ConfigReplaced
    assert {uid: u.status for uid, u in world.servers["1"].users.items()} == statuses  # nothing was reset
    mark = len(rec.events)
    engine.advance_to(400)
    later = rec.events[mark:]
    assert within(len(later), 100 / 0.1)  # the new interval
    assert all(e.status == ("online" if b == "dnd" else "dnd") for _, e, b in later)  # the new transitions
    assert all(t > 300 for t, _, _ in later)


def test_users_gone_from_the_world_are_never_picked():
    config = load(one_server("      seed: 3\n      presence: {interval: 0.2}\n"
                             "      messages: {interval: 0.2, statuses: [online, idle, dnd, offline]}\n"))
    rec, engine, world = simulate(config, 10)
    users = world.servers["1"].users
    gone = [uid for uid in list(users)[:15]]
    for uid in gone:  # removed without an event, as a reload may do
        del users[uid]
    mark = len(rec.events)
    engine.advance_to(400)
    assert len(rec.events) - mark > 2000
    assert not {e.uid for _, e, _ in rec.events[mark:]} & set(gone)


def test_servers_added_and_removed_by_a_reload_are_followed():
    text = 'simulation: {seed: 1, presence: {interval: 1}, messages: {interval: 0}}\nservers:\n'
    a = '  - {snowflake: "1", id: a, name: A, users: [{uid: "11", username: x}]}\n'
    b = '  - {snowflake: "2", id: b, name: B, users: [{uid: "21", username: y}]}\n'
    rec, engine, world = simulate(load(text + a), 100)
    both = load(text + a + b)
    world.reconfigure(both)
    engine.advance_to(200)
    assert {e.server for t, e, _ in rec.events if t > 100} == {"1", "2"}
    only_b = load(text + b)
    world.reconfigure(only_b)
    engine.advance_to(300)
    assert {e.server for t, e, _ in rec.events if t > 200} == {"2"}
    assert set(engine.runners) == {"2"}


def test_an_unchanged_config_changes_nothing():
    config = load_file(LIVELY, env={})
    plain, _, _ = simulate(config, 600)
    rec, engine, world = recording(config)
    engine.advance_to(300)
    same = dataclasses.replace(config)
    world.reconfigure(same)
    engine.advance_to(600)
    assert stream(rec) == stream(plain)


# -- the classic preset -------------------------------------------------------------------

def test_classic_preset_keeps_the_original_rhythm():
    config = load_file(EXAMPLE, env={})
    rec, _, world = simulate(config, 20000, seed=5)
    for server in config.servers:
        sf = server.snowflake
        changes = [(t, e, b) for t, e, b in rec.of(PresenceChanged) if e.server == sf]
        messages = [(t, e, b) for t, e, b in rec.of(MessageSent) if e.server == sf]
        assert [t for t, _, _ in changes] == [4.0 * k for k in range(1, 5001)]
        assert [t for t, _, _ in messages] == [5.0 * k for k in range(1, 4001)]
        assert {e.message for _, e, _ in messages} == {
            "hello", "how are you?", "this is a test message", "D-Zone rocks!", "what's up?"}
        assert {e.channel for _, e, _ in messages} == {"527964146659229701"}
    repos = config.servers[3].snowflake
    changes = [(e, b) for _, e, b in rec.of(PresenceChanged) if e.server == repos]
    to = Counter(e.status for e, _ in changes)
    for status in ("online", "idle", "dnd", "offline"):  # a uniformly random status...
        assert within(to[status], len(changes) / 4, sd=math.sqrt(len(changes) * 3 / 16))
    assert sum(e.status == b for e, b in changes) > 1000  # ...its current one included
    who = Counter(e.uid for e, _ in changes)
    assert len(who) == 21 and all(within(n, len(changes) / 21) for n in who.values())  # a uniformly random user
    speakers = Counter(b for _, e, b in rec.of(MessageSent) if e.server == repos)
    assert speakers["offline"] > 100  # the original let any user speak


def test_a_failing_subscriber_does_not_end_a_stream():
    config = load_file(EXAMPLE, env={})
    world = World(config)
    engine = Engine(world, seed=1, servers={config.servers[0].snowflake})
    failures = []

    def flaky(event) -> None:
        if not failures:
            failures.append(event)
            raise RuntimeError("a listener broke")

    world.subscribe(flaky)
    ref: list = [engine]
    rec = Recorder(world, ref)
    engine.advance_to(20)  # the world logs the broken listener and goes on
    assert len(failures) == 1
    assert [t for t, _, _ in rec.events] == [4.0, 5.0, 8.0, 10.0, 12.0, 15.0, 16.0, 20.0, 20.0]
