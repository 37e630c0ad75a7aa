"""The conv task: the backward pass of Z = W ⊛ A + b (⊛ cross-correlation, as in the tutorial).

Write the three functions below in NumPy, then grade them:

    python -m tinygrad_conv.exercises grade .  --task conv      # add --level 1 to start small

Notation (cnn-backward-pass-tutorial): A the input (N, C, H, W), W the weights
(F, C/groups, KH, KW), Z the output (N, F, OH, OW), Z' = dL/dZ the upstream gradient.
stride s and dilation d are (h, w) pairs of ints; padding is (ph, pw) or
((top, bottom), (left, right)) (`pads` below turns either into the second form). Inputs are
float64 arrays; return a new float64 array (never change the arguments).

Levels: 1 the tutorial's example (1 channel, 1 filter, 3x3 input, 2x2 kernel), 2 channels,
filters and a batch, 3 padding, 4 stride, 5 dilation, 6 groups.
"""

from __future__ import annotations

import numpy as np


def pads(padding):
    """((top, bottom), (left, right)) from (ph, pw) or ((top, bottom), (left, right))."""
    return tuple((p, p) if np.ndim(p) == 0 else tuple(p) for p in padding)


def conv2d_input_grad(grad_out, w, input_shape, stride, padding, dilation, groups=1):
    """dL/dA, of shape input_shape, from Z' = grad_out (N, F, OH, OW) and W = w:

        dL/dA = W_180 ⊛ pad(dilate(Z', s), d(k-1)), then crop the forward's padding

    W_180 is W rotated by 180° in its two spatial axes; dilate(Z', s) puts s-1 zeros between
    neighbouring entries of Z'; pad by d(k-1) (the dilated kernel's extent minus one) on each
    side; the correlation runs with the forward's dilation d and sums over the filters f:
    every filter adds its term to every channel. With groups g, channel group k gets only the
    terms of filter group k. Rows the forward never reached (H=6, k=3, s=2) get zero.
    """
    raise NotImplementedError("conv task, level 1: write conv2d_input_grad (dL/dA)")


def conv2d_weight_grad(x, grad_out, weight_shape, stride, padding, dilation, groups=1):
    """dL/dW, of shape weight_shape, from A = x (N, C, H, W) and Z' = grad_out:

        dL/dW = Z' ⊛ A, that is
        dL/dW[f, c, i, j] = Σ_n Σ_oh,ow Z'[n, f, oh, ow] · A_pad[n, c, oh·s + i·d, ow·s + j·d]

    A_pad is A with the forward's padding. Sum over every image of the batch (not the mean);
    no flip here: the tap (i, j) of W is dL/dW[..., i, j].
    """
    raise NotImplementedError("conv task, level 1: write conv2d_weight_grad (dL/dW)")


def conv2d_bias_grad(grad_out):
    """dL/db, of shape (F,): Z' summed over every axis but the filters' (batch included)."""
    raise NotImplementedError("conv task, level 1: write conv2d_bias_grad (dL/db)")
