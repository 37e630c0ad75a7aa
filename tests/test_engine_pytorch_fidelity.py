"""Issue 20's engine items: where the engine differed from PyTorch 2.13, each case checked
against PyTorch itself (its value, its gradient, or that it raises too)."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import torch

import tinygrad_conv.functional as F
from tinygrad_conv import Tensor, nn, optim

INPLACE = "modified by an inplace operation"


def torch_error(fn) -> str | None:
    try:
        fn()
    except RuntimeError as e:
        return str(e)
    return None


# -- detach() and views share the version counter -------------------------------------------


def test_a_detached_weight_changed_by_a_step_is_refused_as_in_pytorch():
    # the example: the forward used w = 1, the step made it 0; PyTorch raises
    w = nn.Parameter(np.ones(3, np.float32))
    x = Tensor(np.array([1.0, 2.0, 3.0], np.float32), requires_grad=True)
    y = (x * w.detach()).sum()
    w.grad = np.ones(3, np.float32)
    optim.SGD([w], lr=1.0).step()
    with pytest.raises(RuntimeError, match=INPLACE):
        y.backward()

    tw = torch.nn.Parameter(torch.ones(3))
    tx = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    ty = (tx * tw.detach()).sum()
    tw.grad = torch.ones(3)
    torch.optim.SGD([tw], lr=1.0).step()
    assert INPLACE in torch_error(ty.backward)


@pytest.mark.parametrize("alias", ["detach", "reshape", "transpose", "detach of a view"])
def test_every_alias_of_a_weight_shares_its_version_counter(alias):
    make = {"detach": lambda w: w.detach(),
            "reshape": lambda w: w.reshape(6),
            "transpose": lambda w: w.T,
            "detach of a view": lambda w: w.T.detach()}[alias]
    w = Tensor(np.ones((2, 3)), requires_grad=True)
    view = make(w)
    assert view._version == w._version == 0
    w.bump_version()
    assert view._version == 1
    view.bump_version()  # a hand write through the alias counts for the weight too
    assert w._version == 2


def test_a_view_of_a_detached_weight_refuses_backward_after_a_step():
    w = Tensor(np.ones((2, 3)), requires_grad=True)
    x = Tensor(np.ones((4, 3)), requires_grad=True)
    loss = (x @ w.detach().T).sum()
    w.grad = np.ones((2, 3))
    optim.SGD([w], lr=0.5).step()
    with pytest.raises(RuntimeError, match=INPLACE):
        loss.backward()


# -- backward -----------------------------------------------------------------------------


def test_backward_twice_is_allowed_when_nothing_saved_is_needed_as_in_pytorch():
    x = Tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = (x + 1).sum()
    y.backward()
    y.backward()
    tx = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    ty = (tx + 1).sum()
    ty.backward()
    ty.backward()
    np.testing.assert_array_equal(x.grad, tx.grad.numpy())
    np.testing.assert_array_equal(x.grad, [2.0, 2.0, 2.0])


def test_a_hook_editing_its_gradient_in_place_is_told_to_return_a_new_array():
    x = Tensor([1.0, 2.0], requires_grad=True)

    def hook(g):
        g += 1

    x.register_hook(hook)
    with pytest.raises(ValueError, match=r"hook .*hook.*must not change it in place but return "
                                         r"a new array"):
        (x * 2).sum().backward()


def test_a_gradient_argument_of_strings_names_backwards_gradient_argument():
    y = Tensor([1.0, 2.0, 3.0], requires_grad=True) * 2
    with pytest.raises(TypeError, match=r"backward: the gradient argument must be .* shape "
                                        r"\(3,\), got list \['a', 'b', 'c'\]"):
        y.backward(["a", "b", "c"])
    with pytest.raises(TypeError):  # PyTorch refuses it too
        (torch.ones(3, requires_grad=True) * 2).backward(["a", "b", "c"])


# -- indexing and matmul -------------------------------------------------------------------


def test_a_negative_slice_step_is_refused_with_pytorchs_message():
    with pytest.raises(ValueError, match="step must be greater than zero") as ours:
        Tensor(np.arange(5.0))[::-1]
    with pytest.raises(ValueError, match="step must be greater than zero"):
        torch.arange(5.0)[::-1]
    assert str(ours.value).startswith("index:")
    with pytest.raises(ValueError, match="step must be greater than zero"):
        Tensor(np.ones((2, 3)))[:, ::-2]


@pytest.mark.parametrize("other", [np.int64, np.bool_])
def test_matmul_of_a_float_and_an_integer_tensor_raises_as_in_pytorch(other):
    a, b = np.ones((2, 3), np.float32), np.ones((3, 2), other)
    with pytest.raises(TypeError, match=r"matmul: expected both operands to have the same "
                                        r"dtype, got float32 and " + np.dtype(other).name):
        Tensor(a) @ Tensor(b)
    with pytest.raises(TypeError, match="matmul"):
        Tensor(b.T) @ Tensor(a.T)
    assert "same dtype" in torch_error(lambda: torch.from_numpy(a) @ torch.from_numpy(b))


# -- tensor ** tensor ----------------------------------------------------------------------


@pytest.mark.parametrize("shapes", [((3,), (3,)), ((2, 3), (3,)), ((2, 1), (1, 4))])
def test_tensor_to_a_tensor_power_has_pytorchs_value_and_both_gradients(shapes):
    rng = np.random.default_rng(1)
    a = rng.uniform(0.2, 2.0, shapes[0])
    b = rng.uniform(-1.5, 2.5, shapes[1])
    ours_a, ours_b = Tensor(a, requires_grad=True), Tensor(b, requires_grad=True)
    out = ours_a ** ours_b
    (out * out).sum().backward()
    ta = torch.tensor(a, requires_grad=True)
    tb = torch.tensor(b, requires_grad=True)
    theirs = ta ** tb
    (theirs * theirs).sum().backward()
    np.testing.assert_allclose(out.data, theirs.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(ours_a.grad, ta.grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(ours_b.grad, tb.grad.numpy(), rtol=1e-10)


def test_tensor_power_gradients_at_zero_base_and_zero_exponent_match_pytorch():
    a = np.array([0.0, 0.0, 0.0, 2.0, 1.5])
    b = np.array([0.0, 2.0, 0.5, 0.0, 3.0])
    ours_a, ours_b = Tensor(a, requires_grad=True), Tensor(b, requires_grad=True)
    (ours_a ** ours_b).sum().backward()
    ta, tb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    (ta ** tb).sum().backward()
    np.testing.assert_allclose(ours_a.grad, ta.grad.numpy())
    np.testing.assert_allclose(ours_b.grad, tb.grad.numpy())


def test_a_number_to_a_tensor_power_matches_pytorch():
    b = np.array([0.5, -1.0, 2.0], np.float32)
    ours = Tensor(b, requires_grad=True)
    out = 2 ** ours
    out.sum().backward()
    theirs = torch.tensor(b, requires_grad=True)
    (2 ** theirs).sum().backward()
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.data, (2 ** torch.tensor(b)).numpy(), rtol=1e-6)
    np.testing.assert_allclose(ours.grad, theirs.grad.numpy(), rtol=1e-6)


def test_integer_tensor_powers_promote_as_pytorch_does():
    i = np.array([1, 2, 3])
    f = np.array([0.5, 1.0, 2.0], np.float32)
    for x, y in ((i, i), (i, f), (f, i)):
        ours = Tensor(x) ** Tensor(y)
        theirs = torch.from_numpy(x) ** torch.from_numpy(y)
        assert str(ours.dtype) == str(theirs.dtype).removeprefix("torch."), (x, y)
        np.testing.assert_allclose(ours.data, theirs.numpy())


# -- losses --------------------------------------------------------------------------------


def test_cross_entropy_of_an_empty_batch_is_nan_as_in_pytorch():
    logits = Tensor(np.zeros((0, 3), np.float32), requires_grad=True)
    loss = F.cross_entropy(logits, np.zeros(0, np.int64))
    theirs = torch.nn.functional.cross_entropy(torch.zeros(0, 3, requires_grad=True),
                                               torch.zeros(0, dtype=torch.int64))
    assert np.isnan(loss.item()) and torch.isnan(theirs)
    assert loss.dtype == np.float32
    loss.backward()
    assert logits.grad.shape == (0, 3)


@pytest.mark.parametrize("loss", ["nll_loss", "cross_entropy"])
def test_a_1d_input_is_one_sample_as_in_pytorch(loss):
    x, target = np.array([0.3, -1.2, 2.0]), np.int64(1)
    ours_x = Tensor(x, requires_grad=True)
    with pytest.raises(ValueError, match=re.escape(f"{loss}: targets must have shape ()")):
        getattr(F, loss)(ours_x, np.array([1]))  # PyTorch's backward refuses it
    ours = getattr(F, loss)(ours_x, target)
    ours.backward()
    tx = torch.tensor(x, requires_grad=True)
    theirs = getattr(torch.nn.functional, loss)(tx, torch.tensor(target))
    theirs.backward()
    np.testing.assert_allclose(ours.item(), theirs.item(), rtol=1e-12)
    np.testing.assert_allclose(ours_x.grad, tx.grad.numpy(), rtol=1e-12)


def test_mse_loss_with_broadcastable_shapes_gives_pytorchs_value_and_warning():
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((3, 1)), rng.standard_normal(3)
    x = Tensor(a, requires_grad=True)
    with pytest.warns(UserWarning, match=re.escape("different to the input size")):
        ours = F.mse_loss(x, b)
    ours.backward()
    tx = torch.tensor(a, requires_grad=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        theirs = torch.nn.functional.mse_loss(tx, torch.tensor(b))
    assert caught and "different to the input size" in str(caught[0].message)
    theirs.backward()
    np.testing.assert_allclose(ours.item(), theirs.item(), rtol=1e-12)
    np.testing.assert_allclose(x.grad, tx.grad.numpy(), rtol=1e-12)
