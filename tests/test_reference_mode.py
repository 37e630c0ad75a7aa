"""Reference mode: inside `reference_kernels()` conv2d and max-pooling run reference.py's NumPy
formulas instead of the Cython kernels: bit for bit what reference.py returns, within 1e-10 of
the kernels in float64, switched by a context manager, a decorator or an environment variable."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import tinygrad_conv
import tinygrad_conv.functional as F
import tinygrad_conv.reference as R
from tinygrad_conv import Tensor, _conv, _pool, reference_kernels

from helpers import assert_close, run_python

rng = np.random.default_rng(0)

# (input shape, weight shape, stride, padding, dilation): stride, padding, dilation, odd sizes
CONV_CASES = [
    ((2, 3, 9, 8), (4, 3, 3, 3), (1, 1), (0, 0), (1, 1)),
    ((2, 2, 11, 10), (3, 2, 3, 2), (2, 3), (1, 2), (1, 1)),
    ((1, 3, 12, 12), (2, 3, 3, 3), (2, 2), (2, 1), (2, 3)),
]
# (input shape, kernel, stride, padding)
POOL_CASES = [((2, 3, 8, 8), (2, 2), (2, 2), (0, 0)), ((2, 2, 9, 7), (3, 2), (1, 2), (1, 1))]


def conv_step(x, w, b, g, case):
    """conv2d forward and backward through the engine: Z, dL/dA, dL/dW, dL/db."""
    _, _, stride, padding, dilation = case
    tx, tw, tb = (Tensor(a, requires_grad=True) for a in (x, w, b))
    z = F.conv2d(tx, tw, tb, stride=stride, padding=padding, dilation=dilation)
    z.backward(g)
    return z.data, tx.grad, tw.grad, tb.grad


def conv_arrays(case, dtype):
    x_shape, w_shape, stride, padding, dilation = case
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    z = R.conv2d_forward(x, w, b, stride, padding, dilation)
    return x, w, b, rng.standard_normal(z.shape).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_in_reference_mode_is_bit_for_bit_reference_py(case, dtype):
    x, w, b, g = conv_arrays(case, dtype)
    with reference_kernels():
        ours = conv_step(x, w, b, g, case)
    _, _, stride, padding, dilation = case
    want = [R.conv2d_forward(x, w, b, stride, padding, dilation),
            *R.conv2d_backward(x, w, g, stride, padding, dilation)]
    for name, got, expected in zip(["Z", "dL/dA", "dL/dW", "dL/db"], ours, want):
        assert got.dtype == expected.dtype == dtype, name
        assert np.array_equal(got, expected), name


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_in_reference_mode_is_within_1e_10_of_the_kernels_in_float64(case):
    x, w, b, g = conv_arrays(case, np.float64)
    with reference_kernels():
        reference_run = conv_step(x, w, b, g, case)
    kernel_run = conv_step(x, w, b, g, case)
    for name, got, expected in zip(["Z", "dL/dA", "dL/dW", "dL/db"], reference_run, kernel_run):
        assert_close(got, expected, 1e-10, name)


def pool_step(x, g, case):
    _, kernel, stride, padding = case
    tx = Tensor(x, requires_grad=True)
    a = F.max_pool2d(tx, kernel, stride, padding)
    a.backward(g)
    return a.data, tx.grad


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", POOL_CASES)
def test_max_pool2d_in_reference_mode_is_bit_for_bit_reference_py_and_the_kernels(case, dtype):
    shape, kernel, stride, padding = case
    x = rng.standard_normal(shape).astype(dtype)
    out, argmax = R.max_pool2d_forward(x, kernel, stride, padding)
    g = rng.standard_normal(out.shape).astype(dtype)
    with reference_kernels():
        ours = pool_step(x, g, case)
    want = [out, R.max_pool2d_backward(g, argmax, *shape[2:])]
    for name, got, expected in zip(["A", "dL/dZ"], ours, want):
        assert got.dtype == dtype and np.array_equal(got, expected), name
    # max and routing involve no arithmetic but the adds of overlapping windows: the kernels agree
    for name, got, expected in zip(["A", "dL/dZ"], ours, pool_step(x, g, case)):
        assert_close(got, expected, 1e-10 if dtype == np.float64 else 1e-6, name)


def test_inside_reference_mode_no_cython_kernel_runs(monkeypatch):
    def refuse(*args):
        raise AssertionError("a Cython kernel ran in reference mode")

    for module, name in [(_conv, "conv2d_forward"), (_conv, "conv2d_backward"),
                         (_pool, "max_pool2d_forward"), (_pool, "max_pool2d_backward")]:
        monkeypatch.setattr(module, name, refuse)
    x = Tensor(rng.standard_normal((1, 2, 6, 6)), requires_grad=True)
    w = Tensor(rng.standard_normal((3, 2, 3, 3)), requires_grad=True)
    with reference_kernels():
        F.max_pool2d(F.conv2d(x, w), 2).sum().backward()
    assert x.grad.shape == x.shape and w.grad.shape == w.shape
    with pytest.raises(AssertionError, match="Cython kernel ran"):
        F.conv2d(x, w)            # outside the block, the kernels are back


def test_the_mode_is_a_context_manager_a_decorator_and_nests():
    assert not R.enabled()

    @reference_kernels()
    def inside():
        return R.enabled()

    assert inside() and not R.enabled()
    with reference_kernels():
        assert R.enabled()
        with reference_kernels(False):   # the kernels again, inside
            assert not R.enabled()
        assert R.enabled()
    assert not R.enabled()
    assert tinygrad_conv.reference_kernels is reference_kernels


def test_the_mode_can_be_left_for_the_backward_only():
    # the op picks its kernel when it runs: a forward on the kernels, a backward in NumPy
    x = Tensor(rng.standard_normal((2, 2, 7, 7)), requires_grad=True)
    w = Tensor(rng.standard_normal((2, 2, 3, 3)), requires_grad=True)
    loss = (F.conv2d(x, w, stride=2) ** 2).sum()
    with reference_kernels():
        loss.backward(retain_graph=True)
    stepped = x.grad, w.grad
    x.grad = w.grad = None
    loss.backward()
    for got, expected in zip(stepped, (x.grad, w.grad)):
        assert_close(got, expected, 1e-10)


def test_the_mode_belongs_to_the_thread_that_set_it():
    seen = []
    with reference_kernels():
        worker = threading.Thread(target=lambda: seen.append(R.enabled()))
        worker.start()
        worker.join()
        assert R.enabled()
    assert seen == [False]


def test_reference_kernels_takes_a_bool():
    with pytest.raises(TypeError, match="reference_kernels: on must be a bool, got 'yes'"):
        reference_kernels("yes")


SPY = """
import numpy as np
import tinygrad_conv.functional as F
import tinygrad_conv.reference as R
from tinygrad_conv import Tensor
calls = []
real = R.conv2d_forward
R.conv2d_forward = lambda *a: calls.append(1) or real(*a)
F.conv2d(Tensor(np.ones((1, 1, 4, 4))), Tensor(np.ones((1, 1, 2, 2))))
print(R.enabled(), len(calls))
"""


@pytest.mark.parametrize("value, expected", [("1", "True 1"), ("0", "False 0"), ("", "False 0")])
def test_the_environment_variable_turns_the_mode_on_for_a_whole_run(value, expected):
    done = run_python(["-c", SPY], env={"TINYGRAD_CONV_REFERENCE_KERNELS": value}, timeout=120)
    assert done.stdout.split() == expected.split()


def test_a_bad_environment_value_is_refused_naming_the_variable():
    done = run_python(["-c", "import tinygrad_conv"], check=False, timeout=120,
                      env={"TINYGRAD_CONV_REFERENCE_KERNELS": "yes"})
    assert done.returncode != 0
    assert "ValueError: TINYGRAD_CONV_REFERENCE_KERNELS must be 1 (reference kernels) or 0, " \
        "got 'yes'" in done.stderr
