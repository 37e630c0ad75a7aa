"""conv2d and max_pool2d (kernels, graph ops, NumPy reference) against PyTorch and the tutorial.

Tests taking the `kernel_mode` fixture run twice: on the Cython kernels and in reference mode.
"""

from __future__ import annotations

import os
import textwrap

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tinygrad_conv.reference as R
from tinygrad_conv import _conv, _pool, _threads
from tinygrad_conv.cnn_ops import conv2d, max_pool2d
from tinygrad_conv.shapes import out_size
from tinygrad_conv.tensor import Tensor

from helpers import assert_close, run_python

TOL = {np.float64: 1e-10, np.float32: 1e-4}
# the mode fixture holds for every example hypothesis draws, so sharing it is safe
EACH_MODE = [HealthCheck.function_scoped_fixture]


# ---------------------------------------------------------------------------------------------
# conv2d against PyTorch
# ---------------------------------------------------------------------------------------------

@st.composite
def conv_cases(draw):
    """Random (N, C, H, W, F, KH, KW, stride, padding, dilation) that PyTorch accepts."""
    n, c, f = draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = (draw(st.integers(0, 3)), draw(st.integers(0, 3)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    h = max(1, dilation[0] * (kh - 1) + 1 - 2 * padding[0]) + draw(st.integers(0, 6))
    w = max(1, dilation[1] * (kw - 1) + 1 - 2 * padding[1]) + draw(st.integers(0, 6))
    return (n, c, h, w, f, kh, kw), stride, padding, dilation


def torch_conv(x, w, b, grad_out, stride, padding, dilation):
    """PyTorch's Z, dL/dA, dL/dW, dL/db in float64 for the given arrays."""
    tx, tw = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, w))
    tb = None if b is None else torch.tensor(b, dtype=torch.float64, requires_grad=True)
    z = torch.nn.functional.conv2d(tx, tw, tb, stride, padding, dilation)
    z.backward(torch.tensor(grad_out, dtype=torch.float64))
    return (z.detach().numpy(), tx.grad.numpy(), tw.grad.numpy(),
            None if b is None else tb.grad.numpy())


def random_conv_arrays(case, dtype, seed, bias=True):
    (n, c, h, w, f, kh, kw), stride, padding, dilation = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    wt = rng.standard_normal((f, c, kh, kw)).astype(dtype)
    b = rng.standard_normal(f).astype(dtype) if bias else None
    oh = out_size(h, kh, stride[0], padding[0], dilation[0])
    ow = out_size(w, kw, stride[1], padding[1], dilation[1])
    g = rng.standard_normal((n, f, oh, ow)).astype(dtype)
    return x, wt, b, g


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@settings(max_examples=200, deadline=None, suppress_health_check=EACH_MODE)
@given(case=conv_cases(), seed=st.integers(0, 2**32 - 1), bias=st.booleans())
def test_conv2d_op_forward_and_all_gradients_match_pytorch(kernel_mode, dtype, case, seed, bias):
    _, stride, padding, dilation = case
    x, w, b, g = random_conv_arrays(case, dtype, seed, bias)
    expected = torch_conv(x, w, b, g, stride, padding, dilation)

    tx, tw = Tensor(x, requires_grad=True, dtype=dtype), Tensor(w, requires_grad=True, dtype=dtype)
    tb = None if b is None else Tensor(b, requires_grad=True, dtype=dtype)
    z = conv2d(tx, tw, tb, stride=stride, padding=padding, dilation=dilation)
    z.backward(g)

    # each result is a sum of products; in float32 its rounding error scales with the sum of
    # their sizes, not with the result (a dL/dW whose terms cancel to 2.5e-4 is off by 3e-8):
    # the same sums over |x|, |w|, |b|, |g| set the scale
    sizes = torch_conv(np.abs(x), np.abs(w), None if b is None else np.abs(b), np.abs(g),
                       stride, padding, dilation)
    ours = [z.data, tx.grad, tw.grad] + ([] if b is None else [tb.grad])
    for name, got, want, size in zip(["Z", "dL/dA", "dL/dW", "dL/db"], ours, expected, sizes):
        assert got.dtype == dtype, name
        assert_close(got, want, TOL[dtype], name, atol=TOL[dtype] * float(size.max(initial=0)))


