"""Layers with parameters, PyTorch-style: `Module`, `Conv2d`, `Linear`, `MaxPool2d`, `ReLU`,
`Flatten`, `Dropout`, `Sequential`; `AvgPool2d`, `AdaptiveAvgPool2d`, `BatchNorm1d`,
`BatchNorm2d`.

A Module registers every `Parameter` and sub-Module assigned to one of its attributes, in the
order they were assigned, so `named_parameters()` yields PyTorch's names (`0.weight`,
`conv1.bias`, ...) and weights move between a PyTorch model and ours by `state_dict()`
(buffers, such as BatchNorm's running statistics, included):

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
from tinygrad_conv._args import conv_padding, flag, int_pair, integer, pool_window, real
from tinygrad_conv.tensor import Tensor, float_dtype

__all__ = [
    "AdaptiveAvgPool2d", "AvgPool2d", "BatchNorm1d", "BatchNorm2d",
    "Conv2d", "Dropout", "Flatten", "Linear", "MaxPool2d", "Module", "Parameter", "ReLU",
    "Sequential",
]


class Parameter(Tensor):
    """A Tensor that is a weight of a Module: it requires grad, and assigning it to a Module
    attribute registers it (so it appears in `parameters()` and `state_dict()`)."""

    __slots__ = ()

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
        # buffers: state that is not a parameter (BatchNorm's running statistics)
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent_buffers", set())

    def __setattr__(self, name: str, value: Any) -> None:
        parameters = self.__dict__.get("_parameters")
        if parameters is None:
            raise TypeError(
                f"{type(self).__name__}: cannot set attribute {name!r} before "
                "Module.__init__() runs; call super().__init__() first in __init__")
        modules = self.__dict__["_modules"]
        buffers = self.__dict__["_buffers"]
        if name in buffers and not isinstance(value, (Parameter, Module)):
            # assigning to a buffer's name replaces the buffer's value (PyTorch's rule)
            buffers[name] = _buffer_value(type(self).__name__, name, value)
            object.__setattr__(self, name, buffers[name])
            return
        # a name holds one thing: re-assigning it drops it from whichever registry it was in
        parameters.pop(name, None)
        modules.pop(name, None)
        buffers.pop(name, None)
        self._non_persistent_buffers.discard(name)
        if isinstance(value, Parameter):
            parameters[name] = value
        elif isinstance(value, Module):
            modules[name] = value
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        self._buffers.pop(name, None)
        self._non_persistent_buffers.discard(name)
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

    # -- buffers: state saved with the model that no optimizer updates --------------------------
    def register_buffer(self, name: str, tensor, persistent: bool = True) -> None:
        """Keep `tensor` (a Tensor, a numpy array, or None) as the buffer `self.<name>`.

        A buffer is state that is not a parameter, such as BatchNorm's running mean: it gets no
        gradient, `to(dtype)` converts it when it is float, and, when `persistent`, it is saved
        in `state_dict()` next to the parameters (non-persistent buffers are not). A numpy array
        keeps its dtype (float32, float64 or int64). Assigning to the name later replaces the
        value and keeps the registration.
        """
        where = f"{type(self).__name__}.register_buffer"
        if "_buffers" not in self.__dict__:
            raise TypeError(f"{where}: call super().__init__() before registering buffers")
        if not isinstance(name, str):
            raise TypeError(f"{where}: name must be a str, got {type(name).__name__}")
        if not name or "." in name:
            raise ValueError(f"{where}: name must be non-empty and contain no '.', got {name!r}")
        persistent = flag(where, "persistent", persistent)
        if name in self.__dict__ and name not in self._buffers:
            raise ValueError(f"{where}: attribute {name!r} already exists and is not a buffer")
        value = _buffer_value(type(self).__name__, name, tensor)
        self._buffers[name] = value
        if persistent:
            self._non_persistent_buffers.discard(name)
        else:
            self._non_persistent_buffers.add(name)
        object.__setattr__(self, name, value)

    def named_buffers(self, prefix: str = "", recurse: bool = True) -> Iterator[tuple[str, Tensor]]:
        """(dotted name, Tensor) for every buffer that is not None: `1.running_mean`, ...;
        a buffer shared by two modules is yielded once, under its first name."""
        modules = self.named_modules(prefix) if recurse else iter([(prefix, self)])
        seen: set[int] = set()
        for module_name, module in modules:
            for name, buf in module._buffers.items():
                if buf is not None and id(buf) not in seen:
                    seen.add(id(buf))
                    yield (f"{module_name}.{name}" if module_name else name), buf

    def buffers(self, recurse: bool = True) -> Iterator[Tensor]:
        for _, buf in self.named_buffers(recurse=recurse):
            yield buf

    def _state_items(self) -> Iterator[tuple[str, Tensor]]:
        """What `state_dict` holds, in PyTorch's order: each module's parameters, then its
        persistent buffers, module by module (depth first); each tensor once."""
        seen: set[int] = set()
        for module_name, module in self.named_modules():
            own = list(module._parameters.items()) + [
                (name, buf) for name, buf in module._buffers.items()
                if name not in module._non_persistent_buffers]
            for name, value in own:
                if value is not None and id(value) not in seen:
                    seen.add(id(value))
                    yield (f"{module_name}.{name}" if module_name else name), value

    # -- modes and gradients -------------------------------------------------------------------
    def train(self, mode: bool = True) -> Module:
        """Training mode (Dropout drops) for this module and everything below it."""
        mode = flag(f"{type(self).__name__}.train", "mode", mode)
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
        """Convert every parameter and every float buffer to `dtype` (float32 or float64) in
        place (the Tensor objects stay, their arrays change); integer buffers such as
        `num_batches_tracked` keep their dtype, as in PyTorch. Returns self."""
        dtype = float_dtype(f"{type(self).__name__}.to", dtype)
        for param in self.parameters():
            if param.data.dtype != dtype:
                param.data = param.data.astype(dtype)
                param.grad = None
        for buf in self.buffers():
            if buf.data.dtype.kind == "f" and buf.data.dtype != dtype:
                buf.data = buf.data.astype(dtype)
        return self

    def double(self) -> Module:
        return self.to(np.float64)

    def float(self) -> Module:
        return self.to(np.float32)

    # -- weights in and out --------------------------------------------------------------------
    def state_dict(self) -> OrderedDict[str, np.ndarray]:
        """{dotted name: a contiguous copy of the values} for every parameter and persistent
        buffer, with PyTorch's names and order (`0.weight`, `1.running_mean`, ...).

        Plain numpy arrays, so the safetensors package saves them as they are, for PyTorch:
        `safetensors.numpy.save_file(model.state_dict(), "model.safetensors")`.
        """
        return OrderedDict((name, t.data.copy()) for name, t in self._state_items())

    def load_state_dict(self, state_dict: Mapping[str, Any],
                        strict: bool = True) -> IncompatibleKeys:
        """Copy values into the parameters and persistent buffers, in place (an optimizer
        holding them sees them).

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
        own = dict(self._state_items())
        missing = [name for name in own if name not in state_dict]
        unexpected = [name for name in state_dict if name not in own]
        problems = []
        if strict and missing:
            problems.append(f"missing keys {missing}")
        if strict and unexpected:
            problems.append(f"unexpected keys {unexpected}")
        values = _matching_values(where, own, state_dict, problems)
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


