"""A store reached over TLS: the gateway names the store in its TLS handshake, not the client.

The gateway keeps the client's Host (SigV4 covers it; virtual-hosted requests name their bucket
there), which stops mitmproxy from setting the store's server name itself. Real moto S3 behind
a TLS terminator that records each handshake's server name (SNI); the gateway checks the
store's certificate against a CA it is given.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.harness import EXAMPLE, store_gateway
from tracegate.demo.store import free_port
from tracegate.demo.tls import local_ca
from tracegate.demo.traces import PLANTED_EMAIL

KEY = "traces/team-a/tr-a001.json"


@dataclass
class TlsFront:
    """TLS in front of a plain-HTTP store: decrypts, relays bytes, records server names."""

    target_port: int
    pem: Path  # key and certificate
    port: int = 0
    server_names: list[str | None] = field(default_factory=list)
    _loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> TlsFront:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.pem)
        context.sni_callback = lambda _sock, name, _ctx: self.server_names.append(name)
        self.port = free_port()
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            server = self._loop.run_until_complete(
                asyncio.start_server(self._relay, "127.0.0.1", self.port, ssl=context)
            )
            ready.set()
            self._loop.run_forever()
            server.close()

        threading.Thread(target=run, daemon=True).start()
        assert ready.wait(10)
        return self

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, ssl.SSLError):
                pass
            finally:
                sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)


@dataclass
class StoreBehindTls:
    """The moto store as the gateway sees it: an https endpoint named `localhost`."""

    inner: object
    front: TlsFront
    ca: Path  # what the gateway is told to trust

    @property
    def endpoint(self) -> str:
        return f"https://localhost:{self.front.port}"

    @property
    def bucket(self) -> str:
        return self.inner.bucket

    def gateway_environment(self) -> dict[str, str]:
        return self.inner.gateway_environment()


@pytest.fixture
def tls_store(tmp_path, store) -> Iterator[StoreBehindTls]:
    ca, pem = local_ca(tmp_path / "store-tls", hosts=("localhost",))
    front = TlsFront(int(store.endpoint.rsplit(":", 1)[1]), pem).start()
    try:
        yield StoreBehindTls(store, front, ca)
    finally:
        front.stop()


def test_the_store_is_asked_under_its_own_name_whatever_the_client_says(
    tmp_path, tls_store, issuer
):
    gateway = store_gateway(tmp_path, tls_store, issuer, EXAMPLE)
    gateway.extra_args = ["--set", f"ssl_verify_upstream_trusted_ca={tls_store.ca}"]
    gateway.start()
    try:
        ca = gateway.workdir / "mitmproxy-conf" / "mitmproxy-ca-cert.pem"
        token = issuer.token("alice@example.com", ["support-engineers"])
        with httpx.Client(verify=ssl.create_default_context(cafile=ca), timeout=20) as client:
            answer = client.get(
                f"https://127.0.0.1:{gateway.port}/traces/{KEY}",
                headers={"Authorization": f"Bearer {token}", "Host": "traces.client.example"},
                extensions={"sni_hostname": "gateway.client.example"},
            )
        assert answer.status_code == 200, answer.text
        assert answer.json()["trace_id"] and PLANTED_EMAIL not in answer.text
        assert tls_store.front.server_names and set(tls_store.front.server_names) == {"localhost"}
    finally:
        gateway.stop()
