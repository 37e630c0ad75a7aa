"""Autograd: the Function every op is built from, the graph it records, and backpropagation.

Read top to bottom:
1. Modes: `no_grad` stops the graph from being recorded; `detect_anomaly` makes the first op
   to produce a NaN or Inf say so. Both are per thread.
2. The spine, the whole story in three functions:
   - `Function.apply`: run the op's forward on numpy arrays, make the result tensor, and
     record the op (the node) on the graph when a gradient will flow through it;
   - `backward`: order the graph (`topological_order`), then for each node, from the loss back
     to the leaves: run its hooks, call its op's backward, and hand each input its gradient,
     adding up where a tensor was used twice; a leaf adds its gradient into `.grad`;
   - `topological_order`: every node after all of its inputs, found iteratively.
3. The graph's nodes: what the graph keeps of a tensor (`GraphNode`, `ConstantNode`).
4. PyTorch fidelity, named helpers the spine calls: the checks of what a backward returns,
   version counters (a weight changed in place after the forward saved it is an error),
   views sharing their source's counter, releasing saved values, hooks, anomaly mode.
The ops themselves (add, matmul, sum, ...) live in `ops.py`; the Tensor in `tensor.py`.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sys
import threading
from weakref import ref as weak_reference

import numpy as np
from numpy import ndarray

from tinygrad_conv.dtypes import FLOAT_DTYPES

# ----------------------------------------------------------------------------------------------
# 1. Modes: recording on or off, anomaly checks on or off (per thread)
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

# How many mode blocks (no_grad, detect_anomaly) are open, in all threads together. While none
# is, every thread records and checks nothing, and an op skips looking up its thread's modes
# (that lookup costs as much as a small op's arithmetic).
_open_blocks = 0
_open_blocks_lock = threading.Lock()


def _count_block(change: int) -> None:
    global _open_blocks
    with _open_blocks_lock:
        _open_blocks += change


class no_grad(contextlib.ContextDecorator):
    """Within this block (or decorated function) no op is recorded on the graph, in this thread.

    >>> with no_grad():
    ...     y = x * 2          # y.requires_grad is False, nothing is saved for backward
    """

    def __enter__(self) -> no_grad:
        _count_block(1)
        _modes.grad_stack.append(_modes.grad_enabled)
        _modes.grad_enabled = False
        return self

    def __exit__(self, *exc) -> None:
        _modes.grad_enabled = _modes.grad_stack.pop()
        _count_block(-1)


def is_grad_enabled() -> bool:
    """Whether ops are recorded in this thread."""
    return _open_blocks == 0 or _modes.grad_enabled


def _anomaly_enabled() -> bool:
    """Whether anomaly mode is on in this thread."""
    return _open_blocks != 0 and _modes.anomaly_enabled


class detect_anomaly(contextlib.ContextDecorator):
    """Within this block the first op whose forward or backward produces a NaN or Inf raises a
    RuntimeError naming the op, its input shapes, the pass and the line of user code that created
    it. Outside it (and in other threads) nothing is checked (one flag test per op)."""

    def __enter__(self) -> detect_anomaly:
        _count_block(1)
        _modes.anomaly_stack.append(_modes.anomaly_enabled)
        _modes.anomaly_enabled = True
        return self

    def __exit__(self, *exc) -> None:
        _modes.anomaly_enabled = _modes.anomaly_stack.pop()
        _count_block(-1)


# ----------------------------------------------------------------------------------------------
# 2. The spine: apply (forward, result, record) and backward (order, backward, accumulate)
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
    def apply(cls, *tensors, **params):
        """Run the op on the tensors' data; record it on the graph if a gradient will flow."""
        ctx = cls()
        ctx.needs_input_grad = needs = tuple([t.requires_grad for t in tensors])
        ctx.saved_values = ()
        data = ctx.forward(*[t.data for t in tensors], **params)
        if _anomaly_enabled():
            _anomaly_check_forward(ctx, tensors, data)
        record = True in needs and is_grad_enabled()
        if record:
            _record(ctx, tensors)
        # a view (w.T, a reshape) shares its source's version counter: see section 4
        version = _viewed_version(data, tensors) if data.base is not None else None
        # Tensor._make, reached through an input (tensor.py imports this module, not the reverse)
        return tensors[0]._make(data, ctx if record else None, version)


def _record(ctx: Function, tensors) -> None:
    """Make `ctx` a node of the graph: its inputs' nodes, and the versions of what it saved."""
    ctx.parents = tuple([_node_of(t) for t in tensors])
    ctx.saved_versions = _saved_versions(tensors, ctx.saved_values) if ctx.saved_values else ()
    ctx.released = False


