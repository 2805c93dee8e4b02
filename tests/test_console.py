"""The mitmproxy console (the design card's other UI), driven in a pseudo-terminal.

`mitmproxy -s addons/gateway.py` runs in a pty; pyte emulates the terminal so the test reads
the screen an operator would see, and presses the keys they would press.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Iterator

import pyte
import pytest

from tests.harness import BIN, REPO, gateway_env, write_config
from tests.test_approvals import RULES, events, fetch, flow_row, in_background, rules
from tracegate.demo.store import free_port

ROWS, COLUMNS = 45, 160


class Console:
    """mitmproxy's console in a pty, its screen kept up to date by pyte."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.screen = pyte.Screen(COLUMNS, ROWS)
        self.stream = pyte.ByteStream(self.screen)
        # A pty pair and subprocess (not pty.fork: this test process runs server threads).
        self.fd, child = pty.openpty()
        fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
        self.process = subprocess.Popen(
            argv, stdin=child, stdout=child, stderr=child, env=env, start_new_session=True
        )
        os.close(child)

    def text(self) -> str:
        return "\n".join(line.rstrip() for line in self.screen.display)

    def wait_for(self, needle: str, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.fd], [], [], 0.1)
            if ready:
                try:
                    self.stream.feed(os.read(self.fd, 65536))
                except OSError:
                    break
            if needle in self.text().replace("\n", " "):
                return self.text()
        raise AssertionError(f"{needle!r} not on the console screen:\n{self.text()}")

    def press(self, keys: bytes) -> None:
        os.write(self.fd, keys)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        os.close(self.fd)


class ConsoleGateway:
    """What the approval test helpers need of a gateway: its URL, config and admin address."""

    def __init__(self, config, port: int, admin_port: int) -> None:
        self.config, self.port = config, port
        self.url = f"http://127.0.0.1:{port}"
        self.admin_url = f"http://127.0.0.1:{admin_port}"


@pytest.fixture
def console_gateway(tmp_path, store, issuer) -> Iterator[tuple[Console, ConsoleGateway]]:
    port, admin_port = free_port(), free_port()
    config = write_config(
        tmp_path / "config.yaml",
        store,
        issuer,
        tmp_path / "audit.sqlite3",
        **{RULES: rules(), "admin.port": admin_port},
    )
    env = {**gateway_env(store), "TERM": "xterm"}
    argv = [
        str(BIN / "mitmproxy"),
        "-s",
        str(REPO / "addons" / "gateway.py"),
        "--set",
        f"tracegate_config={config}",
        "--mode",
        f"reverse:{store.endpoint}",
        "--listen-host",
        "127.0.0.1",
        "--listen-port",
        str(port),
        "--set",
        f"confdir={tmp_path / 'mitmproxy-conf'}",
    ]
    console = Console(argv, env)
    try:
        console.wait_for("Flows")
        yield console, ConsoleGateway(config, port, admin_port)
    finally:
        console.stop()


def test_a_held_request_shows_in_the_console_with_its_comment_and_a_resume_delivers_it(
    console_gateway, issuer
):
    console, gateway = console_gateway
    alice = issuer.token("alice@example.com", ["support-engineers"])
    pending = in_background(fetch, gateway, alice)
    console.wait_for("/traces/traces/team-a/tr-a001.json")
    console.press(b"\r")  # open the flow
    console.wait_for("Request intercepted")
    console.press(b"\t\t")  # the Detail tab, where the comment is
    screen = console.wait_for("HELD for approval apv_")
    assert "alice@example.com as support/incident" in screen.replace("\n", " ")
    assert not pending.done()
    console.press(b"a")  # Resume
    response = pending.result(timeout=30)
    assert response.status_code == 200 and response.json()["messages"]
    recorded = json.loads(flow_row(gateway, response)["approval"])
    assert recorded["how"] == "mitmweb" and recorded["by"] == ["mitmweb-operator"]
    assert "approved" in [e["event"] for e in events(gateway, recorded["id"])]
