"""What masking did to one flow: counts per rule and a sample of paths, never the values."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

MAX_PATHS_PER_RULE = 20


def _render(path: tuple[str | int, ...]) -> str:
    out = "$"
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


@dataclass
class MaskReport:
    counts: Counter[str] = field(default_factory=Counter)
    actions: dict[str, str] = field(default_factory=dict)
    paths: dict[str, list[str]] = field(default_factory=dict)
    documents: int = 0
    listing_removed: int = 0

    def add(self, rule_id: str, action: str, path: tuple[str | int, ...]) -> None:
        self.counts[rule_id] += 1
        self.actions[rule_id] = action
        sample = self.paths.setdefault(rule_id, [])
        if len(sample) < MAX_PATHS_PER_RULE:
            sample.append(_render(path))

    def merge(self, other: MaskReport) -> None:
        """Add what another report holds (the masking of one part of the same answer)."""
        self.counts.update(other.counts)
        self.actions.update(other.actions)
        for rule, paths in other.paths.items():
            sample = self.paths.setdefault(rule, [])
            sample.extend(paths[: max(0, MAX_PATHS_PER_RULE - len(sample))])
        self.documents += other.documents
        self.listing_removed += other.listing_removed

    def copy(self) -> MaskReport:
        """An independent copy (paths are strings: one level of copying is enough, where
        `copy.deepcopy` walked every path of every rule)."""
        return MaskReport(
            Counter(self.counts),
            dict(self.actions),
            {rule: list(paths) for rule, paths in self.paths.items()},
            self.documents,
            self.listing_removed,
        )

    def to_dict(self) -> dict[str, Any]:
        rules = {
            rule: {"action": self.actions[rule], "count": n, "paths": self.paths.get(rule, [])}
            for rule, n in sorted(self.counts.items())
        }
        out: dict[str, Any] = {"documents": self.documents, "rules": rules}
        if self.listing_removed:
            out["listing_removed"] = self.listing_removed
        return out
