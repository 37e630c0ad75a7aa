"""A scalar autograd engine with micrograd's API: `Value`, and `Neuron`, `Layer`, `MLP` on top.

    from tinygrad_conv.scalar import MLP, Value
    model = MLP(2, [16, 16, 1])
    loss = (1 + -1.0 * model([Value(0.5), Value(-1.0)])).relu()
    model.zero_grad()
    loss.backward()
    for p in model.parameters():
        p.data -= 0.1 * p.grad

micrograd code runs unchanged with `from micrograd.engine import Value` / `from micrograd.nn
import MLP` swapped for this module. `Value` is a Cython class (src/scalar.pyx): one graph node
per number, as in micrograd, with the same numbers bit for bit (up to the order in which a
gradient's terms are added); the C engine makes building and backpropagating a graph dozens of
times faster (benchmarks/bench_scalar.py). What differs, on purpose:

- `data` and `grad` are always floats (C doubles): `Value(2) * 3` has data 6.0, not 6;
- an op with a Python number is one node that keeps the number (`(x * 2)._op == '*2'`), where
  micrograd adds a Value for the 2 to the graph; a - b and a / b are one node each, where
  micrograd makes two (a + b*-1, a * b**-1) (the numbers are the same, also after repeated
  backward() calls);
- where micrograd's backward raises (0.0 ** -k in a derivative, as for x ** 0.5 at x = 0) the
  grad here is inf or NaN, and x ** 0 passes a zero gradient;
- `tanh`, `exp`, `log` and `sigmoid` exist (micrograd's engine has relu only), and `label`;
- bad input raises a TypeError or ValueError naming the op (micrograd asserts, or returns a
  complex number for a negative number to a fractional power); a Neuron given the wrong number
  of inputs raises ValueError (micrograd's zip quietly drops the extra ones);
- Values take no new attributes (no `__dict__`) and `Value` no new methods: subclass it (a
  subclass's instances take both; built-in ops on them return plain Values, as micrograd's
  do). `_backward` is a property: a built-in node's step (run in C by backward()) unless you
  set your own function, micrograd style, which backward() then calls (docs/scalar.md).

The nn classes use Python's `random` module as micrograd's do, so after `random.seed(s)` both
libraries make the same weights.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from tinygrad_conv._scalar import Value, _neuron_sum, topological_order

__all__ = ["MLP", "Layer", "Module", "Neuron", "Value", "topological_order"]


class Module:
    """What every scalar model has: its parameters, and a way to zero their gradients."""

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = 0

    def parameters(self) -> list[Value]:
        return []


class Neuron(Module):
    """act = b + w1*x1 + w2*x2 + ... (in that order), then ReLU unless nonlin=False.

    Weights start uniform in [-1, 1] from Python's `random`, the bias at 0 (micrograd's init).
    """

    def __init__(self, nin: int, nonlin: bool = True) -> None:
        _check_count("Neuron", "nin", nin, 0)
        self.w = [Value(random.uniform(-1, 1)) for _ in range(nin)]
        self.b = Value(0)
        self.nonlin = nonlin

    def __call__(self, x: Sequence[Value | float]) -> Value:
        # the nodes of micrograd's sum((wi*xi for wi, xi in zip(self.w, x)), self.b), in C
        act = _neuron_sum(self.w, _as_list(x), self.b)
        return act.relu() if self.nonlin else act

    def parameters(self) -> list[Value]:
        return self.w + [self.b]

    def __repr__(self) -> str:
        return f"{'ReLU' if self.nonlin else 'Linear'}Neuron({len(self.w)})"


class Layer(Module):
    """nout neurons that each see all nin inputs; one output Value alone, else a list."""

    def __init__(self, nin: int, nout: int, **kwargs) -> None:
        _check_count("Layer", "nout", nout, 1)
        self.neurons = [Neuron(nin, **kwargs) for _ in range(nout)]

    def __call__(self, x: Sequence[Value | float]) -> Value | list[Value]:
        x = _as_list(x)
        out = [n(x) for n in self.neurons]
        return out[0] if len(out) == 1 else out

    def parameters(self) -> list[Value]:
        return [p for n in self.neurons for p in n.parameters()]

    def __repr__(self) -> str:
        return f"Layer of [{', '.join(str(n) for n in self.neurons)}]"


class MLP(Module):
    """Layers of sizes nin -> nouts[0] -> ... -> nouts[-1]; ReLU after all but the last."""

    def __init__(self, nin: int, nouts: Sequence[int]) -> None:
        if isinstance(nouts, int) or not all(isinstance(n, int) for n in nouts) or not nouts:
            raise TypeError(f"MLP: nouts must be a non-empty list of layer sizes, got {nouts!r}")
        sz = [nin] + list(nouts)
        self.layers = [Layer(sz[i], sz[i + 1], nonlin=i != len(nouts) - 1)
                       for i in range(len(nouts))]

    def __call__(self, x: Sequence[Value | float]) -> Value | list[Value]:
        for layer in self.layers:
            x = layer(x)
        return x

    def parameters(self) -> list[Value]:
        return [p for layer in self.layers for p in layer.parameters()]

    def __repr__(self) -> str:
        return f"MLP of [{', '.join(str(layer) for layer in self.layers)}]"


def _check_count(cls: str, name: str, n, least: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"{cls}: {name} must be an int, got {type(n).__name__}: {n!r}")
    if n < least:
        raise ValueError(f"{cls}: {name} must be >= {least}, got {n}")


def _as_list(x) -> list:
    """The inputs of a layer as a list: one Value or number counts as a list of one."""
    if isinstance(x, list):
        return x
    if isinstance(x, Value | int | float):
        return [x]
    try:
        return list(x)
    except TypeError:
        raise TypeError(f"expected a list of Values or numbers as input, got "
                        f"{type(x).__name__}: {x!r}") from None
