"""Check analytic gradients against numerical ones (central differences), in float64.

For a function `fn(*inputs) -> Tensor`, backpropagation gives dL/dx for L = sum(fn(x) * R), with R
a fixed random array of the output's shape. The same derivative, numerically, is
    dL/dx[i] ~ (L(x + eps*e_i) - L(x - eps*e_i)) / (2 * eps)
for each element i of each input. If the op's backward is right, the two agree to about eps^2.

Where the loss has a kink (a tie in max or max_pool, relu or abs at 0) it has no derivative: the
one-sided differences (L(x + eps*e_i) - L(x)) / eps and (L(x) - L(x - eps*e_i)) / eps disagree
and the central difference is their mean, which no correct backward returns (max_pool gives a
tie's whole gradient to the first maximum, as PyTorch does). There an analytic value equal to
one of the one-sided derivatives is accepted with a GradcheckKinkWarning; any other value fails
with a message that names the kink instead of a bare mismatch. Break ties (add small distinct
noise to the inputs) to check such elements strictly.

    >>> gradcheck(lambda a, b: (a @ b).relu(), [a, b])
    True
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np

from tinygrad_conv.tensor import Tensor, no_grad


class GradcheckError(AssertionError):
    """The analytic and numerical gradients disagree; the message shows where and by how much."""


class GradcheckKinkWarning(UserWarning):
    """gradcheck met elements where the loss has a kink (a tie) and accepted analytic values
    there that equal a one-sided derivative."""


def _float64_leaf(x) -> Tensor | object:
    if isinstance(x, Tensor) and x.dtype.kind == "f":
        return Tensor(x.data, dtype=np.float64, requires_grad=x.requires_grad)
    return x


def gradcheck(fn: Callable[..., Tensor], inputs: Sequence, eps: float = 1e-6, atol: float = 1e-5,
              rtol: float = 1e-3, seed: int = 0, raise_exception: bool = True) -> bool:
    """True when every float input's gradient matches central differences to atol + rtol*|num|.

    Only inputs that are Tensors with requires_grad=True are checked; others are passed through.
    Inputs are copied to float64 first. On a mismatch a GradcheckError names the input, the index
    and both values of the worst element (or, with raise_exception=False, False is returned).
    At a kink (the one-sided differences disagree, e.g. a max_pool tie) the analytic value must
    equal one of them instead: then it passes with a GradcheckKinkWarning, else the error says
    it met a kink.
    """
    inputs = [_float64_leaf(x) for x in inputs]
    checked = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input is a float Tensor with requires_grad=True")

    out = fn(*inputs)
    if not isinstance(out, Tensor):
        raise TypeError(f"gradcheck: fn must return a Tensor, got {type(out).__name__}")
    weights = np.random.default_rng(seed).standard_normal(out.shape)

    def loss() -> float:  # L = sum(fn(inputs) * weights) at the inputs as they are now
        with no_grad():
            return float(np.sum(fn(*inputs).data * weights))

    out.backward(weights)
    at_loss = loss()
    kinks_accepted = []
    for i in checked:
        x = inputs[i]
        analytic = np.zeros_like(x.data) if x.grad is None else x.grad
        numerical, right, left = _differences(x, loss, at_loss, eps)
        problem, kinks = _compare(i, x.shape, analytic, numerical, right, left, atol, rtol)
        if problem is not None:
            if raise_exception:
                raise GradcheckError(problem)
            return False
        kinks_accepted += kinks
    if kinks_accepted:
        _warn_kinks(kinks_accepted)
    return True


def _differences(x: Tensor, loss: Callable[[], float], at_loss: float, eps: float):
    """For each element i of x: the central difference (L(x + eps*e_i) - L(x - eps*e_i)) /
    (2 eps), and the one-sided ones from the right and from the left."""
    numerical, right, left = (np.zeros_like(x.data) for _ in range(3))
    for idx in np.ndindex(*x.shape):
        original = x.data[idx]
        x.data[idx] = original + eps  # x is gradcheck's float64 copy: safe to nudge
        plus = loss()
        x.data[idx] = original - eps
        minus = loss()
        x.data[idx] = original
        numerical[idx] = (plus - minus) / (2 * eps)
        right[idx], left[idx] = (plus - at_loss) / eps, (at_loss - minus) / eps
    return numerical, right, left


def _compare(i, shape, analytic, numerical, right, left, atol, rtol):
    """(the error message or None, the kinks accepted) for input i: each element's analytic
    value must be within atol + rtol*|numerical| of the central difference, or, where the
    one-sided differences disagree (a kink), of one of them."""
    def close(a, b):
        return np.abs(a - b) <= atol + rtol * np.abs(b)

    wrong = ~close(analytic, numerical)
    kink = ~close(right, left) & ~close(left, right)
    one_sided = close(analytic, right) | close(analytic, left)
    mismatch, at_kink = wrong & ~kink, wrong & kink & ~one_sided
    if mismatch.any() or at_kink.any():
        return _mismatch_message(i, shape, analytic, numerical, right, left, mismatch, at_kink,
                                 atol, rtol), []
    return None, [(i, idx, float(right[idx]), float(left[idx]))
                  for idx in np.ndindex(*shape) if wrong[idx] and kink[idx]]


def _warn_kinks(kinks_accepted: list) -> None:
    i, idx, r, l = kinks_accepted[0]
    warnings.warn(
        f"gradcheck: {len(kinks_accepted)} element(s) sit on a kink of the loss, where it "
        f"has no derivative (first: input {i}, index {_index(idx)}: the one-sided "
        f"differences are {r!r} from the right and {l!r} from the left; a tie in max or "
        f"max_pool, or relu at 0). Their analytic values equal a one-sided derivative, so "
        f"they were accepted; break the ties (add small distinct noise to the inputs) to "
        f"check them strictly", GradcheckKinkWarning, stacklevel=3)


def _index(idx) -> tuple[int, ...]:
    return tuple(int(j) for j in idx)


def _mismatch_message(i, shape, analytic, numerical, right, left, mismatch, at_kink, atol,
                      rtol) -> str:
    """The worst plain mismatch of input i, or, if there is none, the worst element at a kink
    whose analytic value is neither one-sided derivative."""
    error = np.abs(analytic - numerical) - (atol + rtol * np.abs(numerical))
    worst = np.unravel_index(np.argmax(np.where(mismatch if mismatch.any() else at_kink, error,
                                                -np.inf)), error.shape)
    ours, num = float(analytic[worst]), float(numerical[worst])
    if mismatch.any():
        return (f"gradcheck: input {i} (shape {shape}) gradient mismatch at index "
                f"{_index(worst)}: analytic {ours!r}, numerical {num!r} (|diff| "
                f"{abs(ours - num):.3e}, allowed {atol + rtol * abs(num):.3e}; "
                f"{int(mismatch.sum())} of {mismatch.size} elements differ)")
    return (f"gradcheck: input {i} (shape {shape}) sits on a kink of the loss at index "
            f"{_index(worst)} (a tie in max or max_pool, relu or abs at 0): the one-sided "
            f"differences disagree, {float(right[worst])!r} from the right and "
            f"{float(left[worst])!r} from the left, so the central difference {num!r} is no "
            f"derivative; but the analytic value {ours!r} is neither one-sided derivative either "
            f"(a correct backward gives a tie's whole gradient to one input, e.g. max_pool's "
            f"first maximum). Break the tie (add small distinct noise) to check it strictly")
