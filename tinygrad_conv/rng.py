"""The random generator behind parameter initialisation and dropout.

`manual_seed(s)` makes model creation and dropout masks repeatable, like `torch.manual_seed`.
"""

from __future__ import annotations

import numpy as np

_generator = np.random.default_rng()


def manual_seed(seed: int) -> None:
    """Restart the generator from `seed` (a non-negative int)."""
    global _generator
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"manual_seed: seed must be a non-negative int, got {seed!r}")
    _generator = np.random.default_rng(int(seed))


def generator() -> np.random.Generator:
    """The generator in use now (changes when manual_seed is called)."""
    return _generator
