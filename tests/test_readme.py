"""The README's client and operator examples, run as written against a real gateway."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.harness import REPO

README = (REPO / "README.md").read_text()


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, re.S)


def shell_lines(block: str) -> list[str]:
    return [line for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def test_readme_curl_examples_work(make_gateway, issuer, tmp_path):
    gateway = make_gateway(how="run")
    token = issuer.token("alice@example.com", ["support-engineers"])
    admin = gateway.admin_url
    commands = [
        line
        for block in blocks("sh")
        for line in shell_lines(block)
        if line.startswith("curl") and "127.0.0.1:" in line
    ]
    assert len(commands) >= 4, commands
    for command in commands:
        runnable = command.replace("http://127.0.0.1:8080", gateway.url).replace(
            "http://127.0.0.1:8090", admin
        )
        if "|" not in runnable:
            runnable += " -o /dev/null -w '%{http_code}' --fail"
        result = subprocess.run(
            ["bash", "-o", "pipefail", "-c", runnable],
            capture_output=True,
            text=True,
            env={"TOKEN": token, "PATH": "/usr/bin:/bin"},
            cwd=tmp_path,
            timeout=30,
        )
        assert result.returncode == 0, (command, result.stdout, result.stderr)


def test_readme_boto3_example_works(make_gateway, issuer, tmp_path):
    gateway = make_gateway(how="run")
    token = issuer.token("alice@example.com", ["support-engineers"])
    (example,) = [b for b in blocks("python") if "boto3.client" in b]
    code = f"TOKEN = {token!r}\n" + example.replace("http://127.0.0.1:8080", gateway.url)
    code += "\nprint(open('trace.json').read())\n"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "[REDACTED:api-key]" in result.stdout
