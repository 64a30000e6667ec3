"""One way to derive every stage's random seeds from the config's master seed.

A stage that needs randomness (an MD job, a rattle, a committee member's training run)
calls :func:`derive_seed` with the master seed and the parts that name the job, e.g.
``derive_seed(master, "md", name, temperature_K, replica)``. The seed depends on
nothing else (not on the order jobs run in, nor on how many other jobs there are), so
any single job can be rerun on its own and reproduce its output, and two jobs that
differ in any part get independent streams.

One older convention remains: :func:`hipqeq.data.split.make_splits` seeds NumPy with
``default_rng([seed, k])`` (``k = 0`` for the test cut, ``1 + member`` for each
member's train/valid cut). Its tests pin the splits it makes, so it is left as it is;
it is deterministic and independent per ``k`` in the same way.
"""

from __future__ import annotations

import hashlib


def derive_seed(master: int, *parts) -> int:
    """A 63-bit seed from ``master`` and ``parts`` (name, temperature, replica, purpose):
    the same inputs always give the same seed, different inputs independent ones.
    Numbers are formatted with ``repr`` of floats so 300 and 300.0 agree."""
    text = "|".join([str(int(master))] + [repr(float(p)) if isinstance(p, (int, float)) else str(p)
                                          for p in parts])
    return int(hashlib.sha256(text.encode()).hexdigest()[:16], 16) >> 1
