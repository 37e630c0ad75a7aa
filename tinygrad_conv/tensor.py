"""The Tensor, the Function every op is built from, and backpropagation.

Read top to bottom:
1. `no_grad`: a switch that stops the graph from being recorded; `detect_anomaly`: a switch
   that makes the first op to produce a NaN or Inf say so.
2. `Function`: an op. `forward` computes the output from numpy arrays, `backward` turns the
   gradient of the output into a gradient for each input. `apply` runs the forward and, when
   any input requires a gradient, records the op on the graph.
3. `Tensor`: a numpy array plus the op that produced it (`_ctx`) and its gradient (`grad`).
   `Tensor.backward` walks the recorded graph from the loss back to the leaves, in topological
   order, iteratively (a chain of 100,000 ops needs no deep recursion), adding up gradients.
The ops themselves (add, matmul, sum, log_softmax, ...) live in `ops.py`; the convolution and
pooling ops in `cnn_ops.py`.
"""

from __future__ import annotations

import contextlib
import os
import sys

import numpy as np

# ----------------------------------------------------------------------------------------------
# 1. Recording on or off
# ----------------------------------------------------------------------------------------------

_grad_enabled = True


class no_grad(contextlib.ContextDecorator):
    """Within this block (or decorated function) no op is recorded on the graph.

    >>> with no_grad():
    ...     y = x * 2          # y.requires_grad is False, nothing is saved for backward
    """

    def __init__(self) -> None:
        self._previous: list[bool] = []

    def __enter__(self) -> no_grad:
        global _grad_enabled
        self._previous.append(_grad_enabled)
        _grad_enabled = False
        return self

    def __exit__(self, *exc) -> None:
        global _grad_enabled
        _grad_enabled = self._previous.pop()


def is_grad_enabled() -> bool:
    return _grad_enabled


_anomaly_enabled = False
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


class detect_anomaly(contextlib.ContextDecorator):
    """Within this block the first op whose forward or backward produces a NaN or Inf raises a
    RuntimeError naming the op, its input shapes, the pass and the line of user code that created
    it. Outside it nothing is checked (one flag test per op)."""

    def __init__(self) -> None:
        self._previous: list[bool] = []

    def __enter__(self) -> detect_anomaly:
        global _anomaly_enabled
        self._previous.append(_anomaly_enabled)
        _anomaly_enabled = True
        return self

    def __exit__(self, *exc) -> None:
        global _anomaly_enabled
        _anomaly_enabled = self._previous.pop()


def _user_line() -> str:
    """`file:line in function` of the innermost frame outside this package."""
    frame = sys._getframe(1)
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(
            _PACKAGE_DIR + os.sep):
        frame = frame.f_back
    if frame is None:
        return "<unknown>"
    return f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"


def _check_finite(ctx: Function, tensors, values, stage: str) -> None:
    """Raise if any of `values` (arrays or None) holds a NaN or Inf (anomaly mode only)."""
    for v in values:
        if v is not None and v.dtype.kind == "f" and not np.isfinite(v).all():
            kind = "NaN" if np.isnan(v).any() else "Inf"
            shapes = ", ".join(str(t.shape) for t in tensors)
            where = getattr(ctx, "created_at", None) or _user_line()
            raise RuntimeError(
                f"detect_anomaly: {type(ctx).__name__} produced {kind} in its {stage} "
                f"(input shapes {shapes}); the op was created at {where}")


# ----------------------------------------------------------------------------------------------
# 2. Function: one op, its forward and its backward side by side
# ----------------------------------------------------------------------------------------------


