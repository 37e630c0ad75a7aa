"""Train with your own backward: `student_kernels(DIR)` routes conv and pool gradients through
the functions in DIR/conv.py and DIR/pool.py (the exercise files `new` made).

    with tinygrad_conv.student_kernels("my_exercises"):
        loss.backward()          # conv2d and the pools call your functions for their gradients

The forward passes stay the library's. A function not written yet (its body still raises
NotImplementedError, or it is missing) is computed by the library instead, with one warning
that names it. Like `reference_kernels()` the switch is per thread; inside it the library's
kernels are reference.py's when `reference_kernels()` is on too.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import inspect
import threading
import warnings
from pathlib import Path
from types import ModuleType

import numpy as np

from tinygrad_conv import _conv, _pool, reference

# the functions a learner writes, per exercise file
TASK_FUNCTIONS = {
    "conv": ("conv2d_input_grad", "conv2d_weight_grad", "conv2d_bias_grad"),
    "pool": ("max_pool2d_backward", "avg_pool2d_backward"),
}

_mode = threading.local()   # each thread's stack of active student kernels


def load_module(path: Path) -> ModuleType:
    """The learner's file, imported fresh under a name of its own (never cached in
    sys.modules, so an edited file is read again)."""
    name = f"tinygrad_conv_exercise_{path.stem}_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def is_written(fn) -> bool:
    """False for a stub: a function whose body (after its docstring) is one `raise
    NotImplementedError(...)`."""
    try:
        tree = ast.parse(inspect.getsource(fn).strip())
    except (OSError, TypeError, SyntaxError):
        return True     # no source to read: assume it is real code
    body = tree.body[0].body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]                                              # the docstring
    if len(body) != 1 or not isinstance(body[0], ast.Raise) or body[0].exc is None:
        return True
    exc = body[0].exc.func if isinstance(body[0].exc, ast.Call) else body[0].exc
    return not (isinstance(exc, ast.Name) and exc.id == "NotImplementedError")


def active_kernels(compiled):
    """What `dispatch.kernels` uses in place of the compiled module `compiled` in this thread:
    the learner's adapter for it, or None when no student_kernels block is active (or it has
    nothing for this module)."""
    stack = getattr(_mode, "stack", None)
    return stack[-1].get(compiled) if stack else None


class using(contextlib.ContextDecorator):
    """Within this block, in this thread, the engine's conv and pool gradients call these
    functions ({name: function}, names from TASK_FUNCTIONS; the library computes the others)."""

    def __init__(self, functions: dict) -> None:
        self.functions = dict(functions)
        self._adapters = {_conv: _ConvKernels(self.functions),
                          _pool: _PoolKernels(self.functions)}

    def get(self, compiled):
        return self._adapters.get(compiled)

    def __enter__(self):
        if not hasattr(_mode, "stack"):
            _mode.stack = []
        _mode.stack.append(self)
        return self

    def __exit__(self, *exc) -> None:
        _mode.stack.pop()


class student_kernels(using):
    """Within this block (or decorated function), in this thread, the gradients of conv2d,
    max_pool2d and avg_pool2d are computed by the learner's functions in `directory`
    (conv.py and pool.py, the files `python -m tinygrad_conv.exercises new` makes)."""

    def __init__(self, directory) -> None:
        directory = Path(directory)
        if not directory.is_dir():
            raise FileNotFoundError(f"student_kernels: {directory} is not a directory (make one "
                                    f"with: python -m tinygrad_conv.exercises new {directory})")
        functions, not_written = {}, []
        for task, names in TASK_FUNCTIONS.items():
            path = directory / f"{task}.py"
            module = load_module(path) if path.exists() else None
            for name in names:
                fn = getattr(module, name, None)
                if fn is not None and is_written(fn):
                    functions[name] = fn
                else:
                    not_written.append(name)
        if not_written:
            warnings.warn(f"student_kernels: {', '.join(not_written)} not written yet in "
                          f"{directory.resolve().name}/: the library computes those",
                          stacklevel=2)
        super().__init__(functions)


def _library(compiled):
    return reference if reference.enabled() else compiled


def _checked(name: str, result, shape, dtype) -> np.ndarray:
    """The learner's result as the engine needs it, or an error naming the function."""
    if not isinstance(result, np.ndarray) or result.shape != tuple(shape):
        got = getattr(result, "shape", type(result).__name__)
        raise ValueError(f"student_kernels: {name} returned {got}, expected an array of shape "
                         f"{tuple(shape)} (grade it: python -m tinygrad_conv.exercises grade "
                         f"DIR --function {name})")
    return np.ascontiguousarray(result, dtype=dtype)