def backward(root, grad=None, retain_graph: bool = False) -> None:
    """Add d(root)/d(leaf) into `leaf.grad` for every leaf that requires grad (`root.backward`).

    Each node gets the sum of the gradients of all its consumers before its own op runs.
    """
    start = _node_of(root) if root.requires_grad else root
    # dL/dnode, summed over the consumers so far; nodes (and tensors) hash by identity
    pending = {start: _seed(root, grad)}
    for node in reversed(topological_order(start)):
        g = pending.pop(node, None)
        if g is None:
            continue                      # every path to it gave None: nothing to do
        if node._hooks is not None:
            g = _run_hooks(node, g)       # register_hook, then retain_grad
        ctx = node._ctx
        if ctx is None:                   # a leaf: add into .grad, like PyTorch
            sole = _references(g) <= _ONE_HOLDER      # (asked alone: no call's argument yet)
            _accumulate(node, g, sole)
            continue
        input_grads = _call_backward(ctx, g, retain_graph)
        for index, parent in enumerate(ctx.parents):
            parent_grad = input_grads[index]
            if parent_grad is not None:
                earlier = pending.get(parent)
                pending[parent] = parent_grad if earlier is None else earlier + parent_grad
        input_grads = parent_grad = earlier = None    # (so that `pending` holds them alone)


def topological_order(root, every_input: bool = False) -> list:
    """Every node that requires grad (or, with every_input, every node) and leads to root,
    each after all of its inputs; root comes last.

    An iterative depth-first search (a chain of 100,000 ops needs no deep recursion): a node is
    emitted once all its inputs were emitted. A node's first visit pushes it back below its
    inputs, so that it comes off the stack again once they are done.
    """
    order: list = []
    visited: set = set()  # nodes whose inputs were pushed (nodes hash by identity)
    emitted: set = set()
    stack: list = [root]
    while stack:
        node = stack.pop()
        if node in visited:
            if node not in emitted:  # its second time off the stack: its inputs are done
                emitted.add(node)
                order.append(node)
            continue
        visited.add(node)
        stack.append(node)
        ctx = node._ctx
        if ctx is not None:
            for parent in reversed(ctx.parents):  # so the first input comes first
                if (every_input or parent.requires_grad) and parent not in visited:
                    stack.append(parent)
    return order


def _call_backward(ctx: Function, grad_out: np.ndarray, retain_graph: bool) -> list:
    """One op's backward: its saved values still valid, its answer checked (one gradient per
    input, None where the input needs none), then what it saved released."""
    _check_saved(ctx)
    grads = _checked_gradients(ctx, ctx.backward(grad_out))
    if _anomaly_enabled():
        _anomaly_check(ctx, ctx.parents, grads, "backward")
    if not retain_graph:
        _release(ctx)
    return grads


def _accumulate(leaf, grad: np.ndarray, sole: bool) -> None:
    """leaf.grad += grad. The first gradient becomes the leaf's own: the array itself when
    nothing else holds it (`sole`: an op's fresh result, PyTorch's rule too), else a copy,
    never a view of another array."""
    if leaf.grad is None:
        own = sole and grad.base is None and grad.dtype == leaf.data.dtype
        leaf.grad = grad if own and grad.flags.writeable else np.array(grad, leaf.data.dtype)
    else:
        leaf.grad = leaf.grad + grad


def _references(value) -> int:
    """How many references `value` has, seen from a caller holding it in one local variable
    (sys.getrefcount's count, this call's own included)."""
    return sys.getrefcount(value)


def _references_of_a_fresh_array() -> int:
    fresh = np.empty(0)
    return _references(fresh)


# what _references says of an array nothing but the caller's variable holds (the count depends
# on how the module runs: compiled or not, so it is measured, the same way backward asks)
_ONE_HOLDER = _references_of_a_fresh_array()


# ----------------------------------------------------------------------------------------------
# 3. The graph's nodes
# ----------------------------------------------------------------------------------------------


class TensorFields:
    """The fields of a Tensor (tensor.py's Tensor builds on this class), declared here, where the
    graph reads and writes them (compiled, they are C struct fields): `data`, `grad`,
    `requires_grad`, `_ctx` (the op that made it; None for a leaf), `_node` (what the graph
    keeps of it, `_node_of`), `_hooks` (`register_hook`), `_version_counter` (section 4)."""

    __slots__ = ("data", "grad", "requires_grad", "_ctx", "_node", "_hooks", "_version_counter",
                 "__weakref__")


