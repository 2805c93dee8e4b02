"""A CouchDB-compatible server on loopback (pouchdb-server, in memory) holding sample traces.

The gateway reads as `tracegate`, a CouchDB user who is a member of the `traces` database and
nothing more; anonymous requests and wrong passwords get 401 from the store itself. An admin
creates the database and seeds it. pouchdb-server is installed from the npm registry by
scripts/ensure-pouchdb.sh (run by `make test`, and here when it is missing).
"""

from __future__ import annotations

import secrets
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tracegate.demo.store import free_port, stop_process, wait_until_listening

REPO = Path(__file__).resolve().parent.parent
SERVER = REPO / "tests" / "pouchdb" / "node_modules" / ".bin" / "pouchdb-server"


@dataclass
class LocalCouch:
    db: str = "traces"
    user: str = "tracegate"
    password: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    admin_password: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    port: int = 0
    process: subprocess.Popen | None = None
    _workdir: tempfile.TemporaryDirectory | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def gateway_environment(self) -> dict[str, str]:
        return {"TRACEGATE_COUCHDB_USER": self.user, "TRACEGATE_COUCHDB_PASSWORD": self.password}

    def start(self, log: Path | None = None) -> LocalCouch:
        if not SERVER.exists():
            subprocess.run(["sh", str(REPO / "scripts" / "ensure-pouchdb.sh")], check=True)
        self.port = self.port or free_port()
        # pouchdb-server writes config.json and log.txt into its working directory.
        self._workdir = tempfile.TemporaryDirectory(prefix="pouchdb-")
        out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - child keeps it
        self.process = subprocess.Popen(
            [str(SERVER), "--in-memory", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=self._workdir.name,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if log:
            out.close()
        wait_until_listening(self.process, self.port, "pouchdb-server", timeout=60)
        self._set_up()
        return self

    def admin(self) -> httpx.Client:
        return httpx.Client(base_url=self.endpoint, auth=("admin", self.admin_password))

    def _set_up(self) -> None:
        with httpx.Client(base_url=self.endpoint) as anonymous:
            anonymous.put("/_config/admins/admin", json=self.admin_password).raise_for_status()
        with self.admin() as admin:
            admin.put(f"/{self.db}").raise_for_status()
            security = {
                "admins": {"names": ["admin"], "roles": []},
                "members": {"names": [self.user], "roles": []},
            }
            admin.put(f"/{self.db}/_security", json=security).raise_for_status()
            user = {"name": self.user, "password": self.password, "type": "user", "roles": []}
            admin.put(f"/_users/org.couchdb.user:{self.user}", json=user).raise_for_status()

    def seed(self, documents: list[dict[str, Any]]) -> None:
        with self.admin() as admin:
            answer = admin.post(f"/{self.db}/_bulk_docs", json={"docs": documents}, timeout=30)
            answer.raise_for_status()
            assert all(row.get("ok") for row in answer.json()), answer.text

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
        self.process = None
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None
