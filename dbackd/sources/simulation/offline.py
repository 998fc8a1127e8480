"""`dbackd simulate`: a config's simulation fast-forwarded in virtual time, with no port and no clock.

Events go to an output stream as JSON lines (with their simulated time `t`); the
per-server summary comes back as text. A closed output (`| head`) ends the run early.
How an event reads as a message is given by the caller (the CLI gives the wire's shape).
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Callable, Optional, TextIO

from dbackd.config import Config
from dbackd.core.world import World
from dbackd.sources.simulation.engine import Engine
from dbackd.sources.simulation.report import Tally

SLICE = 60.0  # simulated seconds between two checks for a closed output


class Run:
    def __init__(self, config: Config, *, seconds: float, start: float, seed: Any = None,
                 only: Optional[set[str]] = None):
        self.seconds = seconds
        self.start = start
        self.only = only
        self.world = World(config)
        self.engine = Engine(self.world, seed=seed, epoch=start, servers=only)
        self.tally = Tally(self.world, lambda: self.engine.now)
        self.closed = False  # the output went away

    def stream_to(self, out: TextIO, describe: Callable[[Any], Optional[dict]]) -> None:
        """Write each event as it is applied, as `describe` reads it (None: not written)."""
        def emit(event: object) -> None:
            message = describe(event)
            if message is not None and not self.closed:
                try:
                    out.write(json.dumps({"t": round(self.engine.now, 3), **message}, ensure_ascii=False) + "\n")
                except BrokenPipeError:  # `dbackd simulate | head`: the reader has seen enough
                    self.closed = True

        self.world.subscribe(emit)

    def run(self) -> None:
        # In slices, so a closed output ends the run early; the stream is the same either way.
        now = 0.0
        while now < self.seconds and not self.closed:
            now = min(self.seconds, now + SLICE)
            self.engine.advance_to(now)

    def summary(self, seed_given: bool) -> str:
        began = datetime.fromtimestamp(self.start, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
        seeds = {sf: runner.seed for sf, runner in self.engine.runners.items()}
        lines = [f"-- summary: {self.seconds:g} s simulated from {began}",
                 self.tally.summary(self.seconds, seeds, self.only)]
        random_seed = self.engine.random_seed
        if not seed_given and any(seed == random_seed for seed in seeds.values()):
            lines.append(f"-- servers without a seed used {random_seed}: --seed {random_seed} repeats this run")
        return "\n".join(lines)
