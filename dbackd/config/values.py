"""Plain values the config, the APIs and the sources share: statuses, durations, Discord ids, times of day.

Leaf definitions only: parsing of a single value, no knowledge of where it stands in a
file and no checking of a whole config.
"""
from __future__ import annotations

import re
from datetime import timezone, tzinfo
from typing import Any, Optional
from zoneinfo import ZoneInfo

STATUSES = ("online", "idle", "dnd", "offline")
WHITE = "#ffffff"  # a user's colour when nobody gave one


def color(value: str) -> str:
    """A `#rrggbb` colour as dbackd holds it, from wherever it came (config, providers, APIs):
    lower case, so that equal colours compare equal and a change is only a real change."""
    return value.lower()

# A Discord id (snowflake) as text; the schema's `snowflake` definition says the same.
SNOWFLAKE = re.compile(r"[0-9]{1,20}")

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h)\s*$")


def seconds(value: Any) -> float:
    """A schema `duration` (number or "4s"/"2m"/"500ms") as float seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    m = _DURATION_RE.match(str(value))
    if not m:
        raise ValueError(f"not a duration: {value!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def is_snowflake(value: Any) -> bool:
    return isinstance(value, str) and SNOWFLAKE.fullmatch(value) is not None


def zone(name: str) -> tzinfo:
    """A tzinfo for an IANA name; UTC works even without a time zone database."""
    if name.strip().upper() in ("UTC", "Z", "ETC/UTC"):
        return timezone.utc
    return ZoneInfo(name.strip())


def time_of_day(key: Any) -> Optional[float]:
    """"H" or "H:MM" as seconds after midnight; None if it is neither."""
    text = str(key).strip()
    hour, _, minute = text.partition(":")
    if not hour.isdigit() or (minute and not minute.isdigit()):
        return None
    h, m = int(hour), int(minute or 0)
    if h > 23 or m > 59:
        return None
    return float(h * 3600 + m * 60)
