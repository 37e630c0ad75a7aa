"""Plain NumPy versions of every kernel, with the same signatures: a test oracle and a teaching aid.

They follow the tutorial (cnn-backward-pass-tutorial) literally, in its notation: A the input,
W the weights, Z = W ⊛ A + b the output, Z' = dL/dZ the upstream gradient, ⊛ cross-correlation.
Slow but obviously correct; stride, padding and dilation are (h, w) pairs of ints. Plain NumPy,
so they also run on object arrays of sympy symbols and then return the tutorial's formulas
themselves (docs/walkthrough.md, section 13).

Inside `with reference_kernels():` (also a decorator; or for a whole run with the environment
variable TINYGRAD_CONV_REFERENCE_KERNELS=1) the engine's conv2d, pooling and batch_norm ops
call these functions instead of the Cython kernels, so a debugger can step into every line of a
gradient:

    with tinygrad_conv.reference_kernels():
        loss.backward()          # a breakpoint in conv2d_backward below stops here
"""

from __future__ import annotations

import contextlib
import os
import threading

import numpy as np

from tinygrad_conv.shapes import out_size, pooled_size


def _windows(a_pad: np.ndarray, i: int, j: int, out_hw, stride, dilation) -> np.ndarray:
    """a_pad[..., oh*sh + i*dh, ow*sw + j*dw] for every output position: the cells that the
    kernel tap (i, j) touches, shape (..., OH, OW)."""
    (oh, ow), (sh, sw), (dh, dw) = out_hw, stride, dilation
    rows = slice(i * dh, i * dh + sh * (oh - 1) + 1, sh)
    cols = slice(j * dw, j * dw + sw * (ow - 1) + 1, sw)
    return a_pad[..., rows, cols]


def _pads(padding):
    """((top, bottom), (left, right)) from (ph, pw) or ((top, bottom), (left, right))."""
    return tuple((p, p) if np.ndim(p) == 0 else tuple(p) for p in padding)


def _by_group(fn, x, w, groups, *rest):
    """fn run on each group's channels and filters, the results joined along the channels."""
    xs, ws = np.split(x, groups, axis=1), np.split(w, groups, axis=0)
    return np.concatenate([fn(xg, wg, *rest) for xg, wg in zip(xs, ws)], axis=1)