class _ConvKernels:
    """conv's kernel module as the engine calls it (cnn_ops.Conv2d), backward by the learner."""

    def __init__(self, functions) -> None:
        self.functions = functions

    def conv2d_forward(self, *args):
        return _library(_conv).conv2d_forward(*args)

    def conv2d_backward(self, x, w, grad_out, stride, padding, dilation, need_dx, need_dw,
                        need_db, groups):
        own = {name: self.functions.get(name) for name in TASK_FUNCTIONS["conv"]}
        dx, dw, db = _library(_conv).conv2d_backward(
            x, w, grad_out, stride, padding, dilation,
            need_dx and own["conv2d_input_grad"] is None,
            need_dw and own["conv2d_weight_grad"] is None,
            need_db and own["conv2d_bias_grad"] is None, groups)
        if need_dx and own["conv2d_input_grad"] is not None:
            dx = _checked("conv2d_input_grad", own["conv2d_input_grad"](
                grad_out.copy(), w.copy(), x.shape, stride, padding, dilation, groups),
                x.shape, x.dtype)
        if need_dw and own["conv2d_weight_grad"] is not None:
            dw = _checked("conv2d_weight_grad", own["conv2d_weight_grad"](
                x.copy(), grad_out.copy(), w.shape, stride, padding, dilation, groups),
                w.shape, w.dtype)
        if need_db and own["conv2d_bias_grad"] is not None:
            db = _checked("conv2d_bias_grad", own["conv2d_bias_grad"](grad_out.copy()),
                          (w.shape[0],), w.dtype)
        return dx, dw, db


class _Argmax(np.ndarray):
    """max_pool2d's argmax (what the compiled backward reads), carrying the forward's input and
    window too: the learner's max_pool2d_backward takes Z and the window, not the argmax."""


class _PoolKernels:
    """pool's kernel module as the engine calls it (cnn_ops' pools), backward by the learner."""

    def __init__(self, functions) -> None:
        self.functions = functions

    def __getattr__(self, name):     # adaptive pooling and the forwards: the library's
        return getattr(_library(_pool), name)

    def max_pool2d_forward(self, x, kernel_size, stride, padding):
        out, argmax = _library(_pool).max_pool2d_forward(x, kernel_size, stride, padding)
        argmax = argmax.view(_Argmax)
        argmax.saved = (x, kernel_size, stride, padding)
        return out, argmax

    def max_pool2d_backward(self, grad_out, argmax, h, w):
        own = self.functions.get("max_pool2d_backward")
        saved = getattr(argmax, "saved", None)
        if own is None or saved is None:     # not written, or the forward ran outside the block
            return _library(_pool).max_pool2d_backward(grad_out, np.asarray(argmax), h, w)
        x, kernel_size, stride, padding = saved
        return _checked("max_pool2d_backward", own(grad_out.copy(), x.copy(), kernel_size,
                                                   stride, padding), x.shape, grad_out.dtype)

    def avg_pool2d_backward(self, grad_out, h, w, kernel_size, stride, padding, ceil_mode,
                            count_include_pad):
        own = self.functions.get("avg_pool2d_backward")
        if own is None:
            return _library(_pool).avg_pool2d_backward(grad_out, h, w, kernel_size, stride,
                                                       padding, ceil_mode, count_include_pad)
        shape = grad_out.shape[:2] + (h, w)
        return _checked("avg_pool2d_backward", own(grad_out.copy(), shape, kernel_size, stride,
                                                   padding, ceil_mode, count_include_pad),
                        shape, grad_out.dtype)
