"""`tracegate run`: the launcher that registers the addons directly on a mitmproxy master."""

from __future__ import annotations

import json
import subprocess

import httpx
import pytest

from tests.conftest import s3_client
from tests.harness import BIN, gateway_env, write_config


def test_tracegate_run_serves_masked_traces_to_boto3(make_gateway, issuer):
    gateway = make_gateway(how="run")
    client = s3_client(gateway.url, issuer.token("dave", ["data-analysts"]))
    body = client.get_object(Bucket="traces", Key="traces/team-b/tr-b002.json")["Body"].read()
    assert set(json.loads(body)) == {
        "trace_id",
        "team",
        "created_at",
        "model",
        "latency_ms",
        "usage",
        "user",
    }


def test_tracegate_run_web_starts_mitmweb_with_the_gateway(make_gateway, issuer):
    gateway = make_gateway(how="run", extra_args=["--web", "--web-port", "0"])
    token = issuer.token("alice", ["support-engineers"])
    response = httpx.get(
        gateway.url + "/traces/traces/team-a/tr-a001.json",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200
    assert "Web server listening" in gateway.log()


def run_cli(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "tracegate"), *args], capture_output=True, text=True, env=env, timeout=60
    )


def test_run_with_an_invalid_config_prints_one_line(tmp_path, store, issuer):
    path = write_config(
        tmp_path / "c.yaml", store, issuer, tmp_path / "a.sqlite3", **{"audit.pth": "x"}
    )
    result = run_cli("run", "--config", str(path), env=gateway_env(store))
    assert result.returncode == 1
    assert result.stderr.strip() == f"tracegate: {path}: audit.pth: unknown key"


@pytest.mark.parametrize(
    ("missing", "message"),
    [
        (
            "TRACEGATE_UPSTREAM_SECRET_ACCESS_KEY",
            "upstream.credentials: environment variable TRACEGATE_UPSTREAM_SECRET_ACCESS_KEY "
            "is not set",
        ),
        ("TRACEGATE_HASH_KEY", "masking.hash_key_env: environment variable TRACEGATE_HASH_KEY"),
    ],
)
def test_run_without_a_secret_in_the_environment_prints_one_line(
    tmp_path, store, issuer, missing, message
):
    path = write_config(tmp_path / "c.yaml", store, issuer, tmp_path / "a.sqlite3")
    env = gateway_env(store)
    del env[missing]
    result = run_cli("run", "--config", str(path), env=env)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]
    assert "Traceback" not in result.stderr


def test_credentials_from_a_file(make_gateway, store, issuer, tmp_path):
    creds = tmp_path / "credentials"
    creds.write_text(
        "[tracegate]\n"
        f"aws_access_key_id = {store.gateway_keys.access_key_id}\n"
        f"aws_secret_access_key = {store.gateway_keys.secret_access_key}\n"
    )
    env = gateway_env(store)
    del env["TRACEGATE_UPSTREAM_ACCESS_KEY_ID"], env["TRACEGATE_UPSTREAM_SECRET_ACCESS_KEY"]
    gateway = make_gateway(
        how="run",
        env=env,
        **{"upstream.credentials": {"source": "file", "file": str(creds), "profile": "tracegate"}},
    )
    token = issuer.token("alice", ["support-engineers"])
    response = httpx.get(
        gateway.url + "/traces/traces/team-a/tr-a001.json",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200


def test_usage_errors_are_one_line(tmp_path):
    result = run_cli("frobnicate")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr
