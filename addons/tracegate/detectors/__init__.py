"""Content detectors: secrets and personal data inside free text, found by one fast scan."""

from tracegate.detectors.base import Detector
from tracegate.detectors.personal import PERSONAL
from tracegate.detectors.secrets import SECRETS

ALL: list[Detector] = [*SECRETS, *PERSONAL]
BY_NAME: dict[str, Detector] = {d.name: d for d in ALL}
GROUPS: dict[str, list[str]] = {
    "secrets": [d.name for d in SECRETS],
    "pii": [d.name for d in PERSONAL],
}

__all__ = ["ALL", "BY_NAME", "GROUPS", "Detector"]
