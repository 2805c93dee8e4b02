"""Readiness: is everything a request needs in place, and if not, which part is missing."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from tracegate.gateway import Gateway
from tracegate.state.database import SharedDatabase

STORE_TIMEOUT = 2.0


class AuditTarget(Protocol):
    """Where audit rows go (a replica's file, or the shared database)."""

    def check(self) -> tuple[bool, str]: ...


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
    audit: AuditTarget | None,
    database: SharedDatabase | None = None,
) -> list[Check]:
    if gateway is None:
        return [Check("config", False, "no config loaded")]
    config_check = Check(
        "config", lockdown is None, lockdown or f"policy version {gateway.version} in force"
    )
    store, audit = await asyncio.gather(store_check(gateway), asyncio.to_thread(audit_check, audit))
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


def audit_check(audit: AuditTarget | None) -> Check:
    if audit is None:
        return Check("audit", False, "audit writer is not running")
    ok, detail = audit.check()
    return Check("audit", ok, detail)
