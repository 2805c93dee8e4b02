"""Entry for `mitmdump -s addons/gateway.py --set tracegate_config=PATH`.

The gateway's addons are registered directly on the master rather than living in this script,
so mitmproxy's hot reload cannot silently unload them: if an edit to this file fails to load,
the gateway refuses every request until the script loads again or the process restarts.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from mitmproxy import ctx

import tracegate.proxy


def load(loader) -> None:
    tracegate.proxy.attach(ctx.master)


def done() -> None:
    tracegate.proxy.detach(ctx.master)
