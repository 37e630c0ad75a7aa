"""Which code computes an op: the Cython kernels, or, inside `reference_kernels()`, their NumPy
twins in reference.py (the tutorial's formulas, which a debugger can step into), or, inside
`student_kernels(DIR)`, a learner's own backward functions."""

from __future__ import annotations

from tinygrad_conv import reference
from tinygrad_conv.exercises.student import active_kernels


def kernels(compiled):
    """The module that computes an op: `compiled` (a Cython kernel module), or reference.py
    inside `reference_kernels()` (the same functions, as the tutorial's formulas in NumPy), or
    the learner's backward functions inside `student_kernels(DIR)`."""
    return active_kernels(compiled) or (reference if reference.enabled() else compiled)
