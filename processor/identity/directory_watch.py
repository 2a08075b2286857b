"""Keeps the directory current: reloads its file when it changes (the I/O edge)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

import structlog

from processor.errors import ConfigError
from processor.identity.directory import Directory, load_directory

log = structlog.get_logger("processor.identity.directory")


class DirectoryWatcher:
    """Loads ``path`` at start, then polls its modification time and reloads on change.

    A reload that fails keeps the previous directory and logs every problem, so
    a half-edited file never empties the directory of a running service.
    """

    def __init__(self, path: str, interval_s: float, publish: Callable[[Directory], None]) -> None:
        self._path = path
        self._interval = interval_s
        self._publish = publish
        self._stamp: tuple[int, int] | None = None
        self._task: asyncio.Task[None] | None = None
        self.reloads = 0

    def load(self) -> None:
        """Load the file now; ConfigError when it is invalid."""
        stamp = self._read_stamp()
        self._publish(load_directory(self._path))
        self._stamp = stamp

    def check(self) -> bool:
        """Reload when the file changed since the last load; True when it did reload."""
        stamp = self._read_stamp()
        if stamp == self._stamp:
            return False
        try:
            directory = load_directory(self._path)
        except ConfigError as exc:
            log.error(
                "directory_reload_failed",
                path=self._path,
                problems=[str(p) for p in exc.problems],
                hint="the previous directory stays in use",
            )
            self._stamp = stamp  # do not retry the same broken file every poll
            return False
        self._publish(directory)
        self._stamp = stamp
        self.reloads += 1
        log.info("directory_reloaded", path=self._path, entries=len(directory))
        return True

    def start(self) -> None:
        """Start polling in the background."""
        self._task = asyncio.get_running_loop().create_task(self._poll(), name="directory")

    async def shutdown(self) -> None:
        """Stop polling."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            self.check()

    def _read_stamp(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self._path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)
