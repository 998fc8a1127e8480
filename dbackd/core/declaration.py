"""The declaration: who exists. The one part that decides the effective config and moves the world to it.

It owns the config source's declaration (a file, plain data or a model, with the
command-line overrides that keep winning across reloads) and the data providers' last
answer, and lays the one over the other. Reading, checking, overlaying and comparing
run in a thread; the world is then moved by the events of its transition, applied in
slices with a yield between them, so a reload or a provider refresh with 100,000 users
never holds the event loop. Changes are serialised: one move at a time. It never writes
to a socket; whatever depends on the config hears of a change as a world event.
"""
from __future__ import annotations

import asyncio
import dataclasses
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Optional, Protocol, Union

import structlog

from dbackd.config import EMBEDDED_NAME, Config, load_data, load_embedded, load_file, with_overrides
from dbackd.config.paths import located
from dbackd.config.diff import ConfigDiff, describe, diff
from dbackd.core.bulk import bulk
from dbackd.core.layers import Layer, merge
from dbackd.core.slices import sliced
from dbackd.core.world import World

log = structlog.get_logger("dbackd.declaration")

ConfigSource = Union[Config, str, "os.PathLike[str]", Mapping[str, Any], None]

PROVIDERS = "providers"  # the layer of the host program's data providers


class Answer(Protocol):
    """The host program's data providers' answer, as they gave it (sources/providers.py's `Provided`)."""

    def size(self) -> int:
        """About how many entries it holds (to tell a bulk load from a small one)."""

    def layer(self, base: Config) -> Layer:
        """It checked against `base`, as a layer; raises ConfigError (or a wrong-shape error). Blocking."""


def load(source: ConfigSource) -> Config:
    """A config from a model, a file path, plain data, or (None) the embedded default."""
    if isinstance(source, Config):
        return source
    if source is None:
        return load_embedded()
    if isinstance(source, (str, Path, os.PathLike)):
        return load_file(source)
    return load_data(source)


@dataclasses.dataclass(frozen=True)
class Overrides:
    """Command-line settings that win over the file, across reloads too."""

    host: Optional[str] = None
    port: Optional[int] = None
    static_dir: Optional[str] = None
    node: Optional[str] = None  # this node's name in a cluster

    def apply(self, config: Config) -> Config:
        config = with_overrides(config, host=self.host, port=self.port, static_dir=self.static_dir)
        if self.node is not None and config.cluster is not None:
            config = dataclasses.replace(config, cluster=dataclasses.replace(config.cluster, node=self.node))
        return config


class Declaration:
    def __init__(self, world: World, overrides: Overrides = Overrides()):
        """`world` already holds the config source's declaration (with `overrides` applied)."""
        self.world = world
        self.overrides = overrides
        self.base = world.config  # the config source's declaration, before the providers' overlay
        # Layers laid over the config source's declaration, in this order: what a source found
        # (a guild's name, the servers of `discord.auto_servers`), then the data providers' answer.
        self.layers: dict[str, Layer] = {}
        self.loaded_at = datetime.now(timezone.utc)
        self.restart_required: tuple[str, ...] = ()
        self._lock = asyncio.Lock()

    # -- the source ----------------------------------------------------------------
    @property
    def path(self) -> Optional[Path]:
        """The config's file, if it came from one (not a dict, a model or the embedded default)."""
        if self.base.file in (None, EMBEDDED_NAME):
            return None
        return located(Path.cwd(), self.base.file)

    def sources(self) -> tuple[Path, ...]:
        """Every file the declaration was read from (what a reload follows)."""
        path = self.path
        return () if path is None else (path,) + self.base.includes

    def read(self) -> Config:
        """The config file as it is now, with the overrides. Blocking: call it in a thread."""
        if self.path is None:
            return self.base
        return self.overrides.apply(load_file(self.path))

    # -- changing it ---------------------------------------------------------------
    async def replace(self, base: Config) -> list[str]:
        """Make `base` the config source's declaration; the providers' last answer stays laid over it.

        A file that conflicts with that answer is refused (ConfigError), like a broken one.
        Returns a line per change.
        """
        async with self._lock:
            with bulk(sum(len(s.users) for s in base.servers)):
                effective = await asyncio.to_thread(self._merged, base, self.layers)
                self.base = base
                return await self._move(effective)

    async def provide(self, provided: Answer, base: Optional[Config] = None) -> list[str]:
        """Lay a fresh answer of the providers over the config source's declaration (with `base`,
        over that one, which becomes the declaration in the same step).

        Raises ConfigError (naming each problem) or providers.BadAnswer, changing nothing.
        """
        async with self._lock:
            under = self.base if base is None else base
            with bulk(provided.size()):
                checked = await asyncio.to_thread(provided.layer, under)
                layers = {**self.layers, PROVIDERS: checked}
                effective = await asyncio.to_thread(self._merged, under, layers)
                self.base = under
                self.layers = layers
                return await self._move(effective)

    async def set_layer(self, name: str, layer: Optional[Layer]) -> list[str]:
        """A source's own layer (model objects, already sound): servers it found, names it learnt.
        None removes it. Raises ConfigError if the result breaks a rule across servers."""
        async with self._lock:
            layers = {k: v for k, v in {**self.layers, name: layer}.items() if v is not None}
            effective = await asyncio.to_thread(self._merged, self.base, layers)
            self.layers = layers
            return await self._move(effective)

    @staticmethod
    def _merged(base: Config, layers: dict[str, Layer]) -> Config:
        for name in sorted(layers, key=lambda n: n == PROVIDERS):  # the providers' answer goes last
            base = merge(base, layers[name])
        return base

    async def _move(self, new: Config) -> list[str]:
        old = self.world.config
        changes, lines = await asyncio.to_thread(_compare, old, new)
        world = self.world
        async for event in sliced(world.transition(new, changes)):
            world.apply(event, declared=True)
        self.loaded_at = datetime.now(timezone.utc)
        if changes.restart_required:
            self.restart_required = tuple(sorted(set(self.restart_required) | set(changes.restart_required)))
            log.warning("reload.restart_required", keys=list(changes.restart_required))
        return lines


def _compare(old: Config, new: Config) -> tuple[ConfigDiff, list[str]]:
    changes = diff(old, new)
    return changes, describe(changes, old, new)

