"""A store reached over TLS: the gateway names the store in its TLS handshake, not the client.

The gateway keeps the client's Host (SigV4 covers it; virtual-hosted requests name their bucket
there), which stops mitmproxy from setting the store's server name itself. Real moto S3 behind
a TLS terminator that records each handshake's server name (SNI); the gateway checks the
store's certificate against a CA it is given.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.harness import EXAMPLE, store_gateway
from tracegate.demo.store import free_port
from tracegate.demo.traces import PLANTED_EMAIL

KEY = "traces/team-a/tr-a001.json"


def self_signed(folder: Path, name: str) -> tuple[Path, Path]:
    """A certificate for `name` that is its own CA (the gateway is told to trust it)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "store-cert.pem", folder / "store-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@dataclass
class TlsFront:
    """TLS in front of a plain-HTTP store: decrypts, relays bytes, records server names."""

    target_port: int
    cert: Path
    key: Path
    port: int = 0
    server_names: list[str | None] = field(default_factory=list)
    _loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> TlsFront:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
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
    cert, key = self_signed(tmp_path, "localhost")
    front = TlsFront(int(store.endpoint.rsplit(":", 1)[1]), cert, key).start()
    try:
        yield StoreBehindTls(store, front)
    finally:
        front.stop()


def test_the_store_is_asked_under_its_own_name_whatever_the_client_says(
    tmp_path, tls_store, issuer
):
    gateway = store_gateway(tmp_path, tls_store, issuer, EXAMPLE)
    gateway.extra_args = ["--set", f"ssl_verify_upstream_trusted_ca={tls_store.front.cert}"]
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
