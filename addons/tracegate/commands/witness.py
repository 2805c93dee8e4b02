"""`tracegate witness`: a small C2SP tlog-witness over HTTP (loopback by default).

`POST /add-checkpoint` as tlog-witness specifies; `GET /latest?origin=...` answers the latest
checkpoint it cosigned for a log (with its cosignature), which `tracegate audit verify
--witness URL` compares with the database.
"""

from __future__ import annotations

import argparse
import http.server
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from tracegate.commands import fail

MAX_BODY = 64 * 1024


def cmd_witness(args: argparse.Namespace) -> int:
    from tracegate.audit.keys import SigningKey
    from tracegate.audit.note import COSIGNATURE_V1, NoteError, NoteSigner, Verifier
    from tracegate.audit.witness import Witness

    key_path = Path(args.key)
    try:
        if not key_path.exists():
            SigningKey.generate(key_path)
        signer = NoteSigner(args.name, SigningKey.load(key_path).private, COSIGNATURE_V1)
        logs = [
            Verifier.parse(Path(k).read_text() if Path(k).is_file() else k) for k in args.log_key
        ]
        witness = Witness(signer, logs, Path(args.state))
    except (OSError, ValueError, NoteError) as exc:
        return fail(str(exc).splitlines()[0])

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            if urlsplit(self.path).path.rstrip("/") != "/add-checkpoint":
                return self._answer(404, "not found\n")
            length = int(self.headers.get("content-length") or 0)
            if length > MAX_BODY:
                return self._answer(413, "too large\n")
            body = self.rfile.read(length).decode("utf-8", "replace")
            answer = witness.add_checkpoint(body)
            self._answer(answer.status, answer.body, answer.content_type)

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path.rstrip("/") != "/latest":
                return self._answer(404, "not found\n")
            origin = parse_qs(url.query).get("origin", [""])[0]
            note = witness.latest(origin)
            if note is None:
                return self._answer(404, f"nothing cosigned for {origin!r}\n")
            self._answer(200, note)

        def _answer(self, status: int, body: str, kind: str = "text/plain; charset=utf-8") -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("content-type", kind)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            sys.stderr.write(f"tracegate witness: {format % args}\n")

    server = http.server.ThreadingHTTPServer((args.host, args.port), Handler)
    host, port = server.server_address[:2]
    print(f"tracegate witness listening at http://{host}:{port}", flush=True)
    print(f"witness key: {signer.verifier.vkey}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
