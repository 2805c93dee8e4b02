"""The admin listener's handlers answer in JSON, never cached."""

from __future__ import annotations

import json
from typing import Any

import tornado.web


class JsonHandler(tornado.web.RequestHandler):
    def write_json(self, status: int, body: dict[str, Any]) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(body))
