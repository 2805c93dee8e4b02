"""Real processes for the tests: a gateway (mitmdump -s, tracegate run, mitmweb), its config."""

from __future__ import annotations

import contextlib
import re
import secrets
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tracegate.demo import setup
from tracegate.demo.setup import write_config
from tracegate.demo.store import Store, free_port, stop_process

__all__ = [
    "ANALYST_FIELDS",
    "BIN",
    "REPO",
    "GatewayProcess",
    "audit_rows",
    "copy_database",
    "gateway_env",
    "held_flow",
    "store_gateway",
    "web_session",
    "write_config",
]

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
EXAMPLE = REPO / "rules" / "example.yaml"
LISTENING = re.compile(r"(?<!admin )listening at (?:http://)?\[?[\d.:a-f]+\]?:(\d+)")
ADMIN_LISTENING = re.compile(r"admin listening at [\d.]+:(\d+)")
HASH_KEY = "test-hash-key-0123456789abcdef"
# The top-level fields rules/example.yaml lets the analyst role see.
ANALYST_FIELDS = {"trace_id", "team", "created_at", "model", "latency_ms", "usage", "user"}


def gateway_env(store: Store, **extra: str) -> dict[str, str]:
    """The gateway's environment with the tests' fixed hash key."""
    return setup.gateway_env(store, HASH_KEY, **extra)


def store_gateway(
    workdir: Path,
    store: Store,
    issuer: Any,
    template: Path,
    how: str = "script",
    env_extra: dict[str, str] | None = None,
    **overrides: Any,
) -> GatewayProcess:
    """A gateway (not started yet) in front of a local store, configured from `template`
    (a rules/*.yaml file), with its audit file in `workdir`."""
    config = write_config(
        workdir / "config.yaml",
        store,
        issuer,
        workdir / "audit.sqlite3",
        template=template,
        **overrides,
    )
    env = gateway_env(store, **(env_extra or {}))
    return GatewayProcess(config=config, env=env, how=how, workdir=workdir, upstream=store.endpoint)


@dataclass
class GatewayProcess:
    """A gateway in its own process; `how` is 'script' (mitmdump -s), 'run' or 'web'."""

    config: Path
    env: dict[str, str]
    how: str = "script"
    workdir: Path = field(default_factory=lambda: Path.cwd())
    script: Path = REPO / "addons" / "gateway.py"
    extra_args: list[str] = field(default_factory=list)
    upstream: str = ""
    port: int = 0
    web_port: int = 0
    web_password: str = "test-web-password"
    process: subprocess.Popen | None = None
    log_path: Path | None = None

    def command(self) -> list[str]:
        confdir = ["--set", f"confdir={self.workdir / 'mitmproxy-conf'}"]
        if self.how == "run":
            cmd = [str(BIN / "tracegate"), "run", "--config", str(self.config)]
            return [*cmd, "--listen-port", "0", *self.extra_args]
        tool = "mitmweb" if self.how == "web" else "mitmdump"
        cmd = [
            str(BIN / tool),
            "-s",
            str(self.script),
            "--set",
            f"tracegate_config={self.config}",
            "--mode",
            f"reverse:{self.upstream}",
            "--listen-host",
            "127.0.0.1",
            "--listen-port",
            "0",
            *confdir,
        ]
        if self.how == "web":
            self.web_port = self.web_port or free_port()
            cmd += [
                "--web-host",
                "127.0.0.1",
                "--web-port",
                str(self.web_port),
                "--set",
                "web_open_browser=false",
                "--set",
                f"web_password={self.web_password}",
            ]
        return [*cmd, *self.extra_args]

    def start(self, timeout: float = 30, expect_exit: bool = False) -> GatewayProcess:
        self.log_path = self.workdir / f"gateway-{time.monotonic_ns()}.log"
        self.process = subprocess.Popen(
            self.command(),
            env=self.env,
            cwd=self.workdir,
            stdout=open(self.log_path, "wb"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        if expect_exit:
            self.process.wait(timeout=timeout)
            return self
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = LISTENING.search(self.log())
            if match and (self.how != "web" or "Web server listening" in self.log()):
                self.port = int(match.group(1))
                return self
            if self.process.poll() is not None:
                raise RuntimeError(f"gateway exited {self.process.returncode}:\n{self.log()}")
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"gateway did not start:\n{self.log()}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        self.wait_for_log("admin listening at")
        match = ADMIN_LISTENING.search(self.log())
        assert match is not None
        return f"http://127.0.0.1:{match.group(1)}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def wait_for_log(self, text: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log():
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not logged:\n{self.log()[-3000:]}")
            time.sleep(0.05)

    def stop(self) -> int | None:
        if self.process is None:
            return None
        return stop_process(self.process, timeout=15)


def copy_database(source: Path, target: Path) -> Path:
    """A SQLite file and its WAL companions, copied (a test then tampers with its own)."""
    import shutil

    for suffix in ("", "-wal", "-shm"):
        if source.with_name(source.name + suffix).exists():
            shutil.copy(
                source.with_name(source.name + suffix), target.with_name(target.name + suffix)
            )
    return target


def audit_rows(path: Path, **where: Any) -> list[dict[str, Any]]:
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    try:
        clause = " AND ".join(f"{k} = ?" for k in where) or "1"
        rows = conn.execute(
            f"SELECT * FROM flows WHERE {clause} ORDER BY id", tuple(where.values())
        )
        return [dict(r) for r in rows]
    finally:
        conn.close()


@contextlib.contextmanager
def web_session(gateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://127.0.0.1:{gateway.web_port}", timeout=10) as client:
        client.get("/", params={"token": gateway.web_password}).raise_for_status()
        # Tornado's double-submit check: the same token in the cookie and the header.
        xsrf = secrets.token_hex(16)
        client.cookies.set("_mitmproxy_xsrf", xsrf)
        client.headers["X-XSRFToken"] = xsrf
        yield client


def held_flow(web, timeout: float = 15) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for flow in web.get("/flows.json").json():
            if flow.get("intercepted"):
                return flow
        time.sleep(0.1)
    raise AssertionError("no flow was held")
