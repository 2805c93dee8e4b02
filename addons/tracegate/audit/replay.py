"""Replaying an audited flow: what the requester saw, and whether the record is still faithful.

`against_store` re-runs the recorded request against the store under a given policy (normally
the recorded version, read back from the `policies` table) with the gateway's credentials and
hash key from the environment, and compares digests: the store's body against
`upstream_sha256` (has the trace changed?) and the masked result against `returned_sha256` (does
the record reproduce exactly?). Identity is not re-checked: the recorded role and purpose apply.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import httpx

from tracegate.config import GatewayConfig
from tracegate.denial import Denial
from tracegate.exchange import IncomingRequest
from tracegate.gateway import Gateway
from tracegate.grant import Grant


@dataclass
class ReplayResult:
    status: int
    body: bytes
    upstream_sha256: str | None
    returned_sha256: str
    store_unchanged: bool
    reproduced: bool


def recorded_request(row: dict[str, Any], body: dict[str, Any] | None) -> IncomingRequest:
    info = json.loads(body["request"]) if body else {}
    return IncomingRequest(
        method=row["method"],
        path=row["path"],
        query=tuple(tuple(pair) for pair in info.get("query", [])),
        headers={k.lower(): v for k, v in info.get("headers", [])},
    )


async def against_store(
    row: dict[str, Any], body: dict[str, Any] | None, config: GatewayConfig
) -> ReplayResult:
    if row["decision"] != "allow" or not row["role"]:
        raise ValueError(f"flow {row['flow_id']} was not served (decision {row['decision']})")
    gateway = Gateway.from_config(config)
    exchange = gateway.new_exchange(row["flow_id"], recorded_request(row, body))
    request = exchange.request
    if gateway.store.kind != "s3":
        raise ValueError(
            f"replay against the store is available for S3 stores, not {gateway.store.kind}"
        )
    exchange.access = gateway.store.parse(request)
    role = config.roles.get(row["role"])
    if role is None or row["purpose"] not in role.scopes:
        raise ValueError(f"the policy has no scope for {row['role']}/{row['purpose']}")
    exchange.grant = Grant(row["role"], row["purpose"], role.scopes[row["purpose"]])
    upstream = gateway.upstream_request(exchange)
    url = f"{upstream.scheme}://{upstream.host}:{upstream.port}{upstream.path}"
    async with httpx.AsyncClient(timeout=30, verify=config.upstream.verify_tls) as client:
        response = await client.request(upstream.method, url, headers=upstream.headers)
    try:
        answer = gateway.respond(
            exchange, response.status_code, dict(response.headers), response.content
        )
        status, served = answer.status, b"" if answer.head else answer.body
    except Denial as denial:
        status, served = denial.status, denial.reason.encode()
    returned = hashlib.sha256(served).hexdigest()
    return ReplayResult(
        status=status,
        body=served,
        upstream_sha256=exchange.upstream_sha256,
        returned_sha256=returned,
        store_unchanged=exchange.upstream_sha256 == row["upstream_sha256"],
        reproduced=returned == row["returned_sha256"],
    )
