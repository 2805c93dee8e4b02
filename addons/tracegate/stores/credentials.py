"""The gateway's own AWS credentials: where they come from (env or a file, never the YAML),
and the config every SigV4-signed store kind shares."""

from __future__ import annotations

import configparser
import os
from pathlib import Path
from typing import Literal

from botocore.credentials import Credentials
from pydantic import model_validator

from tracegate.configbase import ConfigError, StoreEndpoint, Strict


class CredentialsConfig(Strict):
    """Where the gateway's own store credentials come from. Never the YAML itself."""

    source: Literal["env", "file"] = "env"
    access_key_id_env: str = "TRACEGATE_UPSTREAM_ACCESS_KEY_ID"
    secret_access_key_env: str = "TRACEGATE_UPSTREAM_SECRET_ACCESS_KEY"
    session_token_env: str = "TRACEGATE_UPSTREAM_SESSION_TOKEN"
    # An AWS shared-credentials style INI file and the profile to read from it.
    file: str | None = None
    profile: str = "default"

    @model_validator(mode="after")
    def _file_needs_path(self) -> CredentialsConfig:
        if self.source == "file" and not self.file:
            raise ValueError("source 'file' needs 'file: PATH'")
        return self


class SignedStoreConfig(StoreEndpoint):
    """What every AWS-signed store has: its region and the gateway's own keys."""

    region: str = "us-east-1"
    credentials: CredentialsConfig = CredentialsConfig()


def load_credentials(source: CredentialsConfig) -> Credentials:
    """Read credentials now, so a missing variable stops start-up instead of a later request."""
    if source.source == "env":
        key_id = os.environ.get(source.access_key_id_env, "")
        secret = os.environ.get(source.secret_access_key_env, "")
        missing = [
            name
            for name, value in (
                (source.access_key_id_env, key_id),
                (source.secret_access_key_env, secret),
            )
            if not value
        ]
        if missing:
            raise ConfigError(f"upstream.credentials: environment variable {missing[0]} is not set")
        token = os.environ.get(source.session_token_env) or None
        return Credentials(key_id, secret, token)
    assert source.file is not None
    parser = configparser.ConfigParser()
    path = Path(source.file)
    if not parser.read(path):
        raise ConfigError(f"upstream.credentials.file: cannot read {path}")
    if not parser.has_section(source.profile):
        raise ConfigError(f"upstream.credentials: profile {source.profile!r} not in {path}")
    section = parser[source.profile]
    try:
        return Credentials(
            section["aws_access_key_id"],
            section["aws_secret_access_key"],
            section.get("aws_session_token") or None,
        )
    except KeyError as exc:
        raise ConfigError(
            f"upstream.credentials: {path} [{source.profile}] lacks {exc.args[0]}"
        ) from None
