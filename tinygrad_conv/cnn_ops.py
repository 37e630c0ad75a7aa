"""Convolution and pooling on the graph: forward and backward side by side, all calling the
Cython kernels in `src/` (see cnn-backward-pass-tutorial for the formulas, in its notation:
A input, W weights, Z = W ⊛ A + b, Z' = dL/dZ).

`conv2d` and the pooling functions check everything before a kernel runs (the kernels do no
bounds checks): a malformed call gets a ValueError or TypeError naming the op, the argument and
the shapes or values seen, never a crash.

Every kernel has a NumPy twin of the same name and signature in reference.py; inside
`tinygrad_conv.reference_kernels()` the ops below call those instead (`_kernels`), so a
debugger can step into the formula of any gradient.
"""

from __future__ import annotations

import numpy as np

from tinygrad_conv import _conv, _pool, reference
from tinygrad_conv.exercises.student import active_kernels
from tinygrad_conv.shapes import out_size, pooled_size
from tinygrad_conv.tensor import _FLOAT_DTYPES, Function, Tensor

__all__ = [
    "AdaptiveAvgPool2d", "AvgPool2d", "Conv2d", "MaxPool2d", "adaptive_avg_pool2d", "avg_pool2d",
    "conv2d", "max_pool2d",
]

# no argument, extent or output dimension may pass this (PyTorch refuses them too)
_LIMIT = 2**31 - 1


def _kernels(compiled):
    """The module that computes an op: `compiled` (a Cython kernel module), or reference.py
    inside `reference_kernels()` (the same functions, as the tutorial's formulas in NumPy), or
    the learner's backward functions inside `student_kernels(DIR)`."""
    return active_kernels(compiled) or (reference if reference.enabled() else compiled)


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
        return _kernels(_conv).conv2d_forward(x, w, b, stride, padding, dilation, groups)

    def backward(ctx, grad_out):
        x, w, has_bias, stride, padding, dilation, groups = ctx.saved_values
        need_dx, need_dw = ctx.needs_input_grad[:2]
        need_db = has_bias and ctx.needs_input_grad[2]
        # dL/dA = W_180 ⊛ pad(dilate(Z', s), d(k-1)), dL/dW = Z' ⊛ A, dL/db = Z' summed over N,H,W;
        # only the gradients some input needs are computed. In NumPy: reference.conv2d_backward
        dx, dw, db = _kernels(_conv).conv2d_backward(
            x, w, np.ascontiguousarray(grad_out, dtype=x.dtype), stride, padding, dilation,
            need_dx, need_dw, need_db, groups)
        return (dx, dw, db) if has_bias else (dx, dw)


