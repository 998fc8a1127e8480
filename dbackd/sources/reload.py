"""Hot reload: follow edits of the config file and hand the new declaration to the declaration.

A source of world changes (through the declaration). Triggers are file changes
(watchfiles, on the directories of every file the config was read from and of every
symlink on the way to it, so editors that save by rename or delete-and-recreate, a
symlink swapped, a ConfigMap's `..data` and certbot's `live/` are followed: the path,
never the file it named at start) and explicit requests (SIGHUP,
`Daemon.reload()`); bursts are coalesced into one reload. The pipeline is read →
schema → model (in a thread) → the declaration's move of the world; if anything fails
the running config stays exactly as it was and nothing reaches clients. The file's
state shows in `status()` (for /healthz).
"""
from __future__ import annotations

import asyncio
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import structlog

from dbackd.config import ConfigError
from dbackd.config.diff import summary
from dbackd.config.paths import directories, links
from dbackd.core.declaration import Declaration
from dbackd.core.lifecycle import Moments
from dbackd.core.tasks import TaskSet

log = structlog.get_logger("dbackd.reload")

# The watcher reports a batch once no new change arrived for STEP_MS: twenty quick
# writes are one batch, and a single save is applied about STEP_MS after it lands.
STEP_MS = 60
MAX_BATCH_MS = 1000  # a file rewritten continuously still reloads at least this often
_WAKE_MS = 5000  # the watcher thread looks up this often even when nothing changed


class _Watcher:
    """The OS watches on a set of directories, reporting changes of the given files.

    watchfiles' own `awatch` sets its watches up at some point after its first iteration
    starts, with no signal; this builds the same RustNotify watcher itself, in `start()`,
    so once `start()` returned an edit cannot be missed. One thread of its own waits for
    changes.
    """

    def __init__(self, files: tuple[Path, ...], on_change) -> None:
        self.files = files
        self.dirs: tuple[Path, ...] = ()  # where the files and their links lie, when started
        self.on_change = on_change
        self._stop = threading.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dbackd-watch")
        self._notify: Optional[Any] = None  # watchfiles' RustNotify, loaded only to watch
        self._tasks = TaskSet("reload.watch")

    async def start(self) -> None:
        polling = bool(os.environ.get("WATCHFILES_FORCE_POLLING"))
        loop = asyncio.get_running_loop()
        self.dirs = await loop.run_in_executor(self._executor, directories, self.files)
        dirs = [str(d) for d in self.dirs if d.is_dir()]  # a link's missing target: its parent is watched
        from watchfiles._rust_notify import RustNotify  # only a daemon that watches its file needs it

        self._notify = await loop.run_in_executor(self._executor, RustNotify, dirs, False, polling, 300, False, False)
        self._tasks.spawn(self._run(loop), name="dbackd-watch")
        log.info("reload.watching", files=sorted(str(f) for f in self.files))

    def _targets(self) -> set[str]:
        return {str(p) for f in self.files for p in links(f)}

    async def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        targets = await loop.run_in_executor(self._executor, self._targets)
        assert self._notify is not None
        while True:
            changes = await loop.run_in_executor(self._executor, self._notify.watch, MAX_BATCH_MS, STEP_MS,
                                                 _WAKE_MS, self._stop)
            if changes == "stop":
                return
            if isinstance(changes, set):
                # A link moved since the last batch names other files: what it names now counts.
                targets |= await loop.run_in_executor(self._executor, self._targets)
                paths = sorted({p for _, p in changes if p in targets})
                if paths:
                    log.debug("reload.changed", paths=paths)
                    self.on_change()

    async def stop(self) -> None:
        self._stop.set()  # the thread returns "stop" within STEP_MS
        await self._tasks.cancel()
        notify, self._notify = self._notify, None
        if notify is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, notify.close)
        self._executor.shutdown(wait=False)


