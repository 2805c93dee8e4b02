"""A real PostgreSQL server for the tests and `make demo BACKEND=postgres`: Debian's package,
in a temp dir, on a loopback port.

pytest-postgresql's executor runs `pg_ctl`; `initdb` and `pg_ctl` refuse to run as root (the
CI runs as root), so as root they run through a `runuser` wrapper as the `postgres` user the
Debian package creates, in a directory handed to that user. Trust authentication on
127.0.0.1 only; `fsync=off` keeps the suite fast (the gateway still asks for
`synchronous_commit=on`, which is what it relies on).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import tempfile
from pathlib import Path

import psycopg
from pytest_postgresql.executors.proc import PostgreSQLExecutor

from tracegate.demo.store import free_port

RUN_AS = "postgres"


def pg_bindir() -> Path:
    """The newest installed server's binaries (`scripts/ensure-postgresql.sh` installs one)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=_version)
    if not found:
        raise RuntimeError("no PostgreSQL server: run `sh scripts/ensure-postgresql.sh`")
    return Path(found[-1]).parent


def _version(path: str) -> int:
    return int(Path(path).parent.parent.name.split(".")[0])


class LocalPostgres:
    """One server; `dsn(name)` creates a database on it (one per test keeps them apart).

    Its directory is its own, under the system temp dir (pytest's are private to root, and
    the server's user must be able to reach its data directory)."""

    def __init__(self, durable: bool = False) -> None:
        # durable: fsync on, as a deployment runs it (benchmarks); off keeps the tests fast.
        self.durable = durable
        self.base = Path(tempfile.mkdtemp(prefix="tracegate-pg-"))
        self.base.chmod(0o711)
        self.port = free_port()
        self._executor: PostgreSQLExecutor | None = None
        self._databases = 0

    def start(self) -> LocalPostgres:
        pg_ctl = pg_bindir() / "pg_ctl"
        executable = str(pg_ctl)
        if os.geteuid() == 0:
            user = pwd.getpwnam(RUN_AS)
            wrapper = self.base / "pg_ctl-as-postgres"
            wrapper.write_text(f'#!/bin/sh\nexec runuser -u {RUN_AS} -- "{pg_ctl}" "$@"\n')
            wrapper.chmod(0o755)
            run = self.base / "server"
            run.mkdir()
            shutil.chown(run, user.pw_uid, user.pw_gid)
            executable = str(wrapper)
        else:
            run = self.base / "server"
            run.mkdir()
        self._executor = PostgreSQLExecutor(
            executable=executable,
            host="127.0.0.1",
            port=self.port,
            datadir=str(run / "data"),
            unixsocketdir=str(run),
            logfile=str(run / "postgresql.log"),
            startparams="-w",
            dbname="postgres",
            user="postgres",
            postgres_options="-c listen_addresses=127.0.0.1"
            + ("" if self.durable else " -c fsync=off -c full_page_writes=off"),
        )
        self._executor.start()
        return self

    def stop(self) -> None:
        if self._executor is not None:
            self._executor.stop()
            self._executor = None
        shutil.rmtree(self.base, ignore_errors=True)

    def admin_dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def dsn(self, name: str | None = None) -> str:
        """A new, empty database's DSN."""
        self._databases += 1
        name = name or f"tracegate_{self._databases}"
        with psycopg.connect(self.admin_dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.admin_dsn(name)

    def down(self) -> None:
        """Stop the server, keeping its data (a test's way to take the database away)."""
        assert self._executor is not None
        self._executor.stop()

    def up(self) -> None:
        """Start it again on the same port and data."""
        assert self._executor is not None
        self._executor.start()
