"""Every engine op against PyTorch (float64, relative error < 1e-10) and against gradcheck."""

import numpy as np
import pytest
import torch

import tinygrad_conv.functional as F
from tinygrad_conv import Tensor

from torch_oracle import helper_test_op

BROADCAST_SHAPES = [
    [(3, 4), (3, 4)],
    [(3, 4), (4,)],
    [(2, 3, 4), (3, 1)],
    [(1, 4), (5, 1)],
    [(2, 1, 4), (1, 3, 1)],
    [(), (2, 3)],
]


@pytest.mark.parametrize("shapes", BROADCAST_SHAPES)
@pytest.mark.parametrize("name, fn", [
    ("add", lambda a, b: a + b),
    ("sub", lambda a, b: a - b),
    ("mul", lambda a, b: a * b),
])
def test_binary_op_matches_torch_with_broadcasting(shapes, name, fn):
    helper_test_op(shapes, fn, fn)


@pytest.mark.parametrize("shapes", BROADCAST_SHAPES)
def test_div_matches_torch_with_broadcasting(shapes):
    # keep the divisor away from zero
    helper_test_op(shapes, lambda a, b: a / (b * b + 0.5), lambda a, b: a / (b * b + 0.5))


@pytest.mark.parametrize("name, fn", [
    ("neg", lambda x: -x),
    ("relu", lambda x: x.relu()),
    ("sigmoid", lambda x: x.sigmoid()),
    ("tanh", lambda x: x.tanh()),
    ("exp", lambda x: x.exp()),
    ("square", lambda x: x ** 2),
    ("cube", lambda x: x ** 3),
])
@pytest.mark.parametrize("shape", [(5,), (3, 4), (2, 3, 4)])
def test_unary_op_matches_torch(name, fn, shape):
    helper_test_op([shape], fn, fn)


@pytest.mark.parametrize("fn", [
    lambda x: x.log(),
    lambda x: x ** 0.5,
    lambda x: x ** -1.5,
])
def test_ops_on_positive_inputs_match_torch(fn):
    helper_test_op([(3, 4)], fn, fn, low=0.5, high=3.0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sigmoid_is_stable_and_matches_torch_at_extreme_inputs(dtype):
    x = np.array([-800.0, -90.0, -40.0, -1e-3, 0.0, 1e-3, 40.0, 90.0, 800.0], dtype=dtype)
    ours = Tensor(x, dtype=dtype, requires_grad=True)
    theirs = torch.tensor(x, requires_grad=True)
    out, expected = ours.sigmoid(), torch.sigmoid(theirs)
    out.sum().backward()
    expected.sum().backward()
    assert np.all(np.isfinite(out.data)) and np.all(np.isfinite(ours.grad))
    # relative to each value, so the tiny values far left are checked too; the absolute slack
    # only covers subnormals (float32 sigmoid(-90) = 8e-40, which torch flushes to 0)
    tiny = np.finfo(dtype).tiny
    np.testing.assert_allclose(out.data, expected.detach().numpy(), rtol=1e-6, atol=tiny)
    np.testing.assert_allclose(ours.grad, theirs.grad.numpy(), rtol=1e-6, atol=tiny)


def test_python_scalars_and_numpy_arrays_mix_on_either_side():
    helper_test_op([(3, 4)], lambda x: 2 * x + 1 - 3 / (x * x + 1),
                   lambda x: 2 * x + 1 - 3 / (x * x + 1))
    arr = np.linspace(-1, 1, 4)
    helper_test_op([(3, 4)], lambda x: torch.tensor(arr) * x - torch.tensor(arr),
                   lambda x: arr * x - arr)
    helper_test_op([(3, 4)], lambda x: x * torch.tensor(arr), lambda x: x * arr)


@pytest.mark.parametrize("axis", [None, 0, 1, (0, 2), -1])
@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("op", ["sum", "mean"])
def test_sum_and_mean_match_torch(axis, keepdims, op):
    def torch_fn(x):
        if axis is None:
            out = getattr(x, op)()
            return out.reshape([1] * x.ndim) if keepdims else out
        return getattr(x, op)(dim=axis, keepdim=keepdims)

    helper_test_op([(2, 3, 4)], torch_fn, lambda x: getattr(x, op)(axis=axis, keepdims=keepdims))


def test_reductions_accept_pytorch_dim_and_keepdim_names():
    helper_test_op([(2, 3, 4)], lambda x: x.sum(dim=1, keepdim=True),
                   lambda x: x.sum(dim=1, keepdim=True))
    helper_test_op([(2, 3, 4)], lambda x: x.mean(dim=(0, 2)), lambda x: x.mean(dim=(0, 2)))


@pytest.mark.parametrize("axis", [None, 0, 1, -1])
@pytest.mark.parametrize("keepdims", [False, True])
def test_max_matches_torch_amax(axis, keepdims):
    def torch_fn(x):
        dims = tuple(range(x.ndim)) if axis is None else axis
        return torch.amax(x, dim=dims, keepdim=keepdims)

    helper_test_op([(3, 5)], torch_fn, lambda x: x.max(axis=axis, keepdims=keepdims))


def test_max_splits_the_gradient_between_ties_like_torch_amax():
    x = np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]])
    t = torch.tensor(x, requires_grad=True)
    torch.amax(t, dim=1).sum().backward()
    ours = Tensor(x, dtype=np.float64, requires_grad=True)
    ours.max(axis=1).sum().backward()
    np.testing.assert_array_equal(ours.grad, t.grad.numpy())
    np.testing.assert_allclose(ours.grad[1], [1 / 3] * 3)


