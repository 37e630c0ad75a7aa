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
from tinygrad_conv.autograd import Function
from tinygrad_conv.dtypes import FLOAT_DTYPES as _FLOAT_DTYPES


def unbroadcast(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum `grad` over the axes broadcasting stretched, so that it has `shape` again."""
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra:
        grad = grad.sum(axis=tuple(range(extra)))
    stretched = tuple([i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1])
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


def logic(op: str, ufunc, a: np.ndarray, b, dtype: np.dtype, integers_only: bool):
    """A comparison or bitwise `ufunc` on arrays `a` and `b` in `dtype`: no gradient flows
    through it, so it is no Function."""
    if integers_only and dtype.kind == "f":
        raise TypeError(f"{op}: needs bool or integer tensors, got {dtype}")
    a = a.astype(dtype, copy=False)
    b = b.astype(dtype, copy=False)
    try:
        return np.asarray(ufunc(a, b))
    except ValueError:
        raise _broadcast_error(op, a, b) from None


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


class PowTensor(Function):
    """a ** b elementwise, for tensors (or a number and a tensor) of one dtype."""

    def forward(ctx, a, b):
        try:
            out = a ** b
        except ValueError as e:
            if "negative integer powers" in str(e):
                raise ValueError("pow: integers to negative integer powers are not allowed; "
                                 "use .float() first") from None
            raise _broadcast_error("pow", a, b) from None
        ctx.save_for_backward(a, b, out)
        return out

    # d(a^b)/da = b * a^(b-1) (0 where b = 0), d(a^b)/db = a^b * log(a) (0 where a = 0 and
    # b >= 0, where 0 * log 0 is 0 * -inf): PyTorch's rules at the edges
    def backward(ctx, g):
        a, b, out = ctx.saved_values
        da = db = None
        with np.errstate(divide="ignore", invalid="ignore"):
            if ctx.needs_input_grad[0]:
                da = np.where(b == 0, 0, g * b * a ** (b - 1)).astype(g.dtype, copy=False)
                da = unbroadcast(da, a.shape)
            if ctx.needs_input_grad[1]:
                db = np.where((a == 0) & (b >= 0), 0, g * out * np.log(a)).astype(g.dtype,
                                                                                 copy=False)
                db = unbroadcast(db, b.shape)
        return da, db


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


# below this many elements numpy's two quick passes cost less than a kernel call
_RELU_KERNEL_MIN = 4096
_ZEROS: dict = {}


def _zero(dtype: np.dtype) -> np.ndarray:
    """0 as a 0-d array of `dtype`: numpy combines it with an array faster than a number."""
    zero = _ZEROS.get(dtype.char)
    if zero is None:
        zero = _ZEROS[dtype.char] = np.zeros((), dtype)
    return zero


class ReLU(Function):
    def forward(ctx, x):
        if x.dtype.kind == "b":
            raise TypeError("relu: a bool tensor is not supported (as in PyTorch)")
        if x.dtype in _FLOAT_DTYPES and x.size >= _RELU_KERNEL_MIN:  # one pass, on threads
            out = _elementwise.relu_forward(np.ascontiguousarray(x).reshape(-1))
            out = out.reshape(x.shape)
        else:
            zero = _zero(x.dtype)
            out = np.maximum(x, zero)  # a NaN stays NaN
            if x.dtype.kind == "f":
                out += zero  # -0.0 becomes 0.0, as the kernel's select gives: the same bits
        ctx.save_for_backward(out)
        return out

    # d(relu x)/dx = 0 where x <= 0, else 1 (PyTorch's rule: 0 at x = 0, and a NaN input,
    # whose output is NaN, passes its gradient on): g where not (out <= 0), else 0
    def backward(ctx, g):
        (out,) = ctx.saved_values
        if out.dtype in _FLOAT_DTYPES and g.dtype == out.dtype and out.size >= _RELU_KERNEL_MIN:
            grad = _elementwise.relu_backward(out.reshape(-1), np.ascontiguousarray(g).reshape(-1))
            return grad.reshape(out.shape)
        grad = np.array(g, dtype=out.dtype if out.dtype.kind == "f" else g.dtype)
        # a select, never a product: an Inf in g where out <= 0 gives 0
        grad[out <= _zero(out.dtype)] = _zero(grad.dtype)
        return grad


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


def one_axis(op: str, shape: tuple[int, ...], axis) -> int:
    """A single axis as a non-negative int, or an error naming the op and the shape."""
    if not isinstance(axis, (int, np.integer)) or isinstance(axis, bool):
        raise TypeError(f"{op}: axis must be an int, got {axis!r}")
    ndim = max(len(shape), 1)
    if not -ndim <= axis < ndim:
        raise ValueError(f"{op}: axis {axis} is out of range for a tensor of shape {shape}")
    return int(axis) % ndim


def reduce_args(op: str, shape: tuple[int, ...], axis, keepdims, dim, keepdim):
    """Accept numpy's (axis, keepdims) or PyTorch's (dim, keepdim); return a normalised pair."""
    if dim is not None:
        if axis is not None:
            raise TypeError(f"{op}: give axis or dim, not both")
        axis = dim
    if keepdim is not None:
        keepdims = keepdim
    if axis is None:
        return None, bool(keepdims)
    axes = tuple(axis) if isinstance(axis, (tuple, list)) else (axis,)
    axes = tuple(one_axis(op, shape, a) for a in axes)
    if len(set(axes)) != len(axes):
        raise ValueError(f"{op}: axis {axis} repeats an axis")
    if not axes or not shape:
        # PyTorch's meaning: dim=() reduces every axis, and a 0-d tensor's dim 0 is itself
        return None, bool(keepdims)
    return axes, bool(keepdims)


def arg_reduce(op: str, reduce, x: np.ndarray, dim, keepdim: bool) -> np.ndarray:
    """The int64 indices argmax/argmin give (PyTorch's meaning of dim=None and keepdim)."""
    if x.size == 0:
        raise ValueError(f"{op}: cannot take the {op} of an empty tensor of shape {x.shape}")
    if dim is None:
        index = np.asarray(reduce(x), dtype=np.int64)
        return index.reshape((1,) * x.ndim) if keepdim else index
    axis = one_axis(op, x.shape, dim)
    if x.ndim == 0:  # dim 0 (or -1) of a 0-d tensor is the tensor itself
        return np.zeros((), dtype=np.int64)
    return np.asarray(reduce(x, axis=axis, keepdims=bool(keepdim)), dtype=np.int64)


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


def flattened_shape(shape: tuple[int, ...], start_dim: int, end_dim: int) -> tuple:
    """`shape` with axes start_dim..end_dim merged into one (`flatten`)."""
    if not shape:
        return (1,)
    start = one_axis("flatten", shape, start_dim)
    end = one_axis("flatten", shape, end_dim)
    if start > end:
        raise ValueError(
            f"flatten: start_dim {start_dim} comes after end_dim {end_dim} for shape {shape}")
    # the merged size spelled out: -1 is ambiguous when a size is 0 (an empty batch)
    return shape[:start] + (math.prod(shape[start:end + 1]),) + shape[end + 1:]


def permutation(op: str, shape: tuple[int, ...], dims) -> tuple[int, ...]:
    """`dims` as non-negative axes, if they are a permutation of the axes of `shape`."""
    if len(dims) != len(shape) or sorted(one_axis(op, shape, d) for d in dims) != list(
            range(len(shape))):
        raise ValueError(
            f"{op}: dims {tuple(dims)} are not a permutation of the {len(shape)} axes of a "
            f"tensor of shape {shape}")
    return tuple(one_axis(op, shape, d) for d in dims)


def swapped_axes(shape: tuple[int, ...], dim0: int, dim1: int) -> tuple[int, ...]:
    """The permutation `transpose(dim0, dim1)` makes: two axes swapped."""
    if len(shape) < 2:
        raise ValueError(f"transpose: needs at least 2 dimensions, shape is {shape}")
    axes = list(range(len(shape)))
    a, b = one_axis("transpose", shape, dim0), one_axis("transpose", shape, dim1)
    axes[a], axes[b] = axes[b], axes[a]
    return tuple(axes)


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


def plain_index(index, tensor_type: type):
    """An index with Tensors and lists replaced by numpy arrays; a slice with a negative step
    (`t[::-1]`) is refused, as PyTorch refuses it."""
    if isinstance(index, tuple):
        return tuple(plain_index(i, tensor_type) for i in index)
    if isinstance(index, tensor_type):
        return index.data
    if isinstance(index, list):
        return np.asarray(index)
    if isinstance(index, slice) and isinstance(index.step, (int, np.integer)) \
            and index.step <= 0:
        raise ValueError(f"index: step must be greater than zero, got {index.step} (as in "
                         "PyTorch); to reverse, index with np.arange(n - 1, -1, -1)")
    return index


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
    """Mean over the batch of -logp[i, target_i], for logp of shape (N, C) and targets (N,);
    logp of shape (C,) with one target is a batch of one. An empty batch gives NaN (0/0, as in
    PyTorch)."""

    def forward(ctx, logp, targets):
        rows = logp.reshape(math.prod(logp.shape[:-1]), logp.shape[-1])
        targets = targets.reshape(-1)
        ctx.save_for_backward(logp.shape, logp.dtype, targets)
        if not len(targets):
            return np.array(np.nan, dtype=logp.dtype)
        return np.asarray(-np.mean(rows[np.arange(len(targets)), targets]))

    # only the target class of each row gets a gradient: -1/N
    def backward(ctx, g):
        shape, dtype, targets = ctx.saved_values
        grad = np.zeros(shape, dtype=dtype)
        n = len(targets)
        if n:
            grad.reshape(n, shape[-1])[np.arange(n), targets] = -g / n
        return grad
