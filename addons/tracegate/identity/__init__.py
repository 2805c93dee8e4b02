"""Who is asking: tokens in, `Principal` out."""

from tracegate.identity.principal import Principal

__all__ = ["Principal"]
