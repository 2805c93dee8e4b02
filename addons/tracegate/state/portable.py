"""A PostgreSQL connection that answers the audit code's calls the way sqlite3 does.

The audit log, its verification, proofs, retention and the readers are written once, against
`sqlite3.Connection`'s small surface (`execute` with `?` parameters, rows readable by index and
by column name, `with conn:` as a transaction, `BEGIN IMMEDIATE`). This gives the shared
database that surface, so `tracegate audit verify` reads a replica's file and the shared log
with the same code. Writers to the log in PostgreSQL serialise on LOG_LOCK, as SQLite's
`BEGIN IMMEDIATE` serialises writers to one file.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg

# pg_advisory_xact_lock key taken by every transaction that appends to the shared log.
LOG_LOCK = 0x74676C6F67  # "tglog"
_PLACEHOLDER = re.compile(r"\?")


class Row:
    """One result row: by position (unpacking, `row[0]`) and by name (`row["id"]`, `dict(row)`)."""

    __slots__ = ("_names", "_values")

    def __init__(self, names: tuple[str, ...], values: Sequence[Any]) -> None:
        self._names = names
        self._values = tuple(values)

    def __getitem__(self, key: int | str) -> Any:
        if isinstance(key, str):
            return self._values[self._names.index(key)]
        return self._values[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def keys(self) -> tuple[str, ...]:
        return self._names


def _rows(cursor: psycopg.Cursor[Any]) -> Any:
    names = tuple(c.name for c in cursor.description or ())
    return lambda values: Row(names, values)


def translate(sql: str) -> str:
    """sqlite3's `?` parameters as psycopg's `%s` (a literal `%` doubled first)."""
    return _PLACEHOLDER.sub("%s", sql.replace("%", "%%"))


class PortableConnection:
    """Wraps an autocommit psycopg connection; `close` closes it only if this owns it."""

    def __init__(self, conn: psycopg.Connection[Any], owned: bool = True) -> None:
        self.conn = conn
        self.owned = owned
        self._transactions: list[Any] = []
        self._row_factory = conn.row_factory  # given back at `close` (a pooled connection)
        conn.row_factory = _rows  # type: ignore[assignment]

    @classmethod
    def connect(cls, dsn: str, timeout: float = 10.0) -> PortableConnection:
        conn = psycopg.connect(
            dsn,
            autocommit=True,
            connect_timeout=max(1, round(timeout)),
            options="-c synchronous_commit=on",
        )
        return cls(conn)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> psycopg.Cursor[Any]:
        statement = sql.strip().upper()
        if statement in ("BEGIN IMMEDIATE", "BEGIN"):
            cursor = self.conn.execute("BEGIN")
            self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOG_LOCK,))
            return cursor
        return self.conn.execute(translate(sql), tuple(params))  # type: ignore[arg-type]

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with self.conn.cursor() as cursor:
            cursor.executemany(translate(sql), [tuple(r) for r in rows])  # type: ignore[arg-type]

    def table_names(self) -> set[str]:
        query = "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
        return {r[0] for r in self.conn.execute(query)}

    @property
    def in_transaction(self) -> bool:
        return self.conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE

    def __enter__(self) -> PortableConnection:
        """`with conn:` is one transaction that appends to the log, as in sqlite3."""
        transaction = self.conn.transaction()
        transaction.__enter__()
        self._transactions.append(transaction)
        self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOG_LOCK,))
        return self

    def __exit__(self, *exc: Any) -> None:
        self._transactions.pop().__exit__(*exc)

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """Reads that all see the log as it stood at one moment, while the integrator goes on
        appending (a read-only REPEATABLE READ transaction)."""
        self.conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        try:
            yield
        finally:
            self.conn.execute("ROLLBACK")

    def close(self) -> None:
        if self.owned:
            self.conn.close()
        else:
            self.conn.row_factory = self._row_factory
