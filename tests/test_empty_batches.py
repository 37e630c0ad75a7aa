"""An empty batch (N = 0, or no positions) through every layer and functional op gives what
PyTorch 2.13 gives: an empty output of the right shape and dtype, an empty input gradient, zero
parameter gradients and running statistics left alone (issue 20). The losses on empty batches
are tested with the losses. Tests taking `kernel_mode` run on the Cython kernels and in
reference mode."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tinygrad_conv import Tensor, nn
from tinygrad_conv import functional as F

LAYERS = {   # name: (the layer, from our nn or torch.nn, and an empty input's shape)
    "Conv2d": (lambda lib: lib.Conv2d(3, 4, 3, padding=1), (0, 3, 5, 5)),
    "Conv2d-stride-dilation-groups": (
        lambda lib: lib.Conv2d(4, 6, 3, stride=2, dilation=2, groups=2), (0, 4, 9, 9)),
    "Conv2d-no-bias-same": (lambda lib: lib.Conv2d(2, 3, 3, padding="same", bias=False),
                            (0, 2, 4, 4)),
    "MaxPool2d": (lambda lib: lib.MaxPool2d(2), (0, 3, 4, 4)),
    "MaxPool2d-padding": (lambda lib: lib.MaxPool2d(3, stride=2, padding=1), (0, 2, 5, 5)),
    "AvgPool2d": (lambda lib: lib.AvgPool2d(2), (0, 3, 4, 4)),
    "AvgPool2d-ceil": (lambda lib: lib.AvgPool2d(2, ceil_mode=True), (0, 3, 5, 5)),
    "AdaptiveAvgPool2d": (lambda lib: lib.AdaptiveAvgPool2d(3), (0, 3, 5, 5)),
    "Linear": (lambda lib: lib.Linear(5, 2), (0, 5)),
    "Linear-3d": (lambda lib: lib.Linear(5, 2, bias=False), (2, 0, 5)),
    "ReLU": (lambda lib: lib.ReLU(), (0, 3, 4, 4)),
    "Dropout": (lambda lib: lib.Dropout(0.5), (0, 3)),
    "Flatten": (lambda lib: lib.Flatten(), (0, 3, 4, 4)),
    "Flatten-0-1": (lambda lib: lib.Flatten(0, 1), (0, 3, 4)),
    "BatchNorm2d": (lambda lib: lib.BatchNorm2d(3), (0, 3, 4, 4)),
    "BatchNorm2d-no-positions": (lambda lib: lib.BatchNorm2d(3), (2, 3, 0, 4)),
    "BatchNorm2d-no-running-stats": (
        lambda lib: lib.BatchNorm2d(3, track_running_stats=False), (0, 3, 2, 2)),
    "BatchNorm1d": (lambda lib: lib.BatchNorm1d(3), (0, 3)),
    "BatchNorm1d-NCL": (lambda lib: lib.BatchNorm1d(3, momentum=None), (0, 3, 5)),
    "mnist.py's net": (lambda lib: lib.Sequential(
        lib.Conv2d(1, 4, 3, padding=1, bias=False), lib.BatchNorm2d(4), lib.ReLU(),
        lib.MaxPool2d(2), lib.Flatten(), lib.Dropout(0.25), lib.Linear(4 * 2 * 2, 10)),
        (0, 1, 4, 4)),
}


def assert_same_empty_result(ours, theirs, shape: tuple[int, ...]) -> None:
    """ours and theirs (PyTorch's) on an empty float32 input of `shape`, then backward of the
    output's sum: the same output shape, float32, and an empty gradient of the input's shape."""
    x = np.zeros(shape, np.float32)
    tx = torch.tensor(x, requires_grad=True)
    ty = theirs(tx)
    ty.sum().backward()
    ox = Tensor(x, requires_grad=True)
    oy = ours(ox)
    oy.sum().backward()
    assert oy.shape == tuple(ty.shape) and oy.dtype == np.float32
    assert ox.grad.shape == tuple(tx.grad.shape) == shape and ox.grad.dtype == np.float32


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", list(LAYERS))
def test_an_empty_batch_through_a_layer_is_what_pytorch_returns(name, training, kernel_mode):
    make, shape = LAYERS[name]
    ours, theirs = make(nn), make(torch.nn)
    ours.load_state_dict(theirs.state_dict())
    ours.train(training)
    theirs.train(training)
    assert_same_empty_result(ours, theirs, shape)
    for (key, p), (_, q) in zip(ours.named_parameters(), theirs.named_parameters()):
        assert p.grad is not None and np.array_equal(p.grad, q.grad.numpy()), key   # zeros
    theirs_state = theirs.state_dict()
    for key, value in ours.state_dict().items():   # running statistics untouched; the count
        assert np.array_equal(value, theirs_state[key].numpy()), key   # of batches moves on


FUNCTIONS = {   # name: (ours, PyTorch's, an empty input's shape)
    "relu": (F.relu, torch.relu, (0, 3)),
    "sigmoid": (F.sigmoid, torch.sigmoid, (0, 3)),
    "tanh": (F.tanh, torch.tanh, (0, 3)),
    "softmax": (lambda x: F.softmax(x, dim=1), lambda x: torch.softmax(x, dim=1), (0, 3)),
    "log_softmax": (lambda x: F.log_softmax(x, dim=1), lambda x: torch.log_softmax(x, dim=1),
                    (0, 3)),
    "dropout": (lambda x: F.dropout(x, 0.3), lambda x: torch.nn.functional.dropout(x, 0.3),
                (0, 3)),
    "flatten": (lambda x: x.flatten(1), lambda x: x.flatten(1), (0, 2, 3)),
    "max_pool2d": (lambda x: F.max_pool2d(x, 2), lambda x: torch.nn.functional.max_pool2d(x, 2),
                   (0, 2, 4, 4)),
    "avg_pool2d": (lambda x: F.avg_pool2d(x, 3, 1, 1),
                   lambda x: torch.nn.functional.avg_pool2d(x, 3, 1, 1), (0, 2, 4, 4)),
    "adaptive_avg_pool2d": (lambda x: F.adaptive_avg_pool2d(x, (2, 1)),
                            lambda x: torch.nn.functional.adaptive_avg_pool2d(x, (2, 1)),
                            (0, 2, 4, 4)),
    "batch_norm-training": (lambda x: F.batch_norm(x, None, None, training=True),
                            lambda x: torch.nn.functional.batch_norm(x, None, None,
                                                                     training=True),
                            (0, 3, 2)),
}


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_an_empty_batch_through_a_functional_op_is_what_pytorch_returns(name, kernel_mode):
    assert_same_empty_result(*FUNCTIONS[name])


def test_batch_norm_with_running_statistics_leaves_them_alone_on_an_empty_batch(kernel_mode):
    mean, var = np.array([1.0, 2.0], np.float32), np.array([3.0, 4.0], np.float32)
    y = F.batch_norm(Tensor(np.zeros((0, 2), np.float32)), mean, var, training=True)
    assert y.shape == (0, 2)
    assert mean.tolist() == [1.0, 2.0] and var.tolist() == [3.0, 4.0]   # as PyTorch: no NaN


def test_one_value_per_channel_in_training_is_still_refused():
    # PyTorch's rule: exactly one value per channel has no variance to normalize by; zero
    # values is an empty batch
    with pytest.raises(ValueError, match="batch_norm: expected more than 1 value per channel"):
        F.batch_norm(Tensor(np.zeros((1, 3), np.float32)), None, None, training=True)
