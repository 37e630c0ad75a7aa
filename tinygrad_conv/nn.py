"""Layers with parameters, PyTorch-style: `Module`, `Conv2d`, `Linear`, `MaxPool2d`, `ReLU`,
`Flatten`, `Dropout`, `Sequential`.

A Module registers every `Parameter` and sub-Module assigned to one of its attributes, in the
order they were assigned, so `named_parameters()` yields PyTorch's names (`0.weight`,
`conv1.bias`, ...) and weights move between a PyTorch model and ours by `state_dict()`:

    model.load_state_dict({k: v.numpy() for k, v in torch_model.state_dict().items()})

Weights start as PyTorch starts them: kaiming_uniform_(a=sqrt(5)), which is U(-b, b) with
b = 1/sqrt(fan_in), and biases U(-b, b) with the same b; the numbers come from
`tinygrad_conv.rng.generator()`, so `tinygrad_conv.manual_seed(s)` makes a model repeatable.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import numpy as np

from tinygrad_conv import functional as F
from tinygrad_conv import rng as _rng
from tinygrad_conv.cnn_ops import int_pair, pool_window
from tinygrad_conv.tensor import Tensor, float_dtype

__all__ = [
    "Conv2d", "Dropout", "Flatten", "Linear", "MaxPool2d", "Module", "Parameter", "ReLU",
    "Sequential",
]


class Parameter(Tensor):
    """A Tensor that is a weight of a Module: it requires grad, and assigning it to a Module
    attribute registers it (so it appears in `parameters()` and `state_dict()`)."""

    __slots__ = ()
    _is_weight = True  # backward checks its version even when it is frozen (no grad)

    def __init__(self, data, requires_grad: bool = True, dtype=None) -> None:
        super().__init__(data, requires_grad=requires_grad, dtype=dtype)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()


class IncompatibleKeys(NamedTuple):
    """What `load_state_dict(..., strict=False)` skipped, as in PyTorch."""

    missing_keys: list[str]
    unexpected_keys: list[str]


# ----------------------------------------------------------------------------------------------
# Module
# ----------------------------------------------------------------------------------------------


class Module:
    """Base class of every layer and model. A subclass calls `super().__init__()`, assigns its
    Parameters and sub-Modules to attributes, and defines `forward`; `module(x)` runs it."""

    def __init__(self) -> None:
        # object.__setattr__: our own __setattr__ needs these two dicts to exist already
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    def __setattr__(self, name: str, value: Any) -> None:
        parameters = self.__dict__.get("_parameters")
        if parameters is None:
            raise TypeError(
                f"{type(self).__name__}: cannot set attribute {name!r} before "
                "Module.__init__() runs; call super().__init__() first in __init__")
        modules = self.__dict__["_modules"]
        # a name holds one thing: re-assigning it drops it from whichever registry it was in
        parameters.pop(name, None)
        modules.pop(name, None)
        if isinstance(value, Parameter):
            parameters[name] = value
        elif isinstance(value, Module):
            modules[name] = value
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        object.__delattr__(self, name)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # -- what the module holds -----------------------------------------------------------------
    def named_children(self) -> Iterator[tuple[str, Module]]:
        """The direct sub-Modules with their attribute names, in assignment order."""
        yield from self._modules.items()

    def children(self) -> Iterator[Module]:
        yield from self._modules.values()

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        """This module ("") and every module below it, depth first, each once."""
        seen: set[int] = set()
        stack = [(prefix, self)]
        while stack:
            name, module = stack.pop()
            if id(module) in seen:
                continue
            seen.add(id(module))
            yield name, module
            below = [(f"{name}.{n}" if name else n, m) for n, m in module._modules.items()]
            stack.extend(reversed(below))

    def modules(self) -> Iterator[Module]:
        for _, module in self.named_modules():
            yield module

    def named_parameters(self, prefix: str = "",
                         recurse: bool = True) -> Iterator[tuple[str, Parameter]]:
        """(dotted name, Parameter) pairs: `weight`, `0.bias`, `features.3.weight`, ...

        A Parameter shared by two modules is yielded once, under its first name.
        """
        modules = self.named_modules(prefix) if recurse else iter([(prefix, self)])
        seen: set[int] = set()
        for module_name, module in modules:
            for name, param in module._parameters.items():
                if id(param) not in seen:
                    seen.add(id(param))
                    yield (f"{module_name}.{name}" if module_name else name), param

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        for _, param in self.named_parameters(recurse=recurse):
            yield param

    # -- modes and gradients -------------------------------------------------------------------
    def train(self, mode: bool = True) -> Module:
        """Training mode (Dropout drops) for this module and everything below it."""
        if not isinstance(mode, bool):
            raise TypeError(f"{type(self).__name__}.train: mode must be a bool, got {mode!r}")
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self) -> Module:
        """Evaluation mode (Dropout is the identity); same as `train(False)`."""
        return self.train(False)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget every parameter's gradient (None, or zeros with set_to_none=False)."""
        for param in self.parameters():
            if set_to_none:
                param.grad = None
            elif param.grad is not None:
                param.grad.fill(0)

    def to(self, dtype) -> Module:
        """Convert every parameter to `dtype` (float32 or float64) in place; returns self."""
        dtype = float_dtype(f"{type(self).__name__}.to", dtype)
        for param in self.parameters():
            if param.data.dtype != dtype:
                param.data = param.data.astype(dtype)
                param.grad = None
        return self

    def double(self) -> Module:
        return self.to(np.float64)

    def float(self) -> Module:
        return self.to(np.float32)

    # -- weights in and out --------------------------------------------------------------------
    def state_dict(self) -> OrderedDict[str, np.ndarray]:
        """{dotted name: copy of the parameter's values}, in `named_parameters()` order."""
        return OrderedDict((name, p.data.copy()) for name, p in self.named_parameters())

    def load_state_dict(self, state_dict: Mapping[str, Any],
                        strict: bool = True) -> IncompatibleKeys:
        """Copy values into the parameters, in place (an optimizer holding them sees them).

        Values may be numpy arrays, Tensors or anything `np.asarray` takes (a PyTorch CPU
        tensor). Everything is checked before anything is copied: a key missing or unexpected
        (when `strict`), a shape or a dtype that differs from the parameter's is a ValueError
        naming the keys, and leaves the module unchanged. Dtypes are not converted silently (a
        float64 checkpoint is not this float32 model): convert with `.astype` or `model.to`.
        """
        where = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"{where}: expected a mapping of name -> array, "
                            f"got {type(state_dict).__name__}")
        own = dict(self.named_parameters())
        missing = [name for name in own if name not in state_dict]
        unexpected = [name for name in state_dict if name not in own]
        problems = []
        if strict and missing:
            problems.append(f"missing keys {missing}")
        if strict and unexpected:
            problems.append(f"unexpected keys {unexpected}")
        values: dict[str, np.ndarray] = {}
        for name, param in own.items():
            if name not in state_dict:
                continue
            value = state_dict[name]
            value = np.asarray(value.data if isinstance(value, Tensor) else value)
            if value.dtype.kind not in "fiub":
                raise TypeError(f"{where}: {name!r} has non-numeric dtype {value.dtype}")
            if value.shape != param.shape:
                problems.append(f"{name!r} has shape {value.shape}, the parameter has "
                                f"{param.shape}")
            elif value.dtype != param.dtype:
                problems.append(f"{name!r} has dtype {value.dtype}, the parameter has "
                                f"{param.dtype}")
            values[name] = value
        if problems:
            raise ValueError(f"{where}: " + "; ".join(problems))
        for name, value in values.items():
            np.copyto(own[name].data, value)
            own[name].bump_version()  # a graph that saved the old values now refuses backward
        return IncompatibleKeys(missing, unexpected)

    # -- printing ------------------------------------------------------------------------------
    def extra_repr(self) -> str:
        """The arguments shown between the parentheses of this module's repr."""
        return ""

    def __repr__(self) -> str:
        lines = [f"({name}): " + repr(module).replace("\n", "\n  ")
                 for name, module in self._modules.items()]
        if not lines:
            return f"{type(self).__name__}({self.extra_repr()})"
        body = "".join(f"\n  {line}" for line in ([self.extra_repr()] if self.extra_repr()
                                                   else []) + lines)
        return f"{type(self).__name__}({body}\n)"