def conv2d_forward(x, w, b, stride, padding, dilation, groups=1) -> np.ndarray:
    """Z = W ⊛ A + b: x (N, C, H, W), w (F, C/groups, KH, KW), b (F,) or None -> (N, F, OH, OW).
    padding is (ph, pw) or ((top, bottom), (left, right))."""
    (top, bottom), (left, right) = pads = _pads(padding)
    if groups > 1:     # each group of filters sees only its group of channels
        z = _by_group(conv2d_forward, x, w, groups, None, stride, padding, dilation)
        return z if b is None else z + b[None, :, None, None]
    _, _, kh, kw = w.shape
    oh = out_size(x.shape[2], kh, stride[0], pads[0], dilation[0])
    ow = out_size(x.shape[3], kw, stride[1], pads[1], dilation[1])
    a_pad = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    z = np.zeros((x.shape[0], w.shape[0], oh, ow), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            patch = _windows(a_pad, i, j, (oh, ow), stride, dilation)     # (N, C, OH, OW)
            z += np.einsum("nchw,fc->nfhw", patch, w[:, :, i, j])
    if b is not None:
        z += b[None, :, None, None]
    return z


def conv2d_backward(x, w, grad_out, stride, padding, dilation,
                    need_dx=True, need_dw=True, need_db=True, groups=1):
    """(dL/dA, dL/dW, dL/db) for Z = W ⊛ A + b, given Z' = grad_out (N, F, OH, OW)."""
    if groups > 1:     # each group on its own: its channels, its filters, its part of Z'
        parts = [conv2d_backward(xg, wg, gg, stride, padding, dilation, need_dx, need_dw,
                                 need_db)
                 for xg, wg, gg in zip(np.split(x, groups, axis=1), np.split(w, groups),
                                       np.split(grad_out, groups, axis=1))]
        dx, dw, db = (None if part[0] is None else np.concatenate(part, axis=axis)
                      for part, axis in zip(zip(*parts), (1, 0, 0)))
        return dx, dw, db
    dx = conv2d_input_grad(x.shape, w, grad_out, stride, padding, dilation) if need_dx else None
    dw = conv2d_weight_grad(x, w.shape, grad_out, stride, padding, dilation) if need_dw else None
    # dL/db = Z' summed over every axis but F
    db = grad_out.sum(axis=(0, 2, 3)) if need_db else None
    return dx, dw, db


def conv2d_weight_grad(x, w_shape, grad_out, stride, padding, dilation) -> np.ndarray:
    """dL/dW = Z' ⊛ A, summed over the batch, for one group (conv2d_backward's dw)."""
    (top, bottom), (left, right) = _pads(padding)
    (sh, sw), (dil_h, dil_w), (_, _, kh, kw) = stride, dilation, w_shape
    oh, ow = grad_out.shape[2:]
    a_pad = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    # pad(A) correlated with Z' as the kernel. Z' holds every s-th output, so its taps sit s
    # apart (dilation s, the same as dilating Z' by s); W's taps sat d apart, so Z' moves d
    # cells at a time (stride d). The batch is the summed axis (the correlation's channels),
    # A's channels and Z''s filters the two others: (C, N, H, W) ⊛ (F, N, OH, OW) ->
    # (C, F, KH, KW). Only the rows and columns the forward read, s*(OH-1) + d*(KH-1) + 1, so
    # the result is KH x KW.
    rows, cols = sh * (oh - 1) + dil_h * (kh - 1) + 1, sw * (ow - 1) + dil_w * (kw - 1) + 1
    a_read = a_pad[:, :, :rows, :cols].transpose(1, 0, 2, 3)
    z_kernel = np.ascontiguousarray(grad_out.transpose(1, 0, 2, 3))
    dw_cf = conv2d_forward(a_read, z_kernel, None, dilation, (0, 0), stride)
    return np.ascontiguousarray(dw_cf.transpose(1, 0, 2, 3))


def conv2d_input_grad(x_shape, w, grad_out, stride, padding, dilation) -> np.ndarray:
    """dL/dA = W_180 ⊛ pad(dilate(Z', s), d(k-1)), then the forward's padding cropped off, for
    one group (conv2d_backward's dx)."""
    (top, bottom), (left, right) = _pads(padding)
    (sh, sw), (dil_h, dil_w), (_, _, kh, kw) = stride, dilation, w.shape
    n, f = grad_out.shape[:2]
    # dilate: Z' back where its outputs sit in the stride-1 output of pad(A), zeros elsewhere
    # (s-1 between neighbours, and after the last jump, so rows of pad(A) no window reached
    # get 0); pad by the dilated kernel's extent minus one, d(k-1) = k_eff - 1
    ext_h, ext_w = dil_h * (kh - 1), dil_w * (kw - 1)
    padded_hw = (x_shape[2] + top + bottom, x_shape[3] + left + right)
    z_dil = np.zeros((n, f, padded_hw[0] - ext_h, padded_hw[1] - ext_w), grad_out.dtype)
    z_dil[:, :, ::sh, ::sw] = grad_out
    z_pad = np.pad(z_dil, ((0, 0), (0, 0), (ext_h, ext_h), (ext_w, ext_w)))
    # W_180 is W turned by 180° with filters and channels swapped: dL/dA has A's C channels,
    # so here A's channels are the filters and Z''s F channels are summed over
    w_180 = w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)                 # (C, F, KH, KW)
    da_pad = conv2d_forward(z_pad, np.ascontiguousarray(w_180), None, (1, 1), (0, 0),
                            dilation)                                  # the shape of pad(A)
    return da_pad[:, :, top: top + x_shape[2], left: left + x_shape[3]]


def max_pool2d_forward(x, kernel_size, stride, padding):
    """(A, argmax): the max of each window of Z (implicit -inf padding) and its flat index
    h*W + w in the input plane; first maximum in row-major window order wins, NaN wins."""
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    n, c, h, w = x.shape
    oh, ow = out_size(h, kh, sh, ph), out_size(w, kw, sw, pw)
    best = np.full((n, c, oh, ow), -np.inf, dtype=x.dtype)
    argmax = np.full((n, c, oh, ow), -1, dtype=np.int64)
    rows = np.arange(oh)[:, None] * sh - ph        # top-left corner of each window
    cols = np.arange(ow)[None, :] * sw - pw
    for i in range(kh):                            # window taps in row-major order
        for j in range(kw):
            r, q = rows + i, cols + j
            inside = (r >= 0) & (r < h) & (q >= 0) & (q < w)
            v = np.where(inside, x[:, :, np.clip(r, 0, h - 1), np.clip(q, 0, w - 1)], -np.inf)
            first = inside & (argmax < 0)          # the first real cell starts the window
            take = first | (inside & ((v > best) | np.isnan(v)))
            best = np.where(take, v, best)
            argmax = np.where(take, r * w + q, argmax)
    return best, argmax


