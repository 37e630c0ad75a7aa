"""Everything a model's forward pass calls, in one module: `import tinygrad_conv.functional as F`.

The ops themselves are defined (forward next to backward) in `ops.py`, `cnn_ops.py` and
`norm_ops.py`; this module gathers them under PyTorch's names and adds the few that are
compositions of others.
"""

from __future__ import annotations

import numpy as np

from tinygrad_conv import rng as _rng
from tinygrad_conv._args import class_targets, dropout_args, linear_args, mse_loss_args
from tinygrad_conv.cnn_ops import adaptive_avg_pool2d, avg_pool2d, conv2d, max_pool2d
from tinygrad_conv.norm_ops import batch_norm
from tinygrad_conv.ops import Linear, NLLLoss
from tinygrad_conv.tensor import Tensor

__all__ = [
    "adaptive_avg_pool2d", "avg_pool2d", "batch_norm",
    "conv2d", "cross_entropy", "dropout", "linear", "log_softmax", "max_pool2d", "mse_loss",
    "nll_loss", "relu", "sigmoid", "softmax", "tanh",
]


def relu(x: Tensor) -> Tensor:
    return x.relu()


def sigmoid(x: Tensor) -> Tensor:
    return x.sigmoid()


def tanh(x: Tensor) -> Tensor:
    return x.tanh()


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """x @ weight.T + bias, with x (..., in), weight (out, in), bias (out,)."""
    return Linear.apply(*linear_args(x, weight, bias))


def dropout(x: Tensor, p: float = 0.5, training: bool = True,
            rng: np.random.Generator | None = None) -> Tensor:
    """Zero each element with probability p and scale the rest by 1/(1-p) (only in training)."""
    p = dropout_args(x, p)
    if not training or p == 0:
        return x
    if p == 1:
        return x * 0.0
    rng = rng if rng is not None else _rng.generator()
    keep = (rng.random(x.shape) >= p).astype(x.dtype) / x.dtype.type(1 - p)
    return x * keep


# ----------------------------------------------------------------------------------------------
# Softmax and the losses
# ----------------------------------------------------------------------------------------------


def log_softmax(x: Tensor, axis: int = -1, *, dim=None) -> Tensor:
    return x.log_softmax(axis, dim=dim)


def softmax(x: Tensor, axis: int = -1, *, dim=None) -> Tensor:
    return x.softmax(axis, dim=dim)


def nll_loss(logp: Tensor, targets) -> Tensor:
    """Mean negative log-likelihood of integer `targets` (N,) under log-probabilities (N, C);
    or of one target under log-probabilities (C,). An empty batch gives NaN, as in PyTorch."""
    return NLLLoss.apply(logp, targets=class_targets("nll_loss", logp, targets))


def cross_entropy(logits: Tensor, targets) -> Tensor:
    """Mean cross-entropy of integer class `targets` (N,) for raw scores `logits` (N, C); or of
    one target for scores (C,). An empty batch gives NaN, as in PyTorch."""
    targets = class_targets("cross_entropy", logits, targets)
    return NLLLoss.apply(logits.log_softmax(axis=-1), targets=targets)


def mse_loss(input: Tensor, target) -> Tensor:
    """Mean of (input - target)^2. Shapes that differ but broadcast give a value and PyTorch's
    warning (it is seldom what was meant); shapes that do not broadcast are an error."""
    mse_loss_args(input, target)
    diff = input - target
    return (diff * diff).mean()
