"""Numeric edges where PyTorch has a definite answer: the gradient of x ** 0 is 0 everywhere
(also at x = 0), ReLU passes the gradient of a NaN input on, and integers beyond int64 are
refused instead of wrapping around."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tinygrad_conv import Tensor


@pytest.mark.parametrize("exponent", [0, 0.0, np.float32(0)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gradient_of_x_to_the_zero_is_zero_even_at_zero(exponent, dtype):
    data = np.array([0.0, -0.0, 1.5, -2.0], dtype)
    x = Tensor(data, requires_grad=True)
    (x ** exponent).sum().backward()
    t = torch.tensor(data, requires_grad=True)
    (t ** exponent).sum().backward()
    np.testing.assert_array_equal(x.grad, t.grad.numpy())
    assert x.grad.dtype == dtype and not np.isnan(x.grad).any()


def test_relu_passes_the_gradient_of_a_nan_input_as_pytorch_does():
    data = np.array([np.nan, 1.0, -1.0, 0.0, np.inf, -np.inf])
    x = Tensor(data, requires_grad=True)
    t = torch.tensor(data, requires_grad=True)
    weights = np.arange(1.0, 7.0)
    (x.relu() * weights).sum().backward()
    (t.relu() * torch.tensor(weights)).sum().backward()
    np.testing.assert_array_equal(x.relu().data, t.relu().detach().numpy())
    np.testing.assert_array_equal(x.grad, t.grad.numpy())  # [1, 2, 0, 0, 5, 0]


@pytest.mark.parametrize("data", [2**63, [1, 2**63], np.array([2**64 - 1], np.uint64),
                                  np.uint64(2**63), 2**64, -(2**63) - 1],
                         ids=["int-2**63", "list", "uint64-array", "uint64-scalar", "int-2**64",
                              "int-below-min"])
def test_integers_beyond_int64_are_refused_not_wrapped(data):
    with pytest.raises(ValueError, match="Tensor: .*(does not fit in int64|out of range)"):
        Tensor(data)


def test_integers_at_the_edges_of_int64_are_kept_exactly():
    edges = [-(2**63), 2**63 - 1]
    assert Tensor(edges).data.tolist() == edges == torch.tensor(edges).tolist()
    assert Tensor(np.array([2**63 - 1], np.uint64)).data.tolist() == [2**63 - 1]
    assert Tensor(2**63, dtype=np.float64).item() == 2.0**63  # a float holds it
