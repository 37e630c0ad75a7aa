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
   `retain_grad()` and `register_hook(fn)` show (and may change) the gradient reaching any tensor.
4. The steps of backward, each a named helper: the seed, the hooks, one op's checked backward,
   accumulation into a leaf, and the topological order.
The ops themselves (add, matmul, sum, log_softmax, ...) live in `ops.py`; the convolution and
pooling ops in `cnn_ops.py`.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import sys
import threading
import weakref

import numpy as np

from tinygrad_conv import promotion

# ----------------------------------------------------------------------------------------------
# 1. Recording on or off
# ----------------------------------------------------------------------------------------------

class _Modes(threading.local):
    """Grad mode and anomaly mode, one pair per thread (as in PyTorch): a `no_grad()` block in
    one thread (an evaluation loop) does not stop another thread (training) from recording. A
    new thread starts with grad mode on and anomaly mode off. The stacks hold what each open
    `with` block restores when it exits."""

    grad_enabled = True
    anomaly_enabled = False

    def __init__(self) -> None:
        self.grad_stack: list[bool] = []
        self.anomaly_stack: list[bool] = []


_modes = _Modes()


class no_grad(contextlib.ContextDecorator):
    """Within this block (or decorated function) no op is recorded on the graph, in this thread.

    >>> with no_grad():
    ...     y = x * 2          # y.requires_grad is False, nothing is saved for backward
    """

    def __enter__(self) -> no_grad:
        _modes.grad_stack.append(_modes.grad_enabled)
        _modes.grad_enabled = False
        return self

    def __exit__(self, *exc) -> None:
        _modes.grad_enabled = _modes.grad_stack.pop()


def is_grad_enabled() -> bool:
    """Whether ops are recorded in this thread."""
    return _modes.grad_enabled


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


class detect_anomaly(contextlib.ContextDecorator):
    """Within this block the first op whose forward or backward produces a NaN or Inf raises a
    RuntimeError naming the op, its input shapes, the pass and the line of user code that created
    it. Outside it (and in other threads) nothing is checked (one flag test per op)."""

    def __enter__(self) -> detect_anomaly:
        _modes.anomaly_stack.append(_modes.anomaly_enabled)
        _modes.anomaly_enabled = True
        return self

    def __exit__(self, *exc) -> None:
        _modes.anomaly_enabled = _modes.anomaly_stack.pop()


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

    __slots__ = ("parents", "needs_input_grad", "saved_values", "saved_versions", "released",
                 "created_at")

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
        record = _modes.grad_enabled and True in needs
        ctx.saved_values = ()
        ctx.released = False
        data = ctx.forward(*[t.data for t in tensors], **params)
        if _modes.anomaly_enabled:
            ctx.created_at = _user_line()
            _check_finite(ctx, tensors, (data,), "forward")
        out = Tensor.__new__(Tensor)
        out.data = data
        out.grad = out._hooks = out._base = None
        out._version = 0
        if data.base is not None:  # a view (w.T, a reshape): changes to its leaf count here
            out._base = _viewed_leaf(data, tensors)
        if record:
            # the graph keeps each input's node, not its values: an intermediate's data is freed
            # as soon as neither the user nor a saved_for_backward needs it (as in PyTorch), and
            # an input that needs no gradient (a batch, a mask) becomes a node of shape and dtype
            # (a single number costs less than its node, so it stays)
            ctx.parents = tuple([t._graph_node() if t._ctx is not None else t if t.requires_grad
                                 or not t.data.ndim else t._constant_node() for t in tensors])
            ctx.saved_versions = _saved_versions(tensors, ctx.saved_values) \
                if ctx.saved_values else ()
            out.requires_grad = True
            out._ctx = ctx
        else:
            out.requires_grad = False
            out._ctx = None
        return out


# ----------------------------------------------------------------------------------------------
# 3. Tensor
# ----------------------------------------------------------------------------------------------

# The one definition of the dtypes a Tensor holds (every other module imports these).
_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_INT_DTYPE = np.dtype(np.int64)
_BOOL_DTYPE = np.dtype(np.bool_)
_INT64_MAX = np.iinfo(np.int64).max


def _as_dtype(dtype) -> np.dtype:
    """The dtype a user asked for, if it is one a Tensor can hold."""
    try:
        dt = np.dtype(getattr(dtype, "name", dtype) if not isinstance(dtype, np.dtype) else dtype)
    except TypeError:
        raise TypeError(
            f"Tensor: dtype {dtype!r} is not a dtype; use float32, float64, int64 or bool"
        ) from None
    if dt in _FLOAT_DTYPES or dt == _INT_DTYPE or dt == _BOOL_DTYPE:
        return dt
    raise TypeError(
        f"Tensor: dtype {dt} is not supported; use float32, float64, int64 or bool")


