import subprocess
import sys

import pytest

from tests.harness import REPO


def test_demo_starts_and_every_printed_command_works():
    # `--check` runs each printed curl line through bash and the boto3 example file.
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "demo.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("[ok ]") == 9
    assert "incident request held, approved, served: HTTP 200" in result.stdout
    # S3 tools with no code change: one sourced file of variables, then the AWS CLI.
    assert "source demo-run/aws/support.env && .venv/bin/aws s3 ls" in result.stdout
    assert "the AWS CLI through STS: aws s3 ls" in result.stdout
    for user in ("support", "analyst"):
        lines = (REPO / "demo-run" / "aws" / f"{user}.env").read_text().splitlines()
        assert lines and all(line.startswith("export AWS_") for line in lines)
    assert "export SUPPORT_TOKEN=" in result.stdout
    assert "demo: stopping" in result.stdout


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
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("[ok ]") == 6 and "[FAIL]" not in result.stdout
    assert printed in result.stdout
