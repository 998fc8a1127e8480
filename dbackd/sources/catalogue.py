"""The sources the daemon runs, in the order they start: the one list a new source is added to.

Each entry builds one source (sources/base.py) from the daemon's `Needs`; the daemon
loops over the list for everything else. Nothing here runs anything.
"""
from __future__ import annotations

from dbackd.sources.base import Needs, Source
from dbackd.sources.discord.source import DiscordSource
from dbackd.sources.simulation import SimulationService


def build(needs: Needs) -> list[Source]:
    return [
        SimulationService(needs.world, needs.clock),
        DiscordSource(needs.world, needs.declaration),
    ]