def max_pool2d_backward(grad_out, argmax, h, w):
    """Z': zero, then Z'[argmax[i]] += A'[i] for every window; overlapping windows add up."""
    n, c = grad_out.shape[:2]
    dz = np.zeros((n * c, h * w), dtype=grad_out.dtype)
    planes = np.arange(n * c)[:, None]
    # np.add.at, not `dz[planes, argmax] += grad_out`: with fancy indexing a cell that wins two
    # windows is written twice and keeps the last write only (the tutorial's 10 would get -0.1
    # instead of a'1 + a'2 = -0.2); np.add.at adds every A' value to its cell
    windows = argmax.shape[2] * argmax.shape[3]   # not -1: numpy refuses -1 for an empty batch
    np.add.at(dz, (planes, argmax.reshape(n * c, windows)), grad_out.reshape(n * c, windows))
    return dz.reshape(n, c, h, w)


def _avg_windows(h, w, kernel_size, stride, padding, ceil_mode, count_include_pad):
    """(i, j, rows, cols, divisor) for every output cell of an average pool: the input cells of
    window (i, j) are x[..., rows, cols]; the divisor counts the padding cells it covers (up to
    the padded edge) when count_include_pad."""
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    for i in range(pooled_size(h, kh, sh, ph, ceil_mode)):
        for j in range(pooled_size(w, kw, sw, pw, ceil_mode)):
            top, left = i * sh - ph, j * sw - pw
            bottom, right = min(top + kh, h + ph), min(left + kw, w + pw)
            rows = slice(max(top, 0), min(bottom, h))
            cols = slice(max(left, 0), min(right, w))
            if count_include_pad:
                divisor = (bottom - top) * (right - left)
            else:
                divisor = (rows.stop - rows.start) * (cols.stop - cols.start)
            yield i, j, rows, cols, divisor


