"""Which code computes an op: the Cython kernels, or, inside `reference_kernels()`, their NumPy
twins in reference.py (the tutorial's formulas, which a debugger can step into)."""

from __future__ import annotations

from tinygrad_conv import reference


def kernels(compiled):
    """The module that computes an op: `compiled` (a Cython kernel module), or reference.py
    inside `reference_kernels()` (the same functions, as the tutorial's formulas in NumPy)."""
    return reference if reference.enabled() else compiled
