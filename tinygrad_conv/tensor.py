"""The Tensor: a numpy array plus the op that produced it (`_ctx`) and its gradient (`grad`).

Its methods are the user's side of the engine: each one checks its arguments, promotes the
operands (`dtypes.py`) and calls one op's `apply` (`ops.py`). How an op is recorded and how
`backward()` walks the graph is told in `autograd.py`.
"""

from __future__ import annotations

import numpy as np

from tinygrad_conv import autograd, dtypes, ops
from tinygrad_conv.autograd import Function, TensorFields, no_grad
from tinygrad_conv.dtypes import FLOAT_DTYPES as _FLOAT_DTYPES
from tinygrad_conv.dtypes import float_dtype

# what other modules import from here, as before (tinygrad_conv.tensor.no_grad, ...)
__all__ = ["Function", "Tensor", "_FLOAT_DTYPES", "float_dtype", "no_grad"]


class Tensor(TensorFields):
    """A numpy array that remembers how it was made, so gradients can flow back through it.

    `data`: the values (numpy; float32, float64, int64 or bool). `grad`: dL/d(this tensor)
    after a backward, same shape and dtype as `data`, else None (kept on leaves, and on other
    tensors only after `retain_grad()`). `requires_grad`: whether gradients flow here.
    """

    __slots__ = ()  # its fields: autograd.TensorFields
    __array_ufunc__ = None  # numpy hands `array + tensor` to Tensor.__radd__, not looping over it

    def __init__(self, data, requires_grad: bool = False, dtype=None) -> None:
        """`data`: numbers (a numpy array or scalar, a Python number, a (nested) list).

        Without `dtype`, PyTorch's rule (`torch.tensor`): a numpy float array keeps its dtype
        (float64 stays float64, float32 stays float32); Python floats and lists of them become
        float32; integers and bools become int64 (float16 becomes float32, the narrowest float
        a Tensor holds). `dtype` may be float32, float64, int64 or bool. The data is copied.
        """
        array = dtypes.to_array(data.data if isinstance(data, Tensor) else data, dtype)
        if requires_grad and array.dtype not in dtypes.FLOAT_DTYPES:
            raise TypeError(
                f"Tensor: only float tensors can require grad, this one is {array.dtype}")
        _fill(self, array, None, autograd.VersionCounter())
        self.requires_grad = bool(requires_grad)

    @staticmethod
    def _make(data: np.ndarray, ctx: Function | None = None,
              version: autograd.VersionCounter | None = None) -> Tensor:
        """A Tensor around `data` (not copied), made by op `ctx` (None: no graph behind it),
        sharing `version` with the tensors whose memory it views. Every op result is made here."""
        out = Tensor.__new__(Tensor)
        _fill(out, data, ctx, version)
        return out

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
        """The same values, cut off from the graph. It shares memory and the version counter
        (like PyTorch's): an optimizer step on the source counts as a change of the detached
        tensor, so a backward through an op that saved it refuses to mix old and new values."""
        return Tensor._make(self.data, None, self._shared_version())

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        if requires_grad and self.data.dtype not in dtypes.FLOAT_DTYPES:
            raise TypeError(
                f"requires_grad_: only float tensors can require grad, this one is {self.dtype}")
        self.requires_grad = bool(requires_grad)
        self._shared_version()  # an optimizer may now step it: watch it from here on
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

    # -- in-place changes ---------------------------------------------------------------------
    @property
    def _version(self) -> int:
        """How many times `data` was changed in place (PyTorch's `_version`)."""
        return 0 if self._version_counter is None else self._version_counter.value

    def bump_version(self) -> None:
        """Record that `data` was changed in place. Every optimizer's `step()` and
        `Module.load_state_dict()` call it, and so must code that writes into `data` by hand;
        a backward through an op that saved the old values (of this tensor, of a view of it, of
        its `detach()`) then raises (PyTorch's version counter) instead of mixing old and new."""
        self._shared_version().value += 1

    def _shared_version(self) -> autograd.VersionCounter:
        """This tensor's version counter, made now if it had none (see VersionCounter)."""
        if self._version_counter is None:
            self._version_counter = autograd.VersionCounter()
        return self._version_counter

    # -- backpropagation (autograd.py) -----------------------------------------------------------
    def backward(self, grad=None, retain_graph: bool = False) -> None:
        """Compute dself/dleaf for every leaf that requires grad and add it to `leaf.grad`.

        On a scalar the seed gradient is 1; otherwise `grad` (same shape as self) is the seed.
        The buffers ops saved for backward are released afterwards unless `retain_graph=True`.
        """
        autograd.backward(self, grad, retain_graph)

    def _topological_order(self, every_input: bool = False) -> list:
        """Every node leading to self, inputs first (autograd.topological_order)."""
        root = self if self._ctx is None else autograd._node_of(self)
        return autograd.topological_order(root, every_input)

    def retain_grad(self) -> None:
        """Keep this tensor's gradient in `.grad` after backward, though it is not a leaf (as
        PyTorch's `retain_grad`; on a leaf it changes nothing). Repeated backwards add up."""
        if not self.requires_grad:
            raise RuntimeError(
                f"retain_grad: this tensor (shape {self.shape}) does not require grad, so no "
                "gradient will reach it; make its inputs require grad first")
        if self._ctx is not None:
            node = autograd._node_of(self)
            node.retains_grad = True
            if node._hooks is None:  # backward looks at a node's gradient only if this is set
                node._hooks = {}

    @property
    def retains_grad(self) -> bool:
        """True for a non-leaf on which `retain_grad()` was called."""
        return self._node is not None and self._node.retains_grad

    def register_hook(self, hook) -> autograd.RemovableHandle:
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
        holder = self if self._ctx is None else autograd._node_of(self)
        if holder._hooks is None:
            holder._hooks = {}
        return autograd.RemovableHandle(holder._hooks, hook)

    # -- arithmetic (ops.py): operands promoted by PyTorch's rules (dtypes.py) ------------------
    def __add__(self, other) -> Tensor:
        return _binary(ops.Add, "add", self, other)

    def __radd__(self, other) -> Tensor:
        return _binary(ops.Add, "add", self, other, reverse=True)

    def __sub__(self, other) -> Tensor:
        dtypes.check_subtraction(self.data, *_operand(other))
        return _binary(ops.Sub, "sub", self, other)

    def __rsub__(self, other) -> Tensor:
        dtypes.check_subtraction(self.data, *_operand(other))
        return _binary(ops.Sub, "sub", self, other, reverse=True)

    def __mul__(self, other) -> Tensor:
        return _binary(ops.Mul, "mul", self, other)

    def __rmul__(self, other) -> Tensor:
        return _binary(ops.Mul, "mul", self, other, reverse=True)

    def __truediv__(self, other) -> Tensor:
        return _binary(ops.Div, "div", self, other, reverse=False, division=True)

    def __rtruediv__(self, other) -> Tensor:
        return _binary(ops.Div, "div", self, other, reverse=True, division=True)

    def __neg__(self) -> Tensor:
        return ops.Neg.apply(self)

    def __pow__(self, exponent) -> Tensor:
        """`x ** p` for a number p (`Pow`), or elementwise for a tensor p (`PowTensor`)."""
        if isinstance(exponent, Tensor):
            return _binary(ops.PowTensor, "pow", self, exponent)
        dtype, exponent = dtypes.pow_dtype(self.data, exponent)
        return ops.Pow.apply(_cast(self, dtype), exponent=exponent)

    def __rpow__(self, base) -> Tensor:
        """`number ** x`, elementwise (`PowTensor`: gradients for x)."""
        return _binary(ops.PowTensor, "pow", self, base, reverse=True)

    def __matmul__(self, other) -> Tensor:
        return _binary(ops.MatMul, "matmul", self, other)

    def __rmatmul__(self, other) -> Tensor:
        return _binary(ops.MatMul, "matmul", self, other, reverse=True)

    # -- comparisons and logic: bool tensors, never part of the graph -------------------------
    def __eq__(self, other) -> Tensor:  # type: ignore[override]
        return _logic("eq", np.equal, self, other)

    def __ne__(self, other) -> Tensor:  # type: ignore[override]
        return _logic("ne", np.not_equal, self, other)

    def __lt__(self, other) -> Tensor:
        return _logic("lt", np.less, self, other)

    def __le__(self, other) -> Tensor:
        return _logic("le", np.less_equal, self, other)

    def __gt__(self, other) -> Tensor:
        return _logic("gt", np.greater, self, other)

    def __ge__(self, other) -> Tensor:
        return _logic("ge", np.greater_equal, self, other)

    def __and__(self, other) -> Tensor:
        return _logic("and", np.bitwise_and, self, other, integers_only=True)

    def __or__(self, other) -> Tensor:
        return _logic("or", np.bitwise_or, self, other, integers_only=True)

    def __xor__(self, other) -> Tensor:
        return _logic("xor", np.bitwise_xor, self, other, integers_only=True)

    __rand__, __ror__, __rxor__ = __and__, __or__, __xor__

    def __invert__(self) -> Tensor:
        """`~mask`: logical not of a bool tensor, bitwise not of an int64 one."""
        if self.dtype.kind not in "bi":
            raise TypeError(f"invert: ~ needs a bool or integer tensor, got {self.dtype}")
        return Tensor._make(np.invert(self.data))

    # -- elementwise functions: an integer or bool tensor gives float32, as in PyTorch ---------
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
        axis, keepdims = ops.reduce_args("sum", self.shape, axis, keepdims, dim, keepdim)
        return ops.Sum.apply(self, axis=axis, keepdims=keepdims)

    def mean(self, axis=None, keepdims: bool = False, *, dim=None, keepdim=None) -> Tensor:
        dtypes.need_float("mean", self.dtype)
        axis, keepdims = ops.reduce_args("mean", self.shape, axis, keepdims, dim, keepdim)
        return ops.Mean.apply(self, axis=axis, keepdims=keepdims)

    def max(self, axis=None, keepdims: bool = False, *, dim=None, keepdim=None) -> Tensor:
        axis, keepdims = ops.reduce_args("max", self.shape, axis, keepdims, dim, keepdim)
        return ops.Max.apply(self, axis=axis, keepdims=keepdims)

    def log_softmax(self, axis: int = -1, *, dim=None) -> Tensor:
        dtypes.need_float("log_softmax", self.dtype)
        axis = ops.one_axis("log_softmax", self.shape, axis if dim is None else dim)
        return ops.LogSoftmax.apply(self, axis=axis)

    def softmax(self, axis: int = -1, *, dim=None) -> Tensor:
        dtypes.need_float("softmax", self.dtype)
        axis = ops.one_axis("softmax", self.shape, axis if dim is None else dim)
        return ops.Softmax.apply(self, axis=axis)

    def argmax(self, dim=None, keepdim: bool = False) -> Tensor:
        """int64 index of the largest value along `dim`, or in the flattened tensor if None."""
        return Tensor._make(ops.arg_reduce("argmax", np.argmax, self.data, dim, keepdim))

    def argmin(self, dim=None, keepdim: bool = False) -> Tensor:
        """int64 index of the smallest value along `dim`, or in the flattened tensor if None."""
        return Tensor._make(ops.arg_reduce("argmin", np.argmin, self.data, dim, keepdim))

    # -- shape ---------------------------------------------------------------------------------
    def reshape(self, *shape) -> Tensor:
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return ops.Reshape.apply(self, shape=shape)

    def view(self, *shape) -> Tensor:
        return self.reshape(*shape)

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> Tensor:
        return self.reshape(ops.flattened_shape(self.shape, start_dim, end_dim))

    def permute(self, *dims) -> Tensor:
        if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
            dims = tuple(dims[0])
        return ops.Permute.apply(self, axes=ops.permutation("permute", self.shape, dims))

    def transpose(self, dim0: int = -2, dim1: int = -1) -> Tensor:
        """Swap two axes (PyTorch's meaning); `.T` reverses all of them (numpy's)."""
        return ops.Permute.apply(self, axes=ops.swapped_axes(self.shape, dim0, dim1))

    @property
    def T(self) -> Tensor:
        return ops.Permute.apply(self, axes=tuple(range(self.ndim - 1, -1, -1)))

    def __getitem__(self, index) -> Tensor:
        """numpy's indexing: ints, slices (positive steps, as in PyTorch), None, ..., integer
        arrays, and bool masks (`x[x > 0]`); the gradient goes back to the elements taken."""
        return ops.Index.apply(self, index=ops.plain_index(index, Tensor))

    # -- dtypes --------------------------------------------------------------------------------
    def float(self) -> Tensor:
        """This tensor as float32 (itself if it is); a float64 one passes gradients back."""
        return _cast(self, dtypes.FLOAT32)

    def double(self) -> Tensor:
        """This tensor as float64 (itself if it is); a float32 one passes gradients back."""
        return _cast(self, dtypes.FLOAT64)

    def long(self) -> Tensor:
        """This tensor as int64 (floats rounded toward zero); no gradient flows through it."""
        return _cast(self, dtypes.INT64)

    def bool(self) -> Tensor:
        """This tensor as bool (nonzero is True); no gradient flows through it."""
        return _cast(self, dtypes.BOOL)

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        """`np.asarray(tensor)` is the tensor's values (shared, as PyTorch's `.numpy()`)."""
        data = self.data if dtype is None else self.data.astype(dtype, copy=False)
        return data.copy() if copy else data


