"""Where used SAML assertion IDs are kept until their assertion expires (replay refusal).

One interface, two homes: a table in the audit database's SQLite file (one process, or
several on one file) and, with `state.backend: postgres`, the database every replica shares
(`state.ledger`), so an assertion used on one gateway is refused on all the others.
"""

from __future__ import annotations

import sqlite3
from typing import Protocol


class LedgerUnavailable(RuntimeError):
    """The ID could not be recorded; the assertion is refused (fail closed)."""


class AssertionLedger(Protocol):
    def record(self, assertion_id: str, until: float, now: float) -> bool:
        """Keep the ID until `until`; False when it is there already (a replay)."""
        ...


class SqliteAssertionLedger:
    def __init__(self, path: str) -> None:
        self.path = path

    def record(self, assertion_id: str, until: float, now: float) -> bool:
        try:
            conn = sqlite3.connect(self.path, timeout=5)
            try:
                with conn:
                    conn.execute(
                        "CREATE TABLE IF NOT EXISTS saml_assertions "
                        "(id TEXT PRIMARY KEY, expires REAL NOT NULL)"
                    )
                    conn.execute("DELETE FROM saml_assertions WHERE expires <= ?", (now,))
                    conn.execute("INSERT INTO saml_assertions VALUES (?, ?)", (assertion_id, until))
            finally:
                conn.close()
        except sqlite3.IntegrityError:
            return False
        except sqlite3.Error as exc:
            raise LedgerUnavailable(str(exc)) from None
        return True
