"""Re-signing upstream requests with the gateway's credentials (botocore's SigV4 signer)."""

from __future__ import annotations

import logging

from botocore.auth import S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

# Headers a client may have sent that must never reach the store: its own signature and
# identity, and anything the gateway sets itself.
CLIENT_AUTH_HEADERS = frozenset(
    {
        "authorization",
        "x-amz-date",
        "x-amz-security-token",
        "x-amz-content-sha256",
        "x-amz-user-agent",
        "cookie",
        "proxy-authorization",
        "amz-sdk-invocation-id",
        "amz-sdk-request",
        "expect",
    }
)
# What a signed request carries that could be replayed against the store.
SIGNING_HEADERS = ("authorization", "x-amz-date", "x-amz-content-sha256", "x-amz-security-token")
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


class UpstreamSigner:
    """Signs one request for the store; clients never hold these credentials."""

    def __init__(self, credentials: Credentials, region: str, service: str = "s3") -> None:
        # botocore logs each canonical request and signature at DEBUG; mitmproxy runs with the
        # root logger at DEBUG and keeps those records in its event log (mitmweb shows them),
        # and dispatches each one to every addon. Signing material stays out of both.
        logging.getLogger("botocore").setLevel(logging.WARNING)
        auth_class = S3SigV4Auth if service == "s3" else SigV4Auth
        self._auth = auth_class(credentials, service, region)

    def sign(
        self, method: str, url: str, headers: dict[str, str], body: bytes = b""
    ) -> dict[str, str]:
        """Return the headers to send upstream: the given ones plus the fresh signature."""
        request = AWSRequest(method=method, url=url, headers=dict(headers), data=body)
        request.context["payload_signing_enabled"] = True
        self._auth.add_auth(request)
        return dict(request.headers.items())