class Reloader:
    """A service: one worker task that reloads when asked, and a file watcher."""

    def __init__(self, declaration: Declaration, moments: Moments, watch: bool = True):
        self.declaration = declaration
        self.moments = moments
        self.watch = watch
        self.attempts = 0  # reload attempts finished (ok or not), for observers and tests
        self.last_error: Optional[list[str]] = None
        self.last_attempt: Optional[datetime] = None
        self._pending = asyncio.Event()
        self._finished = asyncio.Condition()
        self._tasks = TaskSet("reload")
        self._watcher: Optional[_Watcher] = None

    # -- lifecycle -----------------------------------------------------------------
    async def start(self) -> None:
        self._tasks.spawn(self._work(), name="dbackd-reload")
        if self.watch and self.declaration.path is not None:
            await self._follow(self.declaration.sources())

    async def stop(self) -> None:
        await self._tasks.cancel()
        if self._watcher is not None:
            await self._watcher.stop()
            self._watcher = None

    async def _follow(self, files: tuple[Path, ...]) -> None:
        if self._watcher is not None:
            await self._watcher.stop()
            self._watcher = None
        watcher = _Watcher(files, self.request)
        try:
            await watcher.start()
        except (FileNotFoundError, OSError) as exc:  # a directory went away: SIGHUP still works
            log.error("reload.watch_failed", error=str(exc))
            await watcher.stop()
            return
        self._watcher = watcher

    @property
    def watching(self) -> tuple[Path, ...]:
        return self._watcher.files if self._watcher is not None else ()

    # -- triggers ------------------------------------------------------------------
    def request(self) -> None:
        """Ask for a reload (SIGHUP, a file change); many requests before it runs make one reload."""
        self._pending.set()

    async def _work(self) -> None:
        while True:
            await self._pending.wait()
            self._pending.clear()
            try:
                await self.reload()
            except Exception:  # a bug in applying must not end reloading for good
                log.exception("reload.crashed")
                self.moments.reload_finished(False, "internal error while applying the config")

    # -- the pipeline --------------------------------------------------------------
    async def reload(self) -> bool:
        """Load the config again and apply it; returns True if it was applied."""
        declaration = self.declaration
        path = declaration.path
        self.last_attempt = datetime.now(timezone.utc)
        if path is None:
            log.info("reload.skipped", reason="the config did not come from a file")
            return await self._finish(True)
        file = str(path)
        if not path.exists():
            # An editor deleting and recreating the file: wait for it to come back, and say so.
            self.last_error = [f"{file}: the file is missing; the running config stays until it is back"]
            log.warning("reload.waiting", config=file, reason="the file is missing")
            return await self._finish(False)
        self.moments.reload_started()
        try:
            base = await asyncio.to_thread(declaration.read)
            lines = await declaration.replace(base)
        except ConfigError as exc:
            errors = [str(p) for p in exc.problems]
            self.last_error = errors
            log.error("reload.failed", config=file, problems=len(errors), errors=errors[:20])
            self.moments.reload_finished(False, "\n".join(errors))
            return await self._finish(False)
        self.last_error = None
        log.info("reload.applied", config=file, **summary(lines))
        self.moments.reload_finished(True, None)
        if self.watch and await self._moved():
            await self._follow(declaration.sources())  # other files (a corpus), or a link now points elsewhere
        return await self._finish(True)

    async def _moved(self) -> bool:
        sources = self.declaration.sources()
        if self._watcher is None or sources != self.watching:
            return True
        return await asyncio.to_thread(directories, sources) != self._watcher.dirs

    async def _finish(self, ok: bool) -> bool:
        self.attempts += 1
        async with self._finished:
            self._finished.notify_all()
        return ok

    async def wait_attempts(self, count: int) -> None:
        """Wait until `count` reload attempts have finished (for tests and tools)."""
        async with self._finished:
            await self._finished.wait_for(lambda: self.attempts >= count)

    def status(self) -> dict:
        return {
            "ok": self.last_error is None,
            "last_attempt": self.last_attempt.isoformat() if self.last_attempt else None,
            "errors": self.last_error or [],
            "watching": [str(f) for f in self.watching],
        }

