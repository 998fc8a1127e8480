"""d-back's `MockDataProvider`: its mock servers and users, in d-back's shapes.

dbackd's embedded default config declares exactly d-back's mock world, so the data
comes from there rather than from a second copy. d-back's per-connection background
tasks (`periodic_status_updates`, `periodic_messages`) are not here: the mock world's
life is the daemon's own simulation, one per server and shared by every client.
Read-only; nothing here touches a daemon.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Optional

from dbackd.config import Config, load_embedded
from dbackd.core import snapshots


@lru_cache(maxsize=1)
def mock_world() -> Config:
    """The embedded default: d-back's four mock servers and their users."""
    return load_embedded()


class MockDataProvider:
    """d-back's mock data, as d-back's `MockDataProvider` returns it."""

    def __init__(self, server_instance: Any = None):
        self.server = server_instance

    def get_mock_user_data(self, discord_server_id: Optional[str] = None) -> dict[str, dict[str, Any]]:
        """{uid: {uid, username, status, roleColor}} of a mock server; {} for any other id."""
        server = next((s for s in mock_world().servers if s.snowflake == str(discord_server_id)), None)
        if server is None:
            return {}
        return {u.uid: dict(snapshots.entry(u)) for u in server.users}

    def get_mock_server_data(self) -> dict[str, dict[str, Any]]:
        """{snowflake: {id, name, default?, passworded}} of the four mock servers (no password)."""
        return {s.snowflake: s.public_info() for s in mock_world().servers}
