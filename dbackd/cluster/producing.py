"""Whether the running task is a producer's (a live source: the simulation, Discord): its changes need the lease.

A module of its own so that a daemon without a cluster can mark its producers without
loading the Redis client. It only holds the flag.
"""
from __future__ import annotations

import contextvars

# True in the tasks of the producers: set while leadership starts them, so the tasks they make carry it.
PRODUCING: contextvars.ContextVar[bool] = contextvars.ContextVar("dbackd_producing", default=False)
