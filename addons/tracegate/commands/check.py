"""`tracegate check`: validate a config file offline."""

from __future__ import annotations

import argparse

from tracegate.commands import fail
from tracegate.config import ConfigError, load_config


def cmd_check(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        return fail(str(exc))
    roles = ", ".join(config.roles)
    print(f"{args.config}: ok (policy version {config.version_hash()}; roles: {roles})")
    return 0
