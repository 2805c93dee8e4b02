"""Reload the config when its file changes (checked once a second by modification time)."""

from __future__ import annotations

import asyncio
import logging
import os

from tracegate.proxy.runtime import Runtime

logger = logging.getLogger(__name__)
INTERVAL_SECONDS = 1.0


class ConfigWatcher:
    name = "tracegate_config_watcher"

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._task: asyncio.Task | None = None
        self._seen: tuple[str, float] | None = None

    def running(self) -> None:
        if self._task is None:
            self._seen = self._stamp()
            self._task = asyncio.get_running_loop().create_task(self._watch())

    def _stamp(self) -> tuple[str, float] | None:
        path = self.runtime.config_path
        if path is None:
            return None
        try:
            return (str(path), os.stat(path).st_mtime)
        except OSError:
            return (str(path), -1.0)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(INTERVAL_SECONDS)
            stamp = self._stamp()
            if stamp is not None and stamp != self._seen:
                self._seen = stamp
                if stamp[1] >= 0:
                    self.runtime.reload("file changed")

    def done(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
