"""The conv task, solved: dL/dA, dL/dW and dL/db of Z = W ⊛ A + b, written as the tutorial's steps.

The grader passes these at every level (tests/test_exercises.py checks it); `python -m
tinygrad_conv.exercises new DIR` never copies this folder. Read it after your own attempt.
"""

from __future__ import annotations

import numpy as np


def pads(padding):
    """((top, bottom), (left, right)) from (ph, pw) or ((top, bottom), (left, right))."""
    return tuple((p, p) if np.ndim(p) == 0 else tuple(p) for p in padding)


def dilate(z, stride):
    """dilate(Z', s): s-1 zeros between neighbouring entries of each plane."""
    (sh, sw), (n, f, oh, ow) = stride, z.shape
    out = np.zeros((n, f, sh * (oh - 1) + 1, sw * (ow - 1) + 1), dtype=z.dtype)
    out[:, :, ::sh, ::sw] = z
    return out


def correlate(a, k, dilation):
    """k ⊛ a at stride 1: a (N, C, H, W), k (F, C, KH, KW) -> (N, F, H - dh(KH-1), W - dw(KW-1))."""
    (dh, dw), (kh, kw) = dilation, k.shape[2:]
    oh, ow = a.shape[2] - dh * (kh - 1), a.shape[3] - dw * (kw - 1)
    out = np.zeros((a.shape[0], k.shape[0], oh, ow), dtype=a.dtype)
    for i in range(kh):
        for j in range(kw):
            patch = a[:, :, i * dh: i * dh + oh, j * dw: j * dw + ow]     # (N, C, OH, OW)
            out += np.einsum("nchw,fc->nfhw", patch, k[:, :, i, j])
    return out


def conv2d_input_grad(grad_out, w, input_shape, stride, padding, dilation, groups=1):
    """dL/dA = W_180 ⊛ pad(dilate(Z', s), d(k-1)), summed over the filters, then cropped."""
    if groups > 1:      # each group of channels gets the gradient of its own filters only
        n, c, h, width = input_shape
        parts = [conv2d_input_grad(g, wg, (n, c // groups, h, width), stride, padding, dilation)
                 for g, wg in zip(np.split(grad_out, groups, axis=1), np.split(w, groups))]
        return np.concatenate(parts, axis=1)
    n, c, h, width = input_shape
    (top, bottom), (left, right) = pads(padding)
    kh, kw = w.shape[2:]
    z_dil = dilate(grad_out, stride)
    eh, ew = dilation[0] * (kh - 1), dilation[1] * (kw - 1)
    z_pad = np.pad(z_dil, ((0, 0), (0, 0), (eh, eh), (ew, ew)))
    w_180 = w[:, :, ::-1, ::-1]
    # filter f's term: channel c of W_180[f] slid over channel f of the padded Z'
    da_pad = correlate(z_pad[:, :1], w_180[0][:, None], dilation)
    for f in range(1, w.shape[0]):      # every other filter adds its term to every channel
        da_pad += correlate(z_pad[:, f:f + 1], w_180[f][:, None], dilation)
    # rows and columns that no window reached (the forward's floor division) stay zero
    full = np.zeros((n, c, h + top + bottom, width + left + right), dtype=grad_out.dtype)
    full[:, :, :da_pad.shape[2], :da_pad.shape[3]] = da_pad
    return full[:, :, top:top + h, left:left + width]


def conv2d_weight_grad(x, grad_out, weight_shape, stride, padding, dilation, groups=1):
    """dL/dW = Z' ⊛ A, that is
    dL/dW[f, c, i, j] = Σ_n Σ_oh,ow Z'[n, f, oh, ow] · A_pad[n, c, oh·s + i·d, ow·s + j·d]."""
    if groups > 1:      # each group of filters sees its own channels
        f, c, kh, kw = weight_shape
        parts = [conv2d_weight_grad(xg, g, (f // groups, c, kh, kw), stride, padding, dilation)
                 for xg, g in zip(np.split(x, groups, axis=1), np.split(grad_out, groups, axis=1))]
        return np.concatenate(parts, axis=0)
    (top, bottom), (left, right) = pads(padding)
    (sh, sw), (dh, dw_), (_, _, kh, kw) = stride, dilation, weight_shape
    a_pad = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    n, oh, ow = x.shape[0], grad_out.shape[2], grad_out.shape[3]
    dw = np.zeros(weight_shape, dtype=x.dtype)
    for image in range(n):              # every image of the batch adds its term
        for i in range(kh):
            for j in range(kw):
                patch = a_pad[image, :, i * dh: i * dh + sh * (oh - 1) + 1: sh,
                              j * dw_: j * dw_ + sw * (ow - 1) + 1: sw]       # (C, OH, OW)
                dw[:, :, i, j] += np.einsum("fhw,chw->fc", grad_out[image], patch)
    return dw


def conv2d_bias_grad(grad_out):
    """dL/db = Z' summed over every axis but the filters'."""
    return grad_out.sum(axis=(0, 2, 3))