def float_dtype(where: str, dtype, default=np.float32) -> np.dtype:
    """`dtype` (None: `default`) as float32 or float64, else a TypeError naming `where`."""
    try:
        dt = np.dtype(default if dtype is None else getattr(dtype, "name", dtype))
    except TypeError:
        raise TypeError(f"{where}: dtype must be float32 or float64, got {dtype!r}") from None
    if dt not in _FLOAT_DTYPES:
        raise TypeError(f"{where}: dtype must be float32 or float64, got {dt}")
    return dt


def _default_dtype(data, array: np.ndarray) -> np.dtype:
    """PyTorch's rule (`torch.tensor`) for the dtype of data given without `dtype=`.

    numpy arrays and scalars (and Tensors) keep their float width: float64 stays float64,
    float32 stays float32. Python floats, and lists of them, become float32 (PyTorch's default
    dtype); a list holding numpy float64 values becomes float64, as in PyTorch. Integers and
    bools become int64. The one width we cannot hold, float16, becomes float32 (exactly).
    """
    kind = array.dtype.kind
    if kind == "b":
        return _BOOL_DTYPE
    if kind != "f":
        return _INT_DTYPE
    if isinstance(data, (list, tuple)):
        return _FLOAT_DTYPES[1] if _holds_numpy_float64(data) else _FLOAT_DTYPES[0]
    if isinstance(data, float) and not isinstance(data, np.generic):  # np.float64 is a float
        return _FLOAT_DTYPES[0]
    return array.dtype if array.dtype in _FLOAT_DTYPES else _FLOAT_DTYPES[0]


def _holds_numpy_float64(data) -> bool:
    """Whether a (nested) list or tuple holds a numpy float64 array or scalar anywhere."""
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, (list, tuple)):
            stack.extend(item)
        elif isinstance(item, (np.ndarray, np.generic)) and item.dtype == np.float64:
            return True
    return False


def _to_array(data, dtype) -> np.ndarray:
    """A fresh numpy array for a new Tensor: `dtype` if given, else PyTorch's rule
    (`_default_dtype`)."""
    if isinstance(data, Tensor):
        data = data.data
    try:
        array = np.asarray(data)
    except (ValueError, TypeError) as e:
        raise TypeError(f"Tensor: cannot make a tensor from {type(data).__name__}: {e}") from None
    if array.dtype.kind not in "fiub":
        if _huge_ints(data, array):
            raise ValueError(f"Tensor: {_huge_ints(data, array)} does not fit in int64 "
                             "(PyTorch refuses it too)")
        raise TypeError(
            f"Tensor: data of type {type(data).__name__} with dtype {array.dtype} is not numeric; "
            "give numbers (lists, scalars or numpy arrays of float, int or bool)")
    target = _as_dtype(dtype) if dtype is not None else _default_dtype(data, array)
    if (target == _INT_DTYPE or array.dtype.kind == "f") and _huge_ints(data, array):
        # numpy would wrap 2**63 to a negative number, or make [1, 2**63] a float list
        raise ValueError(f"Tensor: {_huge_ints(data, array)} does not fit in int64 (PyTorch "
                         "refuses it too)")
    return np.array(array, dtype=target, copy=True)


def _huge_ints(data, array: np.ndarray) -> int | None:
    """An integer of `data` beyond int64 (that numpy took as uint64, float64 or object), if
    `data` holds only integers; else None. Cheap unless such a number is there."""
    if array.dtype.kind == "u":
        return int(array.max()) if array.size and array.max() > _INT64_MAX else None
    if array.dtype.kind == "f":
        if not isinstance(data, (list, tuple)) or not array.size or not (
                np.abs(array).max() >= 2.0**63):
            return None
    elif array.dtype.kind != "O":
        return None
    stack, huge = [data], None
    while stack:
        item = stack.pop()
        if isinstance(item, (list, tuple)):
            stack.extend(item)
        elif isinstance(item, (int, np.integer)) and not isinstance(item, (bool, np.bool_)):
            if not -_INT64_MAX - 1 <= item <= _INT64_MAX:
                huge = int(item)
        else:
            return None  # a float (or anything else) makes it a float list: not our case
    return huge


