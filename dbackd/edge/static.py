"""Static files: map a URL path under a mount to a file inside the mount's directory.

Pure path logic; it never serves anything outside a mount's root: `..` segments,
backslashes, NUL bytes, drive or absolute paths and symlinks that lead out are refused.
Serving itself (streaming, Content-Type, ranges) is aiohttp's FileResponse.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Iterable, Optional

from dbackd.config import Mount

BUILTIN_ROOT = Path(str(resources.files("dbackd").joinpath("page")))


class Forbidden(Exception):
    pass


def mount_for(mounts: Iterable[Mount], path: str) -> Optional[tuple[Mount, str]]:
    """The most specific mount for a URL path, and the rest of the path under it."""
    best: Optional[tuple[Mount, str]] = None
    for m in mounts:
        if m.path == "/":
            rest = path
        elif path == m.path or path.startswith(m.path + "/"):
            rest = path[len(m.path):]
        else:
            continue
        if best is None or len(m.path) > len(best[0].path):
            best = (m, rest)
    return best


def resolve(mount: Mount, rest: str) -> Optional[Path]:
    """The file for `rest` (a decoded URL path under the mount), or None if there is none.

    Raises Forbidden for anything that tries to leave the root.
    """
    root = (mount.dir or BUILTIN_ROOT).resolve()
    parts = [p for p in rest.split("/") if p]
    for part in parts:
        if part in (".", "..") or "\\" in part or "\x00" in part or ":" in part:
            raise Forbidden(rest)
    candidate = root.joinpath(*parts)
    try:
        target = candidate.resolve(strict=True)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, RuntimeError):  # symlink loops, permissions
        raise Forbidden(rest) from None
    if target != root and root not in target.parents:
        raise Forbidden(rest)  # a symlink that leads out of the root
    if target.is_dir():
        index = (target / mount.index).resolve()
        if index.is_file() and (root in index.parents):
            return index
        return None
    return target if target.is_file() else None
