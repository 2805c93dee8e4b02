from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from tests.harness import GatewayProcess, gateway_env, write_config
from tracegate.demo.issuer import TokenIssuer
from tracegate.demo.postgres import LocalPostgres
from tracegate.demo.store import LocalS3
from tracegate.demo.traces import sample_objects


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalS3]:
    """A moto S3 server with signature checks on, seeded with the sample traces."""
    s3 = LocalS3()
    s3.start(log=tmp_path_factory.mktemp("moto") / "moto.log")
    try:
        s3.seed(sample_objects())
        yield s3
    finally:
        s3.stop()


@pytest.fixture(scope="session")
def issuer() -> Iterator[TokenIssuer]:
    token_issuer = TokenIssuer()
    token_issuer.serve()
    try:
        yield token_issuer
    finally:
        token_issuer.stop()


@pytest.fixture
def tokens(issuer: TokenIssuer) -> dict[str, str]:
    """Requesters and approvers of the example config (modules may define their own)."""
    return {
        "alice": issuer.token("alice@example.com", ["support-engineers"]),
        "sec1": issuer.token("sec1@example.com", ["security-leads"]),
        "sec2": issuer.token("sec2@example.com", ["security-leads"]),
        "analyst": issuer.token("bob@example.com", ["data-analysts"]),
        # Holds both roles: may approve others' requests, never their own.
        "dual": issuer.token("dana@example.com", ["support-engineers", "security-leads"]),
    }


@pytest.fixture
def make_gateway(
    tmp_path: Path, store: LocalS3, issuer: TokenIssuer
) -> Iterator[Callable[..., GatewayProcess]]:
    """Start a real gateway process; config overrides as dotted keys, e.g. limits.max_body_bytes."""
    started: list[GatewayProcess] = []

    def start(
        how: str = "script",
        env: dict[str, str] | None = None,
        extra_args: list[str] | None = None,
        script: Path | None = None,
        **overrides: Any,
    ) -> GatewayProcess:
        n = len(started)
        config = write_config(
            tmp_path / f"config-{n}.yaml",
            store,
            issuer,
            tmp_path / f"audit-{n}.sqlite3",
            **overrides,
        )
        gateway = GatewayProcess(
            config=config,
            env=env or gateway_env(store),
            how=how,
            workdir=tmp_path,
            extra_args=extra_args or [],
            upstream=store.endpoint,
        )
        if script is not None:
            gateway.script = script
        started.append(gateway)
        return gateway.start()

    yield start
    for gateway in started:
        gateway.stop()


@pytest.fixture(scope="module")
def shared_gateway(
    tmp_path_factory: pytest.TempPathFactory, store: LocalS3, issuer: TokenIssuer
) -> Iterator[GatewayProcess]:
    """One `mitmdump -s` gateway for the read-only end-to-end tests of a module."""
    workdir = tmp_path_factory.mktemp("gateway")
    config = write_config(workdir / "config.yaml", store, issuer, workdir / "audit.sqlite3")
    gateway = GatewayProcess(
        config=config, env=gateway_env(store), workdir=workdir, upstream=store.endpoint
    )
    gateway.start()
    try:
        yield gateway
    finally:
        gateway.stop()


def aws_client(
    service: str, gateway_url: str, token: str | None, validate: bool = True, **headers: str
):
    """A real boto3 client pointed at the gateway, sending the token in X-Tracegate-Token.

    This is the event hook the README documents for boto3 users.
    """
    options = {"s3": {"addressing_style": "path"}} if service == "s3" else {}
    client = boto3.client(
        service,
        endpoint_url=gateway_url,
        region_name="us-east-1",
        aws_access_key_id="client-has-no-store-credentials",
        aws_secret_access_key="client-has-no-store-credentials",
        config=Config(retries={"max_attempts": 1}, parameter_validation=validate, **options),
    )
    extra = dict(headers)
    if token is not None:
        extra["X-Tracegate-Token"] = token

    def add_headers(request, **_: Any) -> None:
        for name, value in extra.items():
            request.headers[name] = value

    client.meta.events.register(f"before-sign.{service}", add_headers)
    return client


def s3_client(gateway_url: str, token: str | None, **headers: str):
    return aws_client("s3", gateway_url, token, **headers)


@pytest.fixture(scope="session")
def postgres() -> Iterator[LocalPostgres]:
    """One real PostgreSQL per worker; each test takes a database of its own (`dsn()`)."""
    server = LocalPostgres().start()
    try:
        yield server
    finally:
        server.stop()


CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium (scripts/ensure-chromium.sh), driven by Playwright: never a browser
    Playwright downloads."""
    from playwright.sync_api import sync_playwright

    assert CHROMIUM.exists(), "run scripts/ensure-chromium.sh (make test does) first"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()
