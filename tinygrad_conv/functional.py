"""Everything a model's forward pass calls, in one module: `import tinygrad_conv.functional as F`.

The ops themselves are defined (forward next to backward) in `ops.py`, `cnn_ops.py` and
`norm_ops.py`; this module gathers them under PyTorch's names and adds the few that are
compositions of others.
"""

from __future__ import annotations

import warnings

import numpy as np

from tinygrad_conv import rng as _rng
from tinygrad_conv._args import dropout_args, linear_args
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
    return NLLLoss.apply(logp, targets=_class_targets("nll_loss", logp, targets))


def cross_entropy(logits: Tensor, targets) -> Tensor:
    """Mean cross-entropy of integer class `targets` (N,) for raw scores `logits` (N, C); or of
    one target for scores (C,). An empty batch gives NaN, as in PyTorch."""
    targets = _class_targets("cross_entropy", logits, targets)
    return NLLLoss.apply(logits.log_softmax(axis=-1), targets=targets)


def mse_loss(input: Tensor, target) -> Tensor:
    """Mean of (input - target)^2. Shapes that differ but broadcast give a value and PyTorch's
    warning (it is seldom what was meant); shapes that do not broadcast are an error."""
    target_shape = np.shape(target.data if isinstance(target, Tensor) else target)
    if input.shape != target_shape:
        try:
            np.broadcast_shapes(input.shape, target_shape)
        except ValueError:
            raise ValueError(
                f"mse_loss: input shape {input.shape} and target shape {target_shape} differ "
                "and do not broadcast") from None
        warnings.warn(
            f"mse_loss: using a target size {target_shape} that is different to the input size "
            f"{input.shape}. This will likely lead to incorrect results due to broadcasting. "
            "Please ensure they have the same size.", UserWarning, stacklevel=2)
    diff = input - target
    return (diff * diff).mean()


def _class_targets(op: str, logits: Tensor, targets) -> np.ndarray:
    """Check integer class targets for logits of shape (N, C) (targets (N,)) or (C,) (one
    target); return them as an int64 array."""
    if not isinstance(logits, Tensor):
        raise TypeError(f"{op}: input must be a Tensor, got {type(logits).__name__}")
    if logits.ndim not in (1, 2):
        raise ValueError(f"{op}: input must have shape (N, C) or (C,), got {logits.shape}")
    t = targets.data if isinstance(targets, Tensor) else np.asarray(targets)
    if t.dtype.kind not in "iu":
        raise TypeError(
            f"{op}: targets must be integer class indices, got dtype {t.dtype}"
            + (" (float targets: use .astype(np.int64) if they are class numbers)"
               if t.dtype.kind == "f" else ""))
    c = logits.shape[-1]
    expected = (logits.shape[0],) if logits.ndim == 2 else ()
    if t.shape != expected:  # PyTorch's forward takes (1,) for a 1-D input, its backward not
        raise ValueError(
            f"{op}: targets must have shape {expected} to match input {logits.shape}, got "
            f"{t.shape}")
    if t.size and (t.min() < 0 or t.max() >= c):
        bad = t[(t < 0) | (t >= c)].reshape(-1)
        raise ValueError(
            f"{op}: targets must lie in [0, {c - 1}] for {c} classes, found {bad[:5].tolist()}")
    return t.astype(np.int64, copy=False)
