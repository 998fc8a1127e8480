"""Files a config names: kept by their path, never pinned to what a symlink pointed at when read.

Operators swap a config or a certificate by moving a symlink (`ln -s new tmp && mv -T tmp
dback.yaml`, a Kubernetes ConfigMap's `..data`, certbot's `live/`); a path resolved once
would go on naming the old file. `located` makes a name absolute without following links;
`links` lists every path whose change moves what a name reads (for the watcher). Neither
reads a file's contents.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

MAX_HOPS = 40  # the kernel's own limit on symlinks in one lookup


def located(base: Path, name: str | os.PathLike) -> Path:
    """`name` relative to `base`, absolute and normalised, symlinks left in place."""
    return Path(os.path.abspath(Path(base) / name))


def links(path: Path) -> tuple[Path, ...]:
    """`path`, each symlink met on the way to the file it names, and that file. Blocking (lstat)."""
    found: list[Path] = [located(Path.cwd(), path)]
    pending = found[0]
    for _ in range(MAX_HOPS):
        parts = pending.parts
        here = Path(parts[0])
        for i, part in enumerate(parts[1:], 1):
            step = here / part
            if step.is_symlink():
                found.append(step)
                try:
                    target = os.readlink(step)
                except OSError:  # swapped away between the two calls: the next change looks again
                    return _unique(found)
                pending = located(here, Path(target, *parts[i + 1:]))
                break
            here = step
        else:
            break
    found.append(pending)
    return _unique(found)


def directories(paths: Iterable[Path]) -> tuple[Path, ...]:
    """The directories holding every link of every path: what to watch to see any of them move."""
    return tuple(sorted({p.parent for path in paths for p in links(path)}))


def _unique(paths: list[Path]) -> tuple[Path, ...]:
    return tuple(dict.fromkeys(paths))
