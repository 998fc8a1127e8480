"""What every source of live change is to the daemon: one shape, so the daemon names none of them.

A source (the simulation, the Discord gateway, a bridge to another chat) is built by its
package from the few collaborators in `Needs`, and the daemon keeps them in a list: it
starts and stops them (on the cluster's leader only, since their changes must be made
once), shows their `health()` in /healthz under their name and reads their metrics at
scrape time. A source's options are its own: the config section of its package (a
top-level key of the same name, see config/sections.py), and what it learns of who
exists goes to the declaration as a layer of the same name, which the cluster shares by
that name. Nothing here runs anything.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Optional, Protocol, runtime_checkable

from dbackd.core.declaration import Declaration
from dbackd.core.world import World

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric  # loaded by the first scrape, not before


@dataclass(frozen=True)
class Needs:
    """What a source may be built with: the world it changes, the declaration its layer goes to,
    and the simulation's clock (None: the system clock)."""

    world: World
    declaration: Declaration
    clock: Any = None


@runtime_checkable
class Source(Protocol):
    """A producer of live world changes, run on one node."""

    #: Its key everywhere: the config section, the declaration layer, the /healthz entry.
    name: str

    async def start(self) -> None:
        """Begin producing (on this node, now the one that produces); returns once it runs."""

    async def stop(self) -> None:
        """End every task it owns; it may be started again (a node that leads again)."""

    def health(self) -> Optional[dict[str, Any]]:
        """Its entry in /healthz, or None while the config does not use it."""

    def collect(self) -> Iterator[Metric]:
        """Its Prometheus families, read at scrape time (none: an empty iterator)."""

    def describe(self) -> Iterator[Metric]:
        """What `collect` yields, for the registry (an empty iterator: ask collect)."""
