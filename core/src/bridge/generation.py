"""Generation: ``Bridge.generate`` with hooks firing on every step."""

from __future__ import annotations


class Generation:
    """Mixed into ``Bridge``: ``generate``."""
