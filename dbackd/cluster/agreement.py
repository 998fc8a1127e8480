"""What the nodes of a cluster must agree on, as one fingerprint: servers and simulation rules.

Nodes compare fingerprints (through the backplane) to tell an operator that one of them
reads another config. Pure; it compares declarations, not live state.
"""
from __future__ import annotations

import hashlib
import json

from dbackd.config import Config


def fingerprint(config: Config) -> str:
    servers = [[s.snowflake, s.id, s.name, s.default, s.passworded, s.source,
                [[u.uid, u.username, u.status, u.role_color] for u in s.users],
                repr(s.simulation)] for s in config.servers]
    text = json.dumps(servers, ensure_ascii=False, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
