"""Loads that bring many long-lived objects at once (a big declaration, a big guild) and the cycle collector.

CPython runs a full cycle collection whenever the tracked objects have grown by a
quarter since the last one, and a full collection visits every tracked object: with a
few hundred thousand (the users of a big server and whatever a library keeps for them)
that is a pause of 100 ms or more on whichever thread allocates, the event loop's
included. During a bulk load the collector is paused; when the last one ends, what
exists is frozen (`gc.freeze`), so later full collections visit only what came after.
Frozen objects are still freed by reference counting when they go (users, configs and
events hold no cycles); only cyclic garbage that happens to exist at the freeze stays.
"""
from __future__ import annotations

import contextlib
import gc
from typing import Iterator

BULK_OBJECTS = 10_000  # entries (users, members) from which a load counts as bulk

_active = 0
_was_enabled = True


def begin() -> None:
    """A bulk load starts; loads may overlap (the collector resumes when the last one ends)."""
    global _active, _was_enabled
    if _active == 0:
        _was_enabled = gc.isenabled()
        gc.disable()
    _active += 1


def end() -> None:
    global _active
    if _active == 0:
        return
    _active -= 1
    if _active == 0:
        gc.freeze()
        if _was_enabled:
            gc.enable()


@contextlib.contextmanager
def bulk(entries: int) -> Iterator[None]:
    """Around a load of about `entries` long-lived entries; below BULK_OBJECTS it does nothing."""
    if entries < BULK_OBJECTS:
        yield
        return
    begin()
    try:
        yield
    finally:
        end()
