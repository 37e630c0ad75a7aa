"""Comparisons, the bool dtype and masks, checked against PyTorch: `x > 15` and `t == 1` are
elementwise bool tensors outside the graph, `(pred == y).float().mean()` is the accuracy,
`x[mask]` selects (and routes gradients back to) the masked elements, and `.float()`,
`.long()`, `.double()`, `.bool()`, `.argmax(dim)` behave as PyTorch's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tinygrad_conv import Tensor

rng = np.random.default_rng(0)


def test_comparisons_are_elementwise_bool_tensors_with_no_gradient():
    data = np.array([[10.0, 20.0, 15.0], [16.0, -1.0, 15.0]], np.float32)
    x, tx = Tensor(data, requires_grad=True), torch.tensor(data, requires_grad=True)
    for ours, theirs in [(x > 15, tx > 15), (x >= 15, tx >= 15), (x < 15, tx < 15),
                         (x <= 15, tx <= 15), (x == 15, tx == 15), (x != 15, tx != 15),
                         (15 < x, 15 < tx), (x == x, tx == tx), (x > np.float32(0), tx > 0)]:
        assert ours.dtype == np.bool_ and not ours.requires_grad and ours.grad_fn is None
        np.testing.assert_array_equal(ours.data, theirs.numpy())


def test_tensor_equals_a_number_elementwise_not_by_identity():
    t = Tensor([1, 2, 1])
    assert (t == 1).data.tolist() == [True, False, True]
    assert (1 == t).data.tolist() == [True, False, True]
    assert (t != 1).data.tolist() == [False, True, False]
    assert (t == None) is False and (t != "a") is True  # noqa: E711 - PyTorch: False / True
    assert len({t, Tensor([1, 2, 1])}) == 2  # still hashable, by identity


def test_accuracy_idiom_gives_pytorchs_number():
    logits = rng.standard_normal((50, 10)).astype(np.float32)
    labels = rng.integers(0, 10, 50)
    ours = (Tensor(logits).argmax(dim=1) == Tensor(labels)).float().mean()
    theirs = (torch.tensor(logits).argmax(dim=1) == torch.tensor(labels)).float().mean()
    assert ours.dtype == np.float32 and ours.item() == pytest.approx(theirs.item())
    also = (Tensor(logits).argmax(1) == labels).float().mean()  # a numpy label array works too
    assert also.item() == ours.item()


def test_bool_data_makes_a_bool_tensor_and_masks_select():
    x = Tensor([1.0, -2.0, 3.0, -4.0])
    mask = Tensor(np.array([True, False, True, False]))
    assert mask.dtype == np.bool_
    assert x[mask].data.tolist() == [1.0, 3.0]
    assert x[x > 0].data.tolist() == [1.0, 3.0]
    assert x[[True, False, False, True]].data.tolist() == [1.0, -4.0]


@pytest.mark.parametrize("shape, mask_of", [((6,), lambda d: d > 0),
                                            ((3, 4), lambda d: d > 0),
                                            ((3, 4), lambda d: d[:, 0] > 0)],
                         ids=["1d", "2d-elementwise", "rows"])
def test_mask_indexing_routes_gradients_as_pytorch_does(shape, mask_of):
    data = rng.standard_normal(shape)
    x, tx = Tensor(data, requires_grad=True), torch.tensor(data, requires_grad=True)
    mask = mask_of(data)
    weights = rng.standard_normal(data[mask].shape)
    (x[Tensor(mask)] * weights).sum().backward()
    (tx[torch.tensor(mask)] * torch.tensor(weights)).sum().backward()
    np.testing.assert_allclose(x.grad, tx.grad.numpy(), rtol=1e-12)


def test_casts_match_pytorch_and_float_casts_pass_gradients_back():
    data = np.array([-1.7, 0.0, 2.5, 3.99])
    t = torch.tensor(data)
    x = Tensor(data)
    assert x.float().dtype == np.float32 and x.double() is x
    np.testing.assert_array_equal(x.long().data, t.long().numpy())
    np.testing.assert_array_equal(x.bool().data, t.bool().numpy())
    np.testing.assert_array_equal(Tensor([True, False]).float().data, [1.0, 0.0])

    w = Tensor(data, requires_grad=True)
    (w.float() * Tensor(np.array([1, 2, 3, 4], np.float32))).sum().backward()
    assert w.grad.dtype == np.float64 and w.grad.tolist() == [1, 2, 3, 4]
    assert not w.long().requires_grad and w.long().grad_fn is None


@pytest.mark.parametrize("dim, keepdim", [(None, False), (None, True), (0, False), (1, True),
                                          (-1, False)])
def test_argmax_and_argmin_match_pytorch(dim, keepdim):
    data = rng.standard_normal((4, 5))
    for name in ("argmax", "argmin"):
        ours = getattr(Tensor(data), name)(dim=dim, keepdim=keepdim)
        theirs = getattr(torch.tensor(data), name)(dim=dim, keepdim=keepdim)
        assert ours.dtype == np.int64 and ours.shape == tuple(theirs.shape)
        np.testing.assert_array_equal(ours.data, theirs.numpy())
    assert Tensor(3.0).argmax(0).item() == torch.tensor(3.0).argmax(0).item() == 0


def test_masks_combine_with_and_or_xor_invert_as_in_pytorch():
    a, b = np.array([True, True, False, False]), np.array([True, False, True, False])
    ta, tb = torch.tensor(a), torch.tensor(b)
    for ours, theirs in [(Tensor(a) & Tensor(b), ta & tb), (Tensor(a) | b, ta | tb),
                         (Tensor(a) ^ Tensor(b), ta ^ tb), (~Tensor(a), ~ta),
                         (~Tensor([1, -2]), ~torch.tensor([1, -2]))]:
        np.testing.assert_array_equal(ours.data, theirs.numpy())
    with pytest.raises(TypeError, match="and: needs bool or integer tensors, got float32"):
        Tensor([1.0]) & Tensor([2.0])
    with pytest.raises(TypeError, match="sub: subtraction with a bool tensor"):
        Tensor(a) - Tensor(b)
    with pytest.raises(TypeError, match="neg: negating a bool tensor"):
        -Tensor(a)


def test_comparing_shapes_that_do_not_broadcast_names_the_op():
    with pytest.raises(ValueError, match=r"lt: shapes \(2,\) and \(3,\) cannot be broadcast"):
        _ = Tensor([1.0, 2.0]) < Tensor([1.0, 2.0, 3.0])