def _node_of(t):
    """What the graph keeps of tensor `t` as an op's input: a non-leaf's `GraphNode`, a leaf
    that requires grad itself, any other input's `ConstantNode`. The graph keeps nodes, not
    values: an intermediate's data is freed as soon as neither the user nor a saved value
    needs it (as in PyTorch). A single number costs less than its node, so it stays."""
    if t._ctx is None and (t.requires_grad or not t.data.ndim):
        return t
    node = t._node  # one per tensor: a tensor used by two ops is one node, its gradients add
    if node is None:
        node = t._node = GraphNode(t) if t._ctx is not None else ConstantNode(t)
    return node


class GraphNode:
    """An intermediate tensor as the graph remembers it: the op that made it (`_ctx`), its shape
    and dtype, and a weak reference to the tensor. Backward needs nothing more of it: whatever
    values an op's backward uses, the op saved itself (`save_for_backward`). So the values go
    as soon as the user drops the tensor; `data` then says so instead of showing them."""

    __slots__ = ("_ctx", "shape", "dtype", "_tensor", "retains_grad", "_hooks", "__weakref__")
    requires_grad = True
    is_leaf = False

    def __init__(self, tensor) -> None:
        data = tensor.data
        self._ctx, self.shape, self.dtype = tensor._ctx, data.shape, data.dtype
        self._tensor = weak_reference(tensor)
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
# 4. PyTorch fidelity: checks, version counters, views, release, hooks, anomaly mode
# ----------------------------------------------------------------------------------------------

# -- what backward starts from and what each op's backward returns ------------------------------


def _seed(root, grad) -> np.ndarray:
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
    values = getattr(grad, "data", grad)  # a Tensor's array
    try:
        seed = np.asarray(values, dtype=root.dtype)
    except (ValueError, TypeError):
        raise TypeError(
            f"backward: the gradient argument must be a Tensor or array of numbers of shape "
            f"{root.shape}, got {type(grad).__name__} {_short(grad)}") from None
    if seed.shape != root.shape:
        raise ValueError(
            f"backward: grad has shape {seed.shape} but the tensor has shape {root.shape}")
    return seed


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _checked_gradients(ctx: Function, grads) -> list:
    """What `ctx.backward` returned as one checked gradient (or None) per input: a float array
    of that input's shape, in that input's dtype."""
    if type(grads) is not tuple:
        grads = tuple(grads) if type(grads) is list else (grads,)
    parents = ctx.parents
    if len(grads) != len(parents):
        raise ValueError(
            f"{type(ctx).__name__}.backward returned {len(grads)} gradient(s) for "
            f"{len(parents)} input(s); return one per input, in order, None where "
            "ctx.needs_input_grad is False")
    checked = []
    for index, parent in enumerate(parents):
        g = grads[index]
        if g is None or not parent.requires_grad:
            checked.append(None)
            continue
        # the usual case passes this quick test; anything else gets the full check
        if type(g) is not ndarray or g.dtype is not parent.dtype or g.shape != parent.shape:
            g = _checked_gradient(f"{type(ctx).__name__}.backward", g, parent, f"input {index}")
        checked.append(g)
    return checked


def _checked_gradient(where: str, grad, like, what: str, same_dtype: bool = False) -> np.ndarray:
    """`grad` if it is a float array of `like`'s shape, cast to `like`'s dtype (a mixed float32/
    float64 graph gives each input its gradient in its own dtype), else a clear error. With
    `same_dtype` (a hook's return value, as in PyTorch) the dtype must already be `like`'s."""
    if not isinstance(grad, (np.ndarray, np.generic)):
        hint = "; return its .data" if hasattr(grad, "_ctx") else ""
        raise TypeError(
            f"{where} returned a {type(grad).__name__} as {what}; a gradient must be a numpy "
            f"array{hint}")
    if grad.dtype not in FLOAT_DTYPES or (same_dtype and grad.dtype != like.dtype):
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


# -- version counters: values changed in place after a forward saved them ------------------------


