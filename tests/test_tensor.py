"""The Tensor and the backward engine: construction, accumulation, graph lifetime, errors."""

import gc
import re
import weakref

import numpy as np
import pytest
import torch

import tinygrad_conv.functional as F
from tinygrad_conv import GradcheckError, Tensor, gradcheck, no_grad

# -- construction --------------------------------------------------------------------------------


def test_python_floats_become_float32_numpy_floats_keep_their_width_and_dtype_overrides():
    assert Tensor([1.0, 2.0]).dtype == np.float32
    assert Tensor(np.zeros(3, dtype=np.float64)).dtype == np.float64
    assert Tensor(np.zeros(3, dtype=np.float64), dtype=np.float32).dtype == np.float32
    assert Tensor(2.5, dtype=np.float64).dtype == np.float64
    assert Tensor([[1, 2]], dtype="float64").dtype == np.float64


def test_integer_data_stays_integer_like_torch():
    t = Tensor([1, 2, 3])
    assert t.dtype == np.int64 == torch.tensor([1, 2, 3]).numpy().dtype


def test_tensor_copies_its_input_array():
    a = np.ones(3, dtype=np.float32)
    t = Tensor(a)
    a[0] = 5
    assert t.data[0] == 1


def test_tensor_attributes():
    t = Tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    assert t.shape == (2, 3) and t.ndim == 2 and t.size == 6 and len(t) == 2
    assert t.grad is None and t.is_leaf and t.requires_grad
    assert Tensor([[3.5]]).item() == 3.5
    assert isinstance(t.numpy(), np.ndarray)
    assert "requires_grad=True" in repr(t) and "float64" in repr(t)
    assert "grad_fn=Mul" in repr(t * 2)


@pytest.mark.parametrize("bad, what", [
    (object(), "object"),
    ("abc", "str"),
    (np.array([1 + 2j]), "complex"),
    ([[1, 2], [3]], "list"),
])
def test_non_numeric_data_is_a_type_error_that_says_what_was_given(bad, what):
    with pytest.raises(TypeError, match=what):
        Tensor(bad)






def test_item_of_a_many_element_tensor_is_an_error():
    with pytest.raises(ValueError, match=r"item.*\(2,\)"):
        Tensor([1.0, 2.0]).item()


def test_detach_shares_values_but_not_the_graph():
    x = Tensor([1.0, 2.0], requires_grad=True)
    y = (x * 3).detach()
    assert not y.requires_grad and y.grad_fn is None
    np.testing.assert_array_equal(y.data, [3.0, 6.0])


# -- the quickstart ------------------------------------------------------------------------------


def test_readme_quickstart_gives_gradients_of_the_right_shapes():
    x = Tensor(np.random.randn(4, 3), requires_grad=True)
    w = Tensor(np.random.randn(3, 2), requires_grad=True)
    loss = (x @ w).relu().sum()
    loss.backward()
    assert x.grad.shape == (4, 3) and w.grad.shape == (3, 2)
    assert x.grad.dtype == np.float64  # randn is float64, and (as in PyTorch) stays so


# -- backward semantics --------------------------------------------------------------------------


def test_a_chain_of_100000_ops_backpropagates_without_recursion_error():
    x = Tensor([1.0, 2.0], dtype=np.float64, requires_grad=True)
    y = x
    for _ in range(100_000):
        y = y * 1.0
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, [1.0, 1.0])
    del y  # freeing the chain must not recurse either


def both(fn, values):
    """fn run on a float64 leaf in tinygrad_conv and in torch, then backward: the two grads."""
    ours = Tensor(values, dtype=np.float64, requires_grad=True)
    theirs = torch.tensor(values, dtype=torch.float64, requires_grad=True)
    fn(ours).backward()
    fn(theirs).backward()
    return ours.grad, theirs.grad.numpy()


def test_a_tensor_used_twice_accumulates_both_contributions():
    ours, theirs = both(lambda x: (x * x).sum(), [3.0, -1.5])
    np.testing.assert_allclose(ours, theirs, rtol=1e-15)
    ours, theirs = both(lambda y: ((y * 3) + (y * 3) * (y * 3)).sum(), [2.0, 0.25])
    np.testing.assert_allclose(ours, theirs, rtol=1e-15)


def test_diamond_graph_matches_torch():
    def f(x, lib_exp):
        a = x * 2
        b = lib_exp(a)
        c = a * b + a
        return (c * a).sum()

    t = torch.tensor([0.3, -0.7], dtype=torch.float64, requires_grad=True)
    f(t, torch.exp).backward()
    ours = Tensor([0.3, -0.7], dtype=np.float64, requires_grad=True)
    f(ours, Tensor.exp).backward()
    np.testing.assert_allclose(ours.grad, t.grad.numpy(), rtol=1e-12)


