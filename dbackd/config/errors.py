"""Configuration problems, each tied to a place in the file.

Holds the error types the loader raises; it does not decide what is wrong.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config file, printed as FILE:LINE:COLUMN: path: message."""

    file: str
    line: int  # 1-based
    column: int  # 1-based
    path: str  # dotted key path, e.g. servers[0].users[2].roleColor; "" for the document
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(Exception):
    """A config file that cannot be used; carries every problem found, in file order."""

    def __init__(self, problems: Iterable[Problem]):
        # One line per place: when a value breaks several rules, the first stage's
        # message (env, then schema, then cross-value rules) is the one that helps.
        unique: dict[tuple, Problem] = {}
        for p in problems:
            unique.setdefault((p.file, p.line, p.column, p.path), p)
        self.problems = sorted(unique.values(), key=lambda p: (p.file, p.line, p.column, p.path))
        super().__init__("\n".join(str(p) for p in self.problems))


def format_path(parts: Iterable[object]) -> str:
    """Render a JSON path as servers[0].users[1].roleColor."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out