@settings(max_examples=100, deadline=None)
@given(case=conv_cases(), seed=st.integers(0, 2**32 - 1))
def test_conv2d_reference_matches_pytorch(case, seed):
    _, stride, padding, dilation = case
    x, w, b, g = random_conv_arrays(case, np.float64, seed)
    expected = torch_conv(x, w, b, g, stride, padding, dilation)
    z = R.conv2d_forward(x, w, b, stride, padding, dilation)
    dx, dw, db = R.conv2d_backward(x, w, g, stride, padding, dilation)
    for name, got, want in zip(["Z", "dL/dA", "dL/dW", "dL/db"], [z, dx, dw, db], expected):
        assert_close(got, want, 1e-10, name)


@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("padding", [0, 1, 2, 4])
@pytest.mark.parametrize("dilation", [1, 2])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_conv2d_kernel_input_gradient_every_stride_padding_dilation(stride, padding, dilation, k):
    # the classic off-by-one place: every combination, sizes that leave rows no window reached
    case = ((2, 2, 9, 8, 3, k, k), (stride, stride), (padding, padding), (dilation, dilation))
    if out_size(8, k, stride, padding, dilation) < 1:
        pytest.skip("kernel larger than the padded input")
    x, w, b, g = random_conv_arrays(case, np.float64, seed=stride * 100 + padding * 10 + k)
    _, want_dx, want_dw, want_db = torch_conv(x, w, b, g, *case[1:])
    dx, dw, db = _conv.conv2d_backward(x, w, g, *case[1:], True, True, True)
    assert_close(dx, want_dx, 1e-12, "dL/dA")
    assert_close(dw, want_dw, 1e-12, "dL/dW")
    assert_close(db, want_db, 1e-12, "dL/db")
    ref_dx, _, _ = R.conv2d_backward(x, w, g, *case[1:], True, False, False)
    assert_close(ref_dx, want_dx, 1e-12, "reference dL/dA")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(3, 1, 28, 28, 32, 3, 1, 0), (3, 32, 26, 26, 64, 3, 1, 0),
                                   (5, 16, 14, 14, 32, 5, 2, 2), (2, 64, 56, 56, 64, 3, 1, 1)])
def test_conv2d_benchmark_shapes_match_pytorch(dtype, shape):
    # real layer sizes: several row bands per image (the last one short), several batch chunks
    n, c, h, w, f, k, s, p = shape
    case = ((n, c, h, w, f, k, k), (s, s), (p, p), (1, 1))
    x, wt, b, g = random_conv_arrays(case, dtype, seed=c + f)
    expected = torch_conv(x, wt, b, g, *case[1:])
    z = _conv.conv2d_forward(x, wt, b, *case[1:])
    grads = _conv.conv2d_backward(x, wt, g, *case[1:], True, True, True)
    for name, got, want in zip(["Z", "dL/dA", "dL/dW", "dL/db"], [z, *grads], expected):
        assert got.dtype == dtype
        assert_close(got, want, TOL[dtype], name)


def test_conv2d_only_needed_gradients_are_computed(monkeypatch, kernel_mode):
    asked = []
    module = R if kernel_mode == "reference" else _conv
    real = module.conv2d_backward

    def spy(*args):
        asked.append(args[6:9])                     # need_dx, need_dw, need_db
        return real(*args)

    monkeypatch.setattr(module, "conv2d_backward", spy)
    images = Tensor(np.ones((2, 1, 5, 5)))                         # no requires_grad
    w = Tensor(np.ones((3, 1, 3, 3)), requires_grad=True)
    b = Tensor(np.zeros(3))                                        # frozen bias
    conv2d(images, w, b).sum().backward()
    assert asked == [(False, True, False)]
    assert images.grad is None and b.grad is None
    assert np.allclose(w.grad, 2 * 9)                              # N * OH * OW ones


def test_conv2d_non_contiguous_input_is_made_contiguous(kernel_mode):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 10, 12))
    w = rng.standard_normal((4, 3, 3, 3))
    tx = Tensor(x[:, :, :, ::2].copy())
    tx.data = x[:, :, :, ::2]                                      # a strided view
    tw = Tensor(w.transpose(0, 1, 3, 2).copy())
    tw.data = w.transpose(0, 1, 3, 2)
    z = conv2d(tx, tw, stride=(2, 1), padding=1)
    want = torch.nn.functional.conv2d(torch.tensor(x[:, :, :, ::2]),
                                      torch.tensor(w.transpose(0, 1, 3, 2)), None, (2, 1), 1)
    assert_close(z.data, want, 1e-12, "Z")


