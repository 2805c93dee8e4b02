"""The console's server-side sessions: the browser holds only a random id (an HttpOnly cookie).

A session knows who signed in (as an approvals `Actor`), what the console lets them do, and its
CSRF token; it ends when unused for `idle_seconds`, `max_seconds` after sign-in, or at sign-out.
Sessions live in this gateway's memory: behind a load balancer, route each console user to one
replica (sticky sessions), or sign in again on another.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tracegate.approvals import Actor

MAX_SESSIONS = 10_000


@dataclass
class ConsoleSession:
    id: str
    actor: Actor
    can_approve: bool
    can_audit: bool
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    started: float = 0.0
    seen: float = 0.0


class ConsoleSessions:
    def __init__(
        self,
        idle_seconds: float,
        max_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.idle_seconds = idle_seconds
        self.max_seconds = max_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._sessions: dict[str, ConsoleSession] = {}

    def create(self, actor: Actor, can_approve: bool, can_audit: bool) -> ConsoleSession:
        now = self._clock()
        session = ConsoleSession(
            secrets.token_urlsafe(32), actor, can_approve, can_audit, started=now, seen=now
        )
        with self._lock:
            if len(self._sessions) >= MAX_SESSIONS:
                self._expire(now)
            self._sessions[session.id] = session
        return session

    def get(self, session_id: str | None) -> ConsoleSession | None:
        """The live session with this id (and it counts as used now), or None."""
        if not session_id:
            return None
        now = self._clock()
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                return None
            if now - session.seen > self.idle_seconds or now - session.started > self.max_seconds:
                del self._sessions[session_id]
                return None
            session.seen = now
            return session

    def end(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(session_id, None)

    def _expire(self, now: float) -> None:
        for key, s in list(self._sessions.items()):
            if now - s.seen > self.idle_seconds or now - s.started > self.max_seconds:
                del self._sessions[key]
        if len(self._sessions) >= MAX_SESSIONS:  # still full: the least recently used go
            for key in sorted(self._sessions, key=lambda k: self._sessions[k].seen)[:1000]:
                del self._sessions[key]
