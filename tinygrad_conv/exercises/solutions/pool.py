"""The pool task, solved: Z' of A = MaxPool(Z) and of A = AvgPool(Z), window by window.

The grader passes these at every level; `python -m tinygrad_conv.exercises new DIR` never
copies this folder. Read it after your own attempt.
"""

from __future__ import annotations

import numpy as np


def pairs(value):
    return (value, value) if np.ndim(value) == 0 else tuple(value)


def max_pool2d_backward(grad_out, x, kernel_size, stride, padding, dilation=1):
    """Z' = 0, then Z'[argmax of window i] += A'[i] for every window: the first maximum in
    row-major window order wins a tie, and overlapping windows add up."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = map(pairs, (kernel_size, stride, padding, dilation))
    n, c, h, w = x.shape
    oh, ow = grad_out.shape[2:]
    # padding cells are -inf: they never win a window
    z_pad = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=-np.inf)
    dz_pad = np.zeros(z_pad.shape, dtype=grad_out.dtype)
    images, channels = np.meshgrid(np.arange(n), np.arange(c), indexing="ij")
    for i in range(oh):
        for j in range(ow):
            window = z_pad[:, :, i * sh: i * sh + dh * (kh - 1) + 1: dh,
                           j * sw: j * sw + dw * (kw - 1) + 1: dw]          # (N, C, KH, KW)
            first = window.reshape(n, c, kh * kw).argmax(axis=2)  # argmax: the first maximum
            rows, cols = i * sh + first // kw * dh, j * sw + first % kw * dw
            dz_pad[images, channels, rows, cols] += grad_out[:, :, i, j]
    return dz_pad[:, :, ph:ph + h, pw:pw + w]


def avg_pool2d_backward(grad_out, x_shape, kernel_size, stride, padding, ceil_mode=False,
                        count_include_pad=True):
    """Z' = 0, then every cell of window i += A'[i] / divisor: an even share, where the divisor
    counts the padding cells the window covers (count_include_pad) or only the real ones."""
    (kh, kw), (sh, sw), (ph, pw) = map(pairs, (kernel_size, stride, padding))
    n, c, h, w = x_shape
    oh, ow = grad_out.shape[2:]     # ceil_mode only changes how many windows there are
    dz = np.zeros(x_shape, dtype=grad_out.dtype)
    for i in range(oh):
        for j in range(ow):
            top, left = i * sh - ph, j * sw - pw
            bottom, right = min(top + kh, h + ph), min(left + kw, w + pw)   # within the padding
            rows = slice(max(top, 0), min(bottom, h))
            cols = slice(max(left, 0), min(right, w))
            if count_include_pad:
                divisor = (bottom - top) * (right - left)
            else:
                divisor = (rows.stop - rows.start) * (cols.stop - cols.start)
            dz[:, :, rows, cols] += grad_out[:, :, i, j, None, None] / divisor
    return dz