def test_conv2d_empty_batch_gives_empty_output_and_zero_weight_gradient(kernel_mode):
    x = Tensor(np.zeros((0, 2, 5, 5)))
    w = Tensor(np.ones((3, 2, 3, 3)), requires_grad=True)
    z = conv2d(x, w)
    assert z.shape == (0, 3, 3, 3)
    z.sum().backward()
    assert np.array_equal(w.grad, np.zeros((3, 2, 3, 3)))


# ---------------------------------------------------------------------------------------------
# The tutorial's 3x3 input, 2x2 filter example
# ---------------------------------------------------------------------------------------------

A = np.arange(1.0, 10.0).reshape(3, 3)                 # a1..a9
W = np.array([[2.0, -3.0], [5.0, 7.0]])                # w1..w4
B = 0.5
Z_GRAD = np.array([[0.25, -2.0], [3.0, 1.5]])          # z'1..z'4


def tutorial_conv():
    a = Tensor(A[None, None], requires_grad=True, dtype=np.float64)
    w = Tensor(W[None, None], requires_grad=True, dtype=np.float64)
    b = Tensor([B], requires_grad=True, dtype=np.float64)
    z = conv2d(a, w, b)
    z.backward(Z_GRAD[None, None])
    return z, a.grad[0, 0], w.grad[0, 0], b.grad


def test_tutorial_conv_forward_is_the_written_out_sum(kernel_mode):
    z, *_ = tutorial_conv()
    (a1, a2, a3, a4, a5, a6, a7, a8, a9), (w1, w2, w3, w4) = A.ravel(), W.ravel()
    expected = np.array([
        [a1 * w1 + a2 * w2 + a4 * w3 + a5 * w4, a2 * w1 + a3 * w2 + a5 * w3 + a6 * w4],
        [a4 * w1 + a5 * w2 + a7 * w3 + a8 * w4, a5 * w1 + a6 * w2 + a8 * w3 + a9 * w4],
    ]) + B
    assert np.array_equal(z.data[0, 0], expected)


def test_tutorial_conv_weight_gradient_is_z_grad_correlated_over_a(kernel_mode):
    _, _, dw, _ = tutorial_conv()
    (a1, a2, a3, a4, a5, a6, a7, a8, a9), (z1, z2, z3, z4) = A.ravel(), Z_GRAD.ravel()
    expected = (z1 * np.array([[a1, a2], [a4, a5]]) + z2 * np.array([[a2, a3], [a5, a6]])
                + z3 * np.array([[a4, a5], [a7, a8]]) + z4 * np.array([[a5, a6], [a8, a9]]))
    assert dw[0, 0] == z1 * a1 + z2 * a2 + z3 * a4 + z4 * a5
    assert np.array_equal(dw, expected)


def test_tutorial_conv_input_gradient_is_flipped_kernel_over_padded_z_grad(kernel_mode):
    _, da, _, _ = tutorial_conv()
    (w1, w2, w3, w4), (z1, z2, z3, z4) = W.ravel(), Z_GRAD.ravel()
    expected = (z1 * np.array([[w1, w2, 0], [w3, w4, 0], [0, 0, 0]])
                + z2 * np.array([[0, w1, w2], [0, w3, w4], [0, 0, 0]])
                + z3 * np.array([[0, 0, 0], [w1, w2, 0], [w3, w4, 0]])
                + z4 * np.array([[0, 0, 0], [0, w1, w2], [0, w3, w4]]))
    assert np.allclose(da, expected, rtol=0, atol=1e-14)
    # and the same as W_180 ⊛ pad(Z', k-1), written out
    z_pad = np.pad(Z_GRAD, 1)
    w_180 = W[::-1, ::-1]
    flipped = np.array([[np.sum(w_180 * z_pad[i:i + 2, j:j + 2]) for j in range(3)]
                        for i in range(3)])
    assert np.allclose(da, flipped, rtol=0, atol=1e-14)


