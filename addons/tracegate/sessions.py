"""Sessions: the flows of one principal, so an auditor can follow what someone did.

A session is one bearer token (by its SHA-256, kept in memory only) until it has been idle for
the configured window; requests without a usable token fall back to their client connection.
Session ids are random, so the audit never holds anything derived from a token.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable

MAX_TRACKED = 100_000


class SessionTracker:
    def __init__(self, idle_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.idle_seconds = idle_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._sessions: dict[str, tuple[str, float]] = {}

    def session_for(self, key: str) -> str:
        now = self._clock()
        with self._lock:
            current = self._sessions.get(key)
            if current is not None and now - current[1] <= self.idle_seconds:
                session = current[0]
            else:
                session = str(uuid.uuid4())
            self._sessions[key] = (session, now)
            if len(self._sessions) > MAX_TRACKED:
                self._expire(now)
        return session

    async def resolve(self, key: str) -> str:
        """`session_for`, for the event loop (a shared tracker may ask the database)."""
        return self.session_for(key)

    def _expire(self, now: float) -> None:
        stale = [k for k, (_, seen) in self._sessions.items() if now - seen > self.idle_seconds]
        for key in stale or list(self._sessions)[: len(self._sessions) // 2]:
            del self._sessions[key]
