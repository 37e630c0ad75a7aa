"""avg_pool2d and adaptive_avg_pool2d (kernels, graph ops, modules, NumPy reference) against
PyTorch: values and gradients for every kernel/stride/padding/ceil_mode/count_include_pad.
Tests taking the `kernel_mode` fixture run twice: on the Cython kernels and in reference mode."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygrad_conv.reference as R
from tinygrad_conv import Tensor, _pool, _threads, gradcheck, nn, reference_kernels
from tinygrad_conv import functional as F

from helpers import assert_close

TOL = {np.float64: 1e-12, np.float32: 1e-5}


@st.composite
def avg_cases(draw):
    """Random (shape, kernel, stride, padding, ceil_mode, count_include_pad) PyTorch accepts."""
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    stride = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    padding = (draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2)))
    h = max(1, kh - 2 * padding[0]) + draw(st.integers(0, 7))
    w = max(1, kw - 2 * padding[1]) + draw(st.integers(0, 7))
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 3)), h, w)
    return shape, (kh, kw), stride, padding, draw(st.booleans()), draw(st.booleans())


def torch_avg(x, g, kernel, stride, padding, ceil_mode, count_include_pad):
    tx = torch.tensor(x, requires_grad=True)
    a = torch.nn.functional.avg_pool2d(tx, kernel, stride, padding, ceil_mode,
                                       count_include_pad)
    a.backward(torch.tensor(g))
    return a.detach().numpy(), tx.grad.numpy()


def torch_out_shape(shape, kernel, stride, padding, ceil_mode):
    out = torch.nn.functional.avg_pool2d(torch.zeros(shape), kernel, stride, padding, ceil_mode)
    return tuple(out.shape)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@settings(max_examples=60, deadline=None)
@given(case=avg_cases(), seed=st.integers(0, 2**32 - 1))
def test_avg_pool_kernel_op_and_reference_match_pytorch(dtype, case, seed):
    shape, kernel, stride, padding, ceil_mode, include_pad = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    out_shape = torch_out_shape(shape, kernel, stride, padding, ceil_mode)
    g = rng.standard_normal(out_shape).astype(dtype)
    want, want_dx = torch_avg(x, g, kernel, stride, padding, ceil_mode, include_pad)
    windows = (kernel, stride, padding, ceil_mode, include_pad)
    # the kernels
    out = _pool.avg_pool2d_forward(x, *windows)
    assert out.dtype == dtype
    assert_close(out, want, TOL[dtype], "kernel forward")
    assert_close(_pool.avg_pool2d_backward(g, *shape[2:], *windows), want_dx, TOL[dtype],
                 "kernel backward")
    # the graph op
    tx = Tensor(x, requires_grad=True, dtype=dtype)
    a = F.avg_pool2d(tx, kernel, stride, padding, ceil_mode, include_pad)
    a.backward(g)
    assert_close(a.data, want, TOL[dtype], "op forward")
    assert tx.grad.dtype == dtype
    assert_close(tx.grad, want_dx, TOL[dtype], "op backward")
    # the reference
    assert_close(R.avg_pool2d_forward(x, *windows), want, TOL[dtype], "reference forward")
    assert_close(R.avg_pool2d_backward(g, *shape[2:], *windows), want_dx, TOL[dtype],
                 "reference backward")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("in_hw, out_hw", [
    ((7, 9), (1, 1)), ((6, 6), (2, 3)), ((7, 9), (3, 4)), ((5, 5), (5, 5)), ((4, 5), (7, 8)),
    ((1, 1), (2, 1))], ids=str)
def test_adaptive_avg_pool_kernel_op_and_reference_match_pytorch(dtype, in_hw, out_hw):
    rng = np.random.default_rng(sum(in_hw + out_hw))
    x = rng.standard_normal((2, 3) + in_hw).astype(dtype)
    g = rng.standard_normal((2, 3) + out_hw).astype(dtype)
    tx = torch.tensor(x, requires_grad=True)
    ta = torch.nn.functional.adaptive_avg_pool2d(tx, out_hw)
    ta.backward(torch.tensor(g))
    ox = Tensor(x, requires_grad=True, dtype=dtype)
    oa = F.adaptive_avg_pool2d(ox, out_hw)
    oa.backward(g)
    assert_close(oa.data, ta, TOL[dtype], "forward")
    assert_close(ox.grad, tx.grad, TOL[dtype], "backward")
    assert_close(R.adaptive_avg_pool2d_forward(x, out_hw), ta, TOL[dtype], "reference")
    assert_close(R.adaptive_avg_pool2d_backward(g, *in_hw), tx.grad, TOL[dtype],
                 "reference backward")


def test_global_average_pool_is_each_planes_mean_and_spreads_grad_evenly():
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float64).reshape(2, 3, 4, 5)
    t = Tensor(x, requires_grad=True, dtype=np.float64)
    out = nn.AdaptiveAvgPool2d(1)(t)
    assert out.shape == (2, 3, 1, 1)
    np.testing.assert_array_equal(out.data[:, :, 0, 0], x.mean(axis=(2, 3)))
    out.sum().backward()
    np.testing.assert_array_equal(t.grad, np.full(x.shape, 1 / 20))


def test_avg_pool_overlapping_windows_add_their_shares():
    # 3x3 windows, stride 1 over a 4x4 plane: the centre cells sit in all four windows
    t = Tensor(np.ones((1, 1, 4, 4)), requires_grad=True, dtype=np.float64)
    F.avg_pool2d(t, 3, stride=1).sum().backward()
    expected = np.array([[1, 2, 2, 1], [2, 4, 4, 2], [2, 4, 4, 2], [1, 2, 2, 1]]) / 9
    np.testing.assert_array_equal(t.grad[0, 0], expected)


def test_count_include_pad_changes_only_the_divisor_of_border_windows():
    x = Tensor(np.ones((1, 1, 4, 4)), dtype=np.float64)
    with_pad = F.avg_pool2d(x, 3, stride=1, padding=1).data[0, 0]
    without = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False).data[0, 0]
    np.testing.assert_array_equal(without, np.ones((4, 4)))        # means of real ones only
    assert with_pad[0, 0] == 4 / 9 and with_pad[0, 1] == 6 / 9 and with_pad[1, 1] == 1


def test_ceil_mode_keeps_a_last_partial_window():
    x = Tensor(np.arange(25.0).reshape(1, 1, 5, 5), dtype=np.float64)
    assert F.avg_pool2d(x, 2).shape == (1, 1, 2, 2)
    out = F.avg_pool2d(x, 2, ceil_mode=True)
    assert out.shape == (1, 1, 3, 3)
    assert out.data[0, 0, 2, 2] == 24.0                 # the corner window holds one cell


def test_avg_pool_gradcheck_float64():
    x = Tensor(np.random.default_rng(0).standard_normal((2, 2, 5, 6)), requires_grad=True,
               dtype=np.float64)
    assert gradcheck(lambda t: F.avg_pool2d(t, (3, 2), (2, 1), (1, 1), True, False), [x])
    assert gradcheck(lambda t: F.adaptive_avg_pool2d(t, (2, 4)), [x])


def test_modules_match_pytorch_and_print_like_it(kernel_mode):
    x = np.random.default_rng(1).standard_normal((2, 3, 7, 7))
    pairs = [(nn.AvgPool2d(2), torch.nn.AvgPool2d(2)),
             (nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False),
              torch.nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False)),
             (nn.AvgPool2d((3, 2), stride=(1, 2)), torch.nn.AvgPool2d((3, 2), stride=(1, 2))),
             (nn.AdaptiveAvgPool2d(1), torch.nn.AdaptiveAvgPool2d(1)),
             (nn.AdaptiveAvgPool2d((2, 3)), torch.nn.AdaptiveAvgPool2d((2, 3)))]
    for ours, theirs in pairs:
        assert repr(ours) == repr(theirs)
        assert_close(ours(Tensor(x, dtype=np.float64)).data, theirs(torch.tensor(x)), 1e-12,
                     repr(ours))


def test_avg_pool_in_reference_mode_is_bit_for_bit_reference_py():
    x = np.random.default_rng(3).standard_normal((2, 3, 7, 6))
    g = np.random.default_rng(4).standard_normal((2, 3, 4, 4))   # 4x4 windows both times
    windows = ((3, 2), (2, 2), (1, 1), True, False)
    t = Tensor(x, requires_grad=True, dtype=np.float64)
    with reference_kernels():
        out = F.avg_pool2d(t, *windows)
        out.backward(g)
    assert np.array_equal(out.data, R.avg_pool2d_forward(x, *windows))
    assert np.array_equal(t.grad, R.avg_pool2d_backward(g, 7, 6, *windows))
    t = Tensor(x, requires_grad=True, dtype=np.float64)
    with reference_kernels():
        out = F.adaptive_avg_pool2d(t, (4, 4))
        out.backward(g)
    assert np.array_equal(out.data, R.adaptive_avg_pool2d_forward(x, (4, 4)))
    assert np.array_equal(t.grad, R.adaptive_avg_pool2d_backward(g, 7, 6))


def test_empty_batch_pools_to_an_empty_output_with_an_empty_gradient(kernel_mode):
    t = Tensor(np.zeros((0, 2, 4, 4)), requires_grad=True, dtype=np.float64)
    out = F.avg_pool2d(t, 2)
    assert out.shape == (0, 2, 2, 2)
    out.backward(np.zeros(out.shape))
    assert t.grad.shape == (0, 2, 4, 4)


def t(*shape, dtype=np.float32):
    return Tensor(np.zeros(shape), dtype=dtype)


X = t(2, 3, 8, 8)


@pytest.mark.parametrize("call, error, words", [
    (lambda: F.avg_pool2d(X, 9), ValueError,
     ["avg_pool2d", "kernel_size", "larger", "(2, 3, 8, 8)"]),
    (lambda: F.avg_pool2d(X, 11, padding=1), ValueError, ["avg_pool2d", "larger", "10x10"]),
    (lambda: F.avg_pool2d(X, 3, padding=2), ValueError, ["avg_pool2d", "padding", "half"]),
    (lambda: F.avg_pool2d(X, 0), ValueError, ["avg_pool2d", "kernel_size", "0"]),
    (lambda: F.avg_pool2d(X, 2, stride=-1), ValueError, ["avg_pool2d", "stride", "-1"]),
    (lambda: F.avg_pool2d(X, 2, ceil_mode=1), TypeError, ["avg_pool2d", "ceil_mode", "bool"]),
    (lambda: F.avg_pool2d(X, 2, count_include_pad="no"), TypeError,
     ["avg_pool2d", "count_include_pad"]),
    (lambda: F.avg_pool2d(t(8, 8), 2), ValueError, ["avg_pool2d", "4-D", "(8, 8)"]),
    (lambda: F.avg_pool2d(np.zeros((1, 1, 4, 4)), 2), TypeError, ["avg_pool2d", "Tensor"]),
    (lambda: F.avg_pool2d(t(2, 3, 8, 8, dtype=np.int64), 2), TypeError, ["avg_pool2d", "int64"]),
    (lambda: F.avg_pool2d(t(2, 0, 8, 8), 2), ValueError, ["avg_pool2d", "(2, 0, 8, 8)"]),
    (lambda: F.adaptive_avg_pool2d(X, 0), ValueError, ["adaptive_avg_pool2d", "output_size"]),
    (lambda: F.adaptive_avg_pool2d(X, (1, 2, 3)), ValueError, ["adaptive_avg_pool2d", "3 values"]),
    (lambda: F.adaptive_avg_pool2d(t(3, 8, 8), 1), ValueError, ["adaptive_avg_pool2d", "4-D"]),
    (lambda: F.adaptive_avg_pool2d(t(2, 3, 0, 8), 1), ValueError,
     ["adaptive_avg_pool2d", "(2, 3, 0, 8)"]),
    (lambda: nn.AvgPool2d(3, padding=2), ValueError, ["AvgPool2d", "padding", "half"]),
    (lambda: nn.AvgPool2d(2, ceil_mode=None), TypeError, ["AvgPool2d", "ceil_mode"]),
    (lambda: nn.AvgPool2d(2)(t(3, 8, 8)), ValueError, ["AvgPool2d", "(3, 8, 8)"]),
    (lambda: nn.AvgPool2d(5, padding=1)(t(1, 1, 2, 4)), ValueError,
     ["AvgPool2d", "kernel_size (5, 5)", "larger than the padded input (4x6"]),
    (lambda: nn.AdaptiveAvgPool2d(-1), ValueError, ["AdaptiveAvgPool2d", "output_size", "-1"]),
    (lambda: nn.AdaptiveAvgPool2d(1)(t(8, 8)), ValueError, ["AdaptiveAvgPool2d", "(8, 8)"]),
])
def test_malformed_pooling_calls_raise_clear_errors(call, error, words):
    with pytest.raises(error) as info:
        call()
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_avg_pool_results_are_bit_identical_across_thread_counts():
    x = np.random.default_rng(5).standard_normal((3, 4, 9, 9)).astype(np.float32)
    before = _threads.get_num_threads()
    try:
        runs = []
        for threads in (2, 1, 3):
            _threads.set_num_threads(threads)
            out = _pool.avg_pool2d_forward(x, (3, 3), (2, 2), (1, 1), True, True)
            runs.append([out, _pool.avg_pool2d_backward(out, 9, 9, (3, 3), (2, 2), (1, 1), True,
                                                        True),
                         _pool.adaptive_avg_pool2d_forward(x, (2, 2))])
    finally:
        _threads.set_num_threads(before)
    for run in runs[1:]:
        for first, again in zip(runs[0], run):
            assert np.array_equal(first, again)