@pytest.mark.parametrize("shapes", [
    [(4, 3), (3, 2)],
    [(5, 4, 3), (5, 3, 2)],
    [(5, 4, 3), (3, 2)],
    [(2, 1, 4, 3), (5, 3, 2)],
    [(3,), (3, 2)],
    [(4, 3), (3,)],
    [(3,), (3,)],
    [(2, 4, 3), (3,)],
])
def test_matmul_matches_torch_for_2d_batched_and_1d(shapes):
    helper_test_op(shapes, lambda a, b: a @ b, lambda a, b: a @ b)


def test_reshape_flatten_permute_transpose_match_torch():
    helper_test_op([(2, 3, 4)], lambda x: x.reshape(4, -1) * 2, lambda x: x.reshape(4, -1) * 2)
    helper_test_op([(2, 3, 4)], lambda x: x.flatten(1) ** 2, lambda x: x.flatten(1) ** 2)
    helper_test_op([(2, 3, 4, 5)], lambda x: x.flatten(1, 2).exp(),
                   lambda x: x.flatten(1, 2).exp())
    helper_test_op([(2, 3, 4)], lambda x: x.permute(2, 0, 1).tanh(),
                   lambda x: x.permute(2, 0, 1).tanh())
    helper_test_op([(2, 3, 4)], lambda x: x.transpose(0, 2) * x.transpose(0, 2),
                   lambda x: x.transpose(0, 2) * x.transpose(0, 2))
    helper_test_op([(3, 4)], lambda x: x.T @ x, lambda x: x.T @ x)


@pytest.mark.parametrize("index", [
    (slice(None), 1),
    (slice(1, None, 2),),
    (Ellipsis, slice(0, 2)),
    (np.array([0, 2, 2, 1]),),
    (np.array([0, 1, 1]), np.array([3, 0, 0])),
    (slice(None), np.array([1, 1, 0])),
    (None, 2),
])
def test_indexing_matches_torch_and_adds_repeated_picks(index):
    torch_index = tuple(torch.tensor(i) if isinstance(i, np.ndarray) else i for i in index)
    helper_test_op([(3, 4)], lambda x: x[torch_index] * 3, lambda x: x[index] * 3)


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_log_softmax_and_softmax_match_torch(axis):
    helper_test_op([(4, 5)], lambda x: torch.log_softmax(x, dim=axis),
                   lambda x: F.log_softmax(x, axis))
    helper_test_op([(4, 5)], lambda x: torch.softmax(x, dim=axis), lambda x: F.softmax(x, dim=axis))


def test_log_softmax_is_stable_for_huge_logits():
    helper_test_op([(3, 4)], lambda x: torch.log_softmax(x * 1000, dim=1),
                   lambda x: F.log_softmax(x * 1000, 1), grad_check=False)


def test_cross_entropy_and_nll_loss_match_torch():
    targets = np.array([0, 3, 2, 3, 1])
    helper_test_op([(5, 4)], lambda x: torch.nn.functional.cross_entropy(x, torch.tensor(targets)),
                   lambda x: F.cross_entropy(x, targets))
    helper_test_op([(5, 4)],
                   lambda x: torch.nn.functional.nll_loss(torch.log_softmax(x, 1),
                                                          torch.tensor(targets)),
                   lambda x: F.nll_loss(F.log_softmax(x, 1), Tensor(targets)))


def test_mse_loss_matches_torch():
    helper_test_op([(4, 3), (4, 3)], torch.nn.functional.mse_loss, F.mse_loss)


def test_linear_matches_torch():
    helper_test_op([(5, 3), (4, 3), (4,)], torch.nn.functional.linear, F.linear)


def test_a_small_mlp_matches_torch_end_to_end():
    targets = np.array([1, 0, 2, 2])

    def net(x, w1, b1, w2, lib):
        h = (x @ w1 + b1).relu() if lib is F else torch.relu(x @ w1 + b1)
        logits = (h @ w2).tanh() * 3
        if lib is F:
            return F.cross_entropy(logits, targets)
        return torch.nn.functional.cross_entropy(logits, torch.tensor(targets))

    helper_test_op([(4, 6), (6, 8), (8,), (8, 3)], lambda *a: net(*a, torch),
                   lambda *a: net(*a, F))


def test_float32_ops_stay_float32_and_match_torch():
    helper_test_op([(3, 4), (4, 2)], lambda a, b: (a @ b).sigmoid().sum(),
                   lambda a, b: (a @ b).sigmoid().sum(), dtype=np.float32, rtol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [7, 200_000])        # one thread, and pieces on every thread
def test_relu_kernel_matches_pytorch_bitwise_with_zeros_nans_and_infinite_gradients(dtype, n):
    rng = np.random.default_rng(n)
    x = rng.standard_normal(n).astype(dtype)
    x[::7], x[::11], x[::13] = 0.0, np.nan, -0.0
    g = rng.standard_normal(n).astype(dtype)
    g[::5], g[::9] = np.inf, np.nan          # where x <= 0 these must still give 0
    ours = Tensor(x, requires_grad=True, dtype=dtype)
    out = ours.relu()
    out.backward(g)
    theirs = torch.tensor(x, requires_grad=True)
    t_out = torch.relu(theirs)
    t_out.backward(torch.tensor(g))
    assert np.array_equal(out.data, t_out.detach().numpy(), equal_nan=True)
    assert np.array_equal(ours.grad, theirs.grad.numpy(), equal_nan=True)
