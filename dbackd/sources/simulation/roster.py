"""A server's users indexed by status, for O(1) random picks.

Kept in step with the world by the engine (it sees every world event), and synced with
the world whenever a pick finds it out of date, so a stale entry can never be acted on.
It holds uids and statuses only; the world remains the truth.
"""
from __future__ import annotations

import random
from typing import Iterable, Iterator, Mapping, Optional

from dbackd.config import STATUSES


class Roster:
    def __init__(self) -> None:
        self.groups: dict[str, list[str]] = {s: [] for s in STATUSES}
        self.where: dict[str, tuple[str, int]] = {}  # uid → (status, index in its group)

    def rebuild(self, users: Mapping[str, object]) -> None:
        """From the world's users (uid → object with .status), in the world's order."""
        self.groups = {s: [] for s in STATUSES}
        self.where = {}
        for uid, user in users.items():
            self.set(uid, getattr(user, "status"))

    def sync(self, users: Mapping[str, object]) -> None:
        """Catch up with the world, keeping the order of users who did not change (so a
        reload that changes nothing changes no pick)."""
        for uid in [uid for uid in self.where if uid not in users]:
            self.remove(uid)
        for uid, user in users.items():
            self.set(uid, getattr(user, "status"))

    def status(self, uid: str) -> Optional[str]:
        found = self.where.get(uid)
        return found[0] if found else None

    def set(self, uid: str, status: str) -> None:
        found = self.where.get(uid)
        if found is not None:
            if found[0] == status:
                return
            self.remove(uid)
        group = self.groups[status]
        self.where[uid] = (status, len(group))
        group.append(uid)

    def remove(self, uid: str) -> None:
        found = self.where.pop(uid, None)
        if found is None:
            return
        status, i = found
        group = self.groups[status]
        last = group.pop()
        if last != uid:  # move the last one into the hole
            group[i] = last
            self.where[last] = (status, i)

    def count(self, statuses: tuple[str, ...]) -> int:
        if len(statuses) == len(STATUSES):  # statuses are unique (the schema says so): everyone
            return len(self.where)
        return sum(len(self.groups[s]) for s in statuses)

    def uids(self, statuses: Iterable[str]) -> Iterator[str]:
        for s in statuses:
            yield from self.groups[s]

    def pick(self, rng: random.Random, statuses: tuple[str, ...]) -> Optional[str]:
        """A uniformly random user among those in `statuses`."""
        n = self.count(statuses)
        if n == 0:
            return None
        r = rng.randrange(n)
        for s in statuses:
            group = self.groups[s]
            if r < len(group):
                return group[r]
            r -= len(group)
        return None  # unreachable

    def weight(self, statuses: tuple[str, ...], weights: Mapping[str, float]) -> float:
        """Total weight of the users in `statuses`: 1 each unless `weights` says otherwise."""
        total = float(self.count(statuses))
        for uid, w in weights.items():
            if self.status(uid) in statuses:
                total += w - 1
        return total

    def pick_weighted(self, rng: random.Random, statuses: tuple[str, ...], weights: Mapping[str, float]) -> Optional[str]:
        """A random user in `statuses`, each with its weight (1 unless `weights` names it).

        O(len(weights)): the named users are walked, the rest are picked uniformly and
        any named one drawn there is redrawn (it already had its chance above).
        """
        if not weights:
            return self.pick(rng, statuses)
        named = [(uid, w) for uid, w in weights.items() if self.status(uid) in statuses]
        special = sum(w for _, w in named)
        plain = self.count(statuses) - len(named)
        total = special + plain
        if total <= 0:
            return None
        r = rng.random() * total
        if r < special:
            for uid, w in named:
                if r < w:
                    return uid
                r -= w
            return named[-1][0]
        for _ in range(32):
            uid = self.pick(rng, statuses)
            if uid is not None and uid not in weights:
                return uid
        rest = [uid for uid in self.uids(statuses) if uid not in weights]
        return rng.choice(rest) if rest else None