def test_tutorial_conv_bias_gradient_is_z_grad_summed(kernel_mode):
    *_, db = tutorial_conv()
    assert db.shape == (1,) and db[0] == Z_GRAD.sum()


def test_tutorial_maxpool_example_reproduces_printed_gradient(kernel_mode):
    z = Tensor(np.array([[1.0, 2, 3], [4, 10, 5], [11, 12, 13]])[None, None],
               requires_grad=True, dtype=np.float64)
    a = max_pool2d(z, kernel_size=2, stride=1)
    assert np.array_equal(a.data[0, 0], [[10.0, 10.0], [12.0, 13.0]])
    loss = (-a.log()).sum()
    loss.backward()
    printed = np.array([[0, 0, 0], [0, -0.2, 0], [0, -0.08333333, -0.07692308]])
    assert np.allclose(z.grad[0, 0], printed, rtol=0, atol=5e-9)
    assert z.grad[0, 0, 1, 1] == -1 / 10 - 1 / 10                 # a'1 + a'2 in one cell


# ---------------------------------------------------------------------------------------------
# max_pool2d against PyTorch
# ---------------------------------------------------------------------------------------------

@st.composite
def pool_cases(draw):
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    padding = (draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2)))
    h = max(1, kh - 2 * padding[0]) + draw(st.integers(0, 6))
    w = max(1, kw - 2 * padding[1]) + draw(st.integers(0, 6))
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 3)), h, w)
    return shape, (kh, kw), stride, padding


def pool_input(shape, seed, values):
    rng = np.random.default_rng(seed)
    if values == "ties":                        # few distinct values: many tied windows
        return rng.integers(-2, 3, shape).astype(np.float64)
    x = rng.standard_normal(shape)
    if values == "nan":
        x[rng.random(shape) < 0.2] = np.nan
    return x


def torch_pool(x, kernel, stride, padding, grad_out=None):
    tx = torch.tensor(x, requires_grad=True)
    a, idx = torch.nn.functional.max_pool2d(tx, kernel, stride, padding, return_indices=True)
    if grad_out is not None:
        a.backward(torch.tensor(grad_out))
    return a.detach().numpy(), idx.numpy(), None if grad_out is None else tx.grad.numpy()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@settings(max_examples=200, deadline=None, suppress_health_check=EACH_MODE)
@given(case=pool_cases(), seed=st.integers(0, 2**32 - 1),
       values=st.sampled_from(["normal", "ties", "nan"]))
def test_maxpool_forward_argmax_and_backward_match_pytorch(kernel_mode, dtype, case, seed, values):
    shape, kernel, stride, padding = case
    x = pool_input(shape, seed, values).astype(dtype)
    out, argmax = _pool.max_pool2d_forward(x, kernel, stride, padding)      # the kernel itself
    g = np.random.default_rng(seed + 1).standard_normal(out.shape).astype(dtype)
    want_out, want_idx, want_dx = torch_pool(x, kernel, stride, padding, g)
    assert np.array_equal(out, want_out, equal_nan=True)
    assert np.array_equal(argmax, want_idx)
    # through the graph op (in this test's mode): the same forward, the gradient routed to the
    # argmax cells
    tx = Tensor(x, requires_grad=True, dtype=dtype)
    a = max_pool2d(tx, kernel, stride, padding)
    a.backward(g)
    assert np.array_equal(a.data, want_out, equal_nan=True)
    assert tx.grad.dtype == dtype
    assert_close(tx.grad, want_dx, TOL[dtype], "dL/dZ")
    # the reference agrees too
    ref_out, ref_idx = R.max_pool2d_forward(x, kernel, stride, padding)
    assert np.array_equal(ref_out, want_out, equal_nan=True)
    assert np.array_equal(ref_idx, want_idx)
    assert_close(R.max_pool2d_backward(g, ref_idx, *shape[2:]), want_dx, TOL[dtype],
                 "reference dL/dZ")


def test_maxpool_overlapping_windows_accumulate(kernel_mode):
    x = np.zeros((1, 1, 3, 3))
    x[0, 0, 1, 1] = 5.0                          # the centre wins all four 2x2 windows
    tx = Tensor(x, requires_grad=True, dtype=np.float64)
    a = max_pool2d(tx, 2, stride=1)
    a.backward(np.array([[[[1.0, 2.0], [3.0, 4.0]]]]))
    _, _, want = torch_pool(x, 2, 1, 0, np.array([[[[1.0, 2.0], [3.0, 4.0]]]]))
    assert tx.grad[0, 0, 1, 1] == 10.0
    assert np.array_equal(tx.grad, want)