def test_repeated_backward_accumulates_into_grad_like_torch():
    x = Tensor([1.0, -2.0], dtype=np.float64, requires_grad=True)
    t = torch.tensor([1.0, -2.0], dtype=torch.float64, requires_grad=True)
    for _ in range(3):
        (x * x).sum().backward()
        (t * t).sum().backward()
    np.testing.assert_array_equal(x.grad, t.grad.numpy())


def test_clearing_grad_with_none_starts_fresh():
    x = Tensor([1.0], requires_grad=True)
    (x * 5).sum().backward()
    x.grad = None
    (x * 2).sum().backward()
    assert x.grad[0] == 2.0


def test_gradients_of_two_leaves_never_alias():
    a = Tensor([1.0, 2.0], requires_grad=True)
    b = Tensor([3.0, 4.0], requires_grad=True)
    (a + b).sum().backward()
    a.grad[:] = 0  # an optimizer's in-place zeroing must not touch b.grad
    np.testing.assert_array_equal(b.grad, [1.0, 1.0])


def test_backward_twice_through_a_released_graph_is_a_runtime_error():
    x = Tensor([1.0, 2.0], requires_grad=True)
    loss = (x.exp() * x).sum()
    loss.backward()
    with pytest.raises(RuntimeError, match="second time.*retain_graph"):
        loss.backward()


def test_retain_graph_allows_a_second_backward_that_accumulates():
    x = Tensor([1.0, 2.0], dtype=np.float64, requires_grad=True)
    loss = (x.exp() * x).sum()
    loss.backward(retain_graph=True)
    first = x.grad.copy()
    loss.backward()
    np.testing.assert_allclose(x.grad, 2 * first)


def test_backward_releases_saved_buffers():
    x = Tensor(np.ones(1000), requires_grad=True)
    y = x.exp()
    y.sum().backward()
    assert y.grad_fn.saved_values == ()


def test_backward_on_a_non_scalar_needs_an_explicit_grad():
    x = Tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match=r"scalar.*\(2,\)"):
        (x * 2).backward()
    (x * 2).backward(np.array([1.0, 10.0]))
    np.testing.assert_array_equal(x.grad, [2.0, 20.0])


def test_backward_with_a_grad_of_the_wrong_shape_is_a_value_error():
    x = Tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(ValueError, match=r"\(3,\).*\(2,\)"):
        (x * 2).backward(np.ones(3))


def test_backward_on_a_tensor_that_does_not_require_grad_is_a_runtime_error():
    with pytest.raises(RuntimeError, match="does not require grad"):
        Tensor([1.0]).sum().backward()


def test_only_leaves_that_require_grad_get_a_grad():
    x = Tensor([1.0, 2.0], requires_grad=True)
    c = Tensor([3.0, 4.0])
    (x * c).sum().backward()
    assert c.grad is None and x.grad is not None


def test_graph_is_freed_without_the_cyclic_garbage_collector():
    gc.disable()
    try:
        x = Tensor(np.ones((8, 8)), requires_grad=True)
        h = (x @ x).relu()
        probe = weakref.ref(h)
        loss = h.sum()
        loss.backward()
        del h, loss
        assert probe() is None
    finally:
        gc.enable()






# -- no_grad -------------------------------------------------------------------------------------


def test_no_grad_records_nothing():
    x = Tensor([1.0], requires_grad=True)
    with no_grad():
        y = x * 2
    assert not y.requires_grad and y.grad_fn is None
    assert (x * 2).requires_grad  # recording is back on afterwards


def test_no_grad_works_as_a_decorator_and_nests():
    x = Tensor([1.0], requires_grad=True)

    @no_grad()
    def f(t):
        with no_grad():
            inner = t * 2
        return inner * 3, t + 1

    a, b = f(x)
    assert not a.requires_grad and not b.requires_grad
    assert (x + 1).requires_grad


# -- errors name the op and the shapes -----------------------------------------------------------


