"""Opt-in weight processing (fold LN, centering) done in place on the HF parameters."""

from __future__ import annotations


class WeightProcessing:
    """Mixed into ``Bridge``: ``process_weights`` and its parts."""