class VersionCounter:
    """How many times a tensor's values were changed in place (`Tensor.bump_version`: every
    optimizer step, `load_state_dict`). One counter is shared by a tensor, its `detach()`
    and its views (`w.T`, a reshape), as they share one memory. An op output that is not a
    view gets its counter when first changed (nothing can change it in place before)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0


def _viewed_version(data: np.ndarray, tensors) -> VersionCounter | None:
    """The version counter of the input whose memory `data` (an op's output) views, if any."""
    for t in tensors:
        owner = t.data if t.data.base is None else t.data.base
        if owner is data.base:
            return t._version_counter
    return None


def _saved_versions(tensors, saved: tuple) -> tuple:
    """(input index, counter, version) for each input with a version counter (a leaf, a view or
    `detach()` of one) whose values the op saved for backward."""
    found = ()
    for index, t in enumerate(tensors):
        counter = t._version_counter
        if counter is not None and _saves_memory_of(saved, t.data):
            found += ((index, counter, counter.value),)
    return found


def _saves_memory_of(saved: tuple, data: np.ndarray) -> bool:
    """Whether one of the `saved` values is an array in the memory of `data`."""
    owner = data if data.base is None else data.base  # the array owning the memory
    for value in saved:
        if type(value) is ndarray and (value is owner or value.base is owner):
            return True
    return False


def _check_saved(ctx: Function) -> None:
    """Refuse to run an op's backward on values freed, or changed since its forward saved them."""
    if ctx.released:
        raise RuntimeError(
            f"backward: trying to backward through the graph a second time (through "
            f"{type(ctx).__name__}); its saved buffers were freed after the first backward. "
            "Pass retain_graph=True to the first backward to keep them.")
    for index, counter, version in ctx.saved_versions:
        if counter.value != version:
            parent = ctx.parents[index]  # the input's shape (w.T's, for a view of a leaf)
            raise RuntimeError(
                f"one of the variables needed for gradient computation has been modified by an "
                f"inplace operation: [{parent.dtype} tensor of shape {parent.shape}], which is "
                f"input {index} of {type(ctx).__name__}, is at version {counter.value}; "
                f"expected version {version} instead. Hint: an optimizer step() or "
                "load_state_dict() changed it after the forward pass that saved it; run the "
                "forward pass again after changing the weights")


def _release(ctx: Function) -> None:
    """Free the arrays an op saved for its backward (as PyTorch frees saved tensors). An op that
    saved no array (only shapes, axes) may run its backward again, as in PyTorch."""
    for value in ctx.saved_values:
        if type(value) is ndarray:
            ctx.saved_values = ctx.saved_versions = ()
            ctx.released = True
            return


# -- hooks and retain_grad -------------------------------------------------------------------


def _run_hooks(node, grad: np.ndarray) -> np.ndarray:
    """The gradient of `node` after its hooks (each sees a read-only view and may return a
    replacement), stored into the tensor's `.grad` if it called `retain_grad()`."""
    for hook in list(node._hooks.values()):
        name = getattr(hook, "__qualname__", type(hook).__name__)
        view = grad.view()
        view.flags.writeable = False  # a hook must return a new array, not edit this one
        try:
            new = hook(view)
        except ValueError as e:
            if "read-only" not in str(e):
                raise
            raise ValueError(
                f"hook {name}: the gradient it receives is read-only ({e}); a hook must not "
                "change it in place but return a new array (return g + 1, not g += 1)") from None
        if new is not None:
            grad = _checked_gradient(f"hook {name}", new, node, "the gradient of its tensor",
                                     same_dtype=True)
    if node._ctx is not None and node.retains_grad:
        tensor = node._tensor()
        if tensor is not None:
            tensor.grad = np.array(grad) if tensor.grad is None else tensor.grad + grad
    return grad


# -- anomaly mode ------------------------------------------------------------------------------

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _anomaly_check_forward(ctx: Function, tensors, data: np.ndarray) -> None:
    """Remember where the op was created (for a backward error), and check its output."""
    ctx.created_at = _user_line()
    _anomaly_check(ctx, tensors, (data,), "forward")


def _anomaly_check(ctx: Function, tensors, values, stage: str) -> None:
    """Raise if any of `values` (arrays or None) holds a NaN or Inf."""
    for v in values:
        if v is not None and v.dtype.kind == "f" and not np.isfinite(v).all():
            kind = "NaN" if np.isnan(v).any() else "Inf"
            shapes = ", ".join(str(t.shape) for t in tensors)
            where = getattr(ctx, "created_at", None) or _user_line()
            raise RuntimeError(
                f"detect_anomaly: {type(ctx).__name__} produced {kind} in its {stage} "
                f"(input shapes {shapes}); the op was created at {where}")


def _user_line() -> str:
    """`file:line in function` of the innermost frame outside this package (compiled, the
    engine's functions have no frames; from its .py files they have: both are skipped)."""
    frame = sys._getframe(0)
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(
            _PACKAGE_DIR + os.sep):
        frame = frame.f_back
    if frame is None:
        return "<unknown>"
    return f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"
