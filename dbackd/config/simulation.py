"""The `simulation` blocks of a config: presets, inheritance, and the checks a schema cannot say.

A server's rules are layered, later layers winning key by key:

    built-in defaults (the schema's `default`s, for keys no layer sets)
    ← the top-level block's preset ← the top-level block
    ← the server block's preset   ← the server block

Mappings merge key by key; lists, scalars, a transition row (`online: {...}`), the
activity `hours` curve, `channels` and `generate.statuses` are replaced whole. `null`
for activity, churn or generate drops an inherited one.

This module works on plain data only: it reads the blocks as written (before the
schema fills defaults into them), reports problems with file positions, reads corpus
files, and hands the model one merged, default-filled mapping per server. It never
touches the running world.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable, Optional, Sequence
from zoneinfo import ZoneInfoNotFoundError

from dbackd.config import schema as _schema
from dbackd.config.errors import Problem
from dbackd.config.paths import Unreadable, located, read_text
from dbackd.config.source import Source
from dbackd.config.values import STATUSES, seconds, time_of_day, zone

CLASSIC_LINES = ["hello", "how are you?", "this is a test message", "D-Zone rocks!", "what's up?"]
CLASSIC_CHANNEL = "527964146659229701"

# What a preset sets. `seed`, `enabled` and `generate` are left to the blocks.
PRESETS: dict[str, dict[str, Any]] = {
    "classic": {
        # The original backend: every 4 s a uniformly random user takes a uniformly random
        # status (its current one included); every 5 s a uniformly random user, whatever its
        # status, says one of five lines in one channel.
        "presence": {"interval": 4, "timing": "fixed", "per": "server",
                     "transitions": {s: {t: 1 for t in STATUSES} for s in STATUSES}, "users": {}},
        "messages": {"interval": 5, "timing": "fixed", "per": "server", "corpus": list(CLASSIC_LINES),
                     "channels": [CLASSIC_CHANNEL], "statuses": list(STATUSES), "chattiness": {}},
        "activity": None,
        "churn": None,
    },
}

# Paths (with "*" for any key) whose value replaces the inherited one instead of merging into it.
_WHOLE = {
    ("presence", "transitions", "*"),
    ("presence", "users", "*", "transitions", "*"),
    ("messages", "channels"),
    ("activity", "hours"),
    ("generate", "statuses"),
}

MIN_INTERVAL = 0.01  # seconds; anything faster is a typo, and 0 already means "off"


def _preset(name: str) -> dict[str, Any]:
    if name == "none":
        filled = _schema.fill_defaults({}, "simulation")
        return {"presence": filled["presence"], "messages": filled["messages"], "activity": None, "churn": None}
    return copy.deepcopy(PRESETS[name])


# -- layering ----------------------------------------------------------------------------

Layers = tuple[Optional[dict], list[Optional[dict]]]


def snapshot(data: Any) -> Layers:
    """The simulation blocks exactly as written; call before the schema fills defaults in."""
    if not isinstance(data, dict):
        return None, []
    top = data.get("simulation")
    servers = data.get("servers") if isinstance(data.get("servers"), list) else []
    own = [s.get("simulation") if isinstance(s, dict) else None for s in servers]
    keep = lambda block: copy.deepcopy(block) if isinstance(block, dict) else None  # noqa: E731
    return keep(top), [keep(b) for b in own]


def merge(base: dict, over: dict, path: tuple = ()) -> dict:
    """Merge `over` into `base` in place (see the module doc for what is replaced whole)."""
    for key, value in over.items():
        here = path + (key,)
        if isinstance(value, dict) and isinstance(base.get(key), dict) and not _whole(here):
            merge(base[key], value, here)
        else:
            base[key] = copy.deepcopy(value)
    return base


def _whole(path: tuple) -> bool:
    return any(len(p) == len(path) and all(a == "*" or a == b for a, b in zip(p, path)) for p in _WHOLE)


def effective(blocks: Sequence[Optional[dict]]) -> Optional[dict]:
    """Merge the blocks that apply to one server (top-level first); None if none applies or it is off."""
    present = [b for b in blocks if isinstance(b, dict)]
    if not present:
        return None
    merged: dict[str, Any] = {}
    for block in present:
        if isinstance(block.get("preset"), str):
            merge(merged, _preset(block["preset"]))
        merge(merged, {k: v for k, v in block.items() if k != "preset"})
    merged = _schema.fill_defaults(merged, "simulation")
    if not merged.get("enabled", True):
        return None
    return merged


# -- checks ------------------------------------------------------------------------------

def resolve(source: Source, base_dir: Path, layers: Layers, ok: bool) -> tuple[list[Problem], list[str], Optional[list]]:
    """Check every block where it is written; if `ok` (nothing else is wrong), merge them.

    Returns (problems, notes, per-server merged rules or None). Corpus files are read here,
    so a missing one is reported at the line that names it. Runs even when the schema
    found problems, so it reads defensively.
    """
    top, own = layers
    problems: list[Problem] = []
    notes: list[str] = []
    checked_top = _check_block(source, ("simulation",), top, base_dir, problems)
    checked_own = [_check_block(source, ("servers", i, "simulation"), b, base_dir, problems) for i, b in enumerate(own)]
    if problems or not ok:
        return problems, notes, None
    servers = source.data.get("servers", [])
    merged = []
    for server, block in zip(servers, checked_own):
        rules = effective([checked_top, block])
        merged.append(rules)
        if rules is not None:
            notes += _notes(server, rules)
    return problems, notes, merged


def _check_block(source: Source, at: tuple, block: Optional[dict], base_dir: Path, problems: list[Problem]) -> Optional[dict]:
    """Rules for one block as written; returns it with corpus files read in."""
    if not isinstance(block, dict):
        return None
    block = copy.deepcopy(block)

    def problem(path: tuple, message: str, key: bool = False) -> None:
        problems.append(source.problem(at + path, message, key))

    for part, keys in (("presence", ("interval",)), ("messages", ("interval",)), ("churn", ("arrivals", "departures"))):
        section = block.get(part)
        if isinstance(section, dict):
            for key in keys:
                value = _duration(section.get(key))
                if value is not None and 0 < value < MIN_INTERVAL:
                    problem((part, key), f"{section[key]!r} is too fast: the smallest interval is {MIN_INTERVAL:g} s (0 turns it off)")

    messages = block.get("messages")
    if isinstance(messages, dict):
        corpus = messages.get("corpus")
        if isinstance(corpus, str) and corpus.startswith("file:"):
            path = located(base_dir, corpus[5:].strip())
            source.included.add(path)  # a reload follows edits of it, even while it is missing
            lines = _read_corpus(path, lambda msg: problem(("messages", "corpus"), msg))
            if lines is not None:
                messages["corpus"] = lines

    activity = block.get("activity")
    if isinstance(activity, dict):
        tz = activity.get("timezone")
        if isinstance(tz, str) and tz.strip():
            try:
                zone(tz)
            except (ZoneInfoNotFoundError, ValueError):
                problem(("activity", "timezone"), f"unknown time zone {tz!r} (an IANA name such as Europe/Berlin or UTC)")
        hours = activity.get("hours")
        if isinstance(hours, dict) and hours:
            seen: dict[float, str] = {}
            for key, value in hours.items():
                at_time = time_of_day(key)
                if at_time is None:
                    continue
                if at_time in seen:
                    problem(("activity", "hours", key), f"{key!r} is the same time as {seen[at_time]!r}", key=True)
                seen[at_time] = key
            values = [v for v in hours.values() if isinstance(v, (int, float)) and not isinstance(v, bool)]
            if values and len(values) == len(hours) and not any(v > 0 for v in values):
                problem(("activity", "hours"), "every multiplier is 0: nothing would ever happen (use enabled: false)")

    channels = messages.get("channels") if isinstance(messages, dict) else None
    if isinstance(channels, dict) and channels and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and v == 0 for v in channels.values()):
        problem(("messages", "channels"), "every channel has weight 0: give at least one a positive weight")
    statuses = (block.get("generate") or {}).get("statuses") if isinstance(block.get("generate"), dict) else None
    if isinstance(statuses, dict) and statuses and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and v == 0 for v in statuses.values()):
        problem(("generate", "statuses"), "every status has weight 0: give at least one a positive weight")
    return block


def _duration(value: Any) -> Optional[float]:
    try:
        return seconds(value)
    except (ValueError, TypeError):
        return None


def _read_corpus(path: Path, report: Callable[[str], None]) -> Optional[list[str]]:
    try:
        text = read_text(path)
    except FileNotFoundError:
        report(f"corpus file not found: {path}")
        return None
    except Unreadable as exc:
        report(f"corpus file {path}: {exc}")
        return None
    except (OSError, UnicodeDecodeError) as exc:
        report(f"cannot read corpus file {path}: {exc}")
        return None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        report(f"corpus file {path} has no lines")
        return None
    return lines


def _notes(server: dict, rules: dict) -> list[str]:
    """Things worth saying in `check` that are not errors."""
    notes = []
    declared = {u.get("uid") for u in server.get("users", []) if isinstance(u, dict)}
    named = set(rules["presence"].get("users", {})) | set(rules["messages"].get("chattiness", {}))
    if rules.get("generate") is None:
        for uid in sorted(named - declared):
            notes.append(f"server {server.get('id')}: simulation names uid {uid}, who is not a member")
    return notes
