"""Reproducible random seeds derived from the config's master seed."""

from __future__ import annotations

import hashlib


def derive_seed(master: int, *parts) -> int:
    """A 63-bit seed from ``master`` and ``parts`` (name, temperature, replica, purpose):
    the same inputs always give the same seed, different inputs independent ones.
    Numbers are formatted with ``repr`` of floats so 300 and 300.0 agree."""
    text = "|".join([str(int(master))] + [repr(float(p)) if isinstance(p, (int, float)) else str(p)
                                          for p in parts])
    return int(hashlib.sha256(text.encode()).hexdigest()[:16], 16) >> 1
