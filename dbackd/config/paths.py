"""Files a config names: kept by their path, never pinned to what a symlink pointed at when read.

Operators swap a config or a certificate by moving a symlink (`ln -s new tmp && mv -T tmp
dback.yaml`, a Kubernetes ConfigMap's `..data`, certbot's `live/`); a path resolved once
would go on naming the old file. `located` makes a name absolute without following links;
`links` lists every path whose change moves what a name reads (for the watcher);
`read_text` reads a config-named file only if it is a regular one of a sane size (a FIFO
would block the reading thread for good, `/dev/zero` would fill the memory).
"""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Iterable

MAX_HOPS = 40  # the kernel's own limit on symlinks in one lookup
MAX_BYTES = 16 * 1024 * 1024  # a config of 100,000 inline users is about 8 MiB
_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory"))


class Unreadable(ValueError):
    """A file the config names that is not a regular file, or too large to read; says which."""


def refusal(info: os.stat_result, limit: int = MAX_BYTES) -> str | None:
    """Why a file with this stat is not read, or None if it may be."""
    if not stat.S_ISREG(info.st_mode):
        kind = next((name for test, name in _KINDS if test(info.st_mode)), "not a file")
        return f"not a regular file ({kind}): give a regular file, or a symlink to one"
    if info.st_size > limit:
        return f"too large: {info.st_size:,} bytes, at most {limit:,} are read"
    return None


def check_file(path: Path, limit: int = MAX_BYTES) -> None:
    """Raise Unreadable (or OSError) unless `path` is a regular file of at most `limit` bytes. Blocking."""
    why = refusal(os.stat(path), limit)
    if why is not None:
        raise Unreadable(why)


def read_text(path: Path, limit: int = MAX_BYTES) -> str:
    """The UTF-8 text of a regular file of at most `limit` bytes. Blocking.

    Raises FileNotFoundError, Unreadable, OSError or UnicodeDecodeError. Opened without
    blocking and checked on the open descriptor, so a file swapped for a FIFO between a
    check and the read cannot hold the thread.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        why = refusal(os.fstat(fd), limit)
        if why is not None:
            raise Unreadable(why)
        chunks, size = [], 0
        while size <= limit:  # the file may grow after fstat: never read more than the limit
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise Unreadable(f"too large: more than {limit:,} bytes")
    finally:
        os.close(fd)
    return b"".join(chunks).decode("utf-8")


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
