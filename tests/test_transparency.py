"""Truncation caught outside the database: a real gateway publishing its signed checkpoints to a
directory and to a real `tracegate witness` process; proofs checked offline by the CLI; the
witness protocol's refusals; checkpoints in an S3 Object Lock bucket (moto)."""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.harness import BIN, EXAMPLE, audit_rows, copy_database, store_gateway
from tracegate.audit import merkle
from tracegate.audit.integrity import entry_of, verify
from tracegate.audit.keys import SigningKey, log_verifier
from tracegate.audit.note import COSIGNATURE_V1, Checkpoint, NoteSigner, Verifier, sign_note
from tracegate.audit.publish import ObjectLockSink, Publisher, build_sinks
from tracegate.audit.tlog import MerkleLog
from tracegate.audit.witness import Witness, add_checkpoint_body
from tracegate.demo.store import stop_process

ORIGIN = "tracegate.test/audit"
A_TRACE = "/traces/traces/team-a/tr-a001.json"


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "tracegate"), *args], capture_output=True, text=True, timeout=60
    )


@dataclass
class WitnessProcess:
    url: str
    vkey: str
    state: Path
    process: subprocess.Popen


@pytest.fixture(scope="module")
def trail(tmp_path_factory) -> Path:
    """The module's folder: the log key, the witness's state, the directory sink."""
    return tmp_path_factory.mktemp("transparency")


@pytest.fixture(scope="module")
def log_key(trail) -> tuple[Path, Path]:
    key = trail / "log.pem"
    assert cli("audit", "keygen", str(key), "--origin", ORIGIN).returncode == 0
    return key, key.with_name("log.pem.vkey")


@pytest.fixture(scope="module")
def witness(trail, log_key) -> Iterator[WitnessProcess]:
    state = trail / "witness-state.json"
    process = subprocess.Popen(
        [str(BIN / "tracegate"), "witness", "--state", str(state), "--key",
         str(trail / "witness.pem"), "--name", "witness.test", "--log-key", str(log_key[1])],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True,
    )  # fmt: skip
    assert process.stdout is not None
    url = re.search(r"listening at (\S+)", process.stdout.readline()).group(1)
    vkey = process.stdout.readline().split("witness key: ")[1].strip()
    try:
        yield WitnessProcess(url, vkey, state, process)
    finally:
        stop_process(process)


@pytest.fixture(scope="module")
def published_once(trail, store, issuer, log_key, witness) -> tuple[Path, str]:
    """A gateway that signed checkpoints every 2 rows and published each to both sinks
    (`trail/sink`, the witness); run once for the module, its database copied per test."""
    gateway = store_gateway(
        trail,
        store,
        issuer,
        EXAMPLE,
        how="run",
        **{
            "audit.signing_key_file": str(log_key[0]),
            "audit.log_origin": ORIGIN,
            "audit.checkpoint_every_rows": 2,
            "audit.publish": [
                {"directory": str(trail / "sink")},
                {"witness": {"url": witness.url, "key": witness.vkey}},
            ],
        },
    ).start()
    try:
        token = issuer.token("alice@example.com", ["support-engineers"])
        for _ in range(5):
            headers = {"Authorization": f"Bearer {token}"}
            answer = httpx.get(gateway.url + A_TRACE, headers=headers)
            assert answer.status_code == 200
    finally:
        gateway.stop()  # the last checkpoint is signed and published at shutdown
    return trail / "audit.sqlite3", answer.headers["x-tracegate-flow"]


@pytest.fixture
def published(published_once, tmp_path) -> tuple[Path, str]:
    """The module's audit database, copied: each test tampers with its own."""
    database, flow_id = published_once
    return copy_database(database, tmp_path / "audit.sqlite3"), flow_id


def test_every_checkpoint_reaches_the_directory_and_is_cosigned_by_the_witness(
    published, trail, log_key, witness
):
    database, _ = published
    conn = sqlite3.connect(database)
    sizes = [s for (s,) in conn.execute("SELECT size FROM log_checkpoints ORDER BY size")]
    notes = [n for (n,) in conn.execute("SELECT note FROM log_checkpoints ORDER BY size")]
    conn.close()
    assert sizes[-1] == 5 and len(sizes) >= 3
    written = (trail / "sink" / "checkpoints").read_text()
    assert written.count(ORIGIN + "\n") == len(sizes)
    state = json.loads(witness.state.read_text())[ORIGIN]
    assert state["size"] == 5
    cosigner = Verifier.parse(witness.vkey)
    from tracegate.audit.note import Note

    assert all(Note.parse(n).verified_by(cosigner) for n in notes)  # cosignatures kept
    check = cli(
        "audit", "verify", str(database), "--public-key", str(log_key[1]),
        "--witness", witness.url,
    )  # fmt: skip
    assert check.returncode == 0, check.stderr
    assert "consistent with the witnessed checkpoint of 5 entries" in check.stdout