def test_maxpool_ties_pick_first_in_row_major_order():
    x = np.ones((1, 1, 4, 4))
    out, argmax = _pool.max_pool2d_forward(x, (2, 2), (2, 2), (0, 0))
    assert np.array_equal(argmax[0, 0], [[0, 2], [8, 10]])   # each window's top-left cell
    assert np.array_equal(argmax, torch_pool(x, 2, 2, 0)[1])


def test_maxpool_nan_wins_like_pytorch():
    x = np.array([[[[1.0, np.nan, 3.0], [np.nan, 5.0, 6.0], [7.0, 8.0, 9.0]]]])
    out, argmax = _pool.max_pool2d_forward(x, (2, 2), (1, 1), (0, 0))
    want_out, want_idx, _ = torch_pool(x, 2, 1, 0)
    assert np.isnan(out[0, 0, 0, 0]) and np.isnan(out[0, 0, 0, 1]) and np.isnan(out[0, 0, 1, 0])
    assert np.array_equal(out, want_out, equal_nan=True)
    assert np.array_equal(argmax, want_idx)


def test_maxpool_padding_never_wins_even_over_negative_values():
    x = -np.arange(1.0, 17.0).reshape(1, 1, 4, 4) - 100
    out, argmax = _pool.max_pool2d_forward(x, (3, 3), (2, 2), (1, 1))
    want_out, want_idx, _ = torch_pool(x, 3, 2, 1)
    assert np.all(np.isfinite(out))
    assert np.array_equal(out, want_out) and np.array_equal(argmax, want_idx)


def test_maxpool_backward_refuses_argmax_outside_the_plane():
    g = np.ones((1, 1, 2, 2))
    with pytest.raises(ValueError, match="max_pool2d_backward: 1 argmax"):
        _pool.max_pool2d_backward(g, np.array([[[[0, 1], [2, 9]]]]), 3, 3)


# ---------------------------------------------------------------------------------------------
# Validation: every malformed call is a ValueError/TypeError naming the op and argument
# ---------------------------------------------------------------------------------------------

def t(*shape, dtype=np.float32):
    return Tensor(np.zeros(shape), dtype=dtype)


X, WT = t(2, 3, 8, 8), t(4, 3, 3, 3)

CONV_ERRORS = [
    (lambda: conv2d(np.zeros((2, 3, 8, 8)), WT), TypeError, ["conv2d", "input", "Tensor"]),
    (lambda: conv2d(X, "w"), TypeError, ["conv2d", "weight", "Tensor"]),
    (lambda: conv2d(t(3, 8, 8), WT), ValueError, ["conv2d", "input", "4-D", "(3, 8, 8)"]),
    (lambda: conv2d(X, t(4, 3, 3)), ValueError, ["conv2d", "weight", "4-D", "(4, 3, 3)"]),
    (lambda: conv2d(X, t(4, 2, 3, 3)), ValueError,
     ["conv2d", "3 channels", "(2, 3, 8, 8)", "(4, 2, 3, 3)"]),
    (lambda: conv2d(X, t(4, 3, 9, 9)), ValueError, ["conv2d", "larger than the padded input"]),
    (lambda: conv2d(X, t(4, 3, 3, 3), dilation=4), ValueError, ["conv2d", "dilation", "9x9"]),
    (lambda: conv2d(X, WT, stride=0), ValueError, ["conv2d", "stride", "0"]),
    (lambda: conv2d(X, WT, stride=(1, -2)), ValueError, ["conv2d", "stride", "-2"]),
    (lambda: conv2d(X, WT, dilation=0), ValueError, ["conv2d", "dilation"]),
    (lambda: conv2d(X, WT, padding=-1), ValueError, ["conv2d", "padding", "-1"]),
    (lambda: conv2d(X, WT, padding=1.5), TypeError, ["conv2d", "padding", "1.5"]),
    (lambda: conv2d(X, WT, stride=True), TypeError, ["conv2d", "stride", "True"]),
    (lambda: conv2d(X, WT, stride=(1, 2, 3)), ValueError, ["conv2d", "stride", "3 values"]),
    (lambda: conv2d(X, WT, stride="2"), TypeError, ["conv2d", "stride", "'2'"]),
    (lambda: conv2d(X, WT, stride=2**40), ValueError, ["conv2d", "stride", "2147483647"]),
    (lambda: conv2d(X, WT, padding=None), TypeError, ["conv2d", "padding", "None"]),
    (lambda: conv2d(X, WT, t(5)), ValueError, ["conv2d", "bias", "(4,)", "(5,)"]),
    (lambda: conv2d(X, WT, t(4, 1)), ValueError, ["conv2d", "bias", "(4, 1)"]),
    (lambda: conv2d(X, t(4, 3, 3, 3, dtype=np.float64)), TypeError,
     ["conv2d", "input is float32", "weight is float64", "(4, 3, 3, 3)"]),
    (lambda: conv2d(X, WT, t(4, dtype=np.float64)), TypeError, ["conv2d", "bias is float64"]),
    (lambda: conv2d(t(2, 3, 8, 8, dtype=np.int64), WT), TypeError,
     ["conv2d", "input", "int64", "float32 or float64", "convert"]),
    (lambda: conv2d(X, t(0, 3, 3, 3)), ValueError, ["conv2d", "(0, 3, 3, 3)"]),
    (lambda: conv2d(t(2, 3, 0, 8), t(4, 3, 1, 1), padding=1), ValueError,
     ["conv2d", "(2, 3, 0, 8)"]),
    (lambda: conv2d(X, WT, padding=2**30), ValueError, ["conv2d", "too large"]),
]


