"""The S3 store kind's config: which bucket, and what its scopes name (key prefixes)."""

from __future__ import annotations

from typing import ClassVar, Literal

from tracegate.stores.credentials import SignedStoreConfig
from tracegate.stores.s3 import S3_READ_OPERATIONS


class S3UpstreamConfig(SignedStoreConfig):
    """An S3 (or compatible) bucket; requests are re-signed for service `s3`."""

    operation_words: ClassVar[str] = "read the s3 store serves"
    listing_approvals: ClassVar[bool] = True

    kind: Literal["s3"]
    bucket: str

    @property
    def read_operations(self) -> frozenset[str]:
        return S3_READ_OPERATIONS
