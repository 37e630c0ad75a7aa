"""Fixtures shared by the test files (plain helper functions are in helpers.py)."""

from __future__ import annotations

import pytest

from tinygrad_conv import reference_kernels


@pytest.fixture(params=["kernels", "reference"])
def kernel_mode(request):
    """Run the test twice: on the Cython kernels, and inside `reference_kernels()` (reference.py's
    NumPy formulas). The value is the mode's name; the mode holds for the whole test."""
    with reference_kernels(request.param == "reference"):
        yield request.param
