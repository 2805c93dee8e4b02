"""S3 tools with no code change: tracegate as their STS endpoint and the judge of their SigV4
signatures. Real mitmdump gateway, moto S3 with signature checks behind it; boto3 and the AWS
CLI configured only by environment variables, each in a clean process."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.harness import BIN, GatewayProcess, audit_rows, store_gateway
from tracegate.demo.setup import EXAMPLE, write_config
from tracegate.demo.store import free_port
from tracegate.demo.traces import PLANTED_API_KEY, PLANTED_EMAIL
from tracegate.sts import read_answer

ROLE_ARN = "arn:aws:iam::000000000000:role/support"
KEY = "traces/team-a/tr-a001.json"
STS_KEYS = "k1:" + base64.b64encode(b"s" * 32).decode()


def start_sts_gateway(
    work: Path,
    store,
    issuer,
    extra_args: tuple[str, ...] = (),
    how: str = "script",
    config: dict | None = None,
    **sts: object,
) -> GatewayProcess:
    """A real mitmdump gateway with STS on, on a port chosen first (clients sign for it)."""
    port = free_port()
    gateway = store_gateway(
        work,
        store,
        issuer,
        EXAMPLE,
        how=how,
        env_extra={"TRACEGATE_STS_KEYS": STS_KEYS},
        **{"identity.sts": {"enabled": True, "public_host": f"127.0.0.1:{port}", **sts}},
        **(config or {}),
    )
    gateway.extra_args = ["--listen-port", str(port), *extra_args]
    return gateway.start()


@pytest.fixture(scope="module")
def sts_gateway(tmp_path_factory, store, issuer) -> Iterator[GatewayProcess]:
    gateway = start_sts_gateway(tmp_path_factory.mktemp("sts"), store, issuer)
    try:
        yield gateway
    finally:
        gateway.stop()


def process_config(gateway: GatewayProcess, token_file: Path, folder: Path) -> Path:
    """An AWS config file whose default profile gets credentials from `tracegate credentials`."""
    command = (
        f"{BIN / 'tracegate'} credentials --endpoint {gateway.url} "
        f"--token-file {token_file} --role-arn {ROLE_ARN} --session-name debugging"
    )
    config = folder / "aws-config"
    config.write_text(f"[default]\ncredential_process = {command}\n")
    return config


def read_with_boto3(env: dict[str, str]) -> str:
    """The trace as a clean boto3 process, configured by `env` alone, reads it."""
    script = (
        "import boto3\n"
        f"answer = boto3.client('s3').get_object(Bucket='traces', Key='{KEY}')\n"
        "print(answer['Body'].read().decode())"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


CHATS = "s3://traces/traces/team-a/chats/2026-11-20.jsonl"
POLARS = f"import polars as pl\nprint(pl.read_ndjson({CHATS!r}).write_json())"
PANDAS = (
    f"import pandas as pd\nprint(pd.read_json({CHATS!r}, lines=True).to_json(orient='records'))"
)


def read_chats(env: dict[str, str], script: str) -> list:
    """The day's chat log as a clean process, configured by `env` alone, reads it: its rows,
    none of which may show a user's e-mail (each line names one)."""
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "@example.com" not in done.stdout
    return json.loads(done.stdout)


def client_env(gateway: GatewayProcess, token_file: Path, **extra: str) -> dict[str, str]:
    """What a user sets for their AWS tools, and nothing else of AWS's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TRACEGATE_"))}
    env.update(
        AWS_ENDPOINT_URL=gateway.url,
        AWS_WEB_IDENTITY_TOKEN_FILE=str(token_file),
        AWS_ROLE_ARN=ROLE_ARN,
        AWS_ROLE_SESSION_NAME="debugging",
        AWS_REGION="us-east-1",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        **extra,
    )
    return env


@pytest.fixture(scope="module")
def token_file(tmp_path_factory, issuer) -> Path:
    path = tmp_path_factory.mktemp("identity") / "token"
    path.write_text(issuer.token("carol", ["support-engineers"]))
    return path


BOTO3_SCRIPT = """
import json, sys, boto3, botocore.exceptions
s3 = boto3.client("s3")
out = {}
out["body"] = s3.get_object(Bucket="traces", Key=sys.argv[1])["Body"].read().decode()
out["head"] = s3.head_object(Bucket="traces", Key=sys.argv[1])["ContentLength"]
listing = s3.list_objects_v2(Bucket="traces", Prefix="traces/team-a/")
out["keys"] = [o["Key"] for o in listing.get("Contents", [])]
s3.download_file("traces", sys.argv[1], sys.argv[2])
out["downloaded"] = open(sys.argv[2]).read()
try:
    s3.get_object(Bucket="traces", Key="traces/team-b/tr-b001.json")