def _show_pair(pair: tuple[int, int]):
    """A square window prints as one number, as PyTorch prints it."""
    return pair[0] if pair[0] == pair[1] else pair


def _buffer_value(module: str, name: str, value: Any) -> Tensor | None:
    """A buffer's value: a Tensor as given, a numpy array as a Tensor of its own dtype, None."""
    if isinstance(value, Parameter):
        raise TypeError(f"{module}: {name!r} is a Parameter, which cannot be a buffer; assign it "
                        "as an attribute to register it as a parameter")
    if value is None or isinstance(value, Tensor):
        return value
    if isinstance(value, np.ndarray):
        if value.dtype not in (np.float32, np.float64, np.int64):
            raise TypeError(f"{module}: buffer {name!r} must be float32, float64 or int64, "
                            f"got an array of {value.dtype}")
        return Tensor(value, dtype=value.dtype)
    raise TypeError(f"{module}: buffer {name!r} must be a Tensor, a numpy array or None, "
                    f"got {type(value).__name__}")


def _matching_values(where: str, own: Mapping[str, Tensor], state_dict: Mapping[str, Any],
                     problems: list[str]) -> dict[str, np.ndarray]:
    """The arrays of `state_dict` for the tensors in `own`; each shape or dtype that differs
    from its tensor's is added to `problems`."""
    values: dict[str, np.ndarray] = {}
    for name, param in own.items():
        if name not in state_dict:
            continue
        value = state_dict[name]
        value = np.asarray(value.data if isinstance(value, Tensor) else value)
        if value.dtype.kind not in "fiub":
            raise TypeError(f"{where}: {name!r} has non-numeric dtype {value.dtype}")
        kind = "parameter" if isinstance(param, Parameter) else "buffer"
        if value.shape != param.shape:
            problems.append(f"{name!r} has shape {value.shape}, the {kind} has {param.shape}")
        elif value.dtype != param.dtype:
            problems.append(f"{name!r} has dtype {value.dtype}, the {kind} has {param.dtype}")
        values[name] = value
    return values


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
        self.in_features = integer("Linear", "in_features", in_features, 1)
        self.out_features = integer("Linear", "out_features", out_features, 1)
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
    weight (C_out, C_in/groups, kh, kw), bias (C_out,). padding may also be "valid" or "same"
    (stride 1); groups splits the channels into independent convolutions (groups = C_in =
    C_out is depthwise)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True, dtype=None) -> None:
        super().__init__()
        self.in_channels = integer("Conv2d", "in_channels", in_channels, 1)
        self.out_channels = integer("Conv2d", "out_channels", out_channels, 1)
        self.kernel_size = int_pair("Conv2d", "kernel_size", kernel_size, 1)
        self.stride = int_pair("Conv2d", "stride", stride, 1)
        self.padding = conv_padding("Conv2d", padding, self.stride)
        self.dilation = int_pair("Conv2d", "dilation", dilation, 1)
        self.groups = integer("Conv2d", "groups", groups, 1)
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(f"Conv2d: groups={self.groups} must divide in_channels="
                             f"{self.in_channels} and out_channels={self.out_channels}")
        dtype = float_dtype("Conv2d", dtype)
        kh, kw = self.kernel_size
        per_group = self.in_channels // self.groups
        bound = 1.0 / math.sqrt(per_group * kh * kw)  # fan_in of one output value
        self.weight = _uniform((self.out_channels, per_group, kh, kw), bound, dtype)
        self.bias = _uniform((self.out_channels,), bound, dtype) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight, self.bias, stride=self.stride, padding=self.padding,
                        dilation=self.dilation, groups=self.groups)

    def extra_repr(self) -> str:
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        if self.padding != (0, 0):
            s += f", padding={self.padding!r}" if isinstance(self.padding, str) else \
                f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
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
        return (f"kernel_size={_show_pair(self.kernel_size)}, stride={_show_pair(self.stride)}, "
                f"padding={_show_pair(self.padding)}")


