"""tracegate: a least-privilege gateway for AI reasoning traces."""

__version__ = "0.1.0"
