import fcntl
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.harness import REPO


@pytest.fixture(autouse=True)
def one_demo_at_a_time() -> Iterator[None]:
    """The demos share demo-run/ (config, audit file, keys) and their preferred ports: a lock
    file makes the test workers take turns."""
    (REPO / "demo-run").mkdir(exist_ok=True)
    with open(REPO / "demo-run" / ".test-lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def test_demo_starts_and_every_printed_command_works():
    # `--check` runs each printed curl line through bash and the boto3 example file.
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "demo.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("[ok ]") == 13
    assert "incident request held, approved, served: HTTP 200" in result.stdout
    # The console: its address, who to sign in as, and the sign-in checked.
    assert re.search(
        r"http://127\.0\.0\.1:\d+/console\n#   sign in as sec@example\.com", result.stdout
    )
    assert "[ok ] the console: sign-in as sec@example.com" in result.stdout
    # S3 tools with no code change: one sourced file of variables, then the AWS CLI.
    assert "source demo-run/aws/support.env && .venv/bin/aws s3 ls" in result.stdout
    assert "the AWS CLI through STS: aws s3 ls" in result.stdout
    for user in ("support", "analyst"):
        lines = (REPO / "demo-run" / "aws" / f"{user}.env").read_text().splitlines()
        assert lines and all(line.startswith("export AWS_") for line in lines)
        assert "export AWS_ENDPOINT_URL=https://127.0.0.1:" in lines[0]  # TLS, the demo's CA
        assert any(line.startswith("export AWS_CA_BUNDLE=") for line in lines)
    assert "export SUPPORT_TOKEN=" in result.stdout
    assert "demo: stopping" in result.stdout
    # The audit trail: verify (signatures and witness), prove one flow, check it offline.
    for line in ("audit verify demo-run/audit.sqlite3 --public-key demo-run/audit-key.pem.vkey "
                 "--witness http://", "audit prove demo-run/audit.sqlite3 ",
                 "audit check-proof demo-run/flow.tlog-proof --entry "):  # fmt: skip
        assert line in result.stdout
    assert "[ok ] audit: checked offline" in result.stdout


@pytest.mark.parametrize(
    ("store", "printed"),
    [
        ("dynamodb", "X-Amz-Target: DynamoDB_20120810.Query"),
        ("langfuse", "/api/public/traces/lf-acme-001"),
    ],
)
def test_the_other_store_demos_start_and_every_printed_command_works(store, printed):
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "demo.py"), "--store", store, "--check"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("[ok ]") == 9 and "[FAIL]" not in result.stdout
    assert printed in result.stdout


def test_the_postgres_demo_runs_two_replicas_and_an_approval_on_one_releases_the_other():
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "demo.py"), "--backend", "postgres", "--check"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[FAIL]" not in result.stdout and result.stdout.count("[ok ]") == 13
    assert "a second replica listens at http://127.0.0.1:" in result.stdout
    assert "approves it through the second one's admin API" in result.stdout
    assert "incident request held, approved, served: HTTP 200" in result.stdout
    assert "audit verify --dsn env:TRACEGATE_DATABASE_URL --public-key" in result.stdout
    assert "[ok ] audit: every entry, node and signed checkpoint" in result.stdout
