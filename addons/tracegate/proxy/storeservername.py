"""The TLS server name sent to the store is the store's own host.

The OptionsLock keeps the client's Host (`keep_host_header`), so mitmproxy no longer sets the
server name from the reverse target; left alone, it would send the client's SNI to the store
(and check the store's certificate against it).
"""

from __future__ import annotations

from mitmproxy.proxy import server_hooks


class StoreServerName:
    name = "tracegate_store_server_name"

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        if data.server.address:
            data.server.sni = data.server.address[0]