@pytest.mark.parametrize("fn, op, shapes", [
    (lambda: Tensor(np.ones((2, 3))) + Tensor(np.ones((4,))), "add", [r"\(2, 3\)", r"\(4,\)"]),
    (lambda: Tensor(np.ones((2, 3))) * Tensor(np.ones((3, 2))), "mul", [r"\(2, 3\)", r"\(3, 2\)"]),
    (lambda: Tensor(np.ones((2, 3))) @ Tensor(np.ones((2, 3))), "matmul",
     [r"\(2, 3\)", r"\(2, 3\)"]),
    (lambda: Tensor(np.ones((2, 2, 3))) @ Tensor(np.ones((3, 3, 1))), "matmul",
     [r"\(2, 2, 3\)", r"\(3, 3, 1\)"]),
    (lambda: Tensor(np.ones((2, 3))).reshape(4, 2), "reshape", [r"\(2, 3\)", r"\(4, 2\)"]),
    (lambda: Tensor(np.ones((2, 3))).sum(axis=2), "sum", [r"\(2, 3\)"]),
    (lambda: Tensor(np.ones((2, 3))).permute(1, 1), "permute", [r"\(2, 3\)"]),
    (lambda: Tensor(np.ones((2, 3))).flatten(1, 0), "flatten", [r"\(2, 3\)"]),
    (lambda: F.linear(Tensor(np.ones((2, 3))), Tensor(np.ones((4, 2)))), "linear",
     [r"\(2, 3\)", r"\(4, 2\)"]),
    (lambda: F.mse_loss(Tensor(np.ones((2, 3))), np.ones((3, 2))), "mse_loss",
     [r"\(2, 3\)", r"\(3, 2\)"]),
])
def test_shape_errors_are_value_errors_naming_the_op_and_shapes(fn, op, shapes):
    with pytest.raises(ValueError) as info:
        fn()
    message = str(info.value)
    assert message.startswith(op), message
    for s in shapes:
        assert re.search(s, message), (s, message)


@pytest.mark.parametrize("targets, error, pattern", [
    (np.array([0, 1, 5]), ValueError, r"\[0, 3\].*\[5\]"),
    (np.array([0, -1, 2]), ValueError, r"\[-1\]"),
    (np.array([0.0, 1.0, 2.0]), TypeError, "integer class indices.*float64"),
    (np.array([0, 1]), ValueError, r"shape \(3,\).*\(2,\)"),
    (np.array([[0, 1, 2]]), ValueError, r"shape \(3,\)"),
])
@pytest.mark.parametrize("loss", ["cross_entropy", "nll_loss"])
def test_bad_loss_targets_are_clear_errors(targets, error, pattern, loss):
    logits = Tensor(np.zeros((3, 4)), requires_grad=True)
    with pytest.raises(error, match=pattern) as info:
        getattr(F, loss)(logits, targets)
    assert str(info.value).startswith(loss)


def test_index_out_of_range_names_the_shape():
    with pytest.raises(IndexError, match=r"index.*\(2, 3\)"):
        Tensor(np.ones((2, 3)))[5]


# -- gradcheck -----------------------------------------------------------------------------------


def test_gradcheck_passes_for_a_correct_op():
    a = Tensor(np.random.default_rng(0).standard_normal((3, 4)), requires_grad=True)
    b = Tensor(np.random.default_rng(1).standard_normal((4, 2)), requires_grad=True)
    assert gradcheck(lambda a, b: (a @ b).tanh(), [a, b])


def test_gradcheck_reports_the_worst_element_of_a_wrong_backward():
    from tinygrad_conv import Function

    class WrongSquare(Function):
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * x

        def backward(ctx, g):
            (x,) = ctx.saved_values
            wrong = 2 * x
            wrong[1] *= 1.5  # a bug in one element
            return g * wrong

    x = Tensor([1.0, 2.0, 3.0], requires_grad=True)
    with pytest.raises(GradcheckError, match=r"input 0 .*index \(1,\).*analytic.*numerical"):
        gradcheck(lambda t: WrongSquare.apply(t), [x])
    assert gradcheck(lambda t: WrongSquare.apply(t), [x], raise_exception=False) is False


def test_the_graph_keeps_only_what_backward_needs_and_backward_frees_that():
    x = Tensor(np.ones((8, 8)), requires_grad=True)
    z = x @ x            # ReLU's backward needs ReLU's output, not this input
    h = z.relu()
    z_values, h_values = weakref.ref(z.data), weakref.ref(h.data)
    loss = h.sum()
    del z, h
    assert z_values() is None  # freed at once, though the graph is still alive
    assert h_values() is not None  # saved by ReLU for its backward
    loss.backward()
    assert h_values() is None  # freed by backward, while the loss is still bound
    assert loss.grad_fn.parents[0].shape == (8, 8)  # the graph's shape remains (for viz)
    with pytest.raises(RuntimeError, match="second time"):
        loss.backward()


def test_an_intermediate_used_twice_is_one_node_and_its_gradients_add():
    def f(x):
        h = x.exp()
        return (h * h + h).sum()

    ours, theirs = both(f, [1.0, 2.0])
    np.testing.assert_allclose(ours, theirs, rtol=1e-14)
