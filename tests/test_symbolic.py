"""reference.py on sympy object arrays: the tutorial's symbolic formulas, letter for letter.

The expected expressions are typed from the tutorial (cnn-backward-pass-tutorial), not computed
by our code: Z = W ⊛ A + b written out, dL/dW = z'1 [a1 a2; a4 a5] + ..., dL/dA = z'1 [w1 w2 0;
w3 w4 0; 0 0 0] + ..., dL/db = the sum of Z', and the max-pool's dL/dZ with a'1 + a'2 at the 10.
Beyond the tutorial's case, sympy differentiates L = sum(Z * Z') itself for stride, padding and
dilation, an oracle independent of the backward formulas.
"""

from __future__ import annotations

import numpy as np
import pytest

from tinygrad_conv import reference as R

sympy = pytest.importorskip("sympy")

a1, a2, a3, a4, a5, a6, a7, a8, a9 = A_SYMBOLS = sympy.symbols("a1:10")
w1, w2, w3, w4 = W_SYMBOLS = sympy.symbols("w1:5")
(b1,) = sympy.symbols("b1:2")
z1p, z2p, z3p, z4p = ZP_SYMBOLS = sympy.symbols("z'1:5")
M = sympy.Matrix


def as_matrix(array: np.ndarray) -> sympy.Matrix:
    """The (1, 1, H, W) object array's plane as a sympy Matrix."""
    return M(array[0, 0].tolist())


def tutorial_layer():
    """A (3x3), W (2x2), b, Z' (2x2) as object arrays of the tutorial's symbols."""
    a = np.array(A_SYMBOLS, dtype=object).reshape(1, 1, 3, 3)
    w = np.array(W_SYMBOLS, dtype=object).reshape(1, 1, 2, 2)
    zp = np.array(ZP_SYMBOLS, dtype=object).reshape(1, 1, 2, 2)
    return a, w, np.array([b1], dtype=object), zp


def test_conv_forward_is_the_tutorials_z_letter_for_letter():
    a, w, b, _ = tutorial_layer()
    z = R.conv2d_forward(a, w, b, (1, 1), (0, 0), (1, 1))
    assert as_matrix(z) == M([
        [a1*w1 + a2*w2 + a4*w3 + a5*w4 + b1, a2*w1 + a3*w2 + a5*w3 + a6*w4 + b1],
        [a4*w1 + a5*w2 + a7*w3 + a8*w4 + b1, a5*w1 + a6*w2 + a8*w3 + a9*w4 + b1]])


def test_conv_backward_is_the_tutorials_dl_dw_dl_da_dl_db():
    a, w, _, zp = tutorial_layer()
    dx, dw, db = R.conv2d_backward(a, w, zp, (1, 1), (0, 0), (1, 1))
    # dL/dW = z'1 dz1/dW + z'2 dz2/dW + z'3 dz3/dW + z'4 dz4/dW = Z' ⊛ A
    dl_dw = (z1p * M([[a1, a2], [a4, a5]]) + z2p * M([[a2, a3], [a5, a6]])
             + z3p * M([[a4, a5], [a7, a8]]) + z4p * M([[a5, a6], [a8, a9]]))
    # dL/dA = z'1 dz1/dA + ... = W_180 ⊛ Z'_pad_k-1
    dl_da = (z1p * M([[w1, w2, 0], [w3, w4, 0], [0, 0, 0]])
             + z2p * M([[0, w1, w2], [0, w3, w4], [0, 0, 0]])
             + z3p * M([[0, 0, 0], [w1, w2, 0], [w3, w4, 0]])
             + z4p * M([[0, 0, 0], [0, w1, w2], [0, w3, w4]]))
    assert as_matrix(dw) == dl_dw
    assert as_matrix(dx) == dl_da
    assert db.tolist() == [z1p + z2p + z3p + z4p]


def test_max_pool_backward_is_the_tutorials_dl_dz():
    z = np.array([[1.0, 2, 3], [4, 10, 5], [11, 12, 13]])[np.newaxis, np.newaxis]
    a, argmax = R.max_pool2d_forward(z, (2, 2), (1, 1), (0, 0))
    assert a[0, 0].tolist() == [[10, 10], [12, 13]]
    a1p, a2p, a3p, a4p = sympy.symbols("a'1:5")
    ap = np.array([a1p, a2p, a3p, a4p], dtype=object).reshape(1, 1, 2, 2)
    dz = R.max_pool2d_backward(ap, argmax, 3, 3)
    assert as_matrix(dz) == M([[0, 0, 0], [0, a1p + a2p, 0], [0, a3p, a4p]])


@pytest.mark.parametrize("stride, padding, dilation", [
    ((2, 2), (0, 0), (1, 1)),
    ((2, 1), ((1, 0), (0, 1)), (1, 1)),
    ((1, 1), (0, 0), (2, 2)),
    ((2, 3), (1, 1), (2, 1)),
])
def test_conv_backward_is_sympys_derivative_of_sum_z_times_zp(stride, padding, dilation):
    """L = sum(Z * Z'): dL/dA, dL/dW and dL/db by sympy.diff, an oracle that shares no step
    with the backward formulas (H=6, k=3, s=2 leaves rows the forward never reaches)."""
    n, c, f, h, wd, kh, kw = 2, 2, 2, 6, 5, 3, 2
    a = np.array(sympy.symbols(f"a:{n * c * h * wd}"), dtype=object).reshape(n, c, h, wd)
    w = np.array(sympy.symbols(f"w:{f * c * kh * kw}"), dtype=object).reshape(f, c, kh, kw)
    b = np.array(sympy.symbols(f"b:{f}"), dtype=object)
    z = R.conv2d_forward(a, w, b, stride, padding, dilation)
    zp = np.array(sympy.symbols(f"g:{z.size}"), dtype=object).reshape(z.shape)
    loss = sympy.expand(np.sum(z * zp))
    dx, dw, db = R.conv2d_backward(a, w, zp, stride, padding, dilation)
    for ours, symbols in [(dx, a), (dw, w), (db, b)]:
        assert ours.shape == symbols.shape
        for got, symbol in zip(ours.ravel(), symbols.ravel()):
            assert sympy.expand(got - sympy.diff(loss, symbol)) == 0, (symbol, got)
