"""The example config and the gateway's environment for a local store and issuer.

One place for what the demo, the benchmarks and the tests all need: `rules/example.yaml` pointed
at this machine's moto server, token issuer and an audit file, with dotted-key overrides.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from tracegate.demo.issuer import TokenIssuer
from tracegate.demo.store import Store

EXAMPLE = Path(__file__).resolve().parents[3] / "rules" / "example.yaml"
DYNAMODB_EXAMPLE = EXAMPLE.with_name("dynamodb.yaml")
COUCHDB_EXAMPLE = EXAMPLE.with_name("couchdb.yaml")
LANGFUSE_EXAMPLE = EXAMPLE.with_name("langfuse.yaml")


def write_config(
    path: Path,
    store: Store,
    issuer: TokenIssuer,
    audit: Path,
    template: Path = EXAMPLE,
    **overrides: Any,
) -> Path:
    """Write the example config (or `template`, e.g. rules/dynamodb.yaml) for this store, issuer
    and audit file; listeners on free ports unless overridden (`**{"listen.port": 8080}`)."""
    config = yaml.safe_load(template.read_text())
    config["identity"]["providers"][0].update(issuer=issuer.issuer, jwks_uri=issuer.jwks_uri)
    config["upstream"]["endpoint"] = store.endpoint
    if "bucket" in config["upstream"]:
        config["upstream"]["bucket"] = store.bucket
    config["audit"]["path"] = str(audit)
    config["listen"]["port"] = 0
    config.setdefault("admin", {})["port"] = 0
    for dotted, value in overrides.items():
        node = config
        *parents, leaf = dotted.split(".")
        for part in parents:  # numbers index lists: "roles.r.scopes.p.approvals.0.x"
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        node[int(leaf) if isinstance(node, list) else leaf] = value
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def gateway_env(store: Store, hash_key: str, **extra: str) -> dict[str, str]:
    """The environment a gateway process needs: its store credentials and hash key, and no
    AWS_* or TRACEGATE_* variables inherited from the caller."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TRACEGATE_"))}
    env.update(store.gateway_environment(), TRACEGATE_HASH_KEY=hash_key)
    env.update(extra)
    return env
