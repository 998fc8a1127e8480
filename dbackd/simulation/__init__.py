"""Simulated life for declared servers: the engine (rules → world events), its clock and service."""
from .clock import Clock, ManualClock, SystemClock
from .engine import Engine
from .service import SimulationService

__all__ = ["Clock", "ManualClock", "SystemClock", "Engine", "SimulationService"]
