"""`tracegate run`: the launcher that registers the addons directly on a mitmproxy master."""

from __future__ import annotations

import json
import subprocess

import httpx
import pytest

from tests.conftest import s3_client
from tests.harness import ANALYST_FIELDS, BIN, gateway_env, write_config


def test_tracegate_run_serves_masked_traces_to_boto3(make_gateway, issuer):
    gateway = make_gateway(how="run")
    client = s3_client(gateway.url, issuer.token("dave", ["data-analysts"]))
    body = client.get_object(Bucket="traces", Key="traces/team-b/tr-b002.json")["Body"].read()
    assert set(json.loads(body)) == ANALYST_FIELDS


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


# -- tracegate mask ------------------------------------------------------------------------

TRACE = {
    "prompt": "my key is AKIAQ3EGRTYUIOPL7KWM, mail dana@acme.io",
    "args": json.dumps({"password": "Tr0ub4dor&3x", "card": "4111 1111 1111 1111"}),
}


def test_mask_with_all_detectors_prints_masked_json(tmp_path):
    source = tmp_path / "trace.json"
    source.write_text(json.dumps(TRACE))
    result = run_cli("mask", "--detectors", "all", "--report", str(source))
    assert result.returncode == 0, result.stderr
    masked = json.loads(result.stdout)
    assert masked["prompt"] == "my key is [REDACTED:AWS_ACCESS_KEY_ID], mail [REDACTED:EMAIL]"
    assert json.loads(masked["args"]) == {
        "password": "[REDACTED:SECRET_ASSIGNMENT]",
        "card": "[REDACTED:CARD]",
    }
    assert "detect.aws_access_key_id" in result.stderr and "1 document(s)" in result.stderr


def test_mask_with_a_roles_scope_writes_one_file_per_input(tmp_path, store, issuer):
    config = write_config(tmp_path / "c.yaml", store, issuer, tmp_path / "a.sqlite3")
    source = tmp_path / "chats.jsonl"
    source.write_text("\n".join(json.dumps(TRACE) for _ in range(3)) + "\n")
    out = tmp_path / "out"
    result = run_cli(
        "mask", "--config", str(config), "--role", "support", "-o", str(out), str(source)
    )
    assert result.returncode == 0, result.stderr
    lines = (out / "chats.jsonl").read_text().splitlines()
    assert len(lines) == 3
    args = json.loads(json.loads(lines[0])["args"])
    assert args["card"] == "****1111"  # the support scope's partial action for cards


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("broken.json", '{"a": ', "broken.json: body is not valid JSON"),
        ("cut.jsonl", '{"ok": 1}\n{"trunc', "cut.jsonl: line 2 is not valid JSON"),
    ],
)
def test_mask_bad_input_is_one_line_with_exit_2(tmp_path, name, content, message):
    source = tmp_path / name
    source.write_text(content)
    result = run_cli("mask", "--detectors", "all", str(source))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]


def test_mask_needs_either_detectors_or_a_role(tmp_path):
    result = run_cli("mask", str(tmp_path / "x.json"))
    assert result.returncode == 2
    assert "give --config and --role, or --detectors all" in result.stderr


def test_run_with_an_unusable_audit_file_prints_the_real_reason(tmp_path, store, issuer):
    import sqlite3

    audit = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(audit)
    conn.execute("CREATE TABLE flows (id INTEGER PRIMARY KEY, ts TEXT)")
    conn.close()
    path = write_config(tmp_path / "c.yaml", store, issuer, audit)
    result = run_cli("run", "--config", str(path), env=gateway_env(store))
    assert result.returncode == 1
    assert "written by an older tracegate" in result.stderr
    assert "set tracegate_config" not in result.stderr
