"""A Function written by a user: what backward must return, and the error when it does not.

Backward must give one gradient per input (None where none is needed), each a float array of
that input's shape. Anything else is a TypeError or ValueError that names the Function, also
under `python -O` (these are checks, not asserts).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tinygrad_conv import Function, Tensor

from helpers import run_python


class Scale(Function):
    """out = a * b for two inputs of one shape, with a backward that returns `answer(a, b, g)`."""

    answer = None

    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a * b

    def backward(ctx, g):
        a, b = ctx.saved_values
        return type(ctx).answer(a, b, g)


def op_returning(answer):
    return type("MyScale", (Scale,), {"answer": staticmethod(answer)})


def run(answer, dtype=np.float64):
    a = Tensor(np.ones((2, 3)), requires_grad=True, dtype=dtype)
    b = Tensor(np.full((2, 3), 2.0), requires_grad=True, dtype=dtype)
    op_returning(answer).apply(a, b).sum().backward()
    return a, b


@pytest.mark.parametrize("answer, error, words", [
    (lambda a, b, g: g * b, ValueError, ["MyScale.backward returned 1 gradient(s) for 2 input"]),
    (lambda a, b, g: (g * b, g * a, g), ValueError, ["MyScale.backward returned 3", "2 input"]),
    (lambda a, b, g: (g * b, (g * a)[0]), ValueError,
     ["MyScale.backward", "shape (3,)", "input 1", "(2, 3)"]),
    (lambda a, b, g: (g * b, (g * a).astype(np.int64)), TypeError,
     ["MyScale.backward", "int64", "input 1", "float32 or float64"]),
    (lambda a, b, g: (g * b, Tensor(g * a)), TypeError,
     ["MyScale.backward", "Tensor", "input 1", ".data"]),
    (lambda a, b, g: ((g * b).tolist(), g * a), TypeError, ["MyScale.backward", "list"]),
    (lambda a, b, g: (g * b, 1.0), TypeError, ["MyScale.backward", "float", "input 1"]),
])
def test_a_wrong_backward_is_an_error_naming_the_function(answer, error, words):
    with pytest.raises(error) as info:
        run(answer)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_a_list_of_gradients_is_as_good_as_a_tuple():
    a, b = run(lambda a, b, g: [g * b, g * a])
    np.testing.assert_array_equal(a.grad, np.full((2, 3), 2.0))
    np.testing.assert_array_equal(b.grad, np.ones((2, 3)))


def test_none_for_an_input_leaves_it_without_gradient_like_torch():
    class TorchScale(torch.autograd.Function):
        @staticmethod
        def forward(ctx, a, b):
            return a * b

        @staticmethod
        def backward(ctx, g):
            return g * 2.0, None

    a, b = run(lambda a, b, g: (g * b, None))
    ta = torch.ones((2, 3), dtype=torch.float64, requires_grad=True)
    tb = torch.full((2, 3), 2.0, dtype=torch.float64, requires_grad=True)
    TorchScale.apply(ta, tb).sum().backward()
    assert b.grad is None and tb.grad is None
    np.testing.assert_array_equal(a.grad, ta.grad.numpy())


def test_a_gradient_of_the_other_float_width_is_cast_to_the_inputs_dtype():
    # mixed float32/float64 graphs give each input its gradient in its own dtype
    a, b = run(lambda a, b, g: ((g * b).astype(np.float64), g * a), dtype=np.float32)
    assert a.grad.dtype == b.grad.dtype == np.float32
    np.testing.assert_array_equal(a.grad, np.full((2, 3), 2.0, np.float32))


def test_a_wrong_gradient_count_is_an_error_under_python_O_too():
    script = """
import numpy as np
from tinygrad_conv import Function, Tensor

class Pair(Function):
    def forward(ctx, a, b):
        return a + b
    def backward(ctx, g):
        return g          # one gradient for two inputs

a = Tensor(np.ones(2), requires_grad=True)
b = Tensor(np.ones(2), requires_grad=True)
try:
    Pair.apply(a, b).sum().backward()
except ValueError as e:
    print("refused:", e)
else:
    print("accepted, a.grad =", a.grad, "b.grad =", b.grad)
"""
    out = run_python(["-O", "-c", script], timeout=120).stdout
    assert out.startswith("refused: Pair.backward returned 1 gradient(s) for 2 input(s)"), out


FRESH_IDS: list = []
KEPT = np.full((2, 3), 7.0)


class Fresh(Function):
    """out = 2a; backward returns a new array (and notes its id), or KEPT, an array it keeps."""

    keep = False

    def forward(ctx, a):
        return a * 2

    def backward(ctx, g):
        if type(ctx).keep:
            return KEPT
        fresh = g * 2
        FRESH_IDS.append(id(fresh))
        return fresh


def test_a_leafs_first_gradient_is_the_ops_fresh_array_itself_but_never_a_kept_one():
    # PyTorch's rule: a gradient nothing else holds becomes .grad as it is (no copy of a conv's
    # dL/dA each step); one that something still holds (a module's array, the same array sent
    # to two leaves) is copied, so that changing .grad in place changes nothing else
    a = Tensor(np.ones((2, 3)), requires_grad=True)
    Fresh.apply(a).sum().backward()
    assert id(a.grad) == FRESH_IDS[-1]
    kept = type("Kept", (Fresh,), {"keep": True})
    b = Tensor(np.ones((2, 3)), requires_grad=True)
    kept.apply(b).sum().backward()
    b.grad += 1
    assert np.array_equal(KEPT, np.full((2, 3), 7.0)) and np.array_equal(b.grad, KEPT + 1)
    c, d = (Tensor(np.ones(3), requires_grad=True) for _ in range(2))
    (c + d).backward(np.array([1.0, 2.0, 3.0]))          # add sends one array to both
    c.grad += 10
    assert np.array_equal(d.grad, [1.0, 2.0, 3.0]) and c.grad is not d.grad