class Tensor:
    """A numpy array that remembers how it was made, so gradients can flow back through it.

    `data`: the values (numpy; float32, float64 or int64). `grad`: dL/d(this tensor) after a
    backward, same shape and dtype as `data`, else None (kept on leaves, and on other tensors
    only after `retain_grad()`). `requires_grad`: whether gradients flow here.
    """

    __slots__ = ("data", "grad", "requires_grad", "_ctx", "_node", "_hooks", "_version",
                 "_base", "__weakref__")
    # numpy must hand `array + tensor` to Tensor.__radd__ instead of looping over the tensor
    __array_ufunc__ = None
    _is_weight = False  # True for nn.Parameter: watched for in-place changes even when frozen

    def __init__(self, data, requires_grad: bool = False, dtype=None) -> None:
        """`data`: numbers (a numpy array or scalar, a Python number, a (nested) list).

        Without `dtype`, PyTorch's rule (`torch.tensor`): a numpy float array keeps its dtype
        (float64 stays float64, float32 stays float32); Python floats and lists of them become
        float32; integers and bools become int64 (float16 becomes float32, the narrowest float
        a Tensor holds). `dtype` may be float32, float64 or int64. The data is always copied.
        """
        self.data = _to_array(data, dtype)
        if requires_grad and self.data.dtype not in _FLOAT_DTYPES:
            raise TypeError(
                f"Tensor: only float tensors can require grad, this one is {self.data.dtype}")
        self.grad: np.ndarray | None = None
        self.requires_grad = bool(requires_grad)
        self._ctx: Function | None = None
        self._hooks: dict | None = None  # see register_hook
        self._version = 0  # see bump_version
        self._base: Tensor | None = None  # the leaf whose values this tensor's data views

    def _graph_node(self) -> GraphNode:
        """What the graph keeps of this (non-leaf) tensor; one per tensor, so a tensor used by
        two ops is one node and its gradient contributions add up."""
        node = getattr(self, "_node", None)
        if node is None:
            node = self._node = GraphNode(self)
        return node

    # -- seeing the gradient of any tensor -----------------------------------------------------
    def retain_grad(self) -> None:
        """Keep this tensor's gradient in `.grad` after backward, though it is not a leaf (as
        PyTorch's `retain_grad`; on a leaf it changes nothing). Repeated backwards add up."""
        if not self.requires_grad:
            raise RuntimeError(
                f"retain_grad: this tensor (shape {self.shape}) does not require grad, so no "
                "gradient will reach it; make its inputs require grad first")
        if self._ctx is not None:
            node = self._graph_node()
            node.retains_grad = True
            if node._hooks is None:  # backward looks at a node's gradient only if this is set
                node._hooks = {}

    @property
    def retains_grad(self) -> bool:
        """True for a non-leaf on which `retain_grad()` was called."""
        node = getattr(self, "_node", None)
        return node is not None and node.retains_grad

    def register_hook(self, hook) -> RemovableHandle:
        """Call `hook(grad)` with dL/d(this tensor) each time backward computes it.

        `grad` is a read-only numpy array of this tensor's shape and dtype; if the hook returns
        an array (same shape and dtype), that replaces the gradient from there on: what flows
        to this tensor's inputs, what a leaf adds to `.grad`. Returning None keeps it. Hooks run
        in the order registered, and before `retain_grad` stores the gradient (as in PyTorch).
        Returns a handle whose `remove()` takes the hook off.
        """
        if not callable(hook):
            raise TypeError(f"register_hook: hook must be callable, got {type(hook).__name__}")
        if not self.requires_grad:
            raise RuntimeError(
                f"register_hook: this tensor (shape {self.shape}) does not require grad, so no "
                "gradient will reach it; make its inputs require grad first")
        holder = self if self._ctx is None else self._graph_node()
        if getattr(holder, "_hooks", None) is None:
            holder._hooks = {}
        return RemovableHandle(holder._hooks, hook)

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
        out._hooks = out._base = None
        out._version = 0
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
        Each node gets the sum of the gradients of all its consumers before its own op runs.
        """
        root = self._graph_node() if self._ctx is not None else self
        pending = {id(root): _seed(self, grad)}  # dL/dnode, summed over the consumers so far
        for node in reversed(_topological_order(root)):
            g = pending.pop(id(node), None)
            if g is None:
                continue                      # every path to it gave None: nothing to do
            if getattr(node, "_hooks", None) is not None:
                g = _run_hooks(node, g)       # register_hook, then retain_grad
            if node._ctx is None:
                _accumulate(node, g)          # a leaf: add into .grad, like PyTorch
                continue
            input_grads = _input_gradients(node._ctx, g, retain_graph)
            for parent, pg in zip(node._ctx.parents, input_grads):
                if pg is not None:
                    key = id(parent)
                    pending[key] = pg if key not in pending else pending[key] + pg

    def _topological_order(self, every_input: bool = False) -> list[Tensor]:
        """Every tensor leading to self, inputs first (see `_topological_order` below)."""
        return _topological_order(self, every_input)

    # -- arithmetic (the ops are in ops.py): operands promoted by PyTorch's rules --------------
    def __add__(self, other) -> Tensor:
        pair = _operands("add", self, other)
        return NotImplemented if pair is None else ops.Add.apply(*pair)

    def __radd__(self, other) -> Tensor:
        pair = _operands("add", self, other, reverse=True)
        return NotImplemented if pair is None else ops.Add.apply(*pair)

    def __sub__(self, other) -> Tensor:
        _refuse_bool_subtraction(self, other)
        pair = _operands("sub", self, other)
        return NotImplemented if pair is None else ops.Sub.apply(*pair)

    def __rsub__(self, other) -> Tensor:
        _refuse_bool_subtraction(self, other)
        pair = _operands("sub", self, other, reverse=True)
        return NotImplemented if pair is None else ops.Sub.apply(*pair)

    def __mul__(self, other) -> Tensor:
        pair = _operands("mul", self, other)
        return NotImplemented if pair is None else ops.Mul.apply(*pair)

    def __rmul__(self, other) -> Tensor:
        pair = _operands("mul", self, other, reverse=True)
        return NotImplemented if pair is None else ops.Mul.apply(*pair)

    def __truediv__(self, other) -> Tensor:
        pair = _operands("div", self, other, division=True)
        return NotImplemented if pair is None else ops.Div.apply(*pair)

    def __rtruediv__(self, other) -> Tensor:
        pair = _operands("div", self, other, reverse=True, division=True)
        return NotImplemented if pair is None else ops.Div.apply(*pair)

    def __neg__(self) -> Tensor:
        return ops.Neg.apply(self)

    def __pow__(self, exponent) -> Tensor:
        if isinstance(exponent, (Tensor, np.ndarray)) or not np.isscalar(exponent) \
                or isinstance(exponent, (bool, np.bool_, complex, np.complexfloating, str)):
            raise TypeError(
                f"pow: the exponent must be a Python or numpy real scalar, got "
                f"{type(exponent).__name__}")
        dtype = promotion.result_dtype([self.data], (exponent,))
        if dtype.kind != "f":
            if exponent < 0:
                raise ValueError(f"pow: integers to negative integer powers are not allowed "
                                 f"(a {self.dtype} tensor ** {exponent}); use .float() first")
            return ops.Pow.apply(_cast(self, dtype), exponent=int(exponent))
        return ops.Pow.apply(_cast(self, dtype), exponent=float(exponent))

    def __rpow__(self, base) -> Tensor:
        raise TypeError("pow: a tensor exponent is not supported; use exp(x * log(base))")

    def __matmul__(self, other) -> Tensor:
        pair = _operands("matmul", self, other)
        return NotImplemented if pair is None else ops.MatMul.apply(*pair)

    def __rmatmul__(self, other) -> Tensor:
        pair = _operands("matmul", self, other, reverse=True)
        return NotImplemented if pair is None else ops.MatMul.apply(*pair)

    # -- comparisons and logic: bool tensors, never part of the graph -------------------------
    def __eq__(self, other) -> Tensor:  # type: ignore[override]
        return _elementwise_logic("eq", np.equal, self, other)

    def __ne__(self, other) -> Tensor:  # type: ignore[override]
        return _elementwise_logic("ne", np.not_equal, self, other)

    def __lt__(self, other) -> Tensor:
        return _elementwise_logic("lt", np.less, self, other)

    def __le__(self, other) -> Tensor:
        return _elementwise_logic("le", np.less_equal, self, other)

    def __gt__(self, other) -> Tensor:
        return _elementwise_logic("gt", np.greater, self, other)

    def __ge__(self, other) -> Tensor:
        return _elementwise_logic("ge", np.greater_equal, self, other)

    def __and__(self, other) -> Tensor:
        return _elementwise_logic("and", np.bitwise_and, self, other, integers_only=True)

    def __or__(self, other) -> Tensor:
        return _elementwise_logic("or", np.bitwise_or, self, other, integers_only=True)

    def __xor__(self, other) -> Tensor:
        return _elementwise_logic("xor", np.bitwise_xor, self, other, integers_only=True)

    __rand__, __ror__, __rxor__ = __and__, __or__, __xor__

    def __invert__(self) -> Tensor:
        """`~mask`: logical not of a bool tensor, bitwise not of an int64 one."""
        if self.dtype.kind not in "bi":
            raise TypeError(f"invert: ~ needs a bool or integer tensor, got {self.dtype}")
        return _plain_tensor(np.invert(self.data))

    # -- elementwise functions -----------------------------------------------------------------
    # an integer or bool tensor gives float32, as in PyTorch
    def exp(self) -> Tensor:
        return ops.Exp.apply(_as_float(self))

    def log(self) -> Tensor:
        return ops.Log.apply(_as_float(self))

    def relu(self) -> Tensor:
        return ops.ReLU.apply(self)

    def sigmoid(self) -> Tensor:
        return ops.Sigmoid.apply(_as_float(self))

    def tanh(self) -> Tensor:
        return ops.Tanh.apply(_as_float(self))

    # -- reductions: axis/keepdims (numpy) or dim/keepdim (PyTorch) ----------------------------
    def sum(self, axis=None, keepdims: bool = False, *, dim=None, keepdim=None) -> Tensor:
        axis, keepdims = _reduce_args("sum", self, axis, keepdims, dim, keepdim)
        return ops.Sum.apply(self, axis=axis, keepdims=keepdims)

    def mean(self, axis=None, keepdims: bool = False, *, dim=None, keepdim=None) -> Tensor:
        _need_float("mean", self)
        axis, keepdims = _reduce_args("mean", self, axis, keepdims, dim, keepdim)
        return ops.Mean.apply(self, axis=axis, keepdims=keepdims)

    def max(self, axis=None, keepdims: bool = False, *, dim=None, keepdim=None) -> Tensor:
        axis, keepdims = _reduce_args("max", self, axis, keepdims, dim, keepdim)
        return ops.Max.apply(self, axis=axis, keepdims=keepdims)

    def log_softmax(self, axis: int = -1, *, dim=None) -> Tensor:
        _need_float("log_softmax", self)
        axis = _one_axis("log_softmax", self, axis if dim is None else dim)
        return ops.LogSoftmax.apply(self, axis=axis)

    def softmax(self, axis: int = -1, *, dim=None) -> Tensor:
        _need_float("softmax", self)
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
        shape = self.shape   # the merged size spelled out: -1 is ambiguous when a size is 0
        return self.reshape(shape[:start] + (math.prod(shape[start:end + 1]),) + shape[end + 1:])

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
        """numpy's indexing: ints, slices, None, ..., integer arrays, and bool masks
        (`x[x > 0]`); the gradient goes back to the elements taken."""
        return ops.Index.apply(self, index=_plain_index(index))

    # -- dtypes and indices ---------------------------------------------------------------------
    def float(self) -> Tensor:
        """This tensor as float32 (itself if it is); a float64 one passes gradients back."""
        return _cast(self, _FLOAT_DTYPES[0])

    def double(self) -> Tensor:
        """This tensor as float64 (itself if it is); a float32 one passes gradients back."""
        return _cast(self, _FLOAT_DTYPES[1])

    def long(self) -> Tensor:
        """This tensor as int64 (floats rounded toward zero); no gradient flows through it."""
        return _cast(self, _INT_DTYPE)

    def bool(self) -> Tensor:
        """This tensor as bool (nonzero is True); no gradient flows through it."""
        return _cast(self, _BOOL_DTYPE)

    def argmax(self, dim=None, keepdim: bool = False) -> Tensor:
        """int64 index of the largest value along `dim`, or in the flattened tensor if None."""
        return _plain_tensor(_arg_reduce("argmax", np.argmax, self, dim, keepdim))

    def argmin(self, dim=None, keepdim: bool = False) -> Tensor:
        """int64 index of the smallest value along `dim`, or in the flattened tensor if None."""
        return _plain_tensor(_arg_reduce("argmin", np.argmin, self, dim, keepdim))

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        """`np.asarray(tensor)` is the tensor's values (shared, as PyTorch's `.numpy()`)."""
        data = self.data if dtype is None else self.data.astype(dtype, copy=False)
        return data.copy() if copy else data

    # -- in-place changes ---------------------------------------------------------------------
    def bump_version(self) -> None:
        """Record that `data` was changed in place. Every optimizer's `step()` and
        `Module.load_state_dict()` call it; a backward through an op that saved the old values
        then raises (PyTorch's version counter) instead of mixing old and new values."""
        self._version += 1

    def _constant_node(self) -> ConstantNode:
        """What the graph keeps of this leaf that needs no gradient (one per tensor)."""
        node = getattr(self, "_node", None)
        if node is None:
            node = self._node = ConstantNode(self)
        return node


class GraphNode:
    """An intermediate tensor as the graph remembers it: the op that made it (`_ctx`), its shape
    and dtype, and a weak reference to the tensor. Backward needs nothing more of it: whatever
    values an op's backward uses, the op saved itself (`save_for_backward`). So the values go
    as soon as the user drops the tensor; `data` then says so instead of showing them."""

    __slots__ = ("_ctx", "shape", "dtype", "_tensor", "retains_grad", "_hooks", "__weakref__")
    requires_grad = True
    is_leaf = False

    def __init__(self, tensor: Tensor) -> None:
        self._ctx, self.shape, self.dtype = tensor._ctx, tensor.data.shape, tensor.data.dtype
        self._tensor = weakref.ref(tensor)
        self.retains_grad = False
        self._hooks: dict | None = None

    @property
    def grad_fn(self) -> Function:
        return self._ctx

    @property
    def grad(self) -> np.ndarray | None:
        """The tensor's gradient if it called `retain_grad()` and is still alive, else None."""
        tensor = self._tensor() if self.retains_grad else None
        return None if tensor is None else tensor.grad

    @property
    def data(self) -> np.ndarray:
        """The tensor's values while the user holds the tensor; after that, an error."""
        tensor = self._tensor()
        if tensor is None:
            raise RuntimeError(self._freed_message())
        return tensor.data

    def _freed_message(self) -> str:
        return (f"the values of this {type(self._ctx).__name__} output (shape {self.shape}, "
                f"dtype {self.dtype}) were freed when its tensor was dropped: the graph keeps "
                "only the op, the shape and the dtype of an intermediate. To see them, keep a "
                "reference to the tensor the op returned (h = x.relu(); ... h.data); to see "
                "its gradient, call h.retain_grad() or h.register_hook(fn) before backward")

    def __repr__(self) -> str:
        return f"GraphNode({type(self._ctx).__name__}, shape={self.shape}, dtype={self.dtype})"


class ConstantNode(GraphNode):
    """An input that needs no gradient (a batch, a dropout mask, a number) as the graph keeps
    it: shape and dtype, and its values only while the user still holds the tensor. So a loss
    kept after backward (`losses.append(loss)`) keeps neither its batch nor its masks alive."""

    __slots__ = ()
    requires_grad = False
    is_leaf = True

    def _freed_message(self) -> str:
        return (f"the values of this input (shape {self.shape}, dtype {self.dtype}) were freed "
                "when its tensor was dropped: the graph keeps only the shape and dtype of an "
                "input that needs no gradient")

    def __repr__(self) -> str:
        return f"ConstantNode(shape={self.shape}, dtype={self.dtype})"


class RemovableHandle:
    """What `register_hook` returns: `handle.remove()` takes the hook off again."""

    __slots__ = ("_hooks", "_key")
    _keys = itertools.count()

    def __init__(self, hooks: dict, hook) -> None:
        self._hooks, self._key = hooks, next(RemovableHandle._keys)
        hooks[self._key] = hook

    def remove(self) -> None:
        self._hooks.pop(self._key, None)


# ----------------------------------------------------------------------------------------------
# 4. The steps of backward
# ----------------------------------------------------------------------------------------------


def _seed(root: Tensor, grad) -> np.ndarray:
    """dL/droot to start from: 1 for a scalar, else `grad`, checked against root's shape."""
    if not root.requires_grad:
        raise RuntimeError(
            f"backward: this tensor (shape {root.shape}) does not require grad and has no "
            "graph; create the leaves with requires_grad=True")
    if grad is None:
        if root.data.size != 1:
            raise RuntimeError(
                f"backward: grad can be implicitly created only for a scalar output, this "
                f"tensor has shape {root.shape}; pass backward(grad=...) of that shape")
        return np.ones_like(root.data)
    seed = np.asarray(grad.data if isinstance(grad, Tensor) else grad, dtype=root.dtype)
    if seed.shape != root.shape:
        raise ValueError(
            f"backward: grad has shape {seed.shape} but the tensor has shape {root.shape}")
    return seed


def _run_hooks(node: Tensor | GraphNode, grad: np.ndarray) -> np.ndarray:
    """The gradient of `node` after its hooks (each sees a read-only view and may return a
    replacement), stored into the tensor's `.grad` if it called `retain_grad()`."""
    for hook in list(node._hooks.values()):
        view = grad.view()
        view.flags.writeable = False  # a hook must return a new array, not edit this one
        new = hook(view)
        if new is not None:
            name = getattr(hook, "__qualname__", type(hook).__name__)
            grad = _checked_gradient(f"hook {name}", new, node, "the gradient of its tensor",
                                     same_dtype=True)
    if node._ctx is not None and node.retains_grad:
        tensor = node._tensor()
        if tensor is not None:
            tensor.grad = np.array(grad) if tensor.grad is None else tensor.grad + grad
    return grad


def _accumulate(leaf: Tensor, grad: np.ndarray) -> None:
    """leaf.grad += grad; the first gradient is the leaf's own copy, never a view."""
    if leaf.grad is None:
        leaf.grad = np.array(grad, dtype=leaf.data.dtype)
    else:
        leaf.grad = leaf.grad + grad


def _input_gradients(ctx: Function, grad_out: np.ndarray, retain_graph: bool) -> list:
    """Run one op's backward and check what it gave: one gradient per input (None where the
    input needs none), each a float array of that input's shape, in that input's dtype.
    Then release what the op saved, unless `retain_graph`."""
    if ctx.released:
        raise RuntimeError(
            f"backward: trying to backward through the graph a second time (through "
            f"{type(ctx).__name__}); its saved buffers were freed after the first backward. "
            "Pass retain_graph=True to the first backward to keep them.")
    if ctx.saved_versions:
        _check_versions(ctx)
    grads = ctx.backward(grad_out)
    if type(grads) is not tuple:
        grads = tuple(grads) if type(grads) is list else (grads,)
    parents = ctx.parents
    if len(grads) != len(parents):
        raise ValueError(
            f"{type(ctx).__name__}.backward returned {len(grads)} gradient(s) for "
            f"{len(parents)} input(s); return one per input, in order, None where "
            "ctx.needs_input_grad is False")
    checked = []
    for parent, g in zip(parents, grads):
        if g is None or not parent.requires_grad:
            checked.append(None)
            continue
        # the usual case passes this quick test; anything else gets the full check
        if type(g) is not np.ndarray or g.dtype is not parent.dtype or g.shape != parent.shape:
            g = _checked_gradient(f"{type(ctx).__name__}.backward", g, parent,
                                  f"input {len(checked)}")
        checked.append(g)
    if _modes.anomaly_enabled:
        _check_finite(ctx, ctx.parents, checked, "backward")
    if not retain_graph:
        ctx.saved_values = ctx.saved_versions = ()
        ctx.released = True
    return checked


def _viewed_leaf(data: np.ndarray, tensors: tuple[Tensor, ...]) -> Tensor | None:
    """The leaf tensor whose memory `data` (an op's output that is a view) shares, if any."""
    for t in tensors:
        leaf = t if t._ctx is None else t._base
        if leaf is not None and (leaf.data if leaf.data.base is None else leaf.data.base) \
                is data.base:
            return leaf
    return None


def _saved_versions(tensors: tuple[Tensor, ...], saved: tuple) -> tuple:
    """(input index, leaf, version) for each input that is a leaf, or a view of one (`w.T`),
    whose values the op saved for backward. Only weights change in place (optimizers step the
    leaves that require grad, load_state_dict any Parameter), and a view sees its leaf's
    changes; batches, masks and numbers are not watched."""
    found = ()
    for index, t in enumerate(tensors):
        leaf = t if t._ctx is None else t._base
        if leaf is None or not (leaf.requires_grad or leaf._is_weight):
            continue
        data = leaf.data
        owner = data if data.base is None else data.base  # the array owning the memory
        for value in saved:
            if type(value) is np.ndarray and (value is owner or value.base is owner):
                found += ((index, leaf, leaf._version),)
                break
    return found


def _check_versions(ctx: Function) -> None:
    """Refuse to run an op's backward on values that changed since its forward saved them."""
    for index, tensor, version in ctx.saved_versions:
        if tensor._version != version:
            shape = ctx.parents[index].shape  # the input's (w.T's), for a view of a leaf
            raise RuntimeError(
                f"one of the variables needed for gradient computation has been modified by an "
                f"inplace operation: [{tensor.dtype} tensor of shape {shape}], which is "
                f"input {index} of {type(ctx).__name__}, is at version {tensor._version}; "
                f"expected version {version} instead. Hint: an optimizer step() or "
                "load_state_dict() changed it after the forward pass that saved it; run the "
                "forward pass again after changing the weights")


def _checked_gradient(where: str, grad, like: Tensor | GraphNode, what: str,
                      same_dtype: bool = False) -> np.ndarray:
    """`grad` if it is a float array of `like`'s shape, cast to `like`'s dtype (a mixed float32/
    float64 graph gives each input its gradient in its own dtype), else a clear error. With
    `same_dtype` (a hook's return value, as in PyTorch) the dtype must already be `like`'s."""
    if not isinstance(grad, (np.ndarray, np.generic)):
        hint = "; return its .data" if isinstance(grad, Tensor) else ""
        raise TypeError(
            f"{where} returned a {type(grad).__name__} as {what}; a gradient must be a numpy "
            f"array{hint}")
    if grad.dtype not in _FLOAT_DTYPES or (same_dtype and grad.dtype != like.dtype):
        raise TypeError(
            f"{where} returned a {grad.dtype} array as {what} (shape {like.shape}, dtype "
            f"{like.dtype}); a gradient must be "
            f"{like.dtype if same_dtype else 'float32 or float64'}")
    if grad.shape != like.shape:
        raise ValueError(
            f"{where} returned a gradient of shape {grad.shape} for {what}, which has shape "
            f"{like.shape}")
    if isinstance(grad, np.generic):  # numpy turns a 0-d result into a scalar
        grad = np.asarray(grad)
    return grad if grad.dtype == like.dtype else grad.astype(like.dtype)


def _topological_order(root, every_input: bool = False) -> list:
    """Every node that requires grad (or, with every_input, every node) and leads to root,
    each after all of its inputs; root comes last.

    An iterative depth-first search: a node is emitted once all its inputs were emitted.
    """
    order: list = []
    visited: set[int] = set()
    stack: list = [(root, False)]
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


# ----------------------------------------------------------------------------------------------
# Argument helpers
# ----------------------------------------------------------------------------------------------


def _plain_tensor(data: np.ndarray) -> Tensor:
    """A Tensor around `data` (not copied) that is no part of any graph."""
    out = Tensor.__new__(Tensor)
    out.data, out.grad, out.requires_grad, out._ctx, out._hooks = data, None, False, None, None
    out._version, out._base = 0, None
    return out


def _cast(t: Tensor, dtype: np.dtype) -> Tensor:
    """`t` in `dtype`: itself, a recorded Cast between float dtypes (the gradient goes back in
    t's own dtype), or else a plain conversion (integers and bools carry no gradient)."""
    if t.data.dtype == dtype:
        return t
    if t.requires_grad and dtype in _FLOAT_DTYPES:
        return ops.Cast.apply(t, dtype=dtype)
    return _plain_tensor(t.data.astype(dtype))


def _as_float(t: Tensor) -> Tensor:
    return t if t.data.dtype in _FLOAT_DTYPES else _plain_tensor(t.data.astype(np.float32))


def _need_float(op: str, t: Tensor) -> None:
    if t.data.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{op}: needs a float tensor, got {t.dtype} (PyTorch refuses it too); "
                        f"call .float() first")


