"""The matmul kernel takes sizes as Py_ssize_t: a dimension above 2**31 keeps its size (zero-size
operands make that testable without memory), and a nonzero product too big for BLAS's 32-bit
ints goes to numpy instead of reaching BLAS truncated."""

from __future__ import annotations

import numpy as np
import pytest

from tinygrad_conv import Tensor, _matmul
from tinygrad_conv import functional as F

BIG = 2**32 + 3  # truncated to a C int this is 3


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matmul_kernel_keeps_dimensions_above_a_c_int(dtype):
    empty = np.empty((0, 0), dtype)
    assert _matmul.matmul(np.empty((BIG, 0), dtype), empty, False, False).shape == (BIG, 0)
    assert _matmul.matmul(np.empty((0, BIG), dtype), empty, True, False).shape == (BIG, 0)
    assert _matmul.matmul(empty, np.empty((0, BIG), dtype), False, False).shape == (0, BIG)
    out = _matmul.matmul(np.empty((0, BIG), dtype), np.empty((BIG, 0), dtype), False, False)
    assert out.shape == (0, 0)


def test_engine_matmul_and_linear_keep_dimensions_above_a_c_int():
    a = Tensor(np.empty((BIG, 0), np.float32), requires_grad=True)
    out = a @ Tensor(np.empty((0, 0), np.float32))
    assert out.shape == (BIG, 0)
    out.sum().backward()
    assert a.grad.shape == (BIG, 0)
    x = Tensor(np.empty((BIG, 0), np.float32), requires_grad=True)
    out = F.linear(x, Tensor(np.empty((0, 0), np.float32)))
    assert out.shape == (BIG, 0)
    out.sum().backward()
    assert x.grad.shape == (BIG, 0)
