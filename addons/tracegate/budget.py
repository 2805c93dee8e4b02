"""A time budget for masking one body: past it, the body is refused, never served unmasked.

Set by the caller around a body (`with budget(seconds):`), read where the work is cut into
pieces (each string scanned, each batch applied); a context variable, so it follows the work
into `asyncio.to_thread`. Every pattern is linear in its input, so no single piece can run
long; the budget bounds the sum.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Iterator

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "tracegate_mask_deadline", default=None
)


class MaskingTimeout(Exception):
    """Masking took longer than its budget."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"masking took longer than {seconds:g} s")
        self.seconds = seconds


@contextlib.contextmanager
def budget(seconds: float | None) -> Iterator[None]:
    token = _deadline.set(None if seconds is None else time.monotonic() + seconds)
    _seconds.set(seconds)
    try:
        yield
    finally:
        _deadline.reset(token)


_seconds: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "tracegate_mask_seconds", default=None
)


def check() -> None:
    """Raise MaskingTimeout once the current budget is spent (no budget: never)."""
    deadline = _deadline.get()
    if deadline is not None and time.monotonic() > deadline:
        raise MaskingTimeout(_seconds.get() or 0)
