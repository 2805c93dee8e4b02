"""A C2SP tlog-witness: cosigns a log's checkpoint only if it extends the last one it cosigned.

It keeps, per origin, the latest size, root and note it cosigned, in a JSON file replaced
atomically (write, fsync, rename) under a lock, so two requests can never roll it back. What it
answers follows `tlog-witness`: 200 with cosignature lines, 409 (with its size, as
`text/x.tlog.size`) for a stale old size or a different tree of the same size, 422 for a
consistency proof that does not hold, 403 for a checkpoint no trusted key signed, 404 for an
unknown origin, 400 for a malformed request.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from tracegate.audit import merkle
from tracegate.audit.note import Checkpoint, Note, NoteError, NoteSigner, Verifier

MAX_PROOF_LINES = 63


@dataclass(frozen=True)
class WitnessAnswer:
    status: int
    body: str
    content_type: str = "text/plain; charset=utf-8"


class Witness:
    def __init__(self, signer: NoteSigner, logs: list[Verifier], state: Path) -> None:
        self.signer = signer
        self.logs = {log.name: log for log in logs}
        self.state_path = state
        self._lock = threading.Lock()
        self.state: dict[str, dict[str, object]] = (
            json.loads(state.read_text()) if state.exists() else {}
        )

    def latest(self, origin: str) -> str | None:
        """The latest checkpoint it cosigned for `origin` (with its cosignature), or None."""
        record = self.state.get(origin)
        return str(record["note"]) if record else None

    def add_checkpoint(self, body: str) -> WitnessAnswer:
        try:
            old, proof, note_text = _parse_request(body)
            note = Note.parse(note_text)
            checkpoint = Checkpoint.parse(note.text)
        except (NoteError, ValueError) as exc:
            return WitnessAnswer(400, f"{exc}\n")
        log = self.logs.get(checkpoint.origin)
        if log is None:
            return WitnessAnswer(404, f"unknown log {checkpoint.origin!r}\n")
        if not note.verified_by(log):
            return WitnessAnswer(403, "no signature from a trusted key for this log\n")
        if old > checkpoint.size:
            return WitnessAnswer(400, "old size is larger than the checkpoint's\n")
        with self._lock:
            record = self.state.get(checkpoint.origin)
            size = int(record["size"]) if record else 0  # type: ignore[call-overload]
            if old != size:
                return WitnessAnswer(409, f"{size}\n", "text/x.tlog.size")
            root = base64.b64decode(str(record["root"])) if record else merkle.EMPTY_ROOT
            if old == checkpoint.size and root != checkpoint.root:
                return WitnessAnswer(409, f"{size}\n", "text/x.tlog.size")
            if old and old < checkpoint.size:
                try:
                    merkle.verify_consistency(old, checkpoint.size, root, checkpoint.root, proof)
                except merkle.ProofError as exc:
                    return WitnessAnswer(422, f"{exc}\n")
            elif proof:
                return WitnessAnswer(422, "the proof must be empty for this old size\n")
            line = self.signer.cosign(note.text, int(time.time()))
            self.state[checkpoint.origin] = {
                "size": checkpoint.size,
                "root": base64.b64encode(checkpoint.root).decode(),
                "note": note_text + line,
            }
            self._persist()
        return WitnessAnswer(200, line)

    def _persist(self) -> None:
        temporary = self.state_path.with_name(self.state_path.name + ".tmp")
        with open(temporary, "w") as out:
            json.dump(self.state, out, indent=2, sort_keys=True)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, self.state_path)


def _parse_request(body: str) -> tuple[int, list[bytes], str]:
    head, sep, note = body.partition("\n\n")
    if not sep:
        raise ValueError("expected an old size line, proof lines, a blank line, a checkpoint")
    lines = head.split("\n")
    if not lines[0].startswith("old "):
        raise ValueError("the first line must be `old <size>`")
    size = lines[0][4:]
    if not size.isdigit() or (size != "0" and size.startswith("0")):
        raise ValueError(f"old size {size!r} is not a decimal number")
    if len(lines) - 1 > MAX_PROOF_LINES:
        raise ValueError(f"more than {MAX_PROOF_LINES} consistency proof lines")
    proof = []
    for line in lines[1:]:
        hash_ = base64.b64decode(line, validate=True)
        if len(hash_) != 32:
            raise ValueError("a proof line is not a 32-byte hash")
        proof.append(hash_)
    return int(size), proof, note


def add_checkpoint_body(old: int, proof: list[bytes], note: str) -> str:
    lines = [f"old {old}", *(base64.b64encode(h).decode() for h in proof)]
    return "\n".join(lines) + "\n\n" + note
