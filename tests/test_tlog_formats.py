"""The transparency-log formats against published vectors: RFC 6962/9162 trees and proofs
(transparency-dev/merkle's test data), C2SP signed notes (Go's sumdb/note example)."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tracegate.audit import merkle
from tracegate.audit.note import (
    COSIGNATURE_V1,
    Checkpoint,
    Note,
    NoteError,
    NoteSigner,
    Verifier,
    open_checkpoint,
    sign_note,
)

LEAVES = [bytes.fromhex(h) for h in ("", "00", "10", "2021", "3031", "40414243",
          "5051525354555657", "606162636465666768696a6b6c6d6e6f")]  # fmt: skip
ROOTS = [bytes.fromhex(h) for h in (
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
)]  # fmt: skip
H = bytes.fromhex
# (leaf index, tree size, proof): transparency-dev/merkle proof/verify_test.go (0-based here).
INCLUSION = [
    (0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (1, 5, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]  # fmt: skip
CONSISTENCY = [
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 5, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
    (6, 7, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
]  # fmt: skip


def tree_of(leaves: list[bytes]) -> merkle.SubtreeHashes:
    """Perfect-subtree hashes computed the slow way, straight from the definition."""
    hashes = [merkle.leaf_hash(leaf) for leaf in leaves]

    def mth(start: int, end: int) -> bytes:
        if end - start == 1:
            return hashes[start]
        k = merkle.split(end - start)
        return merkle.node_hash(mth(start, start + k), mth(start + k, end))

    return merkle.SubtreeHashes(lambda level, i: mth(i << level, (i + 1) << level))


def test_roots_of_every_size_match_the_published_ones():
    tree = tree_of(LEAVES)
    assert [tree.root(n) for n in range(9)] == ROOTS


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION)
def test_inclusion_proofs_match_and_verify(index, size, proof):
    tree = tree_of(LEAVES)
    expected = [H(p) for p in proof]
    assert merkle.inclusion_proof(index, size, tree) == expected
    leaf = merkle.leaf_hash(LEAVES[index])
    merkle.verify_inclusion(index, size, leaf, expected, ROOTS[size])


@pytest.mark.parametrize(("old", "new", "proof"), CONSISTENCY)
def test_consistency_proofs_match_and_verify(old, new, proof):
    tree = tree_of(LEAVES)
    expected = [H(p) for p in proof]
    assert merkle.consistency_proof(old, new, tree) == expected
    merkle.verify_consistency(old, new, ROOTS[old], ROOTS[new], expected)


def test_every_proof_of_every_small_tree_verifies():
    leaves = [bytes([i]) * i for i in range(40)]
    tree = tree_of(leaves)
    for size in range(1, 41):
        root = tree.root(size)
        for index in range(size):
            proof = merkle.inclusion_proof(index, size, tree)
            merkle.verify_inclusion(index, size, merkle.leaf_hash(leaves[index]), proof, root)
        for old in range(size + 1):
            proof = merkle.consistency_proof(old, size, tree)
            merkle.verify_consistency(old, size, tree.root(old), root, proof)


def corruptions(proof: list[bytes]) -> list[list[bytes]]:
    out = [proof[:-1], [*proof, proof[0]], [ROOTS[8], *proof], [b"", *proof]]
    for i in range(len(proof)):
        flipped = [*proof]
        flipped[i] = bytes([proof[i][0] ^ 8]) + proof[i][1:]
        out.append(flipped)
    return out


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION)
def test_a_changed_inclusion_proof_index_or_root_fails(index, size, proof):
    proof = [H(p) for p in proof]
    leaf = merkle.leaf_hash(LEAVES[index])
    for wrong in corruptions(proof):
        with pytest.raises(merkle.ProofError):
            merkle.verify_inclusion(index, size, leaf, wrong, ROOTS[size])
    for i, n in ((index ^ 2, size), (index, size * 2), (index, size // 2)):
        with pytest.raises(merkle.ProofError):
            merkle.verify_inclusion(i, n, leaf, proof, ROOTS[size])
    with pytest.raises(merkle.ProofError):
        merkle.verify_inclusion(index, size, merkle.leaf_hash(b"other"), proof, ROOTS[size])


@pytest.mark.parametrize(("old", "new", "proof"), CONSISTENCY)
def test_a_changed_consistency_proof_or_root_fails(old, new, proof):
    proof = [H(p) for p in proof]
    for wrong in [*corruptions(proof), []]:
        with pytest.raises(merkle.ProofError):
            merkle.verify_consistency(old, new, ROOTS[old], ROOTS[new], wrong)
    for o, n, r1, r2 in (
        (old, new, ROOTS[new], ROOTS[old]),
        (old - 1, new, ROOTS[old], ROOTS[new]),
        (old, new * 2, ROOTS[old], ROOTS[new]),
        (new, old, ROOTS[new], ROOTS[old]),
    ):
        with pytest.raises(merkle.ProofError):
            merkle.verify_consistency(o, n, r1, r2, proof)


# golang.org/x/mod/sumdb/note: the package documentation's example note and keys.
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_SIGNATURE = (
    "\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqd"
    "ngotpRZb6KE6RyyBwJnAM=\n"
)


def go_signer() -> NoteSigner:
    material = GO_SKEY.split("+", 4)[4]  # the base64 itself may hold a '+'
    seed = base64.b64decode(material)[1:]
    return NoteSigner("PeterNeumann", Ed25519PrivateKey.from_private_bytes(seed))


def test_a_note_is_signed_exactly_as_gos_sumdb_note_signs_it():
    signer = go_signer()
    assert signer.verifier.vkey == GO_VKEY
    assert sign_note(GO_TEXT, signer) == GO_TEXT + "\n" + GO_SIGNATURE


def test_gos_note_verifies_and_an_edited_one_does_not():
    verifier = Verifier.parse(GO_VKEY)
    note = Note.parse(GO_TEXT + "\n" + GO_SIGNATURE)
    assert note.text == GO_TEXT and note.verified_by(verifier)
    edited = Note.parse(GO_TEXT.replace("cryptography", "cryptographY") + "\n" + GO_SIGNATURE)
    assert not edited.verified_by(verifier)


def test_verifier_keys_with_a_wrong_id_or_type_are_refused():
    with pytest.raises(NoteError):
        Verifier.parse(GO_VKEY.replace("c74f20a3", "c74f20a4"))
    with pytest.raises(NoteError):
        Verifier.parse("PeterNeumann+c74f20a3+AhpZ")
    with pytest.raises(NoteError):
        Verifier.parse("just-a-name")


def test_a_cosignature_key_id_uses_type_four():
    # transparency-dev/formats' cosignature test key: its published id is the 0x04 one.
    vkey = "remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2"
    verifier = Verifier.parse(vkey)
    assert verifier.kind == COSIGNATURE_V1 and verifier.vkey == vkey


def test_a_checkpoint_round_trips_and_its_cosignature_verifies():
    log = NoteSigner("tracegate.test/audit", Ed25519PrivateKey.generate())
    witness = NoteSigner("witness.test", Ed25519PrivateKey.generate(), COSIGNATURE_V1)
    checkpoint = Checkpoint("tracegate.test/audit", 8, ROOTS[8])
    note = sign_note(checkpoint.text(), log) + witness.cosign(checkpoint.text(), 1764590400)
    opened, parsed = open_checkpoint(note, log.verifier)
    assert opened == checkpoint and parsed.verified_by(witness.verifier)
    assert base64.b64encode(ROOTS[8]).decode() in note
    other = NoteSigner("tracegate.test/audit", Ed25519PrivateKey.generate())
    with pytest.raises(NoteError):
        open_checkpoint(note, other.verifier)
    forged = note.replace("\n8\n", "\n9\n")
    with pytest.raises(NoteError):
        open_checkpoint(forged, log.verifier)
