"""The output size of a sliding window, the one formula every conv and pooling op shares.

Lives on its own so that the ops, reference.py, the tests and the benchmarks all import it
without importing the Cython kernels.
"""

from __future__ import annotations


def out_size(size: int, kernel: int, stride: int = 1, padding=0, dilation: int = 1) -> int:
    """How many windows fit along one axis: 1 + (size + 2*padding - dilation*(kernel-1) - 1)
    // stride (CS231n's H' = 1 + (H + 2*pad - HH) // stride when dilation is 1).

    `size + 2*padding` is the padded input, `dilation*(kernel-1) + 1` the extent of the (dilated)
    window. padding may also be a (before, after) pair, as conv2d's padding="same" makes when
    the extent is even. Below 1 when the window does not fit: callers check that and refuse.
    """
    before, after = (padding, padding) if isinstance(padding, int) else padding
    return 1 + (size + before + after - dilation * (kernel - 1) - 1) // stride


def pooled_size(size: int, kernel: int, stride: int, padding: int, ceil_mode: bool) -> int:
    """`out_size` for pooling, where PyTorch's ceil_mode rounds the division up instead (a last,
    partial window), keeping that window only if it starts inside the input or its left padding.
    """
    if not ceil_mode:
        return out_size(size, kernel, stride, padding)
    out = 1 + -(-(size + 2 * padding - kernel) // stride)
    return out - 1 if (out - 1) * stride >= size + padding else out