class Function:
    """Base class of every op.

    A subclass defines `forward(ctx, *arrays, **params) -> array` and
    `backward(ctx, grad_out) -> gradient or tuple of gradients` (one per tensor input, None
    where `ctx.needs_input_grad` says no gradient is wanted). `ctx` is the Function instance: the
    node of the graph, where forward leaves what backward will need.
    """

    __slots__ = ("parents", "needs_input_grad", "saved_values", "released", "created_at")

    def save_for_backward(self, *values) -> None:
        self.saved_values = values

    def forward(self, *arrays, **params) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} has no forward")

    def backward(self, grad_out: np.ndarray):
        raise NotImplementedError(f"{type(self).__name__} has no backward")

    @classmethod
    def apply(cls, *tensors: Tensor, **params) -> Tensor:
        """Run the op on the tensors' data; record it on the graph if a gradient will flow."""
        ctx = cls()
        ctx.needs_input_grad = needs = tuple([t.requires_grad for t in tensors])
        record = _grad_enabled and True in needs
        ctx.saved_values = ()
        ctx.released = False
        data = ctx.forward(*[t.data for t in tensors], **params)
        if _anomaly_enabled:
            ctx.created_at = _user_line()
            _check_finite(ctx, tensors, (data,), "forward")
        out = Tensor.__new__(Tensor)
        out.data = data
        out.grad = None
        if record:
            # the graph keeps each input's node, not its values: an intermediate's data is freed
            # as soon as neither the user nor a saved_for_backward needs it (as in PyTorch)
            ctx.parents = tuple([t if t._ctx is None else t._graph_node() for t in tensors])
            out.requires_grad = True
            out._ctx = ctx
        else:
            out.requires_grad = False
            out._ctx = None
        return out


# ----------------------------------------------------------------------------------------------
# 3. Tensor
# ----------------------------------------------------------------------------------------------

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_INT_DTYPE = np.dtype(np.int64)


def _as_dtype(dtype) -> np.dtype:
    """The dtype a user asked for, if it is one a Tensor can hold."""
    try:
        dt = np.dtype(getattr(dtype, "name", dtype) if not isinstance(dtype, np.dtype) else dtype)
    except TypeError:
        raise TypeError(
            f"Tensor: dtype {dtype!r} is not a dtype; use float32, float64 or int64") from None
    if dt in _FLOAT_DTYPES or dt == _INT_DTYPE:
        return dt
    raise TypeError(f"Tensor: dtype {dt} is not supported; use float32, float64 or int64")


def _to_array(data, dtype) -> np.ndarray:
    """A fresh numpy array for a new Tensor (PyTorch's rule: float data becomes float32 unless
    dtype says otherwise, integer and bool data become int64)."""
    if isinstance(data, Tensor):
        data = data.data
    try:
        array = np.asarray(data)
    except (ValueError, TypeError) as e:
        raise TypeError(f"Tensor: cannot make a tensor from {type(data).__name__}: {e}") from None
    kind = array.dtype.kind
    if kind not in "fiub":
        raise TypeError(
            f"Tensor: data of type {type(data).__name__} with dtype {array.dtype} is not numeric; "
            "give numbers (lists, scalars or numpy arrays of float, int or bool)")
    if dtype is not None:
        target = _as_dtype(dtype)
    else:
        target = _FLOAT_DTYPES[0] if kind == "f" else _INT_DTYPE
    return np.array(array, dtype=target, copy=True)