def float16_tensor():
    x = t(2, 3, 8, 8)
    x.data = x.data.astype(np.float16)               # only reachable by assigning .data
    return x


POOL_ERRORS = [
    (lambda: max_pool2d([[1.0]], 2), TypeError, ["max_pool2d", "input", "Tensor"]),
    (lambda: max_pool2d(t(8, 8), 2), ValueError, ["max_pool2d", "input", "4-D", "(8, 8)"]),
    (lambda: max_pool2d(X, 0), ValueError, ["max_pool2d", "kernel_size", "0"]),
    (lambda: max_pool2d(X, 2, stride=0), ValueError, ["max_pool2d", "stride"]),
    (lambda: max_pool2d(X, 2, padding=-1), ValueError, ["max_pool2d", "padding", "-1"]),
    (lambda: max_pool2d(X, 3, padding=2), ValueError,
     ["max_pool2d", "padding (2, 2)", "half of kernel_size (3, 3)"]),
    (lambda: max_pool2d(X, 9), ValueError, ["max_pool2d", "kernel_size", "larger", "(2, 3, 8, 8)"]),
    (lambda: max_pool2d(X, (2, 2.0)), TypeError, ["max_pool2d", "kernel_size", "float"]),
    (lambda: max_pool2d(X, [2]), ValueError, ["max_pool2d", "kernel_size", "1 values"]),
    (lambda: max_pool2d(float16_tensor(), 2), TypeError,
     ["max_pool2d", "input", "float16", "convert"]),
    (lambda: max_pool2d(t(2, 0, 8, 8), 2), ValueError, ["max_pool2d", "(2, 0, 8, 8)"]),
]


@pytest.mark.parametrize("call, error, words", CONV_ERRORS + POOL_ERRORS)
def test_malformed_calls_raise_clear_errors(call, error, words):
    with pytest.raises(error) as info:
        call()
    for word in words:
        assert word in str(info.value), (word, str(info.value))


# ---------------------------------------------------------------------------------------------
# Threads and determinism
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad, error", [(0, ValueError), (-3, ValueError), (1.0, TypeError),
                                        (True, TypeError), ("2", TypeError)])
def test_set_num_threads_refuses_non_positive_ints(bad, error):
    with pytest.raises(error, match="set_num_threads"):
        _threads.set_num_threads(bad)


