"""Which members of a guild one server shows: its filters, and `max_actors` filled online first.

Kept incrementally, so a presence change costs O(1) whatever the guild's size: the shown
members and those waiting for a place, each by rank (0: online, idle or dnd; 1: offline)
in the order they took that rank. Answers what changed for the world; applies nothing.
"""
from __future__ import annotations

from typing import Iterable, Optional

from dbackd.sources.discord.settings import DiscordOptions
from dbackd.sources.discord.mapping import eligible
from dbackd.sources.discord.records import MemberRec

ACTIVE, OFFLINE = 0, 1

# A change for the world: (uid, before, after) as shown members; None is "not shown".
Change = tuple[str, Optional[MemberRec], Optional[MemberRec]]


def _rank(member: MemberRec) -> int:
    return OFFLINE if member.status == "offline" else ACTIVE


class View:
    def __init__(self, options: DiscordOptions):
        self.options = options
        self.shown: dict[str, MemberRec] = {}
        self._shown_by_rank: tuple[dict[str, None], dict[str, None]] = ({}, {})
        self._waiting: tuple[dict[str, MemberRec], dict[str, MemberRec]] = ({}, {})

    @property
    def cap(self) -> Optional[int]:
        return self.options.max_actors

    def rebuild(self, members: Iterable[MemberRec]) -> list[Change]:
        """Start again from every member (a snapshot, new options); the changes against what was shown."""
        before = self.shown
        self.shown = {}
        self._shown_by_rank = ({}, {})
        self._waiting = ({}, {})
        for member in members:
            self._place(member)
        self._balance()
        changes: list[Change] = [(uid, old, None) for uid, old in before.items() if uid not in self.shown]
        changes += [(uid, before.get(uid), new) for uid, new in self.shown.items() if before.get(uid) != new]
        return changes

    def update(self, uid: str, member: Optional[MemberRec]) -> list[Change]:
        """One member changed, arrived (member) or left (None); the changes it causes."""
        old = self.shown.get(uid)
        self._remove(uid)
        if member is not None:
            self._place(member)
        moved_in, moved_out = self._balance()
        changes: list[Change] = []
        new = self.shown.get(uid)
        if old != new:
            changes.append((uid, old, new))
        changes += [(key, None, self.shown[key]) for key in moved_in if key != uid]
        changes += [(key, rec, None) for key, rec in moved_out.items() if key != uid]
        return changes

    def _place(self, member: MemberRec) -> None:
        if not eligible(member, self.options):
            return
        rank = _rank(member)
        if self.cap is None or len(self.shown) < self.cap:
            self.shown[member.uid] = member
            self._shown_by_rank[rank][member.uid] = None
        else:
            self._waiting[rank][member.uid] = member

    def _remove(self, uid: str) -> None:
        member = self.shown.pop(uid, None)
        if member is not None:
            del self._shown_by_rank[_rank(member)][uid]
        for waiting in self._waiting:
            waiting.pop(uid, None)

    def _show(self, member: MemberRec) -> None:
        self.shown[member.uid] = member
        self._shown_by_rank[_rank(member)][member.uid] = None

    def _balance(self) -> tuple[set[str], dict[str, MemberRec]]:
        """Fill free places (active members first), then swap waiting active members in for shown
        offline ones. Returns who moved in, and who moved out (with how they were shown)."""
        moved_in: set[str] = set()
        moved_out: dict[str, MemberRec] = {}
        cap = self.cap
        if cap is None:
            return moved_in, moved_out
        waiting_active, waiting_offline = self._waiting
        while len(self.shown) < cap and (waiting_active or waiting_offline):
            pool = waiting_active or waiting_offline
            uid = next(iter(pool))
            self._show(pool.pop(uid))
            moved_in.add(uid)
        shown_offline = self._shown_by_rank[OFFLINE]
        while waiting_active and shown_offline:
            out = next(iter(shown_offline))
            member = self.shown.pop(out)
            del shown_offline[out]
            waiting_offline[out] = member
            moved_out[out] = member
            uid = next(iter(waiting_active))
            self._show(waiting_active.pop(uid))
            moved_in.add(uid)
        return moved_in, moved_out
