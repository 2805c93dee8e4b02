"""The CLI's commands, one module each; `tracegate.cli` builds the parser."""

from __future__ import annotations

import sys

EXIT_USAGE = 2


def fail(message: str, code: int = 1) -> int:
    """Report a problem as one line on stderr and return the exit code (never a traceback)."""
    print(f"tracegate: {message}", file=sys.stderr)
    return code
