"""A local S3 (moto server) that checks signatures, seeded with sample traces.

moto skips authentication only for its first `INITIAL_NO_AUTH_ACTION_COUNT` requests: those
create two IAM users (a seeder that may write, and the gateway that may only read), and from
then on every request must carry a valid SigV4 signature from one of them.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import boto3
import httpx
from botocore.config import Config

NO_AUTH_ACTIONS = 6  # 2 x (CreateUser, CreateAccessKey, PutUserPolicy)
GATEWAY_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": "arn:aws:s3:::{bucket}/*"},
        {"Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": "arn:aws:s3:::{bucket}"},
    ],
}
SEEDER_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": ["s3:*", "dynamodb:*"], "Resource": "*"}],
}


class Store(Protocol):
    """What the demo and the tests need of any local store: where it is, the gateway's keys."""

    @property
    def endpoint(self) -> str: ...

    def gateway_environment(self) -> dict[str, str]: ...


def stop_process(process: subprocess.Popen, timeout: float = 10) -> int:
    """Stop a process started in its own session, and everything it started; its exit code."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return process.returncode


def wait_until_listening(
    process: subprocess.Popen, port: int, name: str, timeout: float = 30
) -> None:
    """Return once the process accepts connections on its loopback port; raise if it exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{name} did not start within {timeout:g} s")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Keys:
    access_key_id: str
    secret_access_key: str


@dataclass
class LocalS3:
    """A moto server process on loopback; `start()`, then `seed()`, then `stop()`."""

    service: ClassVar[str] = "s3"
    client_options: ClassVar[dict[str, Any]] = {"s3": {"addressing_style": "path"}}
    bucket: str = "traces"
    region: str = "us-east-1"
    port: int = 0
    process: subprocess.Popen | None = None
    gateway_keys: Keys | None = None
    seeder_keys: Keys | None = None
    _log: Any = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, log: Path | None = None) -> LocalS3:
        self.port = self.port or free_port()
        env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT=str(NO_AUTH_ACTIONS))
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
            env.pop(name, None)
        self._log = open(log, "ab") if log else None  # noqa: SIM115 - closed in stop()
        out = self._log or subprocess.DEVNULL
        moto = Path(sys.executable).with_name("moto_server")
        self.process = subprocess.Popen(
            [str(moto), "-H", "127.0.0.1", "-p", str(self.port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_until_listening(self.process, self.port, "moto_server", timeout=30)
        self.seeder_keys = self._user("tracegate-seeder", SEEDER_POLICY)
        self.gateway_keys = self._user("tracegate-gateway", self.gateway_policy())
        return self

    def gateway_environment(self) -> dict[str, str]:
        """The gateway's own store keys, as `credentials: {source: env}` reads them."""
        assert self.gateway_keys is not None
        return {
            "TRACEGATE_UPSTREAM_ACCESS_KEY_ID": self.gateway_keys.access_key_id,
            "TRACEGATE_UPSTREAM_SECRET_ACCESS_KEY": self.gateway_keys.secret_access_key,
        }

    def gateway_policy(self) -> dict:
        return json.loads(json.dumps(GATEWAY_POLICY).replace("{bucket}", self.bucket))

    def _user(self, name: str, policy: dict) -> Keys:
        # These three calls are within moto's unauthenticated allowance.
        iam = boto3.client(
            "iam",
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id="bootstrap",
            aws_secret_access_key="bootstrap",
        )
        iam.create_user(UserName=name)
        key = iam.create_access_key(UserName=name)["AccessKey"]
        iam.put_user_policy(UserName=name, PolicyName="access", PolicyDocument=json.dumps(policy))
        return Keys(key["AccessKeyId"], key["SecretAccessKey"])

    def client(self, keys: Keys | None = None):
        """A boto3 client for this store's service, as the seeder (or with `keys`)."""
        keys = keys or self.seeder_keys
        assert keys is not None
        return boto3.client(
            self.service,
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=keys.access_key_id,
            aws_secret_access_key=keys.secret_access_key,
            config=Config(retries={"max_attempts": 1}, **self.client_options),
        )

    def seed(self, objects: dict[str, tuple[bytes, str]]) -> None:
        s3 = self.client()
        s3.create_bucket(Bucket=self.bucket)
        for key, (body, content_type) in objects.items():
            s3.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType=content_type)

    def healthy(self) -> bool:
        try:
            httpx.get(self.endpoint, timeout=1)
        except httpx.HTTPError:
            return False
        return True

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
        self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None


DYNAMODB_READS = ["dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query", "dynamodb:Scan"]


@dataclass
class LocalDynamo(LocalS3):
    """The same moto server, used as DynamoDB: the gateway's user may only read `table`."""

    service: ClassVar[str] = "dynamodb"
    client_options: ClassVar[dict[str, Any]] = {}
    table: str = "traces"

    def gateway_policy(self) -> dict:
        # moto matches only the actions of JSON-protocol services (their resource is "*");
        # against AWS, name the table: arn:aws:dynamodb:REGION:ACCOUNT:table/TABLE.
        return {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": DYNAMODB_READS, "Resource": "*"}],
        }

    def seed(self, items: list[dict[str, Any]]) -> None:  # type: ignore[override]
        """Create the table (partition `tenant_id`, sort `trace_id`) and put typed items."""
        db = self.client()
        db.create_table(
            TableName=self.table,
            KeySchema=[
                {"AttributeName": "tenant_id", "KeyType": "HASH"},
                {"AttributeName": "trace_id", "KeyType": "RANGE"},
            ],
            AttributeDefinitions=[
                {"AttributeName": "tenant_id", "AttributeType": "S"},
                {"AttributeName": "trace_id", "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )
        for item in items:
            db.put_item(TableName=self.table, Item=item)