class MaxPool2d(Function):
    """A = MaxPool(Z) over (N, C, H, W) -> (N, C, OH, OW), OH = 1 + (H + 2*ph - kh) // sh."""

    def forward(ctx, x, *, kernel_size, stride, padding):
        out, argmax = _kernels(_pool).max_pool2d_forward(
            np.ascontiguousarray(x), kernel_size, stride, padding)
        ctx.save_for_backward(argmax, x.shape[2], x.shape[3], x.dtype)  # indices, not the input
        return out

    def backward(ctx, grad_out):
        argmax, h, w, dtype = ctx.saved_values
        # each A' value goes to the cell of Z that won its window; overlapping windows add up.
        # In NumPy: reference.max_pool2d_backward
        return _kernels(_pool).max_pool2d_backward(
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
    op = "conv2d"
    x = _float_tensor(op, "input", input)
    w = _float_tensor(op, "weight", weight)
    s = int_pair(op, "stride", stride, minimum=1)
    d = int_pair(op, "dilation", dilation, minimum=1)
    g = _positive_int(op, "groups", groups)
    _check_dims(op, "input", x, "(N, C, H, W)")
    _check_dims(op, "weight", w, "(F, C/groups, KH, KW)")
    _same_dtype(op, "input", x, "weight", w)
    (n, c, h, wd), (f, wc, kh, kw) = x.shape, w.shape
    if c % g or f % g:
        raise ValueError(
            f"{op}: groups={g} must divide both the input's {c} channels (shape {x.shape}) and "
            f"the weight's {f} filters (shape {w.shape})")
    if c != wc * g:
        raise ValueError(
            f"{op}: input has {c} channels (shape {x.shape}) but weight expects {wc * g} "
            f"(shape {w.shape}, which is (F, C/groups, KH, KW), groups={g})")
    if 0 in w.shape or 0 in (c, h, wd):
        raise ValueError(
            f"{op}: only the batch may be empty, got input shape {x.shape} and weight shape "
            f"{w.shape}")
    if bias is not None:
        b = _float_tensor(op, "bias", bias)
        _same_dtype(op, "input", x, "bias", b)
        if b.shape != (f,):
            raise ValueError(
                f"{op}: bias must have shape ({f},), one value per filter of weight "
                f"{w.shape}, got {b.shape}")
    eh, ew = d[0] * (kh - 1) + 1, d[1] * (kw - 1) + 1      # the dilated kernel's extent
    pads = _conv_padding(op, padding, s, (eh, ew))      # ((top, bottom), (left, right))
    (top, bottom), (left, right) = pads
    if eh > h + top + bottom or ew > wd + left + right:
        raise ValueError(
            f"{op}: the kernel ({kh}x{kw}, dilation {d}, so {eh}x{ew}) is larger than the "
            f"padded input ({h + top + bottom}x{wd + left + right}: input {x.shape}, "
            f"padding {padding!r})")
    oh, ow = out_size(h, kh, s[0], pads[0], d[0]), out_size(wd, kw, s[1], pads[1], d[1])
    _check_size(op, x.shape, (n, f, oh, ow), (h + top + bottom, wd + left + right))
    tensors = (input, weight) if bias is None else (input, weight, bias)
    return Conv2d.apply(*tensors, stride=s, padding=pads, dilation=d, groups=g)


def padding_arg(op: str, padding, stride) -> str | tuple[int, int]:
    """A conv padding as given, checked: "valid", "same" (stride 1 only, as in PyTorch) or an
    int or (h, w) pair of ints >= 0, as a pair (shared with nn.Conv2d)."""
    if isinstance(padding, str):
        if padding not in ("valid", "same"):
            raise ValueError(
                f"{op}: padding must be an int, a pair of ints, 'valid' or 'same', "
                f"got {padding!r}")
        if padding == "same" and stride != (1, 1):
            raise ValueError(
                f"{op}: padding='same' needs stride 1 (as in PyTorch), got stride {stride}")
        return padding
    return int_pair(op, "padding", padding, minimum=0)


def _conv_padding(op: str, padding, stride, extent) -> tuple[tuple[int, int], tuple[int, int]]:
    """((top, bottom), (left, right)) from an int, an (h, w) pair, "valid" or "same"."""
    padding = padding_arg(op, padding, stride)
    if padding == "valid":
        return (0, 0), (0, 0)
    if padding == "same":
        # the output as large as the input: extent - 1 in all, the odd one at the bottom/right
        total_h, total_w = extent[0] - 1, extent[1] - 1
        return (total_h // 2, total_h - total_h // 2), (total_w // 2, total_w - total_w // 2)
    return (padding[0], padding[0]), (padding[1], padding[1])


def _positive_int(op: str, name: str, value) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{op}: {name} must be a positive int, got {value!r}")
    if not 1 <= value <= _LIMIT:
        raise ValueError(f"{op}: {name} must be a positive int (at most {_LIMIT}), got {value}")
    return int(value)


def max_pool2d(input: Tensor, kernel_size, stride=None, padding=0) -> Tensor:
    """Max over each kernel_size window (implicit -inf padding), PyTorch's semantics.

    input (N, C, H, W); kernel_size, stride (default: kernel_size) and padding (at most half
    the kernel) are each an int or an (h, w) pair. Returns (N, C, OH, OW) with
    OH = 1 + (H + 2*padding - kernel_size) // stride. The gradient goes to each window's first
    maximum (a NaN counts as the maximum); where windows overlap, gradients add up.
    """
    op = "max_pool2d"
    k, s, p = _pool_args(op, input, kernel_size, stride, padding)
    n, c, h, w = input.shape
    oh, ow = out_size(h, k[0], s[0], p[0]), out_size(w, k[1], s[1], p[1])
    _check_size(op, input.shape, (n, c, oh, ow), ())
    return MaxPool2d.apply(input, kernel_size=k, stride=s, padding=p)


# ---- average pooling ------------------------------------------------------------------------


class AvgPool2d(Function):
    """A = AvgPool(Z) over (N, C, H, W) -> (N, C, OH, OW), OH = 1 + (H + 2*ph - kh) // sh
    (rounded up with ceil_mode); each output is its window's mean."""

    def forward(ctx, x, *, kernel_size, stride, padding, ceil_mode, count_include_pad):
        windows = (kernel_size, stride, padding, ceil_mode, count_include_pad)
        ctx.save_for_backward(x.shape[2], x.shape[3], x.dtype, windows)  # no values needed
        return _kernels(_pool).avg_pool2d_forward(np.ascontiguousarray(x), *windows)

    def backward(ctx, grad_out):
        h, w, dtype, windows = ctx.saved_values
        # each A' value is shared evenly by the cells of its window (all of it went to the
        # argmax in max-pool); overlapping windows add up. In NumPy: reference.avg_pool2d_backward
        return _kernels(_pool).avg_pool2d_backward(
            np.ascontiguousarray(grad_out, dtype=dtype), h, w, *windows)


class AdaptiveAvgPool2d(Function):
    """A = the mean of each of OH x OW windows that tile Z (N, C, H, W); 1x1: each plane's mean."""

    def forward(ctx, x, *, output_size):
        ctx.save_for_backward(x.shape[2], x.shape[3], x.dtype)
        return _kernels(_pool).adaptive_avg_pool2d_forward(np.ascontiguousarray(x), output_size)

    def backward(ctx, grad_out):
        h, w, dtype = ctx.saved_values
        # the same even share as AvgPool2d, over the adaptive windows
        return _kernels(_pool).adaptive_avg_pool2d_backward(
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
    op = "avg_pool2d"
    k, s, p = _pool_args(op, input, kernel_size, stride, padding)
    for name, flag in (("ceil_mode", ceil_mode), ("count_include_pad", count_include_pad)):
        if not isinstance(flag, (bool, np.bool_)):
            raise TypeError(f"{op}: {name} must be a bool, got {flag!r}")
    n, c, h, w = input.shape
    oh = pooled_size(h, k[0], s[0], p[0], ceil_mode)
    ow = pooled_size(w, k[1], s[1], p[1], ceil_mode)
    _check_size(op, input.shape, (n, c, oh, ow), ())
    return AvgPool2d.apply(input, kernel_size=k, stride=s, padding=p, ceil_mode=bool(ceil_mode),
                           count_include_pad=bool(count_include_pad))


def adaptive_avg_pool2d(input: Tensor, output_size) -> Tensor:
    """The mean over OH x OW windows that tile the input, PyTorch's semantics: output row i
    averages input rows floor(i*H/OH) to ceil((i+1)*H/OH) - 1 (the same for columns).

    input (N, C, H, W); output_size an int or an (OH, OW) pair. `output_size=1` is global
    average pooling: each plane's mean, (N, C, 1, 1).
    """
    op = "adaptive_avg_pool2d"
    x = _float_tensor(op, "input", input)
    _check_dims(op, "input", x, "(N, C, H, W)")
    size = int_pair(op, "output_size", output_size, minimum=1)
    n, c, h, w = x.shape
    if 0 in (c, h, w):
        raise ValueError(f"{op}: only the batch may be empty, got input shape {x.shape}")
    _check_size(op, x.shape, (n, c) + size, ())
    return AdaptiveAvgPool2d.apply(input, output_size=size)


def _pool_args(op: str, input, kernel_size, stride, padding):
    """Check a pooling call: (kernel_size, stride, padding) as pairs, or a clear error."""
    x = _float_tensor(op, "input", input)
    k, s, p = pool_window(op, kernel_size, stride, padding)
    _check_dims(op, "input", x, "(N, C, H, W)")
    n, c, h, w = x.shape
    if 0 in (c, h, w):
        raise ValueError(f"{op}: only the batch may be empty, got input shape {x.shape}")
    if k[0] > h + 2 * p[0] or k[1] > w + 2 * p[1]:
        raise ValueError(
            f"{op}: kernel_size {k} is larger than the padded input "
            f"({h + 2 * p[0]}x{w + 2 * p[1]}: input {x.shape}, padding {p})")
    return k, s, p


# ---- validation helpers: each raises with the op's name, the argument and what it saw ----

def _float_tensor(op: str, name: str, value) -> np.ndarray:
    """The float32/float64 array inside a Tensor argument."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{op}: {name} must be a Tensor, got {type(value).__name__}")
    data = value.data
    if not isinstance(data, np.ndarray) or data.dtype not in _FLOAT_DTYPES:
        dtype = getattr(data, "dtype", type(data).__name__)
        raise TypeError(
            f"{op}: {name} must be float32 or float64, got {dtype} (shape "
            f"{getattr(data, 'shape', '?')}); convert it first, e.g. "
            f"Tensor({name}.numpy().astype('float32'))")
    return data


def _check_dims(op: str, name: str, data: np.ndarray, layout: str) -> None:
    if data.ndim != 4:
        raise ValueError(
            f"{op}: {name} must be 4-D {layout}, got {data.ndim}-D of shape {data.shape}")


def _same_dtype(op: str, name_a: str, a: np.ndarray, name_b: str, b: np.ndarray) -> None:
    if a.dtype != b.dtype:
        raise TypeError(
            f"{op}: {name_a} is {a.dtype} (shape {a.shape}) but {name_b} is {b.dtype} "
            f"(shape {b.shape}); convert one so both have the same dtype")


def int_pair(op: str, name: str, value, minimum: int) -> tuple[int, int]:
    """An int or an (h, w) pair of ints, each in [minimum, 2**31 - 1], as a pair (shared with
    the nn layers, which check their arguments the same way)."""
    items = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(items) != 2:
        raise ValueError(
            f"{op}: {name} must be an int or a pair of ints, got {value!r} "
            f"({len(items)} values)")
    for v in items:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            raise TypeError(
                f"{op}: {name} must be an int or a pair of ints, got {value!r} "
                f"(with a {type(v).__name__})")
        if v < minimum:
            raise ValueError(f"{op}: {name} must be >= {minimum}, got {value!r}")
        if v > _LIMIT:
            raise ValueError(f"{op}: {name} must be at most {_LIMIT}, got {value!r}")
    return int(items[0]), int(items[1])


def pool_window(op: str, kernel_size, stride, padding) -> tuple[tuple[int, int], ...]:
    """(kernel_size, stride, padding) of a pooling op as (h, w) pairs, checked: stride defaults
    to kernel_size, and padding is at most half the kernel, so that no window lies wholly in
    the padding (as in PyTorch). Shared with the nn layers."""
    k = int_pair(op, "kernel_size", kernel_size, minimum=1)
    s = k if stride is None else int_pair(op, "stride", stride, minimum=1)
    p = int_pair(op, "padding", padding, minimum=0)
    if p[0] > k[0] // 2 or p[1] > k[1] // 2:
        raise ValueError(
            f"{op}: padding {p} must be at most half of kernel_size {k} (as in PyTorch)")
    return k, s, p


def _check_size(op: str, in_shape, out_shape, extents) -> None:
    """Refuse outputs (or padded extents) past 2**31 - 1 in any dimension: no such array would
    fit in memory, and a clear error beats a MemoryError from deep inside."""
    for size in (*out_shape, *extents, out_shape[2] * out_shape[3]):
        if size > _LIMIT:
            raise ValueError(
                f"{op}: the output would have shape {out_shape} for input {in_shape}, "
                f"too large for the kernels (a size of {size} > {_LIMIT})")
