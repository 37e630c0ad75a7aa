"""The value task: micrograd's Value, whose ops' backward passes you write, and two Tensor ops.

Fill in each `_backward` below (the forward parts are written), then grade them:

    python -m tinygrad_conv.exercises grade .  --task value     # add --level 1 to start small

Levels: 1 each op on its own, 2 a Value used twice (gradients must add up: +=, never =),
3 the Tensor-level ops at the end of this file (subclasses of tinygrad_conv.Function).
Function names for --function: add mul pow relu tanh exp Sigmoid Mean.
"""

from __future__ import annotations

import math

import numpy as np

from tinygrad_conv import Function


class Value:
    """One number of a graph: `data`, `grad` = dL/d(this number), and `_backward`, which passes
    `grad` on to the Values it was made from. A Value used twice gets a gradient from each use:
    every `_backward` adds (+=) to the grads, never overwrites them."""

    def __init__(self, data, _children=(), _op=""):
        self.data = float(data)
        self.grad = 0.0
        self._backward = lambda: None
        self._prev = tuple(_children)    # in order (micrograd keeps a set), so runs repeat
        self._op = _op

    def __add__(self, other):
        other = other if isinstance(other, Value) else Value(other)
        out = Value(self.data + other.data, (self, other), "+")

        def _backward():
            """out = self + other:  dL/dself += dL/dout,  dL/dother += dL/dout"""
            raise NotImplementedError("value task, level 1: write the backward of add")
        out._backward = _backward
        return out

    def __mul__(self, other):
        other = other if isinstance(other, Value) else Value(other)
        out = Value(self.data * other.data, (self, other), "*")

        def _backward():
            """out = self * other:  dL/dself += other · dL/dout,  dL/dother += self · dL/dout"""
            raise NotImplementedError("value task, level 1: write the backward of mul")
        out._backward = _backward
        return out

    def __pow__(self, k):
        if not isinstance(k, (int, float)):
            raise TypeError(f"Value ** k: k must be an int or float, got {type(k).__name__}")
        out = Value(self.data ** k, (self,), f"**{k}")

        def _backward():
            """out = self ** k:  dL/dself += k · self^(k-1) · dL/dout"""
            raise NotImplementedError("value task, level 1: write the backward of pow")
        out._backward = _backward
        return out

    def relu(self):
        out = Value(max(self.data, 0.0), (self,), "relu")

        def _backward():
            """out = max(self, 0):  dL/dself += (1 if out > 0 else 0) · dL/dout"""
            raise NotImplementedError("value task, level 1: write the backward of relu")
        out._backward = _backward
        return out

    def tanh(self):
        out = Value(math.tanh(self.data), (self,), "tanh")

        def _backward():
            """out = tanh(self):  dL/dself += (1 - out²) · dL/dout"""
            raise NotImplementedError("value task, level 1: write the backward of tanh")
        out._backward = _backward
        return out

    def exp(self):
        out = Value(math.exp(self.data), (self,), "exp")

        def _backward():
            """out = exp(self):  dL/dself += out · dL/dout"""
            raise NotImplementedError("value task, level 1: write the backward of exp")
        out._backward = _backward
        return out

    def backward(self):
        """dL/dv for every Value v this one depends on (L = self): each node's _backward runs
        after every node that uses it has added its share (reverse topological order)."""
        order, seen, stack = [], set(), [(self, False)]
        while stack:                     # a depth-first walk without recursion
            v, children_done = stack.pop()
            if children_done:
                order.append(v)
            elif id(v) not in seen:
                seen.add(id(v))
                stack.append((v, True))
                stack.extend((child, False) for child in reversed(v._prev))
        self.grad = 1.0
        for v in reversed(order):
            v._backward()

    # derived ops: built from the ones above, so they need no backward of their own
    def __neg__(self):
        return self * -1

    def __radd__(self, other):
        return self + other

    def __sub__(self, other):
        return self + (-other)

    def __rsub__(self, other):
        return other + (-self)

    def __rmul__(self, other):
        return self * other

    def __truediv__(self, other):
        return self * other ** -1

    def __rtruediv__(self, other):
        return other * self ** -1

    def __repr__(self):
        return f"Value(data={self.data}, grad={self.grad})"


class Sigmoid(Function):
    """s = 1 / (1 + exp(-x)), elementwise: dL/dx = dL/ds * s (1 - s)."""

    def forward(ctx, x):
        s = 1 / (1 + np.exp(-x))
        ctx.save_for_backward(s)
        return s

    def backward(ctx, grad_out):
        (s,) = ctx.saved_values
        raise NotImplementedError("value task, level 3: write Sigmoid.backward")


class Mean(Function):
    """m = the mean of x over one axis: dL/dx = dL/dm / n, copied along that axis (n its length)."""

    def forward(ctx, x, *, axis):
        ctx.save_for_backward(x.shape, axis)
        return x.mean(axis=axis)

    def backward(ctx, grad_out):
        shape, axis = ctx.saved_values
        raise NotImplementedError("value task, level 3: write Mean.backward")
