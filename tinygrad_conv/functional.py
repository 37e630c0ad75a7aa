"""Everything a model's forward pass calls, in one module: `import tinygrad_conv.functional as F`.

The ops themselves are defined (forward next to backward) in `ops.py`, `cnn_ops.py` and
`norm_ops.py`; this module gathers them under PyTorch's names and adds the few that are
compositions of others.
"""

from __future__ import annotations

import numpy as np

from tinygrad_conv import rng as _rng
from tinygrad_conv._args import dropout_args, linear_args
from tinygrad_conv.cnn_ops import adaptive_avg_pool2d, avg_pool2d, conv2d, max_pool2d
from tinygrad_conv.norm_ops import batch_norm
from tinygrad_conv.ops import Linear, cross_entropy, log_softmax, mse_loss, nll_loss, softmax
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
