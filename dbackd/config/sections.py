"""A source's own config section: a top-level key that the source's package owns and reads.

The model names no source. A section is a top-level key of the schema whose definition
names the module that owns it (`"x-section": "dbackd.sources.<name>.settings"`); that
module's `SECTION` turns the validated block into the source's settings, gives each server
whose `source` is the section's key its options, adds the rules across keys the schema
cannot say, and the lines `dbackd check` prints. The schema fragment itself stays in the
one schema file, so its errors keep their FILE:LINE:COL. Nothing here knows a source.
"""
from __future__ import annotations

from functools import lru_cache
from importlib import import_module
from typing import Any, Mapping, Optional, Protocol

from dbackd.config.errors import Problem
from dbackd.config.schema import schema
from dbackd.config.source import Source


class Section(Protocol):
    """One source's part of the config."""

    #: The top-level key, and the `source:` of the servers that take their members from it.
    key: str
    #: Per-server keys that mean something only on a server of this source.
    server_keys: tuple[str, ...]

    def settings(self, block: Mapping[str, Any]) -> Any:
        """The validated, default-filled block as the source's settings (a frozen model)."""

    def options(self, server: Mapping[str, Any], settings: Optional[Any]) -> Any:
        """A server of this source: its own options (its keys over the block's defaults)."""

    def check(self, source: Source, data: dict, servers: list[dict], problems: list[Problem],
              notes: list[str]) -> None:
        """The rules across keys, on the data as read (which the schema may have refused)."""

    def summary(self, settings: Any) -> list[str]:
        """`dbackd check`'s lines for the block."""

    def describe(self, server: Any) -> str:
        """`dbackd check`'s words for one server of this source (a model Server)."""


@lru_cache(maxsize=1)
def sections() -> dict[str, Section]:
    """Every section the schema names, by key (each owning module imported once)."""
    found: dict[str, Section] = {}
    for key, definition in schema()["properties"].items():
        module = definition.get("x-section") if isinstance(definition, dict) else None
        if module:
            section = import_module(module).SECTION
            assert section.key == key, f"{module} owns `{section.key}`, the schema gives it `{key}`"
            found[key] = section
    return found


def section(key: str) -> Optional[Section]:
    return sections().get(key)
