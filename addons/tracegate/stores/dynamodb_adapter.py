"""The DynamoDB store: reads re-scoped and re-signed, items filtered by row scope and masked."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from tracegate.denial import Denial, gateway_failure
from tracegate.exchange import ClientResponse, Exchange, IncomingRequest, UpstreamRequest
from tracegate.stores import dynamodb
from tracegate.stores.adapter import SignedStoreAdapter
from tracegate.stores.dynamodb_config import DynamoUpstreamConfig

if TYPE_CHECKING:
    import httpx

    from tracegate.config import GatewayConfig
    from tracegate.masking import Masker
    from tracegate.stores.sigv4 import UpstreamSigner


@dataclass(frozen=True)
class ScopedRead:
    body: bytes  # the request as scoped for the store
    partition_value: Any = None  # the typed value returned rows must have


class DynamoStore(SignedStoreAdapter):
    kind = "dynamodb"

    def __init__(self, config: GatewayConfig, signer: UpstreamSigner) -> None:
        super().__init__(config, signer)
        assert isinstance(config.upstream, DynamoUpstreamConfig)
        self.upstream = config.upstream

    def parse(self, request: IncomingRequest) -> dynamodb.DynamoAccess:
        return dynamodb.parse_request(
            request.method, request.path, request.header("x-amz-target"), request.body
        )

    def narrow(self, exchange: Exchange) -> list[str]:
        access, grant = exchange.access, exchange.grant
        assert isinstance(access, dynamodb.DynamoAccess) and grant is not None
        assert exchange.principal is not None
        scoped = dynamodb.scope_request(access, grant.scope, exchange.principal)
        exchange.store_state = ScopedRead(dynamodb.dumps(scoped.body), scoped.partition_value)
        return scoped.notes

    def upstream_request(self, exchange: Exchange) -> UpstreamRequest:
        access, read = exchange.access, exchange.store_state
        assert isinstance(access, dynamodb.DynamoAccess) and isinstance(read, ScopedRead)
        headers = {
            "host": self._netloc,
            "content-type": dynamodb.CONTENT_TYPE,
            "x-amz-target": dynamodb.TARGET_PREFIX + access.operation,
            "accept-encoding": "identity",
        }
        url = f"{self._scheme}://{self._netloc}/"
        signed = self.signer.sign("POST", url, headers, read.body)
        return UpstreamRequest("POST", self._scheme, self._host, self._port, "/", signed, read.body)

    def respond(
        self,
        exchange: Exchange,
        status: int,
        headers: Mapping[str, str],
        body: bytes,
        base: dict[str, str | None],
        masker: Masker,
    ) -> ClientResponse:
        """Items outside the row scope are removed; the rest masked as plain JSON, re-typed."""
        access, grant, read = exchange.access, exchange.grant, exchange.store_state
        assert isinstance(access, dynamodb.DynamoAccess) and grant is not None
        assert isinstance(read, ScopedRead)
        answer_headers = {**base, "content-type": dynamodb.CONTENT_TYPE}
        if status >= 300:
            try:
                error = json.loads(body)
            except ValueError:
                error = None
            if not isinstance(error, dict) or "__type" not in error:
                raise gateway_failure(f"the store answered {status} with an unexpected body")
            answer_headers["x-amz-crc32"] = dynamodb.crc32(body)
            return ClientResponse(status, body, answer_headers)
        try:
            response = json.loads(body, parse_float=Decimal, parse_int=Decimal)
        except ValueError:
            raise gateway_failure("the store's answer is not JSON") from None
        partition = grant.scope.partition
        try:
            for table, items in dynamodb.items_of(access.operation, response):
                kept = []
                for item in items:
                    if partition and item.get(partition.attribute) != read.partition_value:
                        exchange.report.listing_removed += 1
                        continue
                    plain = dynamodb.item_to_plain(item)
                    masked = masker.mask_document(plain, exchange.report)
                    exchange.report.documents += 1
                    kept.append(dynamodb.item_to_typed(masked, item))
                dynamodb.replace_items(access.operation, response, table, kept)
            if partition and access.operation in ("Query", "Scan"):
                dynamodb.scope_page(response, partition.attribute, read.partition_value)
        except (ValueError, KeyError, TypeError) as exc:
            raise Denial(502, "UnmaskableContent", f"cannot mask the items: {exc}") from None
        out = dynamodb.dumps(response)
        answer_headers["x-amz-crc32"] = dynamodb.crc32(out)
        return ClientResponse(status, out, answer_headers)

    def error_body(self, exchange: Exchange, denial: Denial) -> tuple[bytes, dict[str, str]]:
        body = dynamodb.error_body(denial)
        return body, {"content-type": dynamodb.CONTENT_TYPE, "x-amz-crc32": dynamodb.crc32(body)}

    async def readiness(self, client: httpx.AsyncClient) -> tuple[bool, str]:
        """A GetItem with an empty key on each table the roles name, signed with the gateway's
        credentials: DynamoDB authorises before it validates, so a ValidationException means
        the store is reachable and the gateway may read the table; nothing is read."""
        tables = sorted(
            {
                t
                for role in self.config.roles.values()
                for s in role.scopes.values()
                for t in s.tables
            }
        )
        url = f"{self.upstream.endpoint}/"
        for table in tables:
            body = json.dumps({"TableName": table, "Key": {}}).encode()
            headers = {
                "host": self._netloc,
                "content-type": dynamodb.CONTENT_TYPE,
                "x-amz-target": dynamodb.TARGET_PREFIX + "GetItem",
            }
            signed = self.signer.sign("POST", url, headers, body)
            response = await client.post(url, headers=signed, content=body)
            error = response.text
            if "ResourceNotFoundException" in error:
                return False, f"table {table!r} not found"
            refused = "AccessDenied" in error or "Unrecognized" in error
            if response.status_code in (401, 403) or refused:
                return False, f"store refused the gateway's credentials for {table!r}"
            if response.status_code >= 500:
                return False, f"store answered {response.status_code}"
        return True, f"table(s) {', '.join(tables)} reachable"
