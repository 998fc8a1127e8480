"""Simulated life for declared servers: the engine (rules → world events), its clock and service."""
from dbackd.sources.simulation.clock import Clock, ManualClock, SystemClock
from dbackd.sources.simulation.engine import Engine
from dbackd.sources.simulation.service import SimulationService

__all__ = ["Clock", "ManualClock", "SystemClock", "Engine", "SimulationService"]
