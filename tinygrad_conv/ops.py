"""The ops of the engine: each is a Function with its forward and its backward side by side.

For every op, `backward` answers one question: given dL/d(out), what is dL/d(input)? The
derivative it uses is written in the comment above it. Binary ops broadcast like numpy, so their
backward sums the gradient back to each input's shape (`unbroadcast`).

Order: elementwise binary, elementwise unary, reductions, matmul, shape ops, softmax and losses.
The convolution and pooling ops are in `cnn_ops.py`.
"""

from __future__ import annotations

import math

import numpy as np

from tinygrad_conv import _elementwise
from tinygrad_conv._matmul import matmul as _matmul_kernel
from tinygrad_conv.tensor import _FLOAT_DTYPES, Function, Tensor


def unbroadcast(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum `grad` over the axes broadcasting stretched, so that it has `shape` again."""
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra:
        grad = grad.sum(axis=tuple(range(extra)))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if stretched:
        grad = grad.sum(axis=stretched, keepdims=True)
    return grad


def _broadcast_error(op: str, a: np.ndarray, b: np.ndarray) -> ValueError:
    return ValueError(f"{op}: shapes {a.shape} and {b.shape} cannot be broadcast together")


# ----------------------------------------------------------------------------------------------
# Elementwise, two inputs
# ----------------------------------------------------------------------------------------------


class Add(Function):
    def forward(ctx, a, b):
        try:
            out = a + b
        except ValueError:
            raise _broadcast_error("add", a, b) from None
        ctx.save_for_backward(a.shape, b.shape)
        return out

    # d(a+b)/da = 1, d(a+b)/db = 1
    def backward(ctx, g):
        a_shape, b_shape = ctx.saved_values
        return unbroadcast(g, a_shape), unbroadcast(g, b_shape)


class Sub(Function):
    def forward(ctx, a, b):
        try:
            out = a - b
        except ValueError:
            raise _broadcast_error("sub", a, b) from None
        ctx.save_for_backward(a.shape, b.shape)
        return out

    # d(a-b)/da = 1, d(a-b)/db = -1
    def backward(ctx, g):
        a_shape, b_shape = ctx.saved_values
        db = unbroadcast(-g, b_shape) if ctx.needs_input_grad[1] else None
        return unbroadcast(g, a_shape), db


class Mul(Function):
    def forward(ctx, a, b):
        try:
            out = a * b
        except ValueError:
            raise _broadcast_error("mul", a, b) from None
        # NOTE: each input is saved only if the other one's gradient needs it (as PyTorch does):
        # a weight changed in place that no formula uses is then no error
        need_a, need_b = ctx.needs_input_grad
        ctx.save_for_backward(a if need_b else None, b if need_a else None, a.shape, b.shape)
        return out

    # d(a*b)/da = b, d(a*b)/db = a
    def backward(ctx, g):
        a, b, a_shape, b_shape = ctx.saved_values
        da = unbroadcast(g * b, a_shape) if ctx.needs_input_grad[0] else None
        db = unbroadcast(g * a, b_shape) if ctx.needs_input_grad[1] else None
        return da, db


class Div(Function):
    def forward(ctx, a, b):
        try:
            out = a / b
        except ValueError:
            raise _broadcast_error("div", a, b) from None
        ctx.save_for_backward(a if ctx.needs_input_grad[1] else None, b, a.shape)
        return out

    # d(a/b)/da = 1/b, d(a/b)/db = -a/b^2
    def backward(ctx, g):
        a, b, a_shape = ctx.saved_values
        da = unbroadcast(g / b, a_shape) if ctx.needs_input_grad[0] else None
        db = unbroadcast(-g * a / (b * b), b.shape) if ctx.needs_input_grad[1] else None
        return da, db


# ----------------------------------------------------------------------------------------------
# Elementwise, one input
# ----------------------------------------------------------------------------------------------


class Neg(Function):
    def forward(ctx, x):
        if x.dtype == np.bool_:
            raise TypeError("neg: negating a bool tensor is not supported (as in PyTorch); use "
                            "~ to invert a mask")
        return -x

    def backward(ctx, g):
        return -g


class Pow(Function):
    """x ** p for a scalar exponent p."""

    def forward(ctx, x, exponent):
        ctx.save_for_backward(x, exponent)
        return x ** x.dtype.type(exponent)

    # d(x^p)/dx = p * x^(p-1), and 0 for p = 0 (x^0 = 1 is constant even at x = 0, where
    # p * x^(p-1) would be 0 * inf; PyTorch gives 0 there too)
    def backward(ctx, g):
        x, p = ctx.saved_values
        if p == 0:
            return np.zeros_like(g)
        p = x.dtype.type(p)
        return g * p * x ** (p - 1)


class Cast(Function):
    """x in another float dtype (float32 <-> float64)."""

    def forward(ctx, x, dtype):
        ctx.save_for_backward(x.dtype)
        return x.astype(dtype)

    # a cast changes the precision, not the value: the gradient goes back in x's own dtype
    def backward(ctx, g):
        (dtype,) = ctx.saved_values
        return g.astype(dtype)


class Exp(Function):
    def forward(ctx, x):
        out = np.exp(x)
        ctx.save_for_backward(out)
        return out

    # d(e^x)/dx = e^x, which forward already computed
    def backward(ctx, g):
        (out,) = ctx.saved_values
        return g * out


class Log(Function):
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return np.log(x)

    # d(log x)/dx = 1/x
    def backward(ctx, g):
        (x,) = ctx.saved_values
        return g / x


class ReLU(Function):
    def forward(ctx, x):
        if x.dtype == np.bool_:
            raise TypeError("relu: a bool tensor is not supported (as in PyTorch)")
        if x.dtype in _FLOAT_DTYPES:     # one pass on the kernels' threads
            out = _elementwise.relu_forward(np.ascontiguousarray(x).reshape(-1))
            out = out.reshape(x.shape)
        else:
            out = np.maximum(x, 0)
        ctx.save_for_backward(out)
        return out

    # d(relu x)/dx = 0 where x <= 0, else 1 (PyTorch's rule: 0 at x = 0, and a NaN input,
    # whose output is NaN, passes its gradient on): g where not (out <= 0), else 0
    def backward(ctx, g):
        (out,) = ctx.saved_values
        if out.dtype in _FLOAT_DTYPES and g.dtype == out.dtype:
            grad = _elementwise.relu_backward(out.reshape(-1), np.ascontiguousarray(g).reshape(-1))
            return grad.reshape(out.shape)
        return np.where(out <= 0, 0, g)


class Sigmoid(Function):
    def forward(ctx, x):
        # 1 / (1 + e^-x), computed from e^-|x| so that no exponential overflows
        e = np.exp(-np.abs(x))
        out = np.where(x >= 0, 1 / (1 + e), e / (1 + e))
        ctx.save_for_backward(out)
        return out

    # d(sigmoid x)/dx = sigmoid(x) * (1 - sigmoid(x))
    def backward(ctx, g):
        (out,) = ctx.saved_values
        return g * (1 - out) * out


class Tanh(Function):
    def forward(ctx, x):
        out = np.tanh(x)
        ctx.save_for_backward(out)
        return out

    # d(tanh x)/dx = 1 - tanh(x)^2
    def backward(ctx, g):
        (out,) = ctx.saved_values
        return g * (1 - out * out)


# ----------------------------------------------------------------------------------------------
# Reductions (axis is None or a tuple of non-negative axes, already checked by Tensor)
# ----------------------------------------------------------------------------------------------


def _expand(g: np.ndarray, shape: tuple[int, ...], axis, keepdims: bool) -> np.ndarray:
    """Undo a reduction's shape: put back the reduced axes as size 1, then broadcast."""
    if axis is None:
        axis = tuple(range(len(shape)))
    if not keepdims:
        g = np.expand_dims(g, axis)
    return np.broadcast_to(g, shape)


class Sum(Function):
    def forward(ctx, x, axis, keepdims):
        ctx.save_for_backward(x.shape, axis, keepdims)
        return np.sum(x, axis=axis, keepdims=keepdims)

    # every element contributed with weight 1: the gradient is copied back to each of them
    def backward(ctx, g):
        shape, axis, keepdims = ctx.saved_values
        return _expand(g, shape, axis, keepdims)


class Mean(Function):
    def forward(ctx, x, axis, keepdims):
        ctx.save_for_backward(x.shape, axis, keepdims)
        return np.mean(x, axis=axis, keepdims=keepdims)

    # every element contributed with weight 1/n
    def backward(ctx, g):
        shape, axis, keepdims = ctx.saved_values
        axes = range(len(shape)) if axis is None else axis
        n = int(np.prod([shape[a] for a in axes]))
        return _expand(g / g.dtype.type(max(n, 1)), shape, axis, keepdims)


class Max(Function):
    def forward(ctx, x, axis, keepdims):
        if x.size == 0:
            raise ValueError(f"max: cannot reduce an empty tensor of shape {x.shape}")
        out = np.max(x, axis=axis, keepdims=True)
        ctx.save_for_backward(x, out, axis, keepdims)
        return out if keepdims else np.squeeze(out, axis=axis)

    # the gradient goes to the maximal element; ties share it equally (PyTorch's amax rule)
    def backward(ctx, g):
        x, out, axis, keepdims = ctx.saved_values
        winners = (x == out).astype(x.dtype)
        share = winners / np.sum(winners, axis=axis, keepdims=True)
        g = g if keepdims else np.expand_dims(g, tuple(range(x.ndim)) if axis is None else axis)
        return share * g


# ----------------------------------------------------------------------------------------------
# Matrix product (numpy's matmul semantics: 1-D operands, batched and broadcast stacks)
# ----------------------------------------------------------------------------------------------


def _blas_layout(x: np.ndarray) -> tuple[np.ndarray, bool]:
    """x as (row-major matrix, transposed?): a transposed view is passed as its C-ordered base."""
    if x.flags.c_contiguous:
        return x, False
    if x.T.flags.c_contiguous:
        return x.T, True
    return np.ascontiguousarray(x), False


def matmul2d(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b. Two float matrices of one dtype go to the kernels' BLAS on the kernels' threads
    (src/matmul.pyx says why); anything else, or sizes beyond BLAS's 32-bit ints, to numpy."""
    if a.ndim == 2 and b.ndim == 2 and a.dtype == b.dtype and a.dtype.kind == "f" \
            and a.dtype.itemsize in (4, 8) and max(a.shape + b.shape) < 2**31:
        (a_rows, trans_a), (b_rows, trans_b) = _blas_layout(a), _blas_layout(b)
        return _matmul_kernel(a_rows, b_rows, trans_a, trans_b)
    return a @ b


def _stand_in(x: np.ndarray) -> np.ndarray:
    """An array of x's shape and dtype that holds (and keeps alive) no values."""
    return np.broadcast_to(np.zeros((), dtype=x.dtype), x.shape)


class MatMul(Function):
    def forward(ctx, a, b):
        if a.ndim == 0 or b.ndim == 0:
            raise ValueError(
                f"matmul: both operands need at least 1 dimension, got shapes {a.shape} and "
                f"{b.shape}")
        k_b = b.shape[-2] if b.ndim > 1 else b.shape[0]
        if a.shape[-1] != k_b:
            raise ValueError(
                f"matmul: shapes {a.shape} and {b.shape} do not align: {a.shape[-1]} (last dim "
                f"of the first) != {k_b} ({'second-to-last' if b.ndim > 1 else 'only'} dim of "
                "the second)")
        try:
            out = matmul2d(a, b)
        except ValueError:
            raise ValueError(
                f"matmul: the batch dimensions of {a.shape} and {b.shape} cannot be broadcast "
                "together") from None
        # each operand only if the other's gradient needs it; a zero-size stand-in keeps the
        # shape and dtype the formulas below read
        need_a, need_b = ctx.needs_input_grad
        ctx.save_for_backward(a if need_b else _stand_in(a), b if need_a else _stand_in(b))
        return out

    # out = a @ b:  dL/da = g @ b^T,  dL/db = a^T @ g  (then summed over broadcast batch dims)
    def backward(ctx, g):
        a, b = ctx.saved_values
        # treat 1-D operands as a row (a) or a column (b) so the formulas stay the same
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        if a.ndim == 1 and b.ndim == 1:
            g = g.reshape(1, 1)
        elif a.ndim == 1:
            g = np.expand_dims(g, -2)
        elif b.ndim == 1:
            g = np.expand_dims(g, -1)
        da = db = None
        if ctx.needs_input_grad[0]:
            da = unbroadcast(matmul2d(g, np.swapaxes(b2, -1, -2)), a2.shape).reshape(a.shape)
        if ctx.needs_input_grad[1]:
            db = unbroadcast(matmul2d(np.swapaxes(a2, -1, -2), g), b2.shape).reshape(b.shape)
        return da, db


class Linear(Function):
    """x @ W^T + b for x (..., in), W (out, in), b (out,): the fully connected layer.

    One op rather than `x @ W.T + b` so that dL/dW comes out directly in W's own row-major
    layout (as the product Z'^T @ x) instead of as a transposed view that every optimizer step
    would then walk with strided loops.
    """

    def forward(ctx, x, w, b=None):
        x2 = x.reshape(math.prod(x.shape[:-1]), x.shape[-1])  # not -1: a size may be 0
        out = matmul2d(x2, w.T)
        if b is not None:
            out += b
        # x only if dL/dW needs it, W only if dL/dx does (as PyTorch's addmm saves them)
        need_x, need_w = ctx.needs_input_grad[:2]
        ctx.save_for_backward(x2 if need_w else None, w if need_x else _stand_in(w), x.shape)
        return out.reshape(x.shape[:-1] + (w.shape[0],))

    # out = x W^T + b:  dL/dx = g W,  dL/dW = g^T x,  dL/db = g summed over the batch
    def backward(ctx, g):
        x2, w, x_shape = ctx.saved_values
        g2 = g.reshape(math.prod(x_shape[:-1]), w.shape[0])
        dx = matmul2d(g2, w).reshape(x_shape) if ctx.needs_input_grad[0] else None
        dw = matmul2d(g2.T, x2) if ctx.needs_input_grad[1] else None
        if len(ctx.needs_input_grad) == 2:
            return dx, dw
        db = g2.sum(axis=0) if ctx.needs_input_grad[2] else None
        return dx, dw, db


# ----------------------------------------------------------------------------------------------
# Shape ops: they move values around, so backward moves the gradient back
# ----------------------------------------------------------------------------------------------


class Reshape(Function):
    def forward(ctx, x, shape):
        try:
            out = x.reshape(shape)
        except (ValueError, TypeError):
            raise ValueError(
                f"reshape: cannot reshape a tensor of shape {x.shape} ({x.size} elements) into "
                f"{tuple(shape)}") from None
        ctx.save_for_backward(x.shape)
        return out

    def backward(ctx, g):
        (shape,) = ctx.saved_values
        return g.reshape(shape)


class Permute(Function):
    def forward(ctx, x, axes):
        ctx.save_for_backward(axes)
        return np.transpose(x, axes)

    # the inverse permutation puts every axis back where it came from
    def backward(ctx, g):
        (axes,) = ctx.saved_values
        return np.transpose(g, np.argsort(axes))


def _is_basic(index) -> bool:
    """True for indexes made of ints, slices, None and Ellipsis only (no element repeats)."""
    items = index if isinstance(index, tuple) else (index,)
    return all(
        i is None or i is Ellipsis or isinstance(i, (slice, int, np.integer)) for i in items)


class Index(Function):
    def forward(ctx, x, index):
        try:
            out = x[index]
        except IndexError as e:
            raise IndexError(f"index: {e} (tensor of shape {x.shape})") from None
        ctx.save_for_backward(x.shape, x.dtype, index)
        return np.array(out, copy=True) if np.ndim(out) else np.asarray(out)

    # each selected element sends its gradient back to where it was taken from; an element
    # picked twice by an integer array gets both contributions (np.add.at adds repeats)
    def backward(ctx, g):
        shape, dtype, index = ctx.saved_values
        grad = np.zeros(shape, dtype=dtype)
        if _is_basic(index):
            grad[index] = g
        else:
            np.add.at(grad, index, g)
        return grad


# ----------------------------------------------------------------------------------------------
# Softmax and the losses
# ----------------------------------------------------------------------------------------------


class LogSoftmax(Function):
    def forward(ctx, x, axis):
        # log softmax(x) = x - max - log(sum(exp(x - max))): the max keeps exp from overflowing
        shifted = x - np.max(x, axis=axis, keepdims=True)
        out = shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))
        ctx.save_for_backward(out, axis)
        return out

    # dL/dx = g - softmax(x) * sum(g)
    def backward(ctx, g):
        out, axis = ctx.saved_values
        return g - np.exp(out) * np.sum(g, axis=axis, keepdims=True)