_NUMBERS = (int, float, np.bool_, np.integer, np.floating)  # bool is an int


def _operands(op: str, tensor: Tensor, other, reverse: bool = False,
              division: bool = False) -> tuple[Tensor, Tensor] | None:
    """`tensor` and `other` as two Tensors of the dtype PyTorch's promotion gives (see
    promotion.py), in the op's order (`other` first when `reverse`). None when `other` is a
    list, a string or anything PyTorch refuses too: the operator then returns NotImplemented
    and Python raises its TypeError."""
    dtype = tensor.data.dtype
    if isinstance(other, Tensor):
        if other.data.dtype is dtype and not division:
            return (other, tensor) if reverse else (tensor, other)  # the usual case, at once
        dtype = promotion.result_dtype([tensor.data, other.data])
    elif type(other) in (float, int) and dtype.kind == "f":
        # the other usual case: a number takes a float tensor's dtype
        other = _plain_tensor(np.array(other, dtype=dtype))
        return (other, tensor) if reverse else (tensor, other)
    elif isinstance(other, _NUMBERS):
        dtype = promotion.result_dtype([tensor.data], (other,))
    elif isinstance(other, np.ndarray):
        try:
            dtype = promotion.array_result_dtype(tensor.data.dtype, other.dtype)
        except TypeError as e:
            raise TypeError(f"{op}: {e}") from None
    else:
        return None
    if division:
        dtype = promotion.true_division_dtype(dtype, isinstance(other, np.ndarray))
    if not isinstance(other, Tensor):
        try:
            other = _plain_tensor(_to_array(other, dtype))
        except ValueError as e:  # a Python int beyond int64
            raise ValueError(f"{op}: {str(e).removeprefix('Tensor: ')}") from None
    tensor, other = _cast(tensor, dtype), _cast(other, dtype)
    return (other, tensor) if reverse else (tensor, other)