# ----------------------------------------------------------------------------------------------
# The helpers the methods above share
# ----------------------------------------------------------------------------------------------


def _fill(t: Tensor, data: np.ndarray, ctx: Function | None, version) -> None:
    """Every slot's first value (the one place a new slot is added)."""
    t.data = data
    t.grad = None
    t.requires_grad = ctx is not None
    t._ctx = ctx
    t._node = None  # what the graph keeps of this tensor (autograd._node_of)
    t._hooks = None  # see register_hook
    t._version_counter = version  # see bump_version


def _binary(op: type[Function], name: str, tensor: Tensor, other, reverse: bool = False,
            division: bool = False):
    """`op` on `tensor` and `other` promoted to one dtype (PyTorch's rules, dtypes.py), in the
    op's order (`other` first when `reverse`); NotImplemented for an operand PyTorch refuses
    too (a list, a string), so that Python raises its TypeError."""
    dtype = tensor.data.dtype
    if isinstance(other, Tensor) and other.data.dtype is dtype and not division:
        pass  # the usual case, at once
    elif type(other) in (float, int) and dtype.kind == "f":
        other = Tensor._make(np.array(other, dtype=dtype))  # a number takes a float's dtype
    else:
        b, is_tensor = _operand(other)
        dtype = dtypes.binary_dtype(name, tensor.data, b, is_tensor, division)
        if dtype is None:
            return NotImplemented
        if name == "matmul" and is_tensor:
            dtypes.check_matmul_dtypes(tensor.dtype, other.dtype)
        if not is_tensor:
            other = Tensor._make(dtypes.operand_array(name, other, dtype))
        tensor, other = _cast(tensor, dtype), _cast(other, dtype)
    return op.apply(other, tensor) if reverse else op.apply(tensor, other)