except botocore.exceptions.ClientError as error:
    out["other_team"] = error.response["Error"]["Code"]
print(json.dumps(out))
"""


def test_boto3_configured_only_by_environment_reads_masked_traces(
    sts_gateway, token_file, tmp_path
):
    env = client_env(sts_gateway, token_file)
    done = subprocess.run(
        [sys.executable, "-c", BOTO3_SCRIPT, KEY, str(tmp_path / "copy.json")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert json.loads(out["body"])["trace_id"] and PLANTED_EMAIL not in out["body"]
    assert PLANTED_API_KEY not in out["body"] and out["downloaded"] == out["body"]
    assert out["head"] == len(out["body"].encode())
    assert out["keys"] and all(k.startswith("traces/team-a/") for k in out["keys"])
    assert out["other_team"] == "AccessDenied"
    rows = audit_rows(sts_gateway.config.with_name("audit.sqlite3"))
    sts_rows = [r for r in rows if r["reason"].startswith("sts: credentials ASIA")]
    assert sts_rows and sts_rows[0]["subject"] == "carol" and sts_rows[0]["status"] == 200
    read = [r for r in rows if r["resource"] == f"s3://traces/{KEY}" and r["method"] == "GET"]
    assert read and "identity: sts credentials ASIA" in read[0]["reason"]


def test_the_aws_cli_lists_copies_heads_and_presigns(sts_gateway, token_file, tmp_path):
    env = client_env(sts_gateway, token_file)
    config = tmp_path / "aws-config"
    config.write_text("[default]\ns3 =\n    signature_version = s3v4\n")
    env["AWS_CONFIG_FILE"] = str(config)

    def aws(*args: str) -> str:
        done = subprocess.run(
            [str(BIN / "aws"), *args], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert "tr-a001.json" in aws("s3", "ls", "s3://traces/traces/team-a/")
    aws("s3", "cp", f"s3://traces/{KEY}", str(tmp_path / "cp.json"))
    copied = (tmp_path / "cp.json").read_text()
    assert PLANTED_EMAIL not in copied and json.loads(copied)["trace_id"]
    head = json.loads(aws("s3api", "head-object", "--bucket", "traces", "--key", KEY))
    assert head["ContentLength"] == len(copied.encode())
    url = aws("s3", "presign", f"s3://traces/{KEY}", "--expires-in", "300").strip()
    assert "X-Amz-Signature=" in url and url.startswith(sts_gateway.url)
    fetched = httpx.get(url, timeout=15)  # a plain HTTP client with the URL alone
    assert fetched.status_code == 200 and fetched.text == copied
    tampered = httpx.get(url.replace("X-Amz-Expires=300", "X-Amz-Expires=301"), timeout=15)
    assert tampered.status_code == 403 and "SignatureDoesNotMatch" in tampered.text


def sts_call(gateway: GatewayProcess, token: str, **extra: str) -> httpx.Response:
    form = {
        "Action": "AssumeRoleWithWebIdentity",
        "Version": "2011-06-15",
        "RoleArn": ROLE_ARN,
        "RoleSessionName": "debugging",
        "WebIdentityToken": token,
        **extra,
    }
    return httpx.post(gateway.url + "/", data=form, timeout=15)


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ({"WebIdentityToken": "not-a-jwt"}, 400, "InvalidIdentityToken"),
        ({"RoleArn": "arn:aws:iam::000000000000:role/nobody"}, 403, "AccessDenied"),
        ({"RoleArn": "arn:aws:iam::000000000000:role/security"}, 403, "IDPRejectedClaim"),
        ({"Version": "2010-01-01"}, 400, "InvalidParameterValue"),
        ({"RoleSessionName": ""}, 400, "MissingParameter"),
        ({"DurationSeconds": "60"}, 400, "ValidationError"),
    ],
)
def test_sts_errors_come_in_stss_shape_and_codes(sts_gateway, issuer, change, status, code):
    token = issuer.token("carol", ["support-engineers"])
    response = sts_call(sts_gateway, token, **change)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("text/xml")
    assert f"<Code>{code}</Code>" in response.text and "<ErrorResponse" in response.text


def test_an_expired_web_identity_token_is_expired_token_exception(sts_gateway, issuer):
    token = issuer.token("carol", ["support-engineers"], ttl=-600)
    response = sts_call(sts_gateway, token)
    assert response.status_code == 400 and "<Code>ExpiredTokenException</Code>" in response.text


def test_the_web_identity_token_and_the_credentials_are_kept_nowhere(sts_gateway, issuer):
    token = issuer.token("carol", ["support-engineers"])
    answer = sts_call(sts_gateway, token)
    assert answer.status_code == 200
    credentials = read_answer(answer.content)
    secret, session = credentials["SecretAccessKey"], credentials["SessionToken"]
    time.sleep(0.5)
    database = sts_gateway.config.with_name("audit.sqlite3")
    stored = b"".join(p.read_bytes() for p in database.parent.glob("audit.sqlite3*"))
    for value in (token, secret, session):
        assert value.encode() not in stored
    assert token.encode() not in sts_gateway.log_path.read_bytes()


def test_a_session_token_changed_by_one_character_is_refused(sts_gateway, issuer):
    import boto3
    from botocore.config import Config

    answer = sts_call(sts_gateway, issuer.token("carol", ["support-engineers"]))
    good = boto3_credentials(answer)

    def get(**credentials: str) -> str:
        s3 = boto3.client(
            "s3",
            endpoint_url=sts_gateway.url,
            region_name="us-east-1",
            config=Config(retries={"max_attempts": 1}),
            **credentials,
        )
        try:
            s3.get_object(Bucket="traces", Key=KEY)
            return "ok"
        except s3.exceptions.ClientError as error:
            return error.response["Error"]["Code"]

    assert get(**good) == "ok"
    token = good["aws_session_token"]
    flipped = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    assert get(**{**good, "aws_session_token": flipped}) == "InvalidToken"
    assert get(**{**good, "aws_secret_access_key": "x" * 40}) == "SignatureDoesNotMatch"
    other = "ASIA" + "A" * 16
    assert get(**{**good, "aws_access_key_id": other}) == "InvalidToken"


def boto3_credentials(answer: httpx.Response) -> dict[str, str]:
    credentials = read_answer(answer.content)
    return {
        "aws_access_key_id": credentials["AccessKeyId"],
        "aws_secret_access_key": credentials["SecretAccessKey"],
        "aws_session_token": credentials["SessionToken"],
    }


def credentials_for(gateway: GatewayProcess, issuer) -> dict[str, str]:
    return boto3_credentials(sts_call(gateway, issuer.token("carol", ["support-engineers"])))


def test_a_request_signed_twenty_minutes_ago_is_too_skewed(sts_gateway, issuer, monkeypatch):
    import datetime as dt

    import boto3
    import botocore.auth

    credentials = credentials_for(sts_gateway, issuer)
    past = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(minutes=20)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: past)
    s3 = boto3.client("s3", endpoint_url=sts_gateway.url, region_name="us-east-1", **credentials)
    with pytest.raises(s3.exceptions.ClientError) as error:
        s3.get_object(Bucket="traces", Key=KEY)
    assert error.value.response["Error"]["Code"] == "RequestTimeTooSkewed"


def test_a_sigv2_presigned_url_is_refused_naming_the_fix(sts_gateway, issuer):
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=sts_gateway.url,
        region_name="us-east-1",
        **credentials_for(sts_gateway, issuer),
    )
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "traces", "Key": KEY})
    if "X-Amz-Signature" in url:
        pytest.skip("this botocore presigns with SigV4 by default")
    refused = httpx.get(url, timeout=15)
    assert refused.status_code == 400 and "signature_version = s3v4" in refused.text


def test_a_presigned_url_past_its_expiry_is_refused(sts_gateway, issuer, monkeypatch):
    import datetime as dt

    import boto3
    import botocore.auth
    from botocore.config import Config

    past = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(minutes=10)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: past)
    s3 = boto3.client(
        "s3",
        endpoint_url=sts_gateway.url,
        region_name="us-east-1",
        config=Config(signature_version="s3v4"),
        **credentials_for(sts_gateway, issuer),
    )
    url = s3.generate_presigned_url(
        "get_object", Params={"Bucket": "traces", "Key": KEY}, ExpiresIn=300
    )
    refused = httpx.get(url, timeout=15)
    assert refused.status_code == 403 and "expired" in refused.text


def test_sts_config_mistakes_are_one_line_naming_the_key(tmp_path, store, issuer, monkeypatch):
    from tracegate.config import ConfigError, load_config
    from tracegate.demo.setup import DYNAMODB_EXAMPLE
    from tracegate.sts import load_sealer

    def config_with(template=None, **sts):
        extra = {"template": template} if template else {}
        path = write_config(
            tmp_path / "c.yaml",
            store,
            issuer,
            tmp_path / "a.sqlite3",
            **{"identity.sts": {"enabled": True, "public_host": "127.0.0.1:1", **sts}},
            **extra,
        )
        return path

    monkeypatch.delenv("TRACEGATE_STS_KEYS", raising=False)
    with pytest.raises(ConfigError, match=r"^identity.sts.keys_env: TRACEGATE_STS_KEYS is not set"):
        load_sealer(load_config(config_with()))
    monkeypatch.setenv("TRACEGATE_STS_KEYS", "k1:" + base64.b64encode(b"short").decode())
    with pytest.raises(ConfigError, match="32 bytes"):
        load_sealer(load_config(config_with()))
    with pytest.raises(ConfigError, match=r"identity.sts.role_arns.ghost: not a role"):
        load_config(config_with(role_arns={"ghost": "arn:aws:iam::1:role/g"}))
    with pytest.raises(ConfigError, match=r"identity.sts.enabled: STS credentials are for S3"):
        load_config(config_with(DYNAMODB_EXAMPLE))


def test_a_token_header_still_wins_over_a_signature_with_other_keys(sts_gateway, issuer):
    import boto3
    from botocore.config import Config

    token = issuer.token("carol", ["support-engineers"])
    s3 = boto3.client(
        "s3",
        endpoint_url=sts_gateway.url,
        region_name="us-east-1",
        aws_access_key_id="not-needed",
        aws_secret_access_key="not-needed",
        config=Config(s3={"addressing_style": "path"}),
    )
    s3.meta.events.register(
        "before-sign.s3",
        lambda request, **_: request.headers.__setitem__("X-Tracegate-Token", token),
    )
    body = s3.get_object(Bucket="traces", Key=KEY)["Body"].read().decode()
    assert PLANTED_EMAIL not in body and json.loads(body)["trace_id"]


def refusal_for_minted(gateway: GatewayProcess, purpose: str, expires_in: float) -> dict:
    """What the gateway answers to credentials sealed with its own key for `purpose`."""
    import boto3

    from tracegate.identity.principal import Principal
    from tracegate.identity.session_credentials import CredentialSealer, parse_keys

    carol = Principal("carol", "iss", "demo", ("support-engineers",))
    sealer = CredentialSealer(parse_keys(STS_KEYS))
    credentials, token = sealer.mint(carol, "support", purpose, time.time() + expires_in, {})
    s3 = boto3.client(
        "s3",
        endpoint_url=gateway.url,
        region_name="us-east-1",
        aws_access_key_id=credentials.access_key_id,
        aws_secret_access_key=credentials.secret_access_key,
        aws_session_token=token,
    )
    with pytest.raises(s3.exceptions.ClientError) as error:
        s3.get_object(Bucket="traces", Key=KEY)
    return error.value.response["Error"]


def test_credentials_for_a_purpose_no_longer_configured_are_refused(sts_gateway):
    # What a reload that removes a role or purpose does to credentials already handed out.
    error = refusal_for_minted(sts_gateway, "retired", 600)
    assert error["Code"] == "InvalidAccessKeyId" and "no longer configured" in error["Message"]


def test_short_credentials_are_refreshed_by_the_client(tmp_path, store, issuer, token_file):
    # botocore refreshes 15 minutes ahead of expiry: 900-second credentials, on every call.
    gateway = start_sts_gateway(tmp_path, store, issuer, max_duration_seconds=900)
    try:
        script = (
            "import boto3\ns3 = boto3.client('s3')\n"
            f"for _ in range(3): s3.get_object(Bucket='traces', Key='{KEY}')['Body'].read()\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", script],
            env=client_env(gateway, token_file),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        rows = audit_rows(tmp_path / "audit.sqlite3")
    finally:
        gateway.stop()
    assert sum(r["reason"].startswith("sts: credentials") for r in rows) >= 2
    assert sum(r["method"] == "GET" and r["status"] == 200 for r in rows) == 3


def test_credential_process_serves_clients_that_cannot_reach_sts(sts_gateway, token_file, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TRACEGATE_"))}
    env.update(
        AWS_CONFIG_FILE=str(process_config(sts_gateway, token_file, tmp_path)),
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_ENDPOINT_URL=sts_gateway.url,
        AWS_REGION="us-east-1",
    )
    out = read_with_boto3(env)
    assert json.loads(out)["trace_id"] and PLANTED_EMAIL not in out


def test_credential_process_reports_a_refusal_in_one_line(sts_gateway, token_file):
    done = subprocess.run(
        [
            str(BIN / "tracegate"),
            "credentials",
            "--endpoint",
            sts_gateway.url,
            "--token-file",
            str(token_file),
            "--role-arn",
            "arn:aws:iam::000000000000:role/x",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0 and "AccessDenied" in done.stderr


def test_boto3_over_tls_with_the_gateways_certificate(sts_gateway, token_file, tmp_path):
    # mitmproxy terminates TLS on the same listener, with a certificate from its CA (in
    # production: `--certs` with the organisation's own); clients trust it via AWS_CA_BUNDLE.
    ca = sts_gateway.workdir / "mitmproxy-conf" / "mitmproxy-ca-cert.pem"
    https = sts_gateway.url.replace("http://", "https://")
    env = client_env(sts_gateway, token_file, AWS_CA_BUNDLE=str(ca))
    env["AWS_ENDPOINT_URL"] = https
    out = read_with_boto3(env)
    assert json.loads(out)["trace_id"] and PLANTED_EMAIL not in out


def test_the_listener_serves_its_configured_certificate_to_boto3_and_polars(
    tmp_path, store, issuer, token_file
):
    # `listen.certificate` (here from a local CA, as `make demo` makes one): clients trust the
    # CA through AWS_CA_BUNDLE (boto3) and SSL_CERT_FILE (polars' Rust object_store).
    from tracegate.demo.tls import local_ca

    ca, pem = local_ca(tmp_path / "tls")
    gateway = start_sts_gateway(
        tmp_path, store, issuer, how="run", config={"listen.certificate": str(pem)}
    )
    try:
        https = gateway.url.replace("http://", "https://")
        env = client_env(gateway, token_file, AWS_CA_BUNDLE=str(ca), SSL_CERT_FILE=str(ca))
        env["AWS_ENDPOINT_URL"] = https
        out = read_with_boto3(env)
        assert json.loads(out)["trace_id"] and PLANTED_EMAIL not in out
        assert read_chats(env, POLARS)
        import ssl

        served = ssl.get_server_certificate(("127.0.0.1", gateway.port)).strip()
        assert served in pem.read_text()  # ours, not one minted by mitmproxy's own CA
    finally:
        gateway.stop()


def test_polars_reads_a_jsonl_trace_from_environment_variables_alone(sts_gateway, token_file):
    # polars asks boto3 for credentials (the web identity call) and reads with Rust's
    # object_store, which signs its own requests (Range included) for tracegate to check.
    env = client_env(sts_gateway, token_file, AWS_ALLOW_HTTP="true")
    assert read_chats(env, POLARS)


def test_pandas_reads_a_jsonl_trace_through_s3fs_from_environment_variables_alone(
    sts_gateway, token_file
):
    # pandas opens s3:// with s3fs, which signs with aiobotocore (botocore's async twin): the
    # web identity call, the endpoint and the region all come from the same variables as boto3.
    assert read_chats(client_env(sts_gateway, token_file), PANDAS)


@pytest.mark.parametrize("how", ["web_identity", "credential_process"])
def test_rclone_cats_a_trace_with_env_auth(sts_gateway, token_file, tmp_path, how):
    env = client_env(sts_gateway, token_file, AWS_ENDPOINT_URL_STS=sts_gateway.url)
    if how == "credential_process":
        config = process_config(sts_gateway, token_file, tmp_path)
        for name in ("AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN", "AWS_ROLE_SESSION_NAME"):
            del env[name]
        env["AWS_CONFIG_FILE"] = str(config)
        env["AWS_SDK_LOAD_CONFIG"] = "1"
    env.update(
        RCLONE_CONFIG_TG_TYPE="s3",
        RCLONE_CONFIG_TG_PROVIDER="Other",
        RCLONE_CONFIG_TG_ENV_AUTH="true",
        RCLONE_CONFIG_TG_ENDPOINT=sts_gateway.url,
        RCLONE_CONFIG_TG_REGION="us-east-1",
        RCLONE_CONFIG=os.devnull,
    )
    done = subprocess.run(
        [str(BIN / "rclone"), "cat", f"tg:traces/{KEY}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["trace_id"] and PLANTED_EMAIL not in done.stdout


DUCKDB_SCRIPT = """
import json, sys, duckdb, duckdb_extension_aws, duckdb_extension_httpfs
from pathlib import Path
db = duckdb.connect()
for module, name in ((duckdb_extension_httpfs, "httpfs"), (duckdb_extension_aws, "aws")):
    db.execute(f"LOAD '{next(Path(module.__file__).parent.rglob(name + '.duckdb_extension'))}'")