def _refuse_bool_subtraction(tensor: Tensor, other) -> None:
    """PyTorch refuses `-` with any bool operand; numpy (which PyTorch hands an array operand
    to) only with two."""
    if isinstance(other, np.ndarray):
        refused = tensor.dtype == _BOOL_DTYPE and other.dtype == _BOOL_DTYPE
    else:
        refused = tensor.dtype == _BOOL_DTYPE or isinstance(other, (bool, np.bool_)) or (
            isinstance(other, Tensor) and other.dtype == _BOOL_DTYPE)
    if refused:
        raise TypeError("sub: subtraction with a bool tensor is not supported (as in PyTorch); "
                        "use ^ for the logical xor of two masks, ~ to invert one, or .long()")


def _elementwise_logic(op: str, ufunc, tensor: Tensor, other, integers_only: bool = False):
    """A comparison or bitwise op on promoted operands: a bool (or int) tensor, no gradient."""
    pair = _operands(op, tensor, other)
    if pair is None:
        return NotImplemented
    a, b = pair
    if integers_only and a.dtype.kind == "f":
        raise TypeError(f"{op}: needs bool or integer tensors, got {a.dtype}")
    try:
        return _plain_tensor(np.asarray(ufunc(a.data, b.data)))
    except ValueError:
        raise ValueError(f"{op}: shapes {a.shape} and {b.shape} cannot be broadcast "
                         "together") from None


def _arg_reduce(op: str, reduce, t: Tensor, dim, keepdim: bool) -> np.ndarray:
    """The int64 indices argmax/argmin give (PyTorch's meaning of dim=None and keepdim)."""
    if t.data.size == 0:
        raise ValueError(f"{op}: cannot take the {op} of an empty tensor of shape {t.shape}")
    if dim is None:
        index = np.asarray(reduce(t.data), dtype=np.int64)
        return index.reshape((1,) * t.ndim) if keepdim else index
    axis = _one_axis(op, t, dim)
    if t.ndim == 0:  # dim 0 (or -1) of a 0-d tensor is the tensor itself
        return np.zeros((), dtype=np.int64)
    return np.asarray(reduce(t.data, axis=axis, keepdims=bool(keepdim)), dtype=np.int64)


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
    if not axes or t.ndim == 0:
        # PyTorch's meaning: dim=() reduces every axis, and a 0-d tensor's dim 0 is itself
        return None, bool(keepdims)
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