class Tensor:
    """A numpy array that remembers how it was made, so gradients can flow back through it.

    `data`: the values (numpy, float32 by default). `grad`: dL/d(this tensor) after a backward,
    same shape and dtype as `data`, else None. `requires_grad`: whether gradients flow here.
    """

    __slots__ = ("data", "grad", "requires_grad", "_ctx", "_node", "__weakref__")
    # numpy must hand `array + tensor` to Tensor.__radd__ instead of looping over the tensor
    __array_ufunc__ = None

    def __init__(self, data, requires_grad: bool = False, dtype=None) -> None:
        self.data = _to_array(data, dtype)
        if requires_grad and self.data.dtype not in _FLOAT_DTYPES:
            raise TypeError(
                f"Tensor: only float tensors can require grad, this one is {self.data.dtype}")
        self.grad: np.ndarray | None = None
        self.requires_grad = bool(requires_grad)
        self._ctx: Function | None = None

    def _graph_node(self) -> GraphNode:
        """What the graph keeps of this (non-leaf) tensor; one per tensor, so a tensor used by
        two ops is one node and its gradient contributions add up."""
        node = getattr(self, "_node", None)
        if node is None:
            node = self._node = GraphNode(self._ctx, self.data.shape, self.data.dtype)
        return node

    # -- what a tensor is ----------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def size(self) -> int:
        """The number of elements (numpy's meaning; PyTorch's `size()` is our `shape`)."""
        return self.data.size

    @property
    def grad_fn(self) -> Function | None:
        return self._ctx

    @property
    def is_leaf(self) -> bool:
        return self._ctx is None

    def __len__(self) -> int:
        return len(self.data)

    def item(self) -> float | int:
        if self.data.size != 1:
            raise ValueError(f"item: only a one-element tensor has an item, shape is {self.shape}")
        return self.data.item()

    def numpy(self) -> np.ndarray:
        return self.data

    def detach(self) -> Tensor:
        """The same values, cut off from the graph (shares memory, like PyTorch)."""
        out = Tensor.__new__(Tensor)
        out.data, out.grad, out.requires_grad, out._ctx = self.data, None, False, None
        return out

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        if requires_grad and self.data.dtype not in _FLOAT_DTYPES:
            raise TypeError(
                f"requires_grad_: only float tensors can require grad, this one is {self.dtype}")
        self.requires_grad = bool(requires_grad)
        return self

    def __repr__(self) -> str:
        body = np.array2string(self.data, separator=", ", prefix="Tensor(", precision=4)
        extra = f", dtype={self.dtype}"
        if self._ctx is not None:
            extra += f", grad_fn={type(self._ctx).__name__}"
        elif self.requires_grad:
            extra += ", requires_grad=True"
        return f"Tensor({body}{extra})"

    def __bool__(self) -> bool:
        return bool(self.data)

    def __hash__(self) -> int:
        return id(self)

    # -- backpropagation -----------------------------------------------------------------------
    def backward(self, grad=None, retain_graph: bool = False) -> None:
        """Compute dself/dleaf for every leaf that requires grad and add it to `leaf.grad`.

        On a scalar the seed gradient is 1; otherwise `grad` (same shape as self) is the seed.
        The buffers ops saved for backward are released afterwards unless `retain_graph=True`.
        """
        if not self.requires_grad:
            raise RuntimeError(
                f"backward: this tensor (shape {self.shape}) does not require grad and has no "
                "graph; create the leaves with requires_grad=True")
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(
                    f"backward: grad can be implicitly created only for a scalar output, this "
                    f"tensor has shape {self.shape}; pass backward(grad=...) of that shape")
            seed = np.ones_like(self.data)
        else:
            seed = np.asarray(grad.data if isinstance(grad, Tensor) else grad, dtype=self.dtype)
            if seed.shape != self.shape:
                raise ValueError(
                    f"backward: grad has shape {seed.shape} but the tensor has shape {self.shape}")

        # dL/dnode for every node still waiting for all its consumers, keyed by id(node)
        pending: dict[int, np.ndarray] = {id(self): seed}
        for node in reversed(self._topological_order()):
            g = pending.pop(id(node), None)
            if g is None:
                continue
            ctx = node._ctx
            if ctx is None:  # a leaf: accumulate, like PyTorch
                if node.grad is None:
                    node.grad = np.array(g, dtype=node.data.dtype)  # own copy, never a view
                else:
                    node.grad = node.grad + g
                continue
            if ctx.released:
                raise RuntimeError(
                    f"backward: trying to backward through the graph a second time (through "
                    f"{type(ctx).__name__}); its saved buffers were freed after the first "
                    "backward. Pass retain_graph=True to the first backward to keep them.")
            grads = ctx.backward(g)
            if type(grads) is not tuple:
                grads = (grads,)
            if _anomaly_enabled:
                _check_finite(ctx, ctx.parents, grads, "backward")
            assert len(grads) == len(ctx.parents), f"{type(ctx).__name__}: one grad per input"
            for parent, pg in zip(ctx.parents, grads):
                if pg is None or not parent.requires_grad:
                    continue
                if pg.shape != parent.shape:
                    raise RuntimeError(
                        f"{type(ctx).__name__}.backward returned a gradient of shape {pg.shape} "
                        f"for an input of shape {parent.shape}")
                if pg.dtype != parent.dtype:  # mixed precision: each input its own dtype
                    pg = pg.astype(parent.dtype)
                key = id(parent)
                pending[key] = pg if key not in pending else pending[key] + pg
            if not retain_graph:
                ctx.saved_values = ()
                ctx.released = True

    def _topological_order(self, every_input: bool = False) -> list[Tensor]:
        """Every tensor that requires grad (or, with every_input, every tensor) and leads to
        self, each after all of its inputs; self comes last.

        An iterative depth-first search: a node is emitted once all its inputs were emitted.
        """
        order: list[Tensor] = []
        visited: set[int] = set()
        stack: list[tuple[Tensor, bool]] = [(self, False)]
        while stack:
            node, inputs_done = stack.pop()
            if inputs_done:
                order.append(node)
                continue
            if id(node) in visited:
                continue
            visited.add(id(node))
            stack.append((node, True))
            if node._ctx is not None:
                for parent in reversed(node._ctx.parents):  # so the first input comes first
                    if (every_input or parent.requires_grad) and id(parent) not in visited:
                        stack.append((parent, False))
        return order

    # -- arithmetic (the ops are in ops.py) ----------------------------------------------------
    def __add__(self, other) -> Tensor:
        return ops.Add.apply(self, _operand(other, self))

    def __radd__(self, other) -> Tensor:
        return ops.Add.apply(_operand(other, self), self)

    def __sub__(self, other) -> Tensor:
        return ops.Sub.apply(self, _operand(other, self))

    def __rsub__(self, other) -> Tensor:
        return ops.Sub.apply(_operand(other, self), self)

    def __mul__(self, other) -> Tensor:
        return ops.Mul.apply(self, _operand(other, self))

    def __rmul__(self, other) -> Tensor:
        return ops.Mul.apply(_operand(other, self), self)

    def __truediv__(self, other) -> Tensor:
        return ops.Div.apply(self, _operand(other, self))

    def __rtruediv__(self, other) -> Tensor:
        return ops.Div.apply(_operand(other, self), self)

    def __neg__(self) -> Tensor:
        return ops.Neg.apply(self)

    def __pow__(self, exponent) -> Tensor:
        if isinstance(exponent, (Tensor, np.ndarray)) or not np.isscalar(exponent) \
                or isinstance(exponent, (bool, complex, str)):
            raise TypeError(
                f"pow: the exponent must be a Python or numpy real scalar, got "
                f"{type(exponent).__name__}")
        return ops.Pow.apply(self, exponent=float(exponent))

    def __rpow__(self, base) -> Tensor:
        raise TypeError("pow: a tensor exponent is not supported; use exp(x * log(base))")

    def __matmul__(self, other) -> Tensor:
        return ops.MatMul.apply(self, _operand(other, self))

    def __rmatmul__(self, other) -> Tensor:
        return ops.MatMul.apply(_operand(other, self), self)

    # -- elementwise functions -----------------------------------------------------------------
    def exp(self) -> Tensor:
        return ops.Exp.apply(self)

    def log(self) -> Tensor:
        return ops.Log.apply(self)

    def relu(self) -> Tensor:
        return ops.ReLU.apply(self)

    def sigmoid(self) -> Tensor:
        return ops.Sigmoid.apply(self)

    def tanh(self) -> Tensor:
        return ops.Tanh.apply(self)

    # -- reductions: axis/keepdims (numpy) or dim/keepdim (PyTorch) ----------------------------
    def sum(self, axis=None, keepdims: bool = False, *, dim=None, keepdim=None) -> Tensor:
        axis, keepdims = _reduce_args("sum", self, axis, keepdims, dim, keepdim)
        return ops.Sum.apply(self, axis=axis, keepdims=keepdims)

    def mean(self, axis=None, keepdims: bool = False, *, dim=None, keepdim=None) -> Tensor:
        axis, keepdims = _reduce_args("mean", self, axis, keepdims, dim, keepdim)
        return ops.Mean.apply(self, axis=axis, keepdims=keepdims)

    def max(self, axis=None, keepdims: bool = False, *, dim=None, keepdim=None) -> Tensor:
        axis, keepdims = _reduce_args("max", self, axis, keepdims, dim, keepdim)
        return ops.Max.apply(self, axis=axis, keepdims=keepdims)

    def log_softmax(self, axis: int = -1, *, dim=None) -> Tensor:
        axis = _one_axis("log_softmax", self, axis if dim is None else dim)
        return ops.LogSoftmax.apply(self, axis=axis)

    def softmax(self, axis: int = -1, *, dim=None) -> Tensor:
        axis = _one_axis("softmax", self, axis if dim is None else dim)
        return ops.Softmax.apply(self, axis=axis)

    # -- shape ---------------------------------------------------------------------------------
    def reshape(self, *shape) -> Tensor:
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return ops.Reshape.apply(self, shape=shape)

    def view(self, *shape) -> Tensor:
        return self.reshape(*shape)

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> Tensor:
        if self.ndim == 0:
            return self.reshape(1)
        start = _one_axis("flatten", self, start_dim)
        end = _one_axis("flatten", self, end_dim)
        if start > end:
            raise ValueError(
                f"flatten: start_dim {start_dim} comes after end_dim {end_dim} for shape "
                f"{self.shape}")
        shape = self.shape
        return self.reshape(shape[:start] + (-1,) + shape[end + 1:])

    def permute(self, *dims) -> Tensor:
        if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
            dims = tuple(dims[0])
        if len(dims) != self.ndim or sorted(_one_axis("permute", self, d) for d in dims) != list(
                range(self.ndim)):
            raise ValueError(
                f"permute: dims {dims} are not a permutation of the {self.ndim} axes of a tensor "
                f"of shape {self.shape}")
        return ops.Permute.apply(self, axes=tuple(_one_axis("permute", self, d) for d in dims))

    def transpose(self, dim0: int = -2, dim1: int = -1) -> Tensor:
        """Swap two axes (PyTorch's meaning); `.T` reverses all of them (numpy's)."""
        if self.ndim < 2:
            raise ValueError(f"transpose: needs at least 2 dimensions, shape is {self.shape}")
        axes = list(range(self.ndim))
        a, b = _one_axis("transpose", self, dim0), _one_axis("transpose", self, dim1)
        axes[a], axes[b] = axes[b], axes[a]
        return ops.Permute.apply(self, axes=tuple(axes))

    @property
    def T(self) -> Tensor:
        return ops.Permute.apply(self, axes=tuple(range(self.ndim - 1, -1, -1)))

    def __getitem__(self, index) -> Tensor:
        return ops.Index.apply(self, index=_plain_index(index))