# ----------------------------------------------------------------------------------------------
# Argument checks and initialisation
# ----------------------------------------------------------------------------------------------


def _int(layer: str, name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{layer}: {name} must be an int, got {value!r}")
    if value < low:
        raise ValueError(f"{layer}: {name} must be >= {low}, got {value}")
    return int(value)


def _uniform(shape: tuple[int, ...], bound: float, dtype: np.dtype) -> Parameter:
    """A Parameter drawn from U(-bound, bound) by the shared generator."""
    return Parameter(_rng.generator().uniform(-bound, bound, size=shape), dtype=dtype)


# ----------------------------------------------------------------------------------------------
# Layers
# ----------------------------------------------------------------------------------------------


class Linear(Module):
    """y = x @ weight.T + bias. x (..., in_features) -> y (..., out_features);
    weight (out_features, in_features), bias (out_features,)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 dtype=None) -> None:
        super().__init__()
        self.in_features = _int("Linear", "in_features", in_features, 1)
        self.out_features = _int("Linear", "out_features", out_features, 1)
        dtype = float_dtype("Linear", dtype)
        # kaiming_uniform_(a=sqrt(5)) has bound sqrt(6 / ((1 + 5) * fan_in)) = 1 / sqrt(fan_in)
        bound = 1.0 / math.sqrt(self.in_features)
        self.weight = _uniform((self.out_features, self.in_features), bound, dtype)
        self.bias = _uniform((self.out_features,), bound, dtype) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)  # which checks x's shape

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class Conv2d(Module):
    """2-D cross-correlation. x (N, C_in, H, W) -> (N, C_out, H', W') with
    H' = 1 + (H + 2*padding - dilation*(kernel-1) - 1) // stride (and W' alike);
    weight (C_out, C_in, kh, kw), bias (C_out,)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, bias: bool = True, dtype=None) -> None:
        super().__init__()
        self.in_channels = _int("Conv2d", "in_channels", in_channels, 1)
        self.out_channels = _int("Conv2d", "out_channels", out_channels, 1)
        self.kernel_size = int_pair("Conv2d", "kernel_size", kernel_size, 1)
        self.stride = int_pair("Conv2d", "stride", stride, 1)
        self.padding = int_pair("Conv2d", "padding", padding, 0)
        self.dilation = int_pair("Conv2d", "dilation", dilation, 1)
        dtype = float_dtype("Conv2d", dtype)
        kh, kw = self.kernel_size
        bound = 1.0 / math.sqrt(self.in_channels * kh * kw)  # fan_in of one output value
        self.weight = _uniform((self.out_channels, self.in_channels, kh, kw), bound, dtype)
        self.bias = _uniform((self.out_channels,), bound, dtype) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight, self.bias, stride=self.stride, padding=self.padding,
                      dilation=self.dilation)

    def extra_repr(self) -> str:
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.bias is None:
            s += ", bias=False"
        return s