def _cast(t: Tensor, dtype: np.dtype) -> Tensor:
    """`t` in `dtype`: itself, a recorded Cast between float dtypes (the gradient goes back in
    t's own dtype), or else a plain conversion (integers and bools carry no gradient)."""
    if t.data.dtype == dtype:
        return t
    if t.requires_grad and dtype in dtypes.FLOAT_DTYPES:
        return ops.Cast.apply(t, dtype=dtype)
    return Tensor._make(t.data.astype(dtype))


def _as_float(t: Tensor) -> Tensor:
    return t if t.data.dtype in dtypes.FLOAT_DTYPES else Tensor._make(t.data.astype(np.float32))


def _logic(op: str, ufunc, tensor: Tensor, other, integers_only: bool = False):
    """A comparison or bitwise op on promoted operands: a bool (or int) tensor, no gradient."""
    b, is_tensor = _operand(other)
    dtype = dtypes.binary_dtype(op, tensor.data, b, is_tensor)
    if dtype is None:
        return NotImplemented
    b = b if is_tensor else dtypes.operand_array(op, b, dtype)
    return Tensor._make(ops.logic(op, ufunc, tensor.data, b, dtype, integers_only))


def _operand(other) -> tuple:
    """(a Tensor operand's array, True), or (any other operand, False)."""
    return (other.data, True) if isinstance(other, Tensor) else (other, False)