class AvgPool2d(Module):
    """Mean over kernel_size windows (zero padding): (N, C, H, W) -> (N, C, H', W'),
    H' = 1 + (H + 2*padding - kernel) // stride (rounded up with ceil_mode); stride defaults to
    kernel_size; count_include_pad: whether padding cells count in each window's divisor."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode: bool = False,
                 count_include_pad: bool = True) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.padding = pool_window(
            "AvgPool2d", kernel_size, stride, padding)
        self.ceil_mode = flag("AvgPool2d", "ceil_mode", ceil_mode)
        self.count_include_pad = flag("AvgPool2d", "count_include_pad", count_include_pad)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4:
            raise ValueError(f"AvgPool2d: expected input of shape (N, C, H, W), got {x.shape}")
        (kh, kw), (ph, pw) = self.kernel_size, self.padding
        if kh > x.shape[2] + 2 * ph or kw > x.shape[3] + 2 * pw:
            raise ValueError(f"AvgPool2d: kernel_size {self.kernel_size} is larger than the "
                             f"padded input ({x.shape[2] + 2 * ph}x{x.shape[3] + 2 * pw}: input "
                             f"{x.shape}, padding {self.padding})")
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                            self.count_include_pad)

    def extra_repr(self) -> str:
        return (f"kernel_size={_show_pair(self.kernel_size)}, stride={_show_pair(self.stride)}, "
                f"padding={_show_pair(self.padding)}")


class AdaptiveAvgPool2d(Module):
    """Mean over output_size windows that tile the input: (N, C, H, W) -> (N, C, OH, OW);
    AdaptiveAvgPool2d(1) is global average pooling."""

    def __init__(self, output_size) -> None:
        super().__init__()
        self.output_size = int_pair("AdaptiveAvgPool2d", "output_size", output_size, 1)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4:
            raise ValueError(f"AdaptiveAvgPool2d: expected input of shape (N, C, H, W), got "
                             f"{x.shape}")
        return F.adaptive_avg_pool2d(x, self.output_size)

    def extra_repr(self) -> str:
        return f"output_size={_show_pair(self.output_size)}"


class ReLU(Module):
    """max(x, 0), elementwise; any shape."""

    def forward(self, x: Tensor) -> Tensor:
        return x.relu()


class Flatten(Module):
    """Merge dimensions start_dim..end_dim into one: (N, C, H, W) -> (N, C*H*W) by default."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim = integer("Flatten", "start_dim", start_dim)
        self.end_dim = integer("Flatten", "end_dim", end_dim)

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(self.start_dim, self.end_dim)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Dropout(Module):
    """In training, zero each element with probability p and scale the rest by 1/(1-p);
    in eval mode, the identity. The mask comes from `tinygrad_conv.rng.generator()`."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        self.p = real("Dropout", "p", p, 0, 1)

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


# ----------------------------------------------------------------------------------------------
# Normalization
# ----------------------------------------------------------------------------------------------


class _BatchNorm(Module):
    """Batch normalization over the channels (dimension 1) of its input, PyTorch's semantics.

    In training, each channel is normalized by the batch's mean and biased variance, and the
    running estimates are updated: r = (1 - momentum) r + momentum * batch statistic (unbiased
    variance; momentum=None averages all batches so far equally). In eval mode the running
    estimates normalize. Then y = weight * x̂ + bias (when affine; bias=False keeps the weight
    only).

    Parameters `weight` (ones) and `bias` (zeros); buffers `running_mean` (zeros), `running_var`
    (ones) and `num_batches_tracked` (int64), all in `state_dict` under these names.
    """

    _dims: tuple[int, ...] = ()
    _layout = ""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, dtype=None, *,
                 bias: bool = True) -> None:
        super().__init__()
        layer = type(self).__name__
        self.num_features = integer(layer, "num_features", num_features, 1)
        self.eps = real(layer, "eps", eps, 0)
        # momentum None: a cumulative average of all batches so far
        self.momentum = None if momentum is None else real(
            layer, "momentum (a number or None)", momentum, 0, 1)
        self.affine = flag(layer, "affine", affine)
        self.track_running_stats = flag(layer, "track_running_stats", track_running_stats)
        bias = flag(layer, "bias", bias)
        dtype = float_dtype(layer, dtype)
        c = self.num_features
        self.weight = Parameter(np.ones(c, dtype=dtype), dtype=dtype) if affine else None
        self.bias = Parameter(np.zeros(c, dtype=dtype), dtype=dtype) if affine and bias \
            else None
        if track_running_stats:
            self.register_buffer("running_mean", np.zeros(c, dtype=dtype))
            self.register_buffer("running_var", np.ones(c, dtype=dtype))
            self.register_buffer("num_batches_tracked", np.array(0, dtype=np.int64))
        else:
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                self.register_buffer(name, None)

    def reset_running_stats(self) -> None:
        """Running mean 0, running variance 1, no batches tracked."""
        if self.track_running_stats:
            self.running_mean.data.fill(0)
            self.running_var.data.fill(1)
            self.num_batches_tracked.data.fill(0)

    def forward(self, x: Tensor) -> Tensor:
        layer = type(self).__name__
        if not isinstance(x, Tensor):
            raise TypeError(f"{layer}: input must be a Tensor, got {type(x).__name__}")
        if x.ndim not in self._dims or x.shape[1] != self.num_features:
            raise ValueError(f"{layer}: expected input of shape {self._layout} with C = "
                             f"{self.num_features}, got {x.shape}")
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.data += 1
            if self.momentum is None:  # a cumulative average: batch k weighs 1/k
                factor = 1.0 / float(self.num_batches_tracked.data)
        # in eval mode without running estimates the batch's own statistics normalize
        use_batch_stats = self.training or self.running_mean is None
        keep = not self.training or self.track_running_stats
        return F.batch_norm(x, self.running_mean if keep else None,
                            self.running_var if keep else None, self.weight, self.bias,
                            use_batch_stats, factor, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, bias={self.bias is not None}, "
                f"track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """Batch normalization of (N, C) or (N, C, L) inputs, per channel C."""

    _dims = (2, 3)
    _layout = "(N, C) or (N, C, L)"


class BatchNorm2d(_BatchNorm):
    """Batch normalization of (N, C, H, W) inputs, per channel C (over N, H and W)."""

    _dims = (4,)
    _layout = "(N, C, H, W)"
