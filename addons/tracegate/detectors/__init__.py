"""Content detectors: secrets and personal data inside free text, found by one fast scan."""

import functools

from tracegate.detectors.base import Detector
from tracegate.detectors.personal import PERSONAL
from tracegate.detectors.phones import DEFAULT_REGIONS, phone_detector
from tracegate.detectors.secrets import SECRETS

ALL: list[Detector] = [*SECRETS, *PERSONAL]
BY_NAME: dict[str, Detector] = {d.name: d for d in ALL}
GROUPS: dict[str, list[str]] = {
    "secrets": [d.name for d in SECRETS],
    "pii": [d.name for d in PERSONAL],
}


def for_scope(names: list[str], phone_regions: list[str] | tuple[str, ...]) -> list[Detector]:
    """The detectors a scope runs, the phone detector bound to the scope's regions."""
    regions = tuple(phone_regions)
    return [
        _phones(regions) if name == "phone" and regions != DEFAULT_REGIONS else BY_NAME[name]
        for name in names
    ]


@functools.cache
def _phones(regions: tuple[str, ...]) -> Detector:
    return phone_detector(regions)


__all__ = ["ALL", "BY_NAME", "GROUPS", "Detector", "for_scope"]
