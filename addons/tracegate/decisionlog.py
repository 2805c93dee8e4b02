"""One JSON line per decision, for log pipelines: who, what, the decision and what was masked.

Never tokens, never trace content: the same fields as the audit row, minus the digests.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import IO, Any


class DecisionLog:
    def __init__(self, target: str) -> None:
        self.target = target
        self._lock = threading.Lock()
        self._stream: IO[str] | None
        if target == "none":
            self._stream = None
        elif target == "stderr":
            self._stream = sys.stderr
        elif target == "stdout":
            self._stream = sys.stdout
        else:
            self._stream = open(target, "a", buffering=1)  # noqa: SIM115 - lives with the gateway

    def write(self, entry: dict[str, Any]) -> None:
        if self._stream is None:
            return
        line = json.dumps(
            {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **entry},
            separators=(",", ":"),
        )
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()

    def close(self) -> None:
        if self._stream is not None and self._stream not in (sys.stderr, sys.stdout):
            self._stream.close()
