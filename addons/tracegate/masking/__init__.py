"""Masking: what a scope may see of a trace document, and a report of what was hidden."""

from tracegate.masking.engine import BodyError, Masker
from tracegate.masking.report import MaskReport

__all__ = ["BodyError", "MaskReport", "Masker"]
