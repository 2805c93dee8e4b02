from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.harness import BIN, EXAMPLE, REPO
from tracegate.config import ConfigError, load_config, parse_size

RULES = sorted((REPO / "rules").glob("*.yaml"))


@pytest.mark.parametrize("path", RULES, ids=lambda p: p.name)
def test_every_rule_file_loads_and_validates(path):
    config = load_config(path)
    assert config.roles and config.purposes
    for role in config.roles.values():
        assert role.default_purpose in role.scopes


def test_rules_directory_is_not_empty():
    assert EXAMPLE in RULES


def broken(tmp_path: Path, edit) -> Path:
    data = yaml.safe_load(EXAMPLE.read_text())
    edit(data)
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            lambda d: d["roles"]["support"]["scopes"]["debugging"].update(prefixs=["x/"]),
            "roles.support.scopes.debugging.prefixs: unknown key",
        ),
        (
            lambda d: d["identity"]["providers"][0].update(algorithms=["HS256"]),
            "identity.providers[0].algorithms: algorithm(s) HS256 not allowed",
        ),
        (
            lambda d: d["identity"]["providers"][0].update(algorithms=["none"]),
            "identity.providers[0].algorithms: algorithm(s) none not allowed",
        ),
        (
            lambda d: d["roles"]["support"]["scopes"]["debugging"]["masks"][0].update(
                path="$.user[?"
            ),
            "roles.support.scopes.debugging.masks[0].path: invalid JSONPath",
        ),
        (
            lambda d: d["roles"]["support"]["scopes"]["debugging"]["masks"][0].update(
                action="scramble"
            ),
            "roles.support.scopes.debugging.masks[0].action: Input should be",
        ),
        (
            lambda d: d["roles"]["analyst"]["scopes"]["analytics"].update(operations=["PutObject"]),
            "broken.yaml: roles.analyst.scopes.analytics.operations: "
            "PutObject is not a read the s3 store serves",
        ),
        (
            lambda d: d["roles"]["analyst"].update(default_purpose="debugging"),
            "roles.analyst: default_purpose 'debugging' has no entry under scopes",
        ),
        (
            lambda d: d["roles"]["analyst"]["scopes"].update(
                forensics=d["roles"]["analyst"]["scopes"]["analytics"]
            ),
            "roles.analyst.scopes.forensics: purpose 'forensics' is not declared",
        ),
        (lambda d: d["limits"].update(max_body_bytes="lots"), "limits.max_body_bytes: not a size"),
        (lambda d: d["upstream"].update(kind="gcs"), "upstream: Input tag 'gcs'"),
        (
            lambda d: d["upstream"].update(endpoint="http://store/with/path"),
            "upstream.endpoint: must be http(s)://host[:port] with no path",
        ),
        (
            lambda d: d["identity"]["providers"][0].update(jwks_file="/x.json"),
            "identity.providers[0]: set exactly one of jwks_uri, jwks_file or discovery: true",
        ),
        (
            lambda d: d["upstream"]["credentials"].update(aws_secret_access_key="oops"),
            "upstream.credentials.aws_secret_access_key: unknown key",
        ),
        (lambda d: d.pop("roles"), "roles: Field required"),
    ],
)
def test_invalid_config_names_file_key_path_and_problem(tmp_path, edit, expected):
    path = broken(tmp_path, edit)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert expected in message
    assert "\n" not in message


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("version: 1\nroles: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: line \d+: invalid YAML"):
        load_config(path)


def test_missing_file_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")


def test_version_hash_changes_with_policy_not_with_formatting(tmp_path):
    original = load_config(EXAMPLE)
    reformatted = tmp_path / "same.yaml"
    reformatted.write_text(yaml.safe_dump(yaml.safe_load(EXAMPLE.read_text()), indent=4))
    assert load_config(reformatted).version_hash() == original.version_hash()
    changed = broken(
        tmp_path, lambda d: d["roles"]["support"]["scopes"]["debugging"].update(prefixes=["a/"])
    )
    assert load_config(changed).version_hash() != original.version_hash()


@pytest.mark.parametrize(
    ("text", "size"),
    [(1024, 1024), ("512", 512), ("16MiB", 16 * 1024**2), ("2 MB", 2_000_000), ("1k", 1000)],
)
def test_sizes_accept_units(text, size):
    assert parse_size(text) == size


def test_check_command_prints_one_line_and_exits_nonzero_on_error(tmp_path):
    path = broken(tmp_path, lambda d: d["identity"].update(token_heder="X"))
    result = subprocess.run(
        [str(BIN / "tracegate"), "check", str(path)], capture_output=True, text=True
    )
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert lines == [f"tracegate: {path}: identity.token_heder: unknown key"]


def test_check_command_accepts_the_example():
    result = subprocess.run(
        [str(BIN / "tracegate"), "check", str(EXAMPLE)], capture_output=True, text=True
    )
    assert result.returncode == 0
    assert "ok (policy version" in result.stdout


def _keys(model, prefix=""):
    import typing

    from pydantic import BaseModel

    for name, field in model.model_fields.items():
        yield prefix + name, name
        for arg in typing.get_args(field.annotation) or (field.annotation,):
            for inner in typing.get_args(arg) or (arg,):
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    yield from _keys(inner, f"{prefix}{name}.")


def test_every_config_key_is_documented_in_the_example():
    from tracegate.config import GatewayConfig

    text = "\n".join(path.read_text() for path in RULES)  # the S3 example and the DynamoDB one
    missing = [full for full, name in _keys(GatewayConfig) if f"{name}:" not in text]
    assert missing == []


@pytest.mark.parametrize(
    ("console", "message"),
    [
        ({"enabled": True}, "console.approver_roles: give it or auditor_roles"),
        ({"approver_roles": ["nobody"]}, "console.approver_roles: 'nobody' is not a role"),
        ({"enabled": True, "auditor_roles": ["security"], "provider": "x"},
         "console.provider: 'x' is not under identity.providers"),
    ],
)  # fmt: skip
def test_a_console_naming_what_does_not_exist_fails_start_up_naming_the_key(
    tmp_path, console, message
):
    config = yaml.safe_load(EXAMPLE.read_text())
    config["console"] = console
    path = tmp_path / "console.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(path)