def _adaptive_windows(h, w, output_size):
    """(i, j, rows, cols, divisor): output row i averages input rows floor(i*h/OH) to
    ceil((i+1)*h/OH) - 1, and the same for columns."""
    oh, ow = output_size
    for i in range(oh):
        for j in range(ow):
            rows = slice(i * h // oh, -(-(i + 1) * h // oh))
            cols = slice(j * w // ow, -(-(j + 1) * w // ow))
            yield i, j, rows, cols, (rows.stop - rows.start) * (cols.stop - cols.start)


def _mean_of_windows(x, windows, out_hw):
    a = np.zeros(x.shape[:2] + out_hw, dtype=x.dtype)
    for i, j, rows, cols, divisor in windows:
        a[:, :, i, j] = x[:, :, rows, cols].sum(axis=(2, 3)) / divisor
    return a


def _spread_over_windows(grad_out, h, w, windows):
    dz = np.zeros(grad_out.shape[:2] + (h, w), dtype=grad_out.dtype)
    for i, j, rows, cols, divisor in windows:
        dz[:, :, rows, cols] += grad_out[:, :, i, j, None, None] / divisor
    return dz


def avg_pool2d_forward(x, kernel_size, stride, padding, ceil_mode, count_include_pad):
    """A[i, j] = (sum of Z over window (i, j)) / divisor, zero padding."""
    h, w = x.shape[2:]
    windows = list(_avg_windows(h, w, kernel_size, stride, padding, ceil_mode,
                                count_include_pad))
    out_hw = (windows[-1][0] + 1, windows[-1][1] + 1)
    return _mean_of_windows(x, windows, out_hw)


def avg_pool2d_backward(grad_out, h, w, kernel_size, stride, padding, ceil_mode,
                        count_include_pad):
    """Z' = zero, then every cell of window (i, j) += A'[i, j] / divisor: an even share."""
    return _spread_over_windows(grad_out, h, w, _avg_windows(
        h, w, kernel_size, stride, padding, ceil_mode, count_include_pad))


def adaptive_avg_pool2d_forward(x, output_size):
    """A[i, j] = the mean of Z over adaptive window (i, j)."""
    return _mean_of_windows(x, _adaptive_windows(*x.shape[2:], output_size), tuple(output_size))


def adaptive_avg_pool2d_backward(grad_out, h, w):
    """Every cell of adaptive window (i, j) += A'[i, j] / (cells in the window)."""
    return _spread_over_windows(grad_out, h, w, _adaptive_windows(h, w, grad_out.shape[2:]))


def batch_norm_forward(x, weight, bias, running_mean, running_var, eps):
    """(y, mean, var, invstd) for x (N, C, M), per channel c:
    x̂ = (x - μ) / sqrt(σ² + eps), y = γ x̂ + β, with μ, σ² the batch's mean and biased variance
    (or running_mean, running_var when given). μ, σ², 1/σ and x̂ are computed in float64 (x is
    centred before it is scaled: precise when |μ| >> σ), y is rounded to x's dtype once."""
    channels = x.shape[1]
    x64 = x.astype(np.float64)
    if running_mean is None and x.size == 0:    # no values: NaN statistics, an empty y
        mean = var = np.full(channels, np.nan)
    elif running_mean is None:
        mean = x64.mean(axis=(0, 2))
        var = ((x64 - mean[:, None]) ** 2).mean(axis=(0, 2))
    else:
        mean, var = running_mean.astype(np.float64), running_var.astype(np.float64)
    invstd = 1 / np.sqrt(var + eps)
    gamma = np.ones(channels) if weight is None else weight.astype(np.float64)
    beta = np.zeros(channels) if bias is None else bias.astype(np.float64)
    x_hat = (x64 - mean[:, None]) * invstd[:, None]
    y = gamma[:, None] * x_hat + beta[:, None]
    return y.astype(x.dtype), mean, var, invstd


def batch_norm_backward(grad_out, x, mean, invstd, weight, training, need_dx):
    """(dL/dx, dL/dγ, dL/dβ), n = N*M values per channel, dy = grad_out:
    dL/dx = (1/n)(γ/σ)(n dy - Σdy - x̂ Σ(dy x̂)) in training, (γ/σ) dy in eval;
    dL/dγ = Σ dy x̂, dL/dβ = Σ dy. In float64 (mean, invstd: the forward's), results in x's
    dtype."""
    n = x.shape[0] * x.shape[2]
    gamma = np.ones(x.shape[1]) if weight is None else weight.astype(np.float64)
    dy = grad_out.astype(np.float64)
    x_hat = (x.astype(np.float64) - mean[:, None]) * invstd[:, None]
    sum_dy = dy.sum(axis=(0, 2))
    sum_dy_xhat = (dy * x_hat).sum(axis=(0, 2))
    dx = None
    if need_dx and training:
        dx = (gamma * invstd / n)[:, None] * (n * dy - sum_dy[:, None]
                                              - x_hat * sum_dy_xhat[:, None])
    elif need_dx:
        dx = (gamma * invstd)[:, None] * dy
    dx = None if dx is None else dx.astype(x.dtype)
    return dx, sum_dy_xhat.astype(x.dtype), sum_dy.astype(x.dtype)


# ----------------------------------------------------------------------------------------------
# Reference mode: the engine runs the functions above instead of the Cython kernels
# ----------------------------------------------------------------------------------------------

_ENVIRONMENT = "TINYGRAD_CONV_REFERENCE_KERNELS"


def _from_environment() -> bool:
    value = os.environ.get(_ENVIRONMENT, "")
    if value not in ("", "0", "1"):
        raise ValueError(f"{_ENVIRONMENT} must be 1 (reference kernels) or 0, got {value!r}")
    return value == "1"


_AT_START = _from_environment()
_mode = threading.local()  # each thread has its own switch, starting from the environment's


def enabled() -> bool:
    """Whether conv2d, the pooling ops and batch_norm run this module's functions in this
    thread."""
    return getattr(_mode, "on", _AT_START)


class reference_kernels(contextlib.ContextDecorator):
    """Within this block (or decorated function), in this thread, conv2d and the pooling ops
    compute with this module's NumPy formulas instead of the Cython kernels: slower, the same
    numbers to rounding (bit for bit what these functions return), and every line can be
    stepped through with pdb. `reference_kernels(False)` turns the kernels back on inside."""

    def __init__(self, on: bool = True) -> None:
        if not isinstance(on, bool):
            raise TypeError(f"reference_kernels: on must be a bool, got {on!r}")
        self._on = on
        self._previous: list[bool] = []

    def __enter__(self) -> reference_kernels:
        self._previous.append(enabled())
        _mode.on = self._on
        return self

    def __exit__(self, *exc) -> None:
        _mode.on = self._previous.pop()
