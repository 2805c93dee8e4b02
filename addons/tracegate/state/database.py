"""The PostgreSQL database that gateway replicas share: a connection pool and its schema.

The DSN holds a password, so it comes from an environment variable or a file, never from
the YAML, and error messages name the server without it. Every failure to reach the database
is a `DatabaseUnavailable`, which callers turn into a refusal: shared state that cannot be
read or written is never guessed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool, PoolTimeout

from tracegate.config import StateConfig
from tracegate.configbase import read_secret
from tracegate.state.schema import LATEST, MIGRATION_LOCK, MIGRATIONS

# The pool logs every failed attempt to connect, over several lines; the gateway says it once,
# in its own words (start-up refused, a request refused, readiness), so only its errors show.
logging.getLogger("psycopg.pool").setLevel(logging.ERROR)


class DatabaseUnavailable(RuntimeError):
    """The shared database could not be reached or answered with an error."""


class SchemaTooNew(RuntimeError):
    """The database was migrated by a newer tracegate."""


def dsn_of(state: StateConfig) -> str:
    """The DSN from `state.dsn_file` or the `state.dsn_env` variable; ConfigError if neither."""
    if state.dsn_file:
        return read_secret("state.dsn_file", file=state.dsn_file)
    return read_secret("state.dsn_env", env=state.dsn_env)


def describe(dsn: str) -> str:
    """host:port/dbname, never the password."""
    try:
        parts = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "the configured database (its DSN does not parse)"
    host = parts.get("host") or "localhost"
    return f"{host}:{parts.get('port') or 5432}/{parts.get('dbname') or '?'}"


class SharedDatabase:
    """A pool of autocommit connections; `open` migrates the schema and fails start-up if the
    database cannot be reached or is newer than this tracegate."""

    def __init__(self, dsn: str, pool_max: int = 8, timeout: float = 2.0) -> None:
        self.dsn = dsn
        self.where = describe(dsn)
        self.timeout = timeout
        self._pool = ConnectionPool(
            dsn,
            min_size=1,
            max_size=pool_max,
            open=False,
            timeout=timeout,
            # One round trip before a connection is handed out: after the server restarts,
            # no request gets a dead connection from the pool.
            check=ConnectionPool.check_connection,
            # The pool retries a lost connection on a doubling delay (1, 2, 4... s) until this
            # long; left at its default (5 min) a long outage leaves it sleeping half a minute
            # after the server is back. Giving up soon resets the delay: the next request
            # starts a fresh attempt at once.
            reconnect_timeout=max(3 * timeout, 5.0),
            kwargs={
                "autocommit": True,
                "connect_timeout": max(1, round(timeout)),
                # Every write is durable before the gateway acts on it.
                "options": f"-c synchronous_commit=on -c statement_timeout={int(timeout * 1000)}",
            },
            name="tracegate-state",
        )

    @classmethod
    def from_config(cls, state: StateConfig) -> SharedDatabase:
        return cls(dsn_of(state), state.pool_max, state.timeout_seconds)

    def open(self) -> SharedDatabase:
        self._pool.open(wait=False)
        try:
            with self.connection() as conn:
                migrate(conn)
        except Exception:
            self._pool.close()
            raise
        return self

    def close(self) -> None:
        self._pool.close()

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        """A pooled connection; DatabaseUnavailable (naming the server) on any database error."""
        try:
            with self._pool.connection() as conn:
                yield conn
        except PoolTimeout:
            raise DatabaseUnavailable(
                f"PostgreSQL at {self.where} did not answer within {self.timeout:g} s"
            ) from None
        except psycopg.Error as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DatabaseUnavailable(f"PostgreSQL at {self.where}: {first}") from None

    def dedicated(self, statement_timeout: float | None = None) -> psycopg.Connection:
        """A connection of its own, outside the pool, for what holds one for long (LISTEN, the
        integrator's session lock). TCP keepalives make a silent network drop it within ~11 s,
        so a lock held by a replica cut off from the database goes to another one."""
        seconds = self.timeout if statement_timeout is None else statement_timeout
        return psycopg.connect(
            self.dsn,
            autocommit=True,
            connect_timeout=max(1, round(self.timeout)),
            keepalives=1,
            keepalives_idle=5,
            keepalives_interval=2,
            keepalives_count=3,
            options=f"-c synchronous_commit=on -c statement_timeout={int(seconds * 1000)}",
        )

    def pool_stats(self) -> dict[str, int]:
        """size, idle and waiting, for the metrics."""
        stats = self._pool.get_stats()
        return {
            "size": stats.get("pool_size", 0),
            "idle": stats.get("pool_available", 0),
            "waiting": stats.get("requests_waiting", 0),
        }

    def check(self) -> tuple[bool, str]:
        """For readiness: one round trip."""
        try:
            with self.connection() as conn:
                conn.execute("SELECT 1")
        except DatabaseUnavailable as exc:
            return False, str(exc)
        return True, f"PostgreSQL at {self.where} reachable (schema {LATEST})"


def migrate(conn: psycopg.Connection) -> int:
    """Apply the migrations the database lacks; the version it is at afterwards."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS tracegate_schema "
            "(version INTEGER PRIMARY KEY, applied TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM tracegate_schema").fetchone()
        current = int(row[0]) if row else 0
        if current > LATEST:
            raise SchemaTooNew(
                f"the database's schema is version {current}, newer than this tracegate's "
                f"{LATEST}: run the tracegate that migrated it (or a later one)"
            )
        for version, statements in MIGRATIONS:
            if version <= current:
                continue
            for statement in statements:
                conn.execute(statement)
            conn.execute("INSERT INTO tracegate_schema (version) VALUES (%s)", (version,))
    return LATEST