def test_a_proof_for_one_flow_is_checked_offline_with_its_cosignature(
    published, tmp_path, log_key, witness
):
    database, flow_id = published
    proof = tmp_path / "flow.tlog-proof"
    made = cli("audit", "prove", str(database), flow_id, "-o", str(proof))
    assert made.returncode == 0, made.stderr
    text = proof.read_text()
    assert text.startswith("c2sp.org/tlog-proof@v1\nindex 4\n")
    entry = proof.with_name(proof.name + ".entry")
    assert json.loads(entry.read_text())["flow_id"] == flow_id
    database.unlink()  # offline: the auditor has the two files and the keys, nothing else
    args = ["--entry", str(entry), "--public-key", str(log_key[1]), "--witness-key", witness.vkey]
    ok = cli("audit", "check-proof", str(proof), *args)
    assert ok.returncode == 0, ok.stderr
    assert "entry 4 is in tracegate.test/audit" in ok.stdout and "witness.test" in ok.stdout
    edited = tmp_path / "edited.entry"
    edited.write_text(entry.read_text().replace('"allow"', '"deny"'))
    bad = cli("audit", "check-proof", str(proof), *args[:1], str(edited), *args[2:])
    assert bad.returncode == 1 and "not in the tree" in bad.stderr
    lines = text.split("\n")
    lines[2] = ("B" if lines[2][0] == "A" else "A") + lines[2][1:]  # one inclusion-path hash
    (tmp_path / "tampered.tlog-proof").write_text("\n".join(lines))
    tampered = cli("audit", "check-proof", str(tmp_path / "tampered.tlog-proof"), *args)
    assert tampered.returncode == 1 and "not in the tree" in tampered.stderr
    other = tmp_path / "other.pem"
    SigningKey.generate(other, ORIGIN)
    forged = cli("audit", "check-proof", str(proof), "--entry", str(entry),
                 "--public-key", str(other.with_name("other.pem.vkey")))  # fmt: skip
    assert forged.returncode == 1 and "not signed by" in forged.stderr


def cut_tail(database: Path, keep: int) -> None:
    """What an admin of the database can do: drop the newest entries, rows and checkpoints."""
    conn = sqlite3.connect(database)
    with conn:
        refs = "SELECT ref FROM log_entries WHERE kind = 'flow' AND idx >= ?"
        conn.execute(f"DELETE FROM flows WHERE id IN ({refs})", (keep,))
        conn.execute("DELETE FROM bodies WHERE flow_id NOT IN (SELECT flow_id FROM flows)")
        conn.execute("DELETE FROM log_entries WHERE idx >= ?", (keep,))
        for level in range(8):
            conn.execute(
                "DELETE FROM log_nodes WHERE level = ? AND (idx + 1) << ? > ?", (level, level, keep)
            )
        conn.execute("DELETE FROM log_checkpoints WHERE size > ?", (keep,))
    conn.close()


def test_a_log_cut_short_verifies_alone_but_not_against_the_witness(
    published, trail, log_key, witness
):
    database, _ = published
    cut_tail(database, 2)
    key = log_verifier(str(log_key[1]), None)
    assert verify(database, key).ok  # inside the database, nothing is left to disagree
    assert len(audit_rows(database)) == 2
    for source in (witness.url, str(witness.state), str(trail / "sink" / "checkpoints")):
        check = cli(
            "audit", "verify", str(database), "--public-key", str(log_key[1]),
            "--witness", source,
        )  # fmt: skip
        assert check.returncode == 1, (source, check.stdout)
        assert "entries 2..4 were cut off (truncated)" in check.stderr
        assert "log SHORTER than the witnessed 5" in check.stdout