@pytest.mark.skipif(not _threads.HAVE_OPENMP, reason="a serial build runs on one thread")
def test_more_threads_than_the_machine_runs_is_a_value_error_naming_the_limit():
    # issue 20: 65,536 threads segfaulted the next conv (libgomp starts a team with ~200 bytes a
    # thread on the caller's stack), 40,000 ended the process ("Thread creation failed"); the
    # script runs in its own process, so a crash fails this test instead of killing pytest
    limit = _threads.max_num_threads()
    assert os.cpu_count() <= limit <= _threads.THREADS_PER_CPU * os.cpu_count()
    done = run_python(["-c", textwrap.dedent(f"""
        import numpy as np
        import tinygrad_conv
        from tinygrad_conv import Tensor, functional as F
        for n in (65536, 40000, 100000, {limit} + 1):
            try:
                tinygrad_conv.set_num_threads(n)
            except ValueError as e:
                assert str(e).startswith(f"set_num_threads: n={{n}} is more threads"), e
                assert "the limit is {limit} (8 per logical CPU" in str(e), e
                assert tinygrad_conv.get_num_threads() != n
            else:
                raise SystemExit(f"set_num_threads({{n}}) was accepted")
        tinygrad_conv.set_num_threads({limit})                       # the limit itself runs
        x = Tensor(np.ones((4, 2, 9, 9), np.float32), requires_grad=True)
        w = Tensor(np.ones((3, 2, 3, 3), np.float32), requires_grad=True)
        F.max_pool2d(F.conv2d(x, w, padding=1), 2).sum().backward()
        print(tinygrad_conv.get_num_threads(), x.grad.sum())
        """)], timeout=120)
    assert done.stdout.split()[0] == str(limit)


@pytest.mark.skipif(not _threads.HAVE_OPENMP, reason="a serial build runs on one thread")
def test_omp_num_threads_above_the_limit_is_lowered_to_it_with_a_warning():
    script = textwrap.dedent("""
        import warnings
        warnings.simplefilter("always")
        with warnings.catch_warnings(record=True) as caught:
            import tinygrad_conv
        import numpy as np
        from tinygrad_conv import Tensor, functional as F
        F.conv2d(Tensor(np.ones((4, 2, 9, 9), np.float32)), Tensor(np.ones((3, 2, 3, 3),
                                                                            np.float32)))
        print(tinygrad_conv.get_num_threads(), tinygrad_conv.max_num_threads())
        print([str(w.message) for w in caught if "OMP_NUM_THREADS" in str(w.message)])
        """)
    done = run_python(["-c", script], env={"OMP_NUM_THREADS": "100000"}, timeout=120)
    threads, limit = done.stdout.splitlines()[0].split()
    assert threads == limit
    assert "OMP_NUM_THREADS asks for 100000 threads" in done.stdout.splitlines()[1]


@pytest.mark.skipif(not _threads.HAVE_OPENMP, reason="a serial build runs on one thread")
def test_the_openmp_thread_limit_lowers_the_limit():
    done = run_python(["-c", textwrap.dedent("""
        import tinygrad_conv
        print(tinygrad_conv.max_num_threads())
        try:
            tinygrad_conv.set_num_threads(3)
        except ValueError as e:
            print(e)
        """)], env={"OMP_THREAD_LIMIT": "2"}, timeout=120)
    limit, message = done.stdout.splitlines()
    assert limit == "2"
    assert message.endswith("the limit is 2 (OpenMP's thread limit, OMP_THREAD_LIMIT)")


def test_results_are_bit_identical_across_runs_and_thread_counts():
    case = ((7, 5, 13, 11, 6, 3, 3), (2, 1), (1, 1), (1, 2))
    x, w, b, g = random_conv_arrays(case, np.float32, seed=11)
    pool_x = np.random.default_rng(5).standard_normal((3, 4, 9, 9)).astype(np.float32)
    before = _threads.get_num_threads()
    try:
        runs = []
        for threads in (2, 2, 1, 3):
            _threads.set_num_threads(threads)
            assert _threads.get_num_threads() == (threads if _threads.HAVE_OPENMP else 1)
            out, argmax = _pool.max_pool2d_forward(pool_x, (3, 3), (2, 2), (1, 1))
            runs.append([_conv.conv2d_forward(x, w, b, *case[1:]),
                         *_conv.conv2d_backward(x, w, g, *case[1:], True, True, True),
                         out, argmax, _pool.max_pool2d_backward(out, argmax, 9, 9)])
    finally:
        _threads.set_num_threads(before)
    for run in runs[1:]:
        for first, again in zip(runs[0], run):
            assert np.array_equal(first, again)       # the very same bits
