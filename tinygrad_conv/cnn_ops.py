"""Convolution and pooling on the graph: forward and backward side by side, all calling the
Cython kernels in `src/` (see cnn-backward-pass-tutorial for the formulas, in its notation:
A input, W weights, Z = W ⊛ A + b, Z' = dL/dZ).

`conv2d` and the pooling functions check everything before a kernel runs (the kernels do no
bounds checks), each with one call into _args.py: a malformed call gets a ValueError or
TypeError naming the op, the argument and the shapes or values seen, never a crash.

Every kernel has a NumPy twin of the same name and signature in reference.py; inside
`tinygrad_conv.reference_kernels()` the ops below call those instead (`dispatch.kernels`), so a
debugger can step into the formula of any gradient.
"""

from __future__ import annotations

import numpy as np

from tinygrad_conv import _conv, _pool
from tinygrad_conv._args import (
    adaptive_avg_pool2d_args,
    avg_pool2d_args,
    conv2d_args,
    max_pool2d_args,
)
from tinygrad_conv.dispatch import kernels
from tinygrad_conv.tensor import Function, Tensor

__all__ = [
    "AdaptiveAvgPool2d", "AvgPool2d", "Conv2d", "MaxPool2d", "adaptive_avg_pool2d", "avg_pool2d",
    "conv2d", "max_pool2d",
]


class Conv2d(Function):
    """Z = W ⊛ A + b: A (N, C, H, W), W (F, C/groups, KH, KW), b (F,) -> Z (N, F, OH, OW),
    OH = 1 + (H + top + bottom - dh*(KH-1) - 1) // sh (the same for OW). With groups g, the
    channels and filters split into g groups and group k's filters see only group k's channels.
    """

    def forward(ctx, x, w, b=None, *, stride, padding, dilation, groups):
        x, w = np.ascontiguousarray(x), np.ascontiguousarray(w)
        b = None if b is None else np.ascontiguousarray(b)
        ctx.save_for_backward(x, w, b is not None, stride, padding, dilation, groups)
        # Z = W ⊛ A + b. In NumPy: reference.conv2d_forward
        return kernels(_conv).conv2d_forward(x, w, b, stride, padding, dilation, groups)

    def backward(ctx, grad_out):
        x, w, has_bias, stride, padding, dilation, groups = ctx.saved_values
        need_dx, need_dw = ctx.needs_input_grad[:2]
        need_db = has_bias and ctx.needs_input_grad[2]
        # dL/dA = W_180 ⊛ pad(dilate(Z', s), d(k-1)), dL/dW = Z' ⊛ A, dL/db = Z' summed over N,H,W;
        # only the gradients some input needs are computed. In NumPy: reference.conv2d_backward
        dx, dw, db = kernels(_conv).conv2d_backward(
            x, w, np.ascontiguousarray(grad_out, dtype=x.dtype), stride, padding, dilation,
            need_dx, need_dw, need_db, groups)
        return (dx, dw, db) if has_bias else (dx, dw)


class MaxPool2d(Function):
    """A = MaxPool(Z) over (N, C, H, W) -> (N, C, OH, OW), OH = 1 + (H + 2*ph - kh) // sh."""

    def forward(ctx, x, *, kernel_size, stride, padding):
        out, argmax = kernels(_pool).max_pool2d_forward(
            np.ascontiguousarray(x), kernel_size, stride, padding)
        ctx.save_for_backward(argmax, x.shape[2], x.shape[3], x.dtype)  # indices, not the input
        return out

    def backward(ctx, grad_out):
        argmax, h, w, dtype = ctx.saved_values
        # each A' value goes to the cell of Z that won its window; overlapping windows add up.
        # In NumPy: reference.max_pool2d_backward
        return kernels(_pool).max_pool2d_backward(
            np.ascontiguousarray(grad_out, dtype=dtype), argmax, h, w)


def conv2d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride=1, padding=0,
           dilation=1, groups=1) -> Tensor:
    """2-D cross-correlation with PyTorch's semantics (zero padding).

    input (N, C, H, W), weight (F, C/groups, KH, KW), bias (F,) or None; stride and dilation
    are each an int or an (h, w) pair; padding too, or "valid" (none) or "same" (the output as
    large as the input, stride 1 only; an odd total goes one more to the bottom and right, as
    in PyTorch). groups splits channels and filters into that many independent convolutions
    (groups = C = F is depthwise). Returns (N, F, OH, OW) with
    OH = 1 + (H + pad_top + pad_bottom - dilation*(KH-1) - 1) // stride, and the same for OW.
    """
    args = conv2d_args(input, weight, bias, stride, padding, dilation, groups)
    return Conv2d.apply(*args.tensors, stride=args.stride, padding=args.padding,
                        dilation=args.dilation, groups=args.groups)