def test_a_log_rewritten_and_re_signed_with_another_key_is_caught_twice(
    published, tmp_path, log_key, witness
):
    database, _ = published
    # The attacker edits a row, rebuilds the whole tree and signs new checkpoints with a key
    # of their own, under the same origin.
    conn = sqlite3.connect(database, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("BEGIN")
    conn.execute("UPDATE flows SET subject = 'nobody' WHERE id = 1")
    entries = [(k, r, entry_of(conn, k, r, e)) for _, k, r, e in MerkleLog(conn).entries()]
    for table in ("log_nodes", "log_entries", "log_checkpoints"):
        conn.execute(f"DELETE FROM {table}")
    log = MerkleLog(conn)
    log.append(entries)
    log.sign(NoteSigner(ORIGIN, Ed25519PrivateKey.generate()))
    conn.execute("COMMIT")
    conn.close()
    alone = cli("audit", "verify", str(database), "--public-key", str(log_key[1]))
    assert alone.returncode == 1 and "signature does not verify" in alone.stderr
    witnessed = cli(
        "audit", "verify", str(database), "--public-key", str(log_key[1]),
        "--witness", witness.url,
    )  # fmt: skip
    assert "differ from what it cosigned" in witnessed.stderr
    assert "log INCONSISTENT with the witnessed 5" in witnessed.stdout


def test_the_gateway_does_not_sign_over_a_rewritten_log(published, tmp_path, log_key):
    database, _ = published
    conn = sqlite3.connect(database)
    with conn:
        conn.execute("UPDATE log_nodes SET hash = zeroblob(32) WHERE level = 0 AND idx = 0")
        conn.execute("UPDATE log_nodes SET hash = zeroblob(32) WHERE level = 2 AND idx = 0")
    conn.close()
    signed = cli("audit", "checkpoint", str(database), "--key", str(log_key[0]),
                 "--origin", ORIGIN)  # fmt: skip
    assert signed.returncode == 0 and "already covers" in signed.stdout
    conn = sqlite3.connect(database)
    with conn:
        conn.execute("INSERT INTO log_entries (idx, kind, ref) VALUES (5, 'prune', 0)")
        conn.execute("INSERT INTO log_nodes VALUES (320, 0, 5, zeroblob(32))")  # key 5*64+0
    conn.close()
    refused = cli("audit", "checkpoint", str(database), "--key", str(log_key[0]),
                  "--origin", ORIGIN)  # fmt: skip
    assert refused.returncode == 1 and "refusing to sign" in refused.stderr


# -- the witness protocol, against the same class the `tracegate witness` server runs ----------


@pytest.fixture
def small_log() -> tuple[NoteSigner, list[bytes]]:
    return NoteSigner(ORIGIN, Ed25519PrivateKey.generate()), [bytes([i]) * 3 for i in range(9)]


def tree(leaves: list[bytes]) -> merkle.SubtreeHashes:
    hashes = [merkle.leaf_hash(x) for x in leaves]

    def mth(a: int, b: int) -> bytes:
        if b - a == 1:
            return hashes[a]
        k = merkle.split(b - a)
        return merkle.node_hash(mth(a, a + k), mth(a + k, b))

    return merkle.SubtreeHashes(lambda level, i: mth(i << level, (i + 1) << level))


def test_the_witness_cosigns_growth_and_refuses_shrinking_forks_and_bad_proofs(tmp_path, small_log):
    log, leaves = small_log
    signer = NoteSigner("witness.test", Ed25519PrivateKey.generate(), COSIGNATURE_V1)
    w = Witness(signer, [log.verifier], tmp_path / "state.json")
    t = tree(leaves)

    def note(size: int, root: bytes | None = None) -> str:
        return sign_note(Checkpoint(ORIGIN, size, root or t.root(size)).text(), log)

    first = w.add_checkpoint(add_checkpoint_body(0, [], note(4)))
    assert first.status == 200 and first.body.startswith("\u2014 witness.test ")
    assert w.add_checkpoint(add_checkpoint_body(0, [], note(6))).status == 409  # stale old
    stale = w.add_checkpoint(add_checkpoint_body(0, [], note(6)))
    assert stale.content_type == "text/x.tlog.size" and stale.body == "4\n"
    good = merkle.consistency_proof(4, 7, t)
    assert w.add_checkpoint(add_checkpoint_body(4, good[1:], note(7))).status == 422
    fork = tree([leaves[0], b"forged", *leaves[2:]])  # differs inside the cosigned 4
    forked = add_checkpoint_body(4, merkle.consistency_proof(4, 7, fork), note(7, fork.root(7)))
    assert w.add_checkpoint(forked).status == 422  # a different tree: the proof cannot hold
    assert w.add_checkpoint(add_checkpoint_body(4, [], note(4, fork.root(4)))).status == 409
    assert w.add_checkpoint(add_checkpoint_body(4, good, note(7))).status == 200
    assert w.add_checkpoint(add_checkpoint_body(7, [], note(4))).status == 400  # shrinking
    stranger = NoteSigner(ORIGIN, Ed25519PrivateKey.generate())
    unsigned = sign_note(Checkpoint(ORIGIN, 9, t.root(9)).text(), stranger)
    assert w.add_checkpoint(add_checkpoint_body(7, [], unsigned)).status == 403
    elsewhere = NoteSigner("other.test/log", log.private)
    unknown = sign_note(Checkpoint("other.test/log", 1, t.root(1)).text(), elsewhere)
    assert w.add_checkpoint(add_checkpoint_body(0, [], unknown)).status == 404
    assert w.add_checkpoint("old 01\n\n" + note(9)).status == 400
    # What it cosigned survives a restart: a new instance reads the state file.
    again = Witness(signer, [log.verifier], tmp_path / "state.json")
    assert json.loads((tmp_path / "state.json").read_text())[ORIGIN]["size"] == 7
    assert again.add_checkpoint(add_checkpoint_body(0, [], note(9))).status == 409


def test_checkpoints_go_to_an_object_lock_bucket_in_compliance_mode(store, tmp_path):
    s3 = store.client()
    s3.create_bucket(Bucket="tracegate-checkpoints", ObjectLockEnabledForBucket=True)
    database = tmp_path / "log.sqlite3"
    conn = sqlite3.connect(database, isolation_level=None)
    MerkleLog.create(conn)
    log = MerkleLog(conn)
    log.append([("prune", 0, b'{"n":1}'), ("prune", 0, b'{"n":2}')])
    signed = log.sign(SigningKey(Ed25519PrivateKey.generate()).signer(ORIGIN))
    conn.close()
    import os  # the sink is built from the config, as the gateway builds it

    from tracegate.config import PublishTarget

    target = PublishTarget.model_validate(
        {"object_lock": {"bucket": "tracegate-checkpoints", "endpoint": store.endpoint,
                         "prefix": "c/", "retain_days": 30}}
    )  # fmt: skip
    os.environ["TRACEGATE_CHECKPOINT_ACCESS_KEY_ID"] = store.seeder_keys.access_key_id
    os.environ["TRACEGATE_CHECKPOINT_SECRET_ACCESS_KEY"] = store.seeder_keys.secret_access_key
    try:
        sinks = build_sinks([target])
    finally:
        del os.environ["TRACEGATE_CHECKPOINT_ACCESS_KEY_ID"]
        del os.environ["TRACEGATE_CHECKPOINT_SECRET_ACCESS_KEY"]
    assert isinstance(sinks[0], ObjectLockSink)
    publisher = Publisher(database, sinks)
    publisher.publish_now(signed)
    assert publisher.failures == 0
    key = f"c/{2:020d}"
    head = s3.head_object(Bucket="tracegate-checkpoints", Key=key)
    assert head["ObjectLockMode"] == "COMPLIANCE"
    assert head["ObjectLockRetainUntilDate"] > dt.datetime.now(dt.UTC) + dt.timedelta(days=29)
    body = s3.get_object(Bucket="tracegate-checkpoints", Key=key)["Body"].read().decode()
    assert body == signed.note and base64.b64encode(signed.root).decode() in body
    with pytest.raises(s3.exceptions.ClientError):
        s3.delete_object(Bucket="tracegate-checkpoints", Key=key, VersionId=head["VersionId"])


def test_a_file_from_before_the_checkpoint_guard_gains_it_and_a_stale_signer_cannot_fork(
    tmp_path,
):
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    signer = NoteSigner("tracegate.test/old", Ed25519PrivateKey.generate())
    # The layout the first Merkle release wrote: checkpoints without `prev_size`.
    conn.execute(
        "CREATE TABLE log_checkpoints (size INTEGER PRIMARY KEY, root BLOB NOT NULL, "
        "note TEXT NOT NULL, ts TEXT NOT NULL)"
    )
    MerkleLog.create(conn)
    log = MerkleLog(conn)
    log.append([("prune", 0, b'{"n":1}')])
    first = log.sign(signer)
    log.append([("prune", 0, b'{"n":2}')])
    assert log.sign(signer) is not None
    log.append([("prune", 0, b'{"n":3}')])
    stale = MerkleLog(conn)
    stale.latest = lambda: first  # it read the latest checkpoint before the other signer wrote
    with pytest.raises(sqlite3.IntegrityError):
        stale.sign(signer)
    assert [c.size for c in log.checkpoints()] == [1, 2]
    assert log.sign(signer).size == 3  # a signer with the true latest goes on
    conn.close()
