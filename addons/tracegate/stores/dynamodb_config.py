"""The DynamoDB store kind's config: what its scopes name (tables, a partition attribute)."""

from __future__ import annotations

from typing import ClassVar, Literal

from tracegate.stores.credentials import SignedStoreConfig
from tracegate.stores.dynamodb import DYNAMODB_READ_OPERATIONS


class DynamoUpstreamConfig(SignedStoreConfig):
    """A DynamoDB (or compatible) endpoint; requests are re-signed for service `dynamodb`."""

    scope_resource: ClassVar[str] = "tables"
    scope_resource_words: ClassVar[str] = "tables"
    scope_settings: ClassVar[frozenset[str]] = frozenset({"partition", "max_limit"})
    operation_words: ClassVar[str] = "read the dynamodb store serves"

    kind: Literal["dynamodb"]

    @property
    def read_operations(self) -> frozenset[str]:
        return DYNAMODB_READ_OPERATIONS