def max_pool2d(input: Tensor, kernel_size, stride=None, padding=0) -> Tensor:
    """Max over each kernel_size window (implicit -inf padding), PyTorch's semantics.

    input (N, C, H, W); kernel_size, stride (default: kernel_size) and padding (at most half
    the kernel) are each an int or an (h, w) pair. Returns (N, C, OH, OW) with
    OH = 1 + (H + 2*padding - kernel_size) // stride. The gradient goes to each window's first
    maximum (a NaN counts as the maximum); where windows overlap, gradients add up.
    """
    args = max_pool2d_args(input, kernel_size, stride, padding)
    return MaxPool2d.apply(input, kernel_size=args.kernel_size, stride=args.stride,
                           padding=args.padding)


# ---- average pooling ------------------------------------------------------------------------


class AvgPool2d(Function):
    """A = AvgPool(Z) over (N, C, H, W) -> (N, C, OH, OW), OH = 1 + (H + 2*ph - kh) // sh
    (rounded up with ceil_mode); each output is its window's mean."""

    def forward(ctx, x, *, kernel_size, stride, padding, ceil_mode, count_include_pad):
        windows = (kernel_size, stride, padding, ceil_mode, count_include_pad)
        ctx.save_for_backward(x.shape[2], x.shape[3], x.dtype, windows)  # no values needed
        return kernels(_pool).avg_pool2d_forward(np.ascontiguousarray(x), *windows)

    def backward(ctx, grad_out):
        h, w, dtype, windows = ctx.saved_values
        # each A' value is shared evenly by the cells of its window (all of it went to the
        # argmax in max-pool); overlapping windows add up. In NumPy: reference.avg_pool2d_backward
        return kernels(_pool).avg_pool2d_backward(
            np.ascontiguousarray(grad_out, dtype=dtype), h, w, *windows)


class AdaptiveAvgPool2d(Function):
    """A = the mean of each of OH x OW windows that tile Z (N, C, H, W); 1x1: each plane's mean."""

    def forward(ctx, x, *, output_size):
        ctx.save_for_backward(x.shape[2], x.shape[3], x.dtype)
        return kernels(_pool).adaptive_avg_pool2d_forward(np.ascontiguousarray(x), output_size)

    def backward(ctx, grad_out):
        h, w, dtype = ctx.saved_values
        # the same even share as AvgPool2d, over the adaptive windows
        return kernels(_pool).adaptive_avg_pool2d_backward(
            np.ascontiguousarray(grad_out, dtype=dtype), h, w)


def avg_pool2d(input: Tensor, kernel_size, stride=None, padding=0, ceil_mode: bool = False,
               count_include_pad: bool = True) -> Tensor:
    """The mean over each kernel_size window (implicit zero padding), PyTorch's semantics.

    input (N, C, H, W); kernel_size, stride (default: kernel_size) and padding (at most half
    the kernel) are each an int or an (h, w) pair. Returns (N, C, OH, OW) with
    OH = 1 + (H + 2*padding - kernel_size) // stride, rounded up instead with `ceil_mode` (a
    last, partial window, kept only if it starts inside the input or its left padding). The
    divisor is the window's size counting the padding cells (`count_include_pad`) or only the
    real ones. The gradient of each output is spread evenly over its window.
    """
    args = avg_pool2d_args(input, kernel_size, stride, padding, ceil_mode, count_include_pad)
    return AvgPool2d.apply(input, **args._asdict())


def adaptive_avg_pool2d(input: Tensor, output_size) -> Tensor:
    """The mean over OH x OW windows that tile the input, PyTorch's semantics: output row i
    averages input rows floor(i*H/OH) to ceil((i+1)*H/OH) - 1 (the same for columns).

    input (N, C, H, W); output_size an int or an (OH, OW) pair. `output_size=1` is global
    average pooling: each plane's mean, (N, C, 1, 1).
    """
    size = adaptive_avg_pool2d_args(input, output_size)
    return AdaptiveAvgPool2d.apply(input, output_size=size)
