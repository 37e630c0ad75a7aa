"""Everything a model's forward pass calls, in one module: `import tinygrad_conv.functional as F`.

The ops themselves are defined (forward next to backward) in `ops.py`, `cnn_ops.py` and
`norm_ops.py`; this module gathers them under PyTorch's names and adds the few that are
compositions of others.
"""

from __future__ import annotations

import numpy as np

from tinygrad_conv import rng as _rng
from tinygrad_conv.cnn_ops import _float_tensor, adaptive_avg_pool2d, avg_pool2d, conv2d, max_pool2d
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
    for name, value in (("input", x), ("weight", weight), ("bias", bias)):
        if value is not None or name != "bias":
            _float_tensor("linear", name, value)
    if weight.ndim != 2 or x.ndim == 0 or x.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"linear: input of shape {x.shape} needs weight of shape (out, "
            f"{x.shape[-1] if x.ndim else '?'}), got {weight.shape}")
    if bias is None:
        return Linear.apply(x, weight)
    if bias.shape != (weight.shape[0],):
        raise ValueError(
            f"linear: bias must have shape ({weight.shape[0]},) for weight {weight.shape}, got "
            f"{bias.shape}")
    return Linear.apply(x, weight, bias)


def dropout(x: Tensor, p: float = 0.5, training: bool = True,
            rng: np.random.Generator | None = None) -> Tensor:
    """Zero each element with probability p and scale the rest by 1/(1-p) (only in training)."""
    _float_tensor("dropout", "input", x)
    if isinstance(p, bool) or not isinstance(p, (int, float, np.integer, np.floating)):
        raise TypeError(f"dropout: p must be a number in [0, 1], got {p!r}")
    if not 0 <= p <= 1:
        raise ValueError(f"dropout: p must be in [0, 1], got {p}")
    if not training or p == 0:
        return x
    if p == 1:
        return x * 0.0
    rng = rng if rng is not None else _rng.generator()
    keep = (rng.random(x.shape) >= p).astype(x.dtype) / x.dtype.type(1 - p)
    return x * keep
