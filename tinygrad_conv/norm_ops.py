"""Batch normalization on the graph: forward and backward side by side, calling the kernels in
`src/norm.pyx` (which state the formulas).

For each channel c of x (N, C, *), over its n = N * (product of *) values:

    x̂ = (x - μ) / σ,  σ = sqrt(σ² + eps),   y = γ x̂ + β

with μ, σ² the batch's mean and biased variance in training (and the running estimates they
update), or the running estimates in eval mode. The training backward is one formula,

    dL/dx = (1/n)(γ/σ)(n·dy - Σdy - x̂·Σ(dy·x̂)),   dL/dγ = Σ dy·x̂,   dL/dβ = Σ dy,

rather than the dozen elementwise ops it could be composed of (tests check it against that
composition and against PyTorch). Inside `reference_kernels()` the op runs reference.py's
NumPy version of the kernels.
"""

from __future__ import annotations

from numbers import Real

import numpy as np

from tinygrad_conv import _norm
from tinygrad_conv.cnn_ops import _kernels
from tinygrad_conv.tensor import _FLOAT_DTYPES, Function, Tensor

__all__ = ["BatchNorm", "batch_norm"]


class BatchNorm(Function):
    """y = γ (x - μ)/σ + β per channel: x (N, C, *), γ and β (C,) -> y of x's shape."""

    def forward(ctx, x, *affine, has_weight, has_bias, running_mean, running_var,
                use_batch_stats, momentum, eps):
        n, c, m = x.shape[0], x.shape[1], int(np.prod(x.shape[2:]))
        x3 = np.ascontiguousarray(x).reshape(n, c, m)      # (N, C, M): a channel is x3[:, c]
        weight = np.ascontiguousarray(affine[0]) if has_weight else None
        bias = np.ascontiguousarray(affine[-1]) if has_bias else None
        given = (None, None) if use_batch_stats else (running_mean, running_var)
        y, mean, var, invstd = _kernels(_norm).batch_norm_forward(x3, weight, bias, *given, eps)
        count = n * m
        if use_batch_stats and running_mean is not None and count > 0:  # (an empty batch: none)
            # running estimates: r = momentum * batch statistic + (1 - momentum) * r, with the
            # unbiased variance σ² n/(n-1) (the normalization itself used the biased one); the
            # statistics come in double, and r is rounded to its dtype once
            running_mean[...] = momentum * mean + (1 - momentum) * running_mean
            running_var[...] = momentum * (var * (count / (count - 1))) \
                + (1 - momentum) * running_var
        ctx.save_for_backward(x3, mean, invstd, weight, has_weight, has_bias, use_batch_stats)
        return y.reshape(x.shape)

    # dL/dx = (1/n)(γ/σ)(n·dy - Σdy - x̂·Σ(dy·x̂)) when μ, σ come from this batch, else (γ/σ)·dy;
    # dL/dγ = Σ dy·x̂, dL/dβ = Σ dy
    def backward(ctx, grad_out):
        x3, mean, invstd, weight, has_weight, has_bias, use_batch_stats = ctx.saved_values
        dy = np.ascontiguousarray(grad_out, dtype=x3.dtype).reshape(x3.shape)
        # In NumPy: reference.batch_norm_backward
        dx, dgamma, dbeta = _kernels(_norm).batch_norm_backward(
            dy, x3, mean, invstd, weight, use_batch_stats, ctx.needs_input_grad[0])
        dx = None if dx is None else dx.reshape(grad_out.shape)
        return (dx,) + ((dgamma,) if has_weight else ()) + ((dbeta,) if has_bias else ())


def batch_norm(input: Tensor, running_mean, running_var, weight: Tensor | None = None,
               bias: Tensor | None = None, training: bool = False, momentum: float = 0.1,
               eps: float = 1e-5) -> Tensor:
    """Batch normalization with PyTorch's semantics (`torch.nn.functional.batch_norm`).

    input (N, C, *); running_mean, running_var (C,) Tensors or arrays of input's dtype, or None;
    weight γ and bias β (C,) or None (1 and 0). In training (or with no running estimates) the
    batch's mean and biased variance normalize each channel, and the running estimates, when
    given, are updated in place: r = momentum * batch statistic + (1 - momentum) * r (unbiased
    variance). Otherwise the running estimates normalize.
    """
    op = "batch_norm"
    if not isinstance(input, Tensor):
        raise TypeError(f"{op}: input must be a Tensor, got {type(input).__name__}")
    if input.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{op}: input must be float32 or float64, got {input.dtype}")
    if input.ndim < 2:
        raise ValueError(f"{op}: input must be (N, C, *) with at least 2 dimensions, got shape "
                         f"{input.shape}")
    channels = input.shape[1]
    if not isinstance(training, (bool, np.bool_)):
        raise TypeError(f"{op}: training must be a bool, got {training!r}")
    for name, value in (("momentum", momentum), ("eps", eps)):
        if isinstance(value, bool) or not isinstance(value, Real):
            raise TypeError(f"{op}: {name} must be a real number, got {value!r}")
    if not 0 <= momentum <= 1:
        raise ValueError(f"{op}: momentum must be in [0, 1], got {momentum}")
    if not eps >= 0:
        raise ValueError(f"{op}: eps must be >= 0, got {eps}")
    stats = [_channel_array(op, name, value, input.dtype, channels)
             for name, value in (("running_mean", running_mean), ("running_var", running_var))]
    if (stats[0] is None) != (stats[1] is None):
        raise ValueError(f"{op}: give both running_mean and running_var, or neither")
    use_batch_stats = bool(training) or stats[0] is None
    if use_batch_stats:
        count = input.shape[0] * int(np.prod(input.shape[2:]))
        if count == 1:   # 0 is an empty batch: an empty output, as PyTorch
            raise ValueError(f"{op}: expected more than 1 value per channel when training, got "
                             f"input of shape {input.shape}")
    affine = []
    for name, value in (("weight", weight), ("bias", bias)):
        if value is not None:
            if not isinstance(value, Tensor):
                raise TypeError(f"{op}: {name} must be a Tensor or None, got "
                                f"{type(value).__name__}")
            _channel_array(op, name, value, input.dtype, channels)
            affine.append(value)
    return BatchNorm.apply(
        input, *affine, has_weight=weight is not None, has_bias=bias is not None,
        running_mean=stats[0],
        running_var=stats[1], use_batch_stats=use_batch_stats, momentum=float(momentum),
        eps=float(eps))


def _channel_array(op: str, name: str, value, dtype: np.dtype, channels: int):
    """The (C,) array of a per-channel argument (a Tensor's own array: updates land in it)."""
    if value is None:
        return None
    data = value.data if isinstance(value, Tensor) else value
    if not isinstance(data, np.ndarray):
        raise TypeError(f"{op}: {name} must be a Tensor, a numpy array or None, got "
                        f"{type(value).__name__}")
    if data.shape != (channels,):
        raise ValueError(f"{op}: {name} must have shape ({channels},), one value per channel "
                         f"of the input, got {data.shape}")
    if data.dtype != dtype:
        raise TypeError(f"{op}: {name} is {data.dtype} but the input is {dtype}; convert one "
                        "(model.to(dtype))")
    if not data.flags.c_contiguous or not data.flags.writeable:
        raise ValueError(f"{op}: {name} must be a contiguous, writeable array")
    return data
