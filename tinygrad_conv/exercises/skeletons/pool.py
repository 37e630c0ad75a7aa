"""The pool task: the backward pass of A = MaxPool(Z) and A = AvgPool(Z).

Write the two functions below in NumPy, then grade them:

    python -m tinygrad_conv.exercises grade .  --task pool      # add --level 1 to start small

Notation (cnn-backward-pass-tutorial): Z the input (N, C, H, W), A the output (N, C, OH, OW),
A' = dL/dA the upstream gradient, Z' = dL/dZ what you return (a new float64 array of Z's
shape). kernel_size, stride and padding are (h, w) pairs of ints; window (i, j) covers rows
i·sh - ph + a for a in 0..kh-1 (the same for columns); max-pool pads with -inf (padding never
wins), avg-pool with zeros. max-pool's dilation (PyTorch's argument; a window's taps dh rows
apart) stays 1 in the grader and the engine: you may ignore it.

Levels: 1 non-overlapping windows (stride = kernel), 2 overlapping windows (the tutorial's
example), 3 padding, 4 ties.
"""

from __future__ import annotations

import numpy as np  # noqa: F401  (you will need it)


def max_pool2d_backward(grad_out, x, kernel_size, stride, padding, dilation=1):
    """Z' from A' = grad_out and the forward's input Z = x:

        Z' = 0, then for every window i:  Z'[argmax of window i] += A'[i]

    Windows overlap when the stride is smaller than the kernel: a cell that wins two windows
    gets both gradients (the tutorial's example: -0.1 + -0.1 = -0.2). A tie goes to the first
    maximum in row-major window order (PyTorch's rule), the whole A'[i] to that one cell.
    """
    raise NotImplementedError("pool task, level 1: write max_pool2d_backward")


def avg_pool2d_backward(grad_out, x_shape, kernel_size, stride, padding, ceil_mode=False,
                        count_include_pad=True):
    """Z' (of shape x_shape) from A' = grad_out:

        Z' = 0, then for every window i and every input cell z in it:  Z'[z] += A'[i] / divisor

    The divisor is the window's size, padding cells counted (count_include_pad=True, a window
    stops at the padded edge) or only the real cells (False). ceil_mode only changes how many
    windows there are: take OH, OW from grad_out.
    """
    raise NotImplementedError("pool task, level 1: write avg_pool2d_backward")
