"""Sessions that every replica continues: a token used on one replica and then on another
(behind a load balancer, any request may land anywhere) is one session in the audit.

The database holds each token's keyed hash (HMAC with a key the replicas share, never the
token or its plain digest), its session id and when a replica last saw it. A replica asks the
database when it meets a token it has not seen lately, and otherwise at most every
REFRESH_SECONDS per token (which keeps the shared last-seen time current), off the event
loop. If the database cannot answer, the replica goes on with a session of its own (a session
only groups flows; every flow is still authorised and audited on its own) and says so once.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import random
import time
import uuid

from tracegate.sessions import SessionTracker
from tracegate.state.database import DatabaseUnavailable, SharedDatabase
from tracegate.state.keys import shared_secret

logger = logging.getLogger(__name__)
REFRESH_SECONDS = 30.0
SWEEP_ODDS = 0.01  # share of database visits that also delete long-idle sessions

UPSERT = (
    "INSERT INTO sessions (key, session_id, last_seen) VALUES (%(key)s, %(new)s, %(now)s) "
    "ON CONFLICT (key) DO UPDATE SET session_id = CASE WHEN sessions.last_seen < "
    "%(now)s - %(idle)s THEN EXCLUDED.session_id ELSE sessions.session_id END, "
    "last_seen = GREATEST(sessions.last_seen, EXCLUDED.last_seen) RETURNING session_id"
)


class SharedSessionTracker(SessionTracker):
    def __init__(self, database: SharedDatabase, idle_seconds: float) -> None:
        super().__init__(idle_seconds)
        self.database = database
        self._secret: bytes | None = None  # read from the database on first use
        self._asked: dict[str, tuple[str, float]] = {}  # key -> (session, when last asked)
        self._warned = False
        self._quiet_until = 0.0  # monotonic: after a failure, sessions stay local until then

    async def resolve(self, key: str) -> str:
        now = time.monotonic()
        known = self._asked.get(key)
        refresh = min(REFRESH_SECONDS, self.idle_seconds / 4)
        if (known is not None and now - known[1] < refresh) or now < self._quiet_until:
            return self.session_for(key)  # its local idle clock moves on too
        try:
            session = await asyncio.to_thread(self._ask, key)
        except DatabaseUnavailable as exc:
            if not self._warned:
                logger.warning("tracegate: sessions are per replica until %s", exc)
                self._warned = True
            # Not asked again for a while: no request waits on a database that is away.
            self._quiet_until = time.monotonic() + refresh
            return self.session_for(key)
        self._warned = False
        with self._lock:
            self._sessions[key] = (session, now)
            self._asked[key] = (session, now)
            if len(self._asked) > len(self._sessions):
                self._asked = {k: v for k, v in self._asked.items() if k in self._sessions}
        return session

    def _ask(self, key: str) -> str:
        if self._secret is None:
            self._secret = shared_secret(self.database)
        hashed = hmac.new(self._secret, key.encode(), hashlib.sha256).hexdigest()
        now = time.time()
        values = {"key": hashed, "new": str(uuid.uuid4()), "now": now, "idle": self.idle_seconds}
        with self.database.connection() as conn:
            row = conn.execute(UPSERT, values).fetchone()
            if random.random() < SWEEP_ODDS:
                conn.execute(
                    "DELETE FROM sessions WHERE last_seen < %s", (now - 2 * self.idle_seconds,)
                )
        if row is None:
            raise DatabaseUnavailable("the session was not stored")
        return str(row[0])
