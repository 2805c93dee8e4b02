"""A response's declared size is judged by tracegate, not by mitmproxy's backstop.

mitmproxy compares a response's Content-Length with its `body_size_limit` before any addon sees
the response, and answers with its own HTML 502 and no flow id. The ResponseFilter refuses a
declared size over `limits.max_body_bytes` itself (the JSON `BodyTooLarge`, sent at the store's
first chunk; the rest is read and dropped), so mitmproxy's early check is skipped for responses
that declare their length. A body without a declared length (chunked, close-delimited) still
meets the backstop as it grows, so memory stays bounded.

This wraps one method of mitmproxy's HTTP layer, which offers no hook before that check; the
wrapper refuses to install on a mitmproxy whose layer does not have it, so an upgrade that
moves it stops start-up instead of silently bringing the HTML answer back.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from mitmproxy.proxy.layers import http as http_layer

_MARK = "_tracegate_declared_size"


class LayerChanged(RuntimeError):
    """mitmproxy's HTTP layer is not the one this wrapper was written for."""


def install() -> None:
    stream = http_layer.HttpStream
    original = getattr(stream, "check_body_size", None)
    if original is None or "response_body_buf" not in getattr(stream, "__annotations__", {}):
        raise LayerChanged("mitmproxy's HttpStream.check_body_size is gone; see declaredsize.py")
    if getattr(original, _MARK, False):
        return

    def check_body_size(self: Any, request: bool) -> Generator[Any, Any, bool]:
        response = self.flow.response
        if (
            not request
            and response is not None
            and not self.response_body_buf
            and "content-length" in response.headers
        ):
            return False  # the ResponseFilter's responseheaders hook decides, with a JSON answer
        return (yield from original(self, request))

    setattr(check_body_size, _MARK, True)
    stream.check_body_size = check_body_size
