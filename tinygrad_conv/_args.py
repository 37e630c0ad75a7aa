"""Argument checking, in one place, so that each op reads as the op.

The first half has one checker per kind of argument (an int, a real number, a flag, an (h, w)
pair, a float Tensor, ...). Each takes `where` (the op or layer, as the user spelled it) and the
argument's name, and returns the value in the form the op uses, or raises a ValueError or
TypeError naming both and showing what it saw: the Cython kernels do no bounds checks, so
nothing reaches them unchecked.

The second half has one function per op (`conv2d_args`, `max_pool2d_args`, ...): it checks a
whole call and returns a small named tuple, so the op itself is one call that validates plus
the op (`args = conv2d_args(...)`).
"""

from __future__ import annotations

import math
import warnings
from numbers import Integral, Real
from typing import Any, NamedTuple

import numpy as np

from tinygrad_conv.shapes import out_size, pooled_size
from tinygrad_conv.tensor import _FLOAT_DTYPES, Tensor

# no argument, extent or output dimension may pass this (PyTorch refuses them too)
LIMIT = 2**31 - 1


# ---- one checker per kind of argument --------------------------------------------------------

def unwrap(value: Any) -> Any:
    """A 0-d numpy array or numpy scalar (what an npz file gives back) as a Python scalar."""
    if isinstance(value, (np.ndarray, np.generic)) and value.ndim == 0:
        return value.item()
    return value


