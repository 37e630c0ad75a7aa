"""The tutorial's max-pool example, end to end: Z, A = MaxPool(Z), dL/dA and dL/dZ.

    python examples/walkthrough.py

A 3x3 input Z, a 2x2 window with stride 1 (the four windows overlap), and L = sum(-log(A)).
Prints the four arrays in the tutorial's layout; its numbers match the tutorial's PyTorch output
to all 8 printed decimals. With PyTorch installed it then runs the tutorial's own PyTorch script
and prints PyTorch's numbers beside ours: line for line the same program (`retain_grad` keeps
dL/dA, one backward pass computes everything). docs/walkthrough.md derives every step.

The 10 wins two windows, so its dL/dZ is a'1 + a'2 = -0.2: the backward adds each A' value to its
window's winner with np.add.at. `dz[argmax] += grad` would write the 10's cell twice and keep
the last write, -0.1 (walkthrough section 10 shows both).

To step through the max-pool gradient in a debugger, run the NumPy reference kernels:

    TINYGRAD_CONV_REFERENCE_KERNELS=1 python -m pdb examples/walkthrough.py
    (Pdb) import tinygrad_conv.reference
    (Pdb) break tinygrad_conv.reference.max_pool2d_backward
    (Pdb) continue
"""

from __future__ import annotations

import numpy as np

import tinygrad_conv.functional as F
from tinygrad_conv import Tensor

Z_VALUES = np.array([[1.0, 2, 3], [4, 10, 5], [11, 12, 13]])[np.newaxis, np.newaxis]


def ours() -> dict[str, np.ndarray]:
    """Z, A, dL/dA, dL/dZ (each (1, 1, H, W), float64) from tinygrad_conv."""
    z = Tensor(Z_VALUES, requires_grad=True)      # float64: numpy data keeps its dtype
    a = F.max_pool2d(z, kernel_size=2, stride=1)
    a.retain_grad()                                # keep dL/dA, though A is not a leaf
    loss = (-a.log()).sum()
    loss.backward()
    return {"Z": z.numpy(), "A": a.numpy(), "dL/dA": a.grad, "dL/dZ": z.grad}


def pytorch() -> dict[str, np.ndarray]:
    """The tutorial's PyTorch script, verbatim in substance."""
    import torch

    z = torch.tensor(Z_VALUES, requires_grad=True)
    a = torch.max_pool2d(z, kernel_size=2, stride=1)
    a.retain_grad()
    loss = torch.sum(-torch.log(a))
    loss.backward()
    return {"Z": z.detach().numpy(), "A": a.detach().numpy(), "dL/dA": a.grad.numpy(),
            "dL/dZ": z.grad.numpy()}


def tutorial_layout(arrays: dict[str, np.ndarray]) -> str:
    """`print('Z:', Z, 'A:', A, 'dL/dA:', ..., sep='\\n')`, as the tutorial prints them."""
    with np.printoptions(precision=8, suppress=False, linewidth=75):
        return "\n".join(f"{name}:\n{array}" for name, array in arrays.items())


def side_by_side(left: str, right: str, titles: tuple[str, str]) -> str:
    """Two blocks of text in two columns."""
    a, b = left.splitlines(), right.splitlines()
    width = max(len(line) for line in a + [titles[0]]) + 4
    rows = [f"{titles[0]:<{width}}{titles[1]}"]
    rows += [f"{x:<{width}}{y}" for x, y in zip(a + [""] * (len(b) - len(a)),
                                                  b + [""] * (len(a) - len(b)))]
    return "\n".join(rows)


def main() -> None:
    mine = ours()
    print(tutorial_layout(mine))
    try:
        theirs = pytorch()
    except ImportError:
        print("\n(PyTorch is not installed: pip install torch to see its numbers beside ours)")
        return
    print("\nBeside PyTorch:\n")
    print(side_by_side(tutorial_layout(mine), tutorial_layout(theirs),
                       ("tinygrad_conv", "PyTorch")))
    worst = max(float(np.max(np.abs(mine[k] - theirs[k]))) for k in mine)
    print(f"\nlargest difference: {worst:.1e}")


if __name__ == "__main__":
    main()
