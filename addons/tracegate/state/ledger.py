"""Used SAML assertion IDs in the shared database: refused on every replica once used on one."""

from __future__ import annotations

from tracegate.identity.replay import LedgerUnavailable
from tracegate.state.database import DatabaseUnavailable, SharedDatabase


class PostgresAssertionLedger:
    def __init__(self, database: SharedDatabase) -> None:
        self.database = database

    def record(self, assertion_id: str, until: float, now: float) -> bool:
        try:
            with self.database.connection() as conn:
                conn.execute("DELETE FROM saml_assertions WHERE expires <= %s", (now,))
                inserted = conn.execute(
                    "INSERT INTO saml_assertions (id, expires) VALUES (%s, %s) "
                    "ON CONFLICT (id) DO NOTHING",
                    (assertion_id, until),
                )
                return inserted.rowcount == 1
        except DatabaseUnavailable as exc:
            raise LedgerUnavailable(str(exc)) from None