class MaxPool2d(Module):
    """Max over kernel_size windows: (N, C, H, W) -> (N, C, H', W'),
    H' = 1 + (H + 2*padding - kernel) // stride; stride defaults to kernel_size."""

    def __init__(self, kernel_size, stride=None, padding=0) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.padding = pool_window(
            "MaxPool2d", kernel_size, stride, padding)

    def forward(self, x: Tensor) -> Tensor:
        return F.max_pool2d(x, self.kernel_size, stride=self.stride, padding=self.padding)

    def extra_repr(self) -> str:
        def show(pair):  # a square window prints as one number, as PyTorch prints it
            return pair[0] if pair[0] == pair[1] else pair
        return (f"kernel_size={show(self.kernel_size)}, stride={show(self.stride)}, "
                f"padding={show(self.padding)}")


class ReLU(Module):
    """max(x, 0), elementwise; any shape."""

    def forward(self, x: Tensor) -> Tensor:
        return x.relu()


class Flatten(Module):
    """Merge dimensions start_dim..end_dim into one: (N, C, H, W) -> (N, C*H*W) by default."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        for name, value in (("start_dim", start_dim), ("end_dim", end_dim)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"Flatten: {name} must be an int, got {value!r}")
        self.start_dim, self.end_dim = int(start_dim), int(end_dim)

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(self.start_dim, self.end_dim)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Dropout(Module):
    """In training, zero each element with probability p and scale the rest by 1/(1-p);
    in eval mode, the identity. The mask comes from `tinygrad_conv.rng.generator()`."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, (int, float, np.floating, np.integer)):
            raise TypeError(f"Dropout: p must be a number, got {p!r}")
        if not 0 <= p <= 1:
            raise ValueError(f"Dropout: p must be in [0, 1], got {p}")
        self.p = float(p)

    def forward(self, x: Tensor) -> Tensor:
        return F.dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Sequential(Module):
    """Modules applied in order; `seq[i]`, `seq[a:b]` (a Sequential), `len(seq)`, iteration.

    Sequential(m0, m1, ...) names them "0", "1", ...; Sequential(OrderedDict(name=m, ...))
    keeps the given names.
    """

    def __init__(self, *modules) -> None:
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], Mapping):
            items = list(modules[0].items())
        else:
            items = [(str(i), m) for i, m in enumerate(modules)]
        for name, module in items:
            if not isinstance(module, Module):
                raise TypeError(f"Sequential: item {name!r} is a {type(module).__name__}, "
                                "not a Module")
            setattr(self, name, module)

    def forward(self, x):
        for module in self._modules.values():
            x = module(x)
        return x

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def __getitem__(self, index):
        modules = list(self._modules.items())
        if isinstance(index, slice):
            return Sequential(OrderedDict(modules[index]))
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"Sequential: index must be an int or a slice, got {index!r}")
        if not -len(modules) <= index < len(modules):
            raise IndexError(f"Sequential: index {index} is out of range for {len(modules)} "
                             "modules")
        return modules[index][1]

    def append(self, module: Module) -> Sequential:
        if not isinstance(module, Module):
            raise TypeError(f"Sequential.append: expected a Module, got "
                            f"{type(module).__name__}")
        setattr(self, str(len(self)), module)
        return self
