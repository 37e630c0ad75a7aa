"""Check analytic gradients against numerical ones (central differences), in float64.

For a function `fn(*inputs) -> Tensor`, backpropagation gives dL/dx for L = sum(fn(x) * R), with R
a fixed random array of the output's shape. The same derivative, numerically, is
    dL/dx[i] ~ (L(x + eps*e_i) - L(x - eps*e_i)) / (2 * eps)
for each element i of each input. If the op's backward is right, the two agree to about eps^2.

    >>> gradcheck(lambda a, b: (a @ b).relu(), [a, b])
    True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from tinygrad_conv.tensor import Tensor, no_grad


class GradcheckError(AssertionError):
    """The analytic and numerical gradients disagree; the message shows where and by how much."""


def _float64_leaf(x) -> Tensor | object:
    if isinstance(x, Tensor) and x.dtype.kind == "f":
        return Tensor(x.data, dtype=np.float64, requires_grad=x.requires_grad)
    return x


def gradcheck(
    fn: Callable[..., Tensor],
    inputs: Sequence,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    seed: int = 0,
    raise_exception: bool = True,
) -> bool:
    """True when every float input's gradient matches central differences to atol + rtol*|num|.

    Only inputs that are Tensors with requires_grad=True are checked; others are passed through.
    Inputs are copied to float64 first. On a mismatch a GradcheckError names the input, the index
    and both values of the worst element (or, with raise_exception=False, False is returned).
    """
    inputs = [_float64_leaf(x) for x in inputs]
    checked = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input is a float Tensor with requires_grad=True")

    out = fn(*inputs)
    if not isinstance(out, Tensor):
        raise TypeError(f"gradcheck: fn must return a Tensor, got {type(out).__name__}")
    weights = np.random.default_rng(seed).standard_normal(out.shape)

    def scalar_loss(args) -> float:
        with no_grad():
            return float(np.sum(fn(*args).data * weights))

    out.backward(weights)

    for i in checked:
        x = inputs[i]
        analytic = np.zeros_like(x.data) if x.grad is None else x.grad
        numerical = np.zeros_like(x.data)
        for idx in np.ndindex(*x.shape):
            original = x.data[idx]
            x.data[idx] = original + eps  # inputs[i] is our float64 copy: safe to nudge
            plus = scalar_loss(inputs)
            x.data[idx] = original - eps
            minus = scalar_loss(inputs)
            x.data[idx] = original
            numerical[idx] = (plus - minus) / (2 * eps)
        error = np.abs(analytic - numerical) - (atol + rtol * np.abs(numerical))
        if error.size and error.max() > 0:
            worst = np.unravel_index(np.argmax(error), error.shape)
            message = (
                f"gradcheck: input {i} (shape {x.shape}) gradient mismatch at index "
                f"{tuple(int(j) for j in worst)}: analytic {analytic[worst]!r}, numerical "
                f"{numerical[worst]!r} (|diff| {abs(analytic[worst] - numerical[worst]):.3e}, "
                f"allowed {atol + rtol * abs(numerical[worst]):.3e})")
            if raise_exception:
                raise GradcheckError(message)
            return False
    return True