class GraphNode:
    """An intermediate tensor as the graph remembers it: the op that made it (`_ctx`), its shape
    and dtype, and no values. Backward needs nothing more of it: whatever values an op's backward
    uses, the op saved itself (`save_for_backward`)."""

    __slots__ = ("_ctx", "shape", "dtype", "__weakref__")
    requires_grad = True
    grad = None
    is_leaf = False

    def __init__(self, ctx: Function, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self._ctx, self.shape, self.dtype = ctx, shape, dtype

    @property
    def grad_fn(self) -> Function:
        return self._ctx

    @property
    def data(self) -> np.ndarray:
        """Zeros of the tensor's shape and dtype that take no memory (the values are gone)."""
        return np.broadcast_to(np.zeros((), dtype=self.dtype), self.shape)

    def __repr__(self) -> str:
        return f"GraphNode({type(self._ctx).__name__}, shape={self.shape}, dtype={self.dtype})"


# ----------------------------------------------------------------------------------------------
# Argument helpers
# ----------------------------------------------------------------------------------------------


def _operand(value, like: Tensor) -> Tensor:
    """The other side of a binary op as a Tensor. A Python number takes `like`'s dtype (it does
    not promote float32 to float64, as in PyTorch); a numpy array keeps its own dtype."""
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        dtype = like.dtype if like.dtype in _FLOAT_DTYPES or isinstance(value, int) \
            else _FLOAT_DTYPES[0]
        return Tensor(value, dtype=dtype)
    if isinstance(value, np.ndarray) and value.dtype in _FLOAT_DTYPES:
        return Tensor(value, dtype=value.dtype)
    return Tensor(value, dtype=like.dtype)


def _one_axis(op: str, t: Tensor, axis) -> int:
    """A single axis as a non-negative int, or a ValueError naming the op and the shape."""
    if not isinstance(axis, (int, np.integer)) or isinstance(axis, bool):
        raise TypeError(f"{op}: axis must be an int, got {axis!r}")
    ndim = max(t.ndim, 1)
    if not -ndim <= axis < ndim:
        raise ValueError(f"{op}: axis {axis} is out of range for a tensor of shape {t.shape}")
    return int(axis) % ndim


def _reduce_args(op: str, t: Tensor, axis, keepdims, dim, keepdim):
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
    axes = tuple(_one_axis(op, t, a) for a in axes)
    if len(set(axes)) != len(axes):
        raise ValueError(f"{op}: axis {axis} repeats an axis")
    return axes, bool(keepdims)


def _plain_index(index):
    """Replace Tensors inside an index with their integer arrays."""
    if isinstance(index, tuple):
        return tuple(_plain_index(i) for i in index)
    if isinstance(index, Tensor):
        return index.data
    if isinstance(index, list):
        return np.asarray(index)
    return index


# The ops need Function and Tensor from above; Tensor's methods need the ops.
from tinygrad_conv import ops  # noqa: E402
