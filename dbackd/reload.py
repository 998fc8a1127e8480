"""Hot reload: follow edits of the config file and apply them to the running daemon.

Triggers are file changes (watchfiles, on the directories of every file the config was
read from, so editors that save by rename or delete-and-recreate are followed) and
explicit requests (SIGHUP, `Daemon.reload()`). Bursts are coalesced into one reload.
The pipeline is read → schema → model → diff → apply in one step; if anything fails the
running config stays exactly as it was and nothing reaches clients. This module
changes nothing itself: applying a config is the daemon's and the world's job.
"""
from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import structlog
import watchfiles

from .config import ConfigError

if TYPE_CHECKING:
    from .daemon import Daemon

log = structlog.get_logger("dbackd.reload")

# watchfiles yields a batch once no new change arrived for STEP_MS: twenty quick writes
# are one batch, and a single save is applied about STEP_MS after it lands.
STEP_MS = 60
MAX_BATCH_MS = 1000  # a file rewritten continuously still reloads at least this often


class Reloader:
    """A daemon service: one watcher task and one worker task, both owned here."""

    def __init__(self, daemon: "Daemon", watch: bool = True):
        self.daemon = daemon
        self.watch = watch
        self.attempts = 0  # reload attempts finished (ok or not), for observers and tests
        self.last_error: Optional[list[str]] = None
        self.last_attempt: Optional[datetime] = None
        self._pending = asyncio.Event()
        self._finished = asyncio.Condition()
        self._stop = asyncio.Event()
        self._worker: Optional[asyncio.Task] = None
        self._watcher: Optional[asyncio.Task] = None
        self._watched: tuple[Path, ...] = ()

    # -- lifecycle -----------------------------------------------------------------
    async def start(self) -> None:
        self._stop.clear()
        self._worker = asyncio.create_task(self._work(), name="dbackd-reload")
        if self.watch and self.daemon.config_path is not None:
            await self._restart_watcher()

    async def stop(self) -> None:
        self._stop.set()
        tasks = [t for t in (self._worker, self._watcher) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._worker = self._watcher = None

    async def _restart_watcher(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
        self._watched = self.daemon.config_sources()
        self._watcher = asyncio.create_task(self._watch(self._watched), name="dbackd-watch")
        # The task sets up its OS watches in its first step; let it run before returning,
        # so an edit made right after start() is not missed.
        for _ in range(3):
            await asyncio.sleep(0)

    # -- triggers ------------------------------------------------------------------
    def request(self) -> None:
        """Ask for a reload (SIGHUP, API); many requests before it runs make one reload."""
        self._pending.set()

    async def _watch(self, files: tuple[Path, ...]) -> None:
        targets = {str(f) for f in files}
        dirs = sorted({str(f.parent) for f in files})

        def relevant(_change: watchfiles.Change, path: str) -> bool:
            return path in targets

        log.info("reload.watching", files=sorted(targets))
        try:
            async for changes in watchfiles.awatch(
                *dirs, watch_filter=relevant, step=STEP_MS, debounce=MAX_BATCH_MS,
                stop_event=self._stop, recursive=False,
            ):
                log.debug("reload.changed", paths=sorted({p for _, p in changes}))
                self.request()
        except FileNotFoundError as exc:  # the directory itself went away
            log.error("reload.watch_failed", error=str(exc))

    async def _work(self) -> None:
        while True:
            await self._pending.wait()
            self._pending.clear()
            try:
                await self.reload()
            except Exception:  # a bug in applying must not end reloading for good
                log.exception("reload.crashed")
                self.daemon.reload_finished(False, "internal error while applying the config")

    # -- the pipeline --------------------------------------------------------------
    async def reload(self) -> bool:
        """Load the config again and apply it; returns True if it was applied."""
        daemon = self.daemon
        path = daemon.config_path
        self.last_attempt = datetime.now(timezone.utc)
        if path is None:
            log.info("reload.skipped", reason="the config did not come from a file")
            return await self._finish(True)
        file = str(path)
        if not Path(file).exists():
            # An editor deleting and recreating the file: wait for it to come back.
            log.info("reload.waiting", config=file, reason="the file is missing")
            return await self._finish(False)
        daemon.reload_started()
        try:
            new = await asyncio.to_thread(daemon.load_config)
        except ConfigError as exc:
            errors = [str(p) for p in exc.problems]
            self.last_error = errors
            log.error("reload.failed", config=file, problems=len(errors), errors=errors)
            daemon.reload_finished(False, "\n".join(errors))
            return await self._finish(False)
        lines = daemon.apply_config(new)
        self.last_error = None
        log.info("reload.applied", config=file, changes=lines)
        daemon.reload_finished(True, None)
        if self.watch and daemon.config_sources() != self._watched:
            await self._restart_watcher()  # the config now reads other files (a corpus, say)
        return await self._finish(True)

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
            "watching": [str(f) for f in self._watched],
        }
