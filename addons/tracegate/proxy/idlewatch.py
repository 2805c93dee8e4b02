"""A held request keeps its connection alive against mitmproxy's idle timeout.

`limits.upstream_timeout_seconds` is mitmproxy's `tcp_timeout`: a connection with no traffic for
that long is closed, which is what cuts off a store that never answers. mitmproxy pauses that
timer while a hook runs, but a timer already counting when the hook began still fires once it
runs out, so a request waiting for its approver (or an operator's resume) would be closed with
it. While a hold waits, it marks the connection active on every poll.
"""

from __future__ import annotations

from mitmproxy import ctx, http


def keep_alive(flow: http.HTTPFlow) -> None:
    proxyserver = ctx.master.addons.get("proxyserver")
    handler = getattr(proxyserver, "connections", {}).get(flow.client_conn.id)
    watchdog = getattr(handler, "timeout_watchdog", None)
    if watchdog is not None:
        watchdog.register_activity()
