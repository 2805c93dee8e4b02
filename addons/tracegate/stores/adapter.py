"""What a store adapter does for the gateway, whatever the store speaks.

One adapter per store kind (S3, DynamoDB, a JSON-over-HTTP store by route map) turns the
client's request into an `Access` the policy can judge (the access answers whether it lies
inside a scope, see `tracegate/access.py`), builds the request the gateway sends
with its own credentials, finds the trace documents in the store's answer and masks them, and
phrases refusals the way that store's clients understand. The `Gateway` does identity, policy
and approval the same way for every kind.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar
from urllib.parse import urlsplit

from tracegate.access import Access
from tracegate.stores.credentials import SignedStoreConfig, load_credentials
from tracegate.stores.sigv4 import SIGNING_HEADERS, UpstreamSigner

if TYPE_CHECKING:
    import httpx

    from tracegate.config import GatewayConfig
    from tracegate.denial import Denial
    from tracegate.exchange import ClientResponse, Exchange, IncomingRequest, UpstreamRequest
    from tracegate.masking import Masker


class StoreAdapter(ABC):
    kind: ClassVar[str]
    # Request headers that carry the gateway's own credentials: hidden from the flow once sent.
    secret_headers: ClassVar[tuple[str, ...]] = SIGNING_HEADERS

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        endpoint = urlsplit(config.upstream.endpoint)
        self._scheme = endpoint.scheme
        self._host = endpoint.hostname or ""
        self._port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
        self._netloc = endpoint.netloc

    @abstractmethod
    def parse(self, request: IncomingRequest) -> Access:
        """The access a request asks for, or a Denial for anything this store must not serve."""

    def narrow(self, exchange: Exchange) -> list[str]:
        """Fit the allowed request to its grant (row scope, projection, page size); returns
        notes for the audit's reason. Raises Denial for what cannot be fitted."""
        return []

    @abstractmethod
    def upstream_request(self, exchange: Exchange) -> UpstreamRequest:
        """The request to send to the store, with the gateway's own credentials."""

    @abstractmethod
    def respond(
        self,
        exchange: Exchange,
        status: int,
        headers: Mapping[str, str],
        body: bytes,
        base: dict[str, str | None],
        masker: Masker,
    ) -> ClientResponse:
        """What the client may see of the store's (decoded) answer; raises Denial otherwise.

        `headers` have lower-case names; `base` are the gateway's own response headers."""

    @abstractmethod
    def error_body(self, exchange: Exchange, denial: Denial) -> tuple[bytes, dict[str, str]]:
        """A refusal in this store's error shape: the body and its content headers."""

    @abstractmethod
    async def readiness(self, client: httpx.AsyncClient) -> tuple[bool, str]:
        """Whether the store answers the gateway's credentials, with a line saying so."""


class SignedStoreAdapter(StoreAdapter):
    """An AWS store: every request is signed with SigV4 for the adapter's kind (its service)."""

    def __init__(self, config: GatewayConfig, signer: UpstreamSigner) -> None:
        super().__init__(config)
        self.signer = signer

    @classmethod
    def from_config(cls, config: GatewayConfig) -> SignedStoreAdapter:
        upstream = config.upstream
        assert isinstance(upstream, SignedStoreConfig)
        credentials = load_credentials(upstream.credentials)
        return cls(config, UpstreamSigner(credentials, upstream.region, cls.kind))
