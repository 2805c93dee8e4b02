"""The RFC 9162 Merkle tree (§2.1): hashes, inclusion and consistency proofs, their checks.

A tree is read through `subtree(start, end)`, the hash of leaves [start, end) for the ranges
the proofs need: a store keeps the hash of every perfect subtree (aligned, power-of-two
sized), and `SubtreeHashes` composes any other range from those, so proofs never reread every
leaf. The checks follow RFC 9162 §2.1.3.2 and §2.1.4.2 step by step.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

Hash = bytes
EMPTY_ROOT = hashlib.sha256(b"").digest()
Subtree = Callable[[int, int], Hash]


class ProofError(ValueError):
    """A proof that does not hold (or is malformed)."""


def leaf_hash(entry: bytes) -> Hash:
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: Hash, right: Hash) -> Hash:
    return hashlib.sha256(b"\x01" + left + right).digest()


def split(size: int) -> int:
    """The largest power of two smaller than `size` (size >= 2)."""
    return 1 << ((size - 1).bit_length() - 1)


def perfect_ranges(size: int) -> list[tuple[int, int]]:
    """The perfect subtrees a tree of `size` leaves is made of, largest first."""
    ranges, start = [], 0
    for level in range(size.bit_length() - 1, -1, -1):
        if size >> level & 1:
            ranges.append((start, start + (1 << level)))
            start += 1 << level
    return ranges


class SubtreeHashes:
    """Any range's hash from perfect-subtree hashes: `perfect(level, index)` is the hash of
    leaves [index * 2**level, (index + 1) * 2**level)."""

    def __init__(self, perfect: Callable[[int, int], Hash]) -> None:
        self.perfect = perfect

    def __call__(self, start: int, end: int) -> Hash:
        size = end - start
        if size <= 0:
            raise ValueError(f"empty range [{start}, {end})")
        if size & (size - 1) == 0 and start % size == 0:
            return self.perfect(size.bit_length() - 1, start // size)
        k = split(size)
        return node_hash(self(start, start + k), self(start + k, end))

    def root(self, size: int) -> Hash:
        return self(0, size) if size else EMPTY_ROOT


def inclusion_proof(index: int, size: int, subtree: Subtree) -> list[Hash]:
    """PATH(index, D[0:size]), the leaf's sibling first (RFC 9162 §2.1.3.1)."""
    if not 0 <= index < size:
        raise ValueError(f"index {index} is not in a tree of {size}")
    proof: list[Hash] = []
    start, end = 0, size
    while end - start > 1:
        k = split(end - start)
        if index < start + k:
            proof.append(subtree(start + k, end))
            end = start + k
        else:
            proof.append(subtree(start, start + k))
            start += k
    return proof[::-1]


def consistency_proof(old: int, new: int, subtree: Subtree) -> list[Hash]:
    """PROOF(old, D[0:new]) (RFC 9162 §2.1.4.1); empty when old is 0 or old == new."""
    if not 0 <= old <= new:
        raise ValueError(f"no consistency proof from {old} to {new}")
    if old in (0, new):
        return []
    proof: list[Hash] = []
    start, end, complete = 0, new, True
    while True:
        if old - start == end - start:  # SUBPROOF(m, D[m], b)
            if not complete:
                proof.append(subtree(start, end))
            break
        k = split(end - start)
        if old - start <= k:
            proof.append(subtree(start + k, end))
            end = start + k
        else:
            proof.append(subtree(start, start + k))
            start, complete = start + k, False
    return proof[::-1]


def root_from_inclusion(index: int, size: int, leaf: Hash, proof: Sequence[Hash]) -> Hash:
    """The root an inclusion proof leads to (RFC 9162 §2.1.3.2)."""
    if not 0 <= index < size:
        raise ProofError(f"index {index} is not in a tree of {size}")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise ProofError("the inclusion proof is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError("the inclusion proof is too short")
    return r


def verify_inclusion(index: int, size: int, leaf: Hash, proof: Sequence[Hash], root: Hash) -> None:
    if root_from_inclusion(index, size, leaf, proof) != root:
        raise ProofError(f"entry {index} is not in the tree of {size} with that root")


def verify_consistency(
    old: int, new: int, old_root: Hash, new_root: Hash, proof: Sequence[Hash]
) -> None:
    """RFC 9162 §2.1.4.2: the tree of `new` leaves extends the tree of `old` leaves."""
    if not 0 <= old <= new:
        raise ProofError(f"a tree cannot shrink from {old} to {new} leaves")
    if old == new:
        if proof or old_root != new_root:
            raise ProofError(f"two different trees of {old} leaves")
        return
    if old == 0:
        if proof:
            raise ProofError("a consistency proof from the empty tree must be empty")
        return
    if not proof:
        raise ProofError("the consistency proof is empty")
    path = list(proof)
    if old & (old - 1) == 0:  # a power of two: the old root is the first node
        path.insert(0, old_root)
    fn, sn = old - 1, new - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("the consistency proof is too long")
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError("the consistency proof is too short")
    if fr != old_root or sr != new_root:
        raise ProofError(f"the tree of {new} leaves does not extend the tree of {old}")
