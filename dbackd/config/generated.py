"""Deterministic uids and names for made-up users: `generate` (at build time) and visitors (churn, at run time).

Pure functions of their seed and inputs; they read no config and change nothing.
"""
from __future__ import annotations

import random
from typing import Any, Callable, Iterable

from dbackd.config.values import STATUSES, color


def new_uid(rng: random.Random, taken: Callable[[str], bool]) -> str:
    """A fresh 18-digit snowflake-like uid that `taken` does not know."""
    while True:
        uid = str(rng.randrange(10**17, 10**18))
        if not taken(uid):
            return uid


def name_for(names: Any, n: int) -> str:
    """The n-th name (1-based) of a pattern ("guest-{n}") or a word list (numbered once it runs out)."""
    if isinstance(names, str):
        return names.replace("{n}", str(n))
    words = list(names)
    word = words[(n - 1) % len(words)]
    lap = (n - 1) // len(words)
    return word if lap == 0 else f"{word}-{lap + 1}"


def generated_users(generate: dict, seed: Any, snowflake: str, taken: Iterable[str]) -> list[tuple[str, str, str, str]]:
    """(uid, username, status, roleColor) for `generate`, the same for the same seed and server."""
    rng = random.Random(f"generate:{'' if seed is None else seed}:{snowflake}")
    used = set(taken)
    statuses = [s for s in STATUSES if generate["statuses"].get(s, 0) > 0]
    weights = [generate["statuses"][s] for s in statuses]
    out = []
    for n in range(1, generate["count"] + 1):
        uid = new_uid(rng, used.__contains__)
        used.add(uid)
        status = rng.choices(statuses, weights)[0]
        out.append((uid, name_for(generate["names"], n), status, color(rng.choice(generate["colors"]))))
    return out
