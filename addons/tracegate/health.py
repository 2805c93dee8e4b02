"""Readiness: is everything a request needs in place, and if not, which part is missing."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tracegate.gateway import Gateway

STORE_TIMEOUT = 2.0


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "detail": self.detail}


async def readiness(
    gateway: Gateway | None, lockdown: str | None, audit_path: Path | None, audit_running: bool
) -> list[Check]:
    if gateway is None:
        return [Check("config", False, "no config loaded")]
    config_check = Check(
        "config", lockdown is None, lockdown or f"policy version {gateway.version} in force"
    )
    store, audit = await asyncio.gather(
        store_check(gateway), asyncio.to_thread(audit_check, audit_path, audit_running)
    )
    return [config_check, store, jwks_check(gateway), audit]


async def store_check(gateway: Gateway) -> Check:
    """An empty listing of the bucket, signed with the gateway's own credentials: it needs
    exactly the read permission the gateway uses (HeadBucket's mapping varies by server)."""
    upstream = gateway.config.upstream
    if upstream.kind == "dynamodb":
        return await dynamodb_check(gateway)
    url = f"{upstream.endpoint}/{upstream.bucket}?list-type=2&max-keys=0"
    headers = gateway.signer.sign("GET", url, {"host": url.split("/")[2]})
    try:
        async with httpx.AsyncClient(timeout=STORE_TIMEOUT, verify=upstream.verify_tls) as client:
            response = await client.get(url, headers=headers)
    except httpx.HTTPError as exc:
        return Check("store", False, f"store unreachable: {type(exc).__name__}")
    if response.status_code in (401, 403):
        return Check(
            "store", False, f"store refused the gateway's credentials ({response.status_code})"
        )
    if response.status_code == 404:
        return Check("store", False, f"bucket {upstream.bucket!r} not found")
    if response.status_code >= 400:
        return Check("store", False, f"store answered {response.status_code}")
    return Check("store", True, f"bucket {upstream.bucket!r} reachable")


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


async def dynamodb_check(gateway: Gateway) -> Check:
    """A GetItem with an empty key on each table the roles name, signed with the gateway's
    credentials: DynamoDB authorises before it validates, so a ValidationException means the
    store is reachable and the gateway may read the table; nothing is read."""
    upstream = gateway.config.upstream
    tables = sorted(
        {
            t
            for role in gateway.config.roles.values()
            for s in role.scopes.values()
            for t in s.tables
        }
    )
    url = f"{upstream.endpoint}/"
    async with httpx.AsyncClient(timeout=STORE_TIMEOUT, verify=upstream.verify_tls) as client:
        for table in tables:
            body = json.dumps({"TableName": table, "Key": {}}).encode()
            headers = {
                "host": url.split("/")[2],
                "content-type": "application/x-amz-json-1.0",
                "x-amz-target": "DynamoDB_20120810.GetItem",
            }
            signed = gateway.signer.sign("POST", url, headers, body)
            try:
                response = await client.post(url, headers=signed, content=body)
            except httpx.HTTPError as exc:
                return Check("store", False, f"store unreachable: {type(exc).__name__}")
            error = response.text
            if "ResourceNotFoundException" in error:
                return Check("store", False, f"table {table!r} not found")
            refused = "AccessDenied" in error or "Unrecognized" in error
            if response.status_code in (401, 403) or refused:
                return Check(
                    "store", False, f"store refused the gateway's credentials for {table!r}"
                )
            if response.status_code >= 500:
                return Check("store", False, f"store answered {response.status_code}")
    return Check("store", True, f"table(s) {', '.join(tables)} reachable")