def integer(where: str, name: str, value: Any, low: int | None = None,
            high: int | None = None) -> int:
    """`value` as a Python int in [low, high] (None: no bound)."""
    value = unwrap(value)
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{where}: {name} must be an int, got {value!r}")
    if low is not None and value < low:
        raise ValueError(f"{where}: {name} must be >= {low}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"{where}: {name} must be at most {high}, got {value}")
    return int(value)


def real(where: str, name: str, value: Any, low: float = -math.inf, high: float = math.inf,
         low_open: bool = False, high_open: bool = False) -> float:
    """`value` as a Python float in [low, high] (an open end where asked). A Python float, not a
    numpy one, which would upcast float32 arithmetic."""
    value = unwrap(value)
    if math.isinf(high):
        expected = f"{'>' if low_open else '>='} {low}"
    else:
        expected = f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{where}: {name} must be a real number {expected}, got {value!r}")
    value = float(value)
    above = value > low if low_open else value >= low
    below = value < high if high_open else value <= high
    if not (above and below):
        raise ValueError(f"{where}: {name} must be {expected}, got {value}")
    return value


def flag(where: str, name: str, value: Any) -> bool:
    value = unwrap(value)
    if not isinstance(value, bool):
        raise TypeError(f"{where}: {name} must be a bool, got {value!r}")
    return value


def int_pair(where: str, name: str, value, minimum: int) -> tuple[int, int]:
    """An int or an (h, w) pair of ints, each in [minimum, LIMIT], as a pair."""
    items = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(items) != 2:
        raise ValueError(
            f"{where}: {name} must be an int or a pair of ints, got {value!r} "
            f"({len(items)} values)")
    for v in items:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            raise TypeError(
                f"{where}: {name} must be an int or a pair of ints, got {value!r} "
                f"(with a {type(v).__name__})")
        if v < minimum:
            raise ValueError(f"{where}: {name} must be >= {minimum}, got {value!r}")
        if v > LIMIT:
            raise ValueError(f"{where}: {name} must be at most {LIMIT}, got {value!r}")
    return int(items[0]), int(items[1])


def float_tensor(where: str, name: str, value) -> np.ndarray:
    """The float32/float64 array inside a Tensor argument."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{where}: {name} must be a Tensor, got {type(value).__name__}")
    data = value.data   # an ndarray, or a numpy scalar for a reduction's 0-d result
    if getattr(data, "dtype", None) not in _FLOAT_DTYPES:
        dtype = getattr(data, "dtype", type(data).__name__)
        raise TypeError(
            f"{where}: {name} must be float32 or float64, got {dtype} (shape "
            f"{getattr(data, 'shape', '?')}); convert it first, e.g. "
            f"Tensor({name}.numpy().astype('float32'))")
    return data


def four_d(where: str, name: str, data: np.ndarray, layout: str) -> None:
    if data.ndim != 4:
        raise ValueError(
            f"{where}: {name} must be 4-D {layout}, got {data.ndim}-D of shape {data.shape}")


def only_batch_empty(where: str, x: np.ndarray) -> None:
    if 0 in x.shape[1:]:
        raise ValueError(f"{where}: only the batch may be empty, got input shape {x.shape}")


def same_dtype(where: str, name_a: str, a: np.ndarray, name_b: str, b: np.ndarray) -> None:
    if a.dtype != b.dtype:
        raise TypeError(
            f"{where}: {name_a} is {a.dtype} (shape {a.shape}) but {name_b} is {b.dtype} "
            f"(shape {b.shape}); convert one so both have the same dtype")


def output_fits(where: str, in_shape, out_shape, extents=()) -> None:
    """Refuse outputs (or padded extents) past LIMIT in any dimension: no such array would fit
    in memory, and a clear error beats a MemoryError from deep inside."""
    for size in (*out_shape, *extents, out_shape[2] * out_shape[3]):
        if size > LIMIT:
            raise ValueError(
                f"{where}: the output would have shape {out_shape} for input {in_shape}, "
                f"too large for the kernels (a size of {size} > {LIMIT})")


def pool_window(where: str, kernel_size, stride, padding) -> tuple[tuple[int, int], ...]:
    """(kernel_size, stride, padding) of a pooling op as (h, w) pairs: stride defaults to
    kernel_size, and padding is at most half the kernel, so that no window lies wholly in the
    padding (as in PyTorch)."""
    k = int_pair(where, "kernel_size", kernel_size, minimum=1)
    s = k if stride is None else int_pair(where, "stride", stride, minimum=1)
    p = int_pair(where, "padding", padding, minimum=0)
    if p[0] > k[0] // 2 or p[1] > k[1] // 2:
        raise ValueError(
            f"{where}: padding {p} must be at most half of kernel_size {k} (as in PyTorch)")
    return k, s, p


def conv_padding(where: str, padding, stride) -> str | tuple[int, int]:
    """A conv padding as given: "valid", "same" (stride 1 only, as in PyTorch) or an int or
    (h, w) pair of ints >= 0, as a pair."""
    if isinstance(padding, str):
        if padding not in ("valid", "same"):
            raise ValueError(
                f"{where}: padding must be an int, a pair of ints, 'valid' or 'same', "
                f"got {padding!r}")
        if padding == "same" and stride != (1, 1):
            raise ValueError(
                f"{where}: padding='same' needs stride 1 (as in PyTorch), got stride {stride}")
        return padding
    return int_pair(where, "padding", padding, minimum=0)


def conv_pads(where: str, padding, stride, extent) -> tuple[tuple[int, int], tuple[int, int]]:
    """((top, bottom), (left, right)) from an int, an (h, w) pair, "valid" or "same"; `extent`
    is the dilated kernel's (h, w)."""
    padding = conv_padding(where, padding, stride)
    if padding == "valid":
        return (0, 0), (0, 0)
    if padding == "same":
        # the output as large as the input: extent - 1 in all, the odd one at the bottom/right
        total_h, total_w = extent[0] - 1, extent[1] - 1
        return (total_h // 2, total_h - total_h // 2), (total_w // 2, total_w - total_w // 2)
    return (padding[0], padding[0]), (padding[1], padding[1])


def channel_array(where: str, name: str, value, dtype: np.dtype, channels: int):
    """The (C,) array of a per-channel argument (a Tensor's own array: updates land in it)."""
    if value is None:
        return None
    data = value.data if isinstance(value, Tensor) else value
    if not isinstance(data, np.ndarray):
        raise TypeError(f"{where}: {name} must be a Tensor, a numpy array or None, got "
                        f"{type(value).__name__}")
    if data.shape != (channels,):
        raise ValueError(f"{where}: {name} must have shape ({channels},), one value per channel "
                         f"of the input, got {data.shape}")
    if data.dtype != dtype:
        raise TypeError(f"{where}: {name} is {data.dtype} but the input is {dtype}; convert one "
                        "(model.to(dtype))")
    if not data.flags.c_contiguous or not data.flags.writeable:
        raise ValueError(f"{where}: {name} must be a contiguous, writeable array")
    return data


# ---- one function per op: the whole call checked, the values as the op uses them ------------

class ConvArgs(NamedTuple):
    tensors: tuple          # (input, weight) or (input, weight, bias)
    stride: tuple[int, int]
    padding: tuple[tuple[int, int], tuple[int, int]]   # ((top, bottom), (left, right))
    dilation: tuple[int, int]
    groups: int


def conv2d_args(input, weight, bias, stride, padding, dilation, groups) -> ConvArgs:
    op = "conv2d"
    x = float_tensor(op, "input", input)
    w = float_tensor(op, "weight", weight)
    s = int_pair(op, "stride", stride, minimum=1)
    d = int_pair(op, "dilation", dilation, minimum=1)
    g = integer(op, "groups", groups, 1, LIMIT)
    _conv_shapes(op, x, w, g)
    if bias is not None:
        _conv_bias(op, x, w, bias)
    (n, _, h, wd), (f, _, kh, kw) = x.shape, w.shape
    eh, ew = d[0] * (kh - 1) + 1, d[1] * (kw - 1) + 1      # the dilated kernel's extent
    pads = conv_pads(op, padding, s, (eh, ew))            # ((top, bottom), (left, right))
    padded_h, padded_w = h + sum(pads[0]), wd + sum(pads[1])
    if eh > padded_h or ew > padded_w:
        raise ValueError(
            f"{op}: the kernel ({kh}x{kw}, dilation {d}, so {eh}x{ew}) is larger than the "
            f"padded input ({padded_h}x{padded_w}: input {x.shape}, padding {padding!r})")
    oh, ow = out_size(h, kh, s[0], pads[0], d[0]), out_size(wd, kw, s[1], pads[1], d[1])
    output_fits(op, x.shape, (n, f, oh, ow), (padded_h, padded_w))
    tensors = (input, weight) if bias is None else (input, weight, bias)
    return ConvArgs(tensors, s, pads, d, g)


def _conv_shapes(op: str, x: np.ndarray, w: np.ndarray, groups: int) -> None:
    """conv2d's input and weight agree: 4-D, one dtype, channels in groups, nothing empty but
    the batch."""
    four_d(op, "input", x, "(N, C, H, W)")
    four_d(op, "weight", w, "(F, C/groups, KH, KW)")
    same_dtype(op, "input", x, "weight", w)
    (c, h, wd), (f, wc) = x.shape[1:], w.shape[:2]
    if c % groups or f % groups:
        raise ValueError(
            f"{op}: groups={groups} must divide both the input's {c} channels (shape "
            f"{x.shape}) and the weight's {f} filters (shape {w.shape})")
    if c != wc * groups:
        raise ValueError(
            f"{op}: input has {c} channels (shape {x.shape}) but weight expects {wc * groups} "
            f"(shape {w.shape}, which is (F, C/groups, KH, KW), groups={groups})")
    if 0 in w.shape or 0 in (c, h, wd):
        raise ValueError(
            f"{op}: only the batch may be empty, got input shape {x.shape} and weight shape "
            f"{w.shape}")


def _conv_bias(op: str, x: np.ndarray, w: np.ndarray, bias) -> None:
    b = float_tensor(op, "bias", bias)
    same_dtype(op, "input", x, "bias", b)
    if b.shape != (w.shape[0],):
        raise ValueError(
            f"{op}: bias must have shape ({w.shape[0]},), one value per filter of weight "
            f"{w.shape}, got {b.shape}")


class PoolArgs(NamedTuple):
    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]


def max_pool2d_args(input, kernel_size, stride, padding) -> PoolArgs:
    op = "max_pool2d"
    x, (k, s, p) = _pool_input(op, input, kernel_size, stride, padding)
    n, c, h, w = x.shape
    output_fits(op, x.shape, (n, c, out_size(h, k[0], s[0], p[0]), out_size(w, k[1], s[1], p[1])))
    return PoolArgs(k, s, p)


class AvgPoolArgs(NamedTuple):
    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    ceil_mode: bool
    count_include_pad: bool


def avg_pool2d_args(input, kernel_size, stride, padding, ceil_mode,
                    count_include_pad) -> AvgPoolArgs:
    op = "avg_pool2d"
    x, (k, s, p) = _pool_input(op, input, kernel_size, stride, padding)
    ceil_mode = flag(op, "ceil_mode", ceil_mode)
    count_include_pad = flag(op, "count_include_pad", count_include_pad)
    n, c, h, w = x.shape
    oh = pooled_size(h, k[0], s[0], p[0], ceil_mode)
    ow = pooled_size(w, k[1], s[1], p[1], ceil_mode)
    output_fits(op, x.shape, (n, c, oh, ow))
    return AvgPoolArgs(k, s, p, ceil_mode, count_include_pad)


def adaptive_avg_pool2d_args(input, output_size) -> tuple[int, int]:
    """The output size (OH, OW)."""
    op = "adaptive_avg_pool2d"
    x = float_tensor(op, "input", input)
    four_d(op, "input", x, "(N, C, H, W)")
    size = int_pair(op, "output_size", output_size, minimum=1)
    only_batch_empty(op, x)
    output_fits(op, x.shape, x.shape[:2] + size)
    return size


def _pool_input(op: str, input, kernel_size, stride, padding) -> tuple[np.ndarray, PoolArgs]:
    """A pooling call's input array and window, checked: a 4-D float Tensor, nothing empty but
    the batch, no window larger than the padded input."""
    x = float_tensor(op, "input", input)
    k, s, p = pool_window(op, kernel_size, stride, padding)
    four_d(op, "input", x, "(N, C, H, W)")
    only_batch_empty(op, x)
    h, w = x.shape[2:]
    if k[0] > h + 2 * p[0] or k[1] > w + 2 * p[1]:
        raise ValueError(
            f"{op}: kernel_size {k} is larger than the padded input "
            f"({h + 2 * p[0]}x{w + 2 * p[1]}: input {x.shape}, padding {p})")
    return x, PoolArgs(k, s, p)


class BatchNormArgs(NamedTuple):
    affine: tuple           # the weight and bias Tensors that were given, in that order
    has_weight: bool
    has_bias: bool
    running_mean: np.ndarray | None
    running_var: np.ndarray | None
    use_batch_stats: bool   # normalize by this batch's statistics, not the running ones
    momentum: float
    eps: float


def batch_norm_args(input, running_mean, running_var, weight, bias, training, momentum,
                    eps) -> BatchNormArgs:
    op = "batch_norm"
    x = float_tensor(op, "input", input)
    if x.ndim < 2:
        raise ValueError(f"{op}: input must be (N, C, *) with at least 2 dimensions, got shape "
                         f"{x.shape}")
    training = flag(op, "training", training)
    momentum = real(op, "momentum", momentum, 0, 1)
    eps = real(op, "eps", eps, 0)
    mean, var = (channel_array(op, name, value, x.dtype, x.shape[1])
                 for name, value in (("running_mean", running_mean), ("running_var", running_var)))
    if (mean is None) != (var is None):
        raise ValueError(f"{op}: give both running_mean and running_var, or neither")
    use_batch_stats = training or mean is None
    count = x.shape[0] * int(np.prod(x.shape[2:]))   # values per channel
    if use_batch_stats and count == 1:   # 0 is an empty batch: an empty output, as PyTorch
        raise ValueError(f"{op}: expected more than 1 value per channel when training, got "
                         f"input of shape {x.shape}")
    for name, value in (("weight", weight), ("bias", bias)):
        if value is not None and not isinstance(value, Tensor):
            raise TypeError(f"{op}: {name} must be a Tensor or None, got "
                            f"{type(value).__name__}")
        channel_array(op, name, value, x.dtype, x.shape[1])
    affine = tuple(value for value in (weight, bias) if value is not None)
    return BatchNormArgs(affine, weight is not None, bias is not None, mean, var,
                         use_batch_stats, momentum, eps)


def linear_args(input, weight, bias) -> tuple:
    """The Tensors of the call: (input, weight) or (input, weight, bias)."""
    op = "linear"
    x = float_tensor(op, "input", input)
    w = float_tensor(op, "weight", weight)
    b = None if bias is None else float_tensor(op, "bias", bias)
    if w.ndim != 2 or x.ndim == 0 or x.shape[-1] != w.shape[1]:
        raise ValueError(
            f"{op}: input of shape {x.shape} needs weight of shape (out, "
            f"{x.shape[-1] if x.ndim else '?'}), got {w.shape}")
    if b is not None and b.shape != (w.shape[0],):
        raise ValueError(
            f"{op}: bias must have shape ({w.shape[0]},) for weight {w.shape}, got {b.shape}")
    return (input, weight) if bias is None else (input, weight, bias)


def dropout_args(input, p) -> float:
    """The drop probability p."""
    float_tensor("dropout", "input", input)
    return real("dropout", "p", p, 0, 1)


def class_targets(op: str, logits: Tensor, targets) -> np.ndarray:
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


def mse_loss_args(input, target) -> None:
    """mse_loss's shapes: equal, or broadcastable with PyTorch's warning (seldom what was
    meant); shapes that do not broadcast are an error."""
    float_tensor("mse_loss", "input", input)
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
            "Please ensure they have the same size.", UserWarning, stacklevel=3)