db.execute(sys.argv[1])
rows = db.execute("SELECT * FROM read_json_auto(?)", [sys.argv[2]]).fetchall()
print(json.dumps([str(r) for r in rows]))
"""


def test_duckdb_reads_a_trace_with_a_credential_chain_secret(sts_gateway, token_file, tmp_path):
    config = process_config(sts_gateway, token_file, tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TRACEGATE_"))}
    env.update(AWS_CONFIG_FILE=str(config), AWS_SHARED_CREDENTIALS_FILE=os.devnull)
    host = sts_gateway.url.removeprefix("http://")
    secret = (
        "CREATE SECRET tg (TYPE s3, PROVIDER credential_chain, CHAIN 'process', "
        f"ENDPOINT '{host}', URL_STYLE 'path', USE_SSL false, REGION 'us-east-1')"
    )
    done = subprocess.run(
        [sys.executable, "-c", DUCKDB_SCRIPT, secret, f"s3://traces/{KEY}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "tr-a001" in done.stdout and PLANTED_EMAIL not in done.stdout


# *.localhost is loopback (RFC 6761), but this machine's resolver does not know it: the client
# process is given that one rule, and nothing else of the client changes.
LOCALHOST_NAMES = """
import socket
_resolve = socket.getaddrinfo
def _loopback(host, *args, **kwargs):
    if isinstance(host, str) and host.endswith(".localhost"):
        host = "127.0.0.1"
    return _resolve(host, *args, **kwargs)