class Softmax(Function):
    def forward(ctx, x, axis):
        e = np.exp(x - np.max(x, axis=axis, keepdims=True))
        out = e / np.sum(e, axis=axis, keepdims=True)
        ctx.save_for_backward(out, axis)
        return out

    # dL/dx = softmax * (g - sum(g * softmax))
    def backward(ctx, g):
        out, axis = ctx.saved_values
        return out * (g - np.sum(g * out, axis=axis, keepdims=True))


class NLLLoss(Function):
    """Mean over the batch of -logp[i, target_i], for logp of shape (N, C)."""

    def forward(ctx, logp, targets):
        n = logp.shape[0]
        ctx.save_for_backward(logp.shape, logp.dtype, targets)
        return np.asarray(-np.mean(logp[np.arange(n), targets]))

    # only the target class of each row gets a gradient: -1/N
    def backward(ctx, g):
        shape, dtype, targets = ctx.saved_values
        grad = np.zeros(shape, dtype=dtype)
        grad[np.arange(shape[0]), targets] = -g / shape[0]
        return grad


def _class_targets(op: str, logits: Tensor, targets) -> np.ndarray:
    """Check integer class targets for logits of shape (N, C); return them as an int64 array."""
    if not isinstance(logits, Tensor):
        raise TypeError(f"{op}: input must be a Tensor, got {type(logits).__name__}")
    if logits.ndim != 2:
        raise ValueError(f"{op}: input must have shape (N, C), got {logits.shape}")
    t = targets.data if isinstance(targets, Tensor) else np.asarray(targets)
    if t.dtype.kind not in "iu":
        raise TypeError(
            f"{op}: targets must be integer class indices, got dtype {t.dtype}"
            + (" (float targets: use .astype(np.int64) if they are class numbers)"
               if t.dtype.kind == "f" else ""))
    n, c = logits.shape
    if t.shape != (n,):
        raise ValueError(
            f"{op}: targets must have shape ({n},) to match input {logits.shape}, got {t.shape}")
    if n and (t.min() < 0 or t.max() >= c):
        bad = t[(t < 0) | (t >= c)]
        raise ValueError(
            f"{op}: targets must lie in [0, {c - 1}] for {c} classes, found {bad[:5].tolist()}")
    if n == 0:
        raise ValueError(f"{op}: the batch is empty (input shape {logits.shape})")
    return t.astype(np.int64, copy=False)


def log_softmax(x: Tensor, axis: int = -1, *, dim=None) -> Tensor:
    return x.log_softmax(axis, dim=dim)


def softmax(x: Tensor, axis: int = -1, *, dim=None) -> Tensor:
    return x.softmax(axis, dim=dim)


def nll_loss(logp: Tensor, targets) -> Tensor:
    """Mean negative log-likelihood of integer `targets` (N,) under log-probabilities (N, C)."""
    return NLLLoss.apply(logp, targets=_class_targets("nll_loss", logp, targets))


def cross_entropy(logits: Tensor, targets) -> Tensor:
    """Mean cross-entropy of integer class `targets` (N,) for raw scores `logits` (N, C)."""
    targets = _class_targets("cross_entropy", logits, targets)
    return NLLLoss.apply(logits.log_softmax(axis=1), targets=targets)


def mse_loss(input: Tensor, target) -> Tensor:
    """Mean of (input - target)^2; the shapes must match (no silent broadcasting)."""
    target_shape = np.shape(target.data if isinstance(target, Tensor) else target)
    if input.shape != target_shape:
        raise ValueError(
            f"mse_loss: input shape {input.shape} and target shape {target_shape} differ")
    diff = input - target
    return (diff * diff).mean()
