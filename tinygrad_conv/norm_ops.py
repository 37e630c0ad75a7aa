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

import numpy as np

from tinygrad_conv import _norm
from tinygrad_conv._args import batch_norm_args
from tinygrad_conv.dispatch import kernels
from tinygrad_conv.tensor import Function, Tensor

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
        y, mean, var, invstd = kernels(_norm).batch_norm_forward(x3, weight, bias, *given, eps)
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
        dx, dgamma, dbeta = kernels(_norm).batch_norm_backward(
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
    args = batch_norm_args(input, running_mean, running_var, weight, bias, training, momentum,
                           eps)
    return BatchNorm.apply(
        input, *args.affine, has_weight=args.has_weight, has_bias=args.has_bias,
        running_mean=args.running_mean, running_var=args.running_var,
        use_batch_stats=args.use_batch_stats, momentum=args.momentum, eps=args.eps)