socket.getaddrinfo = _loopback
"""

VIRTUAL_SCRIPT = """
import json, sys, boto3
s3 = boto3.client("s3")
out = {"body": s3.get_object(Bucket="traces", Key=sys.argv[1])["Body"].read().decode()}
listing = s3.list_objects_v2(Bucket="traces", Prefix="traces/team-a/")
out["keys"] = [o["Key"] for o in listing.get("Contents", [])]
key = {"Bucket": "traces", "Key": sys.argv[1]}
out["url"] = s3.generate_presigned_url("get_object", Params=key)
print(json.dumps(out))
"""


def test_virtual_hosted_requests_name_the_bucket_in_the_host(tmp_path, store, issuer, token_file):
    # SDKs address `<bucket>.<endpoint host>` for a named endpoint; boto3 does with
    # `addressing_style = virtual` in its config file. Header auth and a presigned URL both work.
    port = free_port()
    gateway = store_gateway(
        tmp_path,
        store,
        issuer,
        EXAMPLE,
        env_extra={"TRACEGATE_STS_KEYS": STS_KEYS},
        **{"identity.sts": {"enabled": True, "public_host": f"localhost:{port}"}},
    )
    gateway.extra_args = ["--listen-port", str(port)]
    gateway.start()
    try:
        config = tmp_path / "aws-config"
        config.write_text(
            "[default]\ns3 =\n    addressing_style = virtual\n    signature_version = s3v4\n"
        )
        env = client_env(gateway, token_file)
        env.update(AWS_ENDPOINT_URL=f"http://localhost:{port}", AWS_CONFIG_FILE=str(config))
        done = subprocess.run(
            [sys.executable, "-c", LOCALHOST_NAMES + VIRTUAL_SCRIPT, KEY],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        out = json.loads(done.stdout)
        assert out["url"].startswith(f"http://traces.localhost:{port}/traces/team-a/")
        assert json.loads(out["body"])["trace_id"] and PLANTED_EMAIL not in out["body"]
        assert out["keys"] and all(k.startswith("traces/team-a/") for k in out["keys"])
        fetched = subprocess.run(
            ["curl", "-sS", "--resolve", f"traces.localhost:{port}:127.0.0.1", out["url"]],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert json.loads(fetched.stdout)["trace_id"] and PLANTED_EMAIL not in fetched.stdout
        rows = audit_rows(gateway.workdir / "audit.sqlite3")
        assert {"GetObject", "ListObjectsV2"} <= {r["operation"] for r in rows}
    finally:
        gateway.stop()


def test_a_signature_for_another_host_is_refused_naming_the_public_host(sts_gateway, issuer):
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    keys = credentials_for(sts_gateway, issuer)
    url = f"http://s3.amazonaws.com/traces/{KEY}"
    request = AWSRequest("GET", url, headers={"x-amz-content-sha256": "UNSIGNED-PAYLOAD"})
    credentials = Credentials(
        keys["aws_access_key_id"], keys["aws_secret_access_key"], keys["aws_session_token"]
    )
    S3SigV4Auth(credentials, "s3", "us-east-1").add_auth(request)
    headers = {**dict(request.headers.items()), "host": "s3.amazonaws.com"}
    answer = httpx.get(f"{sts_gateway.url}/traces/{KEY}", headers=headers)
    assert answer.status_code == 403
    assert b"<Code>SignatureDoesNotMatch</Code>" in answer.content
    assert b"identity.sts.public_host" in answer.content and b"s3.amazonaws.com" in answer.content


def test_saved_flows_hold_no_token_credentials_or_presigned_signature(tmp_path, store, issuer):
    import boto3
    from botocore.config import Config

    flows = tmp_path / "flows.mitm"
    gateway = start_sts_gateway(
        tmp_path, store, issuer, extra_args=("--set", f"save_stream_file={flows}")
    )
    try:
        token = issuer.token("carol", ["support-engineers"])
        credentials = credentials_for(gateway, issuer)
        s3 = boto3.client(
            "s3",
            endpoint_url=gateway.url,
            region_name="us-east-1",
            config=Config(signature_version="s3v4"),
            **credentials,
        )
        url = s3.generate_presigned_url("get_object", Params={"Bucket": "traces", "Key": KEY})
        assert httpx.get(url, timeout=15).status_code == 200
        assert sts_call(gateway, token).status_code == 200
        signature = url.split("X-Amz-Signature=")[1].split("&")[0]
    finally:
        gateway.stop()
    saved = flows.read_bytes()
    assert saved, "the flows were saved"
    for value in (
        token,
        credentials["aws_secret_access_key"],
        credentials["aws_session_token"],
        signature,
    ):
        assert value.encode() not in saved


def test_a_token_for_another_audience_gets_no_credentials(sts_gateway, issuer):
    token = issuer.token("carol", ["support-engineers"], aud="another-service")
    response = sts_call(sts_gateway, token)
    assert response.status_code == 400 and "<Code>InvalidIdentityToken</Code>" in response.text


def test_expired_credentials_are_refused_as_expired_token(sts_gateway):
    assert refusal_for_minted(sts_gateway, "debugging", -1)["Code"] == "ExpiredToken"
