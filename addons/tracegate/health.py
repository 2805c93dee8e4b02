"""Readiness: is everything a request needs in place, and if not, which part is missing."""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tracegate.gateway import Gateway
from tracegate.state.database import SharedDatabase

STORE_TIMEOUT = 2.0


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "detail": self.detail}


async def readiness(
    gateway: Gateway | None,
    lockdown: str | None,
    audit_path: Path | None,
    audit_running: bool,
    database: SharedDatabase | None = None,
) -> list[Check]:
    if gateway is None:
        return [Check("config", False, "no config loaded")]
    config_check = Check(
        "config", lockdown is None, lockdown or f"policy version {gateway.version} in force"
    )
    store, audit = await asyncio.gather(
        store_check(gateway), asyncio.to_thread(audit_check, audit_path, audit_running)
    )
    checks = [config_check, store, jwks_check(gateway), audit]
    if database is not None:
        ok, detail = await asyncio.to_thread(database.check)
        checks.append(Check("database", ok, detail))
    return checks


async def store_check(gateway: Gateway) -> Check:
    """Ask the store something harmless with the gateway's own credentials (see each adapter)."""
    verify = gateway.config.upstream.verify_tls
    try:
        async with httpx.AsyncClient(timeout=STORE_TIMEOUT, verify=verify) as client:
            ok, detail = await gateway.store.readiness(client)
    except httpx.HTTPError as exc:
        return Check("store", False, f"store unreachable: {type(exc).__name__}")
    return Check("store", ok, detail)


def jwks_check(gateway: Gateway) -> Check:
    missing = [
        f"{cache.provider.name} ({cache.last_error or 'not fetched yet'})"
        for cache in gateway.validator.caches.values()
        if not cache.loaded
    ]
    if missing:
        return Check("jwks", False, "no signing keys loaded for " + ", ".join(missing))
    return Check("jwks", True, "signing keys loaded for every provider")


def audit_check(path: Path | None, running: bool) -> Check:
    if path is None or not running:
        return Check("audit", False, "audit writer is not running")
    try:
        conn = sqlite3.connect(path, timeout=0.2, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return Check("audit", False, f"audit database not writable: {exc}")
    return Check("audit", True, f"{path} writable")
