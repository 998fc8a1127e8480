"""What a simulation did, for `dbackd simulate`: counts per server and the time spent in each status.

It listens to the world like any subscriber and reads the time from a callable; it
changes nothing and formats text only.
"""
from __future__ import annotations

from typing import Callable

from dbackd.config import STATUSES
from dbackd.core.events import Event, MessageSent, PresenceChanged
from dbackd.core.world import World


class ServerTally:
    def __init__(self, users: dict[str, str], t: float):
        self.presence = 0
        self.messages = 0
        self.arrivals = 0
        self.departures = 0
        self.became = dict.fromkeys(STATUSES, 0)
        self.time = dict.fromkeys(STATUSES, 0.0)  # user-seconds spent in each status
        self.status = dict(users)
        self.since = dict.fromkeys(users, t)

    def close(self, uid: str, t: float) -> None:
        self.time[self.status[uid]] += t - self.since[uid]
        self.since[uid] = t


class Tally:
    """Subscribe to a world; `summary()` afterwards."""

    def __init__(self, world: World, now: Callable[[], float]):
        self.world = world
        self.now = now
        t = now()
        self.servers = {sf: ServerTally({uid: u.status for uid, u in state.users.items()}, t)
                        for sf, state in world.servers.items()}
        world.subscribe(self.on_event)

    def on_event(self, event: Event) -> None:
        tally = self.servers.get(getattr(event, "server", None))  # type: ignore[arg-type]
        if tally is None:
            return
        t = self.now()
        if isinstance(event, MessageSent):
            tally.messages += 1
        elif isinstance(event, PresenceChanged):
            known = event.uid in tally.status
            if known:
                tally.close(event.uid, t)
            if event.delete:
                tally.departures += 1
                if known:
                    del tally.status[event.uid], tally.since[event.uid]
                return
            if known:
                tally.presence += 1
                tally.became[event.status] += 1
            else:
                tally.arrivals += 1
                tally.since[event.uid] = t
            tally.status[event.uid] = event.status

    def summary(self, seconds: float, seeds: dict[str, object], only: set[str] | None = None) -> str:
        t = self.now()
        lines = []
        for sf, state in self.world.servers.items():
            if only is not None and sf not in only:
                continue
            tally = self.servers[sf]
            head = f"{state.info.id} ({state.info.name}, {sf})"
            if sf not in seeds:
                lines.append(f"{head}: not simulated")
                continue
            for uid in list(tally.status):
                tally.close(uid, t)
            lines.append(f"{head}, seed {seeds[sf]}: {tally.presence} status changes, {tally.messages} messages, "
                         f"{tally.arrivals} arrivals, {tally.departures} departures in {seconds:g} s")
            total = sum(tally.time.values()) or 1.0
            now = dict.fromkeys(STATUSES, 0)
            for status in tally.status.values():
                now[status] += 1
            lines.append(f"  {'status':<8}  {'users now':>9}  {'changes to':>10}  {'share of time':>13}")
            for s in STATUSES:
                lines.append(f"  {s:<8}  {now[s]:>9}  {tally.became[s]:>10}  {100 * tally.time[s] / total:>12.1f}%")
        return "\n".join(lines)
