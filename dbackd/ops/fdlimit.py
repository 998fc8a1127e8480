"""The process's file-descriptor limit, raised at start to fit `limits.max_connections`.

Every connection is a descriptor; past the soft limit accept() fails and nobody, a
health check included, can connect. The soft limit is raised toward the hard limit (a
process may do that without privileges; under systemd, LimitNOFILE= sets both), and
what the connections may use is what it got less a reserve for everything else. It
only asks the kernel; the door enforces the number.
"""
from __future__ import annotations

from typing import Optional

try:
    import resource
except ImportError:  # not on this platform: nothing to raise
    resource = None  # type: ignore[assignment]

RESERVE = 256  # descriptors kept for listening sockets, calls to Discord, files, logs, the watcher


def raise_for(connections: int) -> tuple[Optional[int], Optional[int], Optional[int]]:
    """Raise the soft limit to fit `connections`; returns (soft, hard, room for connections)."""
    if resource is None:
        return None, None, None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + RESERVE
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):  # a sandbox that forbids it: keep what there is
            pass
    room = None if soft == resource.RLIM_INFINITY else max(soft - RESERVE, 1)
    return soft, (None if hard == resource.RLIM_INFINITY else hard), room
