"""Plain NumPy versions of every kernel, with the same signatures: a test oracle and a teaching aid.

They follow the tutorial (cnn-backward-pass-tutorial) literally, in its notation: A the input,
W the weights, Z = W ⊛ A + b the output, Z' = dL/dZ the upstream gradient, ⊛ cross-correlation.
Slow but obviously correct; stride, padding and dilation are (h, w) pairs of ints.
"""

from __future__ import annotations

import numpy as np


def _windows(a_pad: np.ndarray, i: int, j: int, out_hw, stride, dilation) -> np.ndarray:
    """a_pad[..., oh*sh + i*dh, ow*sw + j*dw] for every output position: the cells that the
    kernel tap (i, j) touches, shape (..., OH, OW)."""
    (oh, ow), (sh, sw), (dh, dw) = out_hw, stride, dilation
    rows = slice(i * dh, i * dh + sh * (oh - 1) + 1, sh)
    cols = slice(j * dw, j * dw + sw * (ow - 1) + 1, sw)
    return a_pad[..., rows, cols]


def _out_size(size: int, k: int, s: int, pads: int, d: int) -> int:
    """1 + (size + pads - d*(k-1) - 1) // s, pads the padding of both sides together."""
    return 1 + (size + pads - d * (k - 1) - 1) // s


def _pads(padding):
    """((top, bottom), (left, right)) from (ph, pw) or ((top, bottom), (left, right))."""
    return tuple((p, p) if np.ndim(p) == 0 else tuple(p) for p in padding)


def _by_group(fn, x, w, groups, *rest):
    """fn run on each group's channels and filters, the results joined along the channels."""
    xs, ws = np.split(x, groups, axis=1), np.split(w, groups, axis=0)
    return np.concatenate([fn(xg, wg, *rest) for xg, wg in zip(xs, ws)], axis=1)


def conv2d_forward(x, w, b, stride, padding, dilation, groups=1) -> np.ndarray:
    """Z = W ⊛ A + b: x (N, C, H, W), w (F, C/groups, KH, KW), b (F,) or None -> (N, F, OH, OW).
    padding is (ph, pw) or ((top, bottom), (left, right))."""
    if groups > 1:     # each group of filters sees only its group of channels
        z = _by_group(conv2d_forward, x, w, groups, None, stride, padding, dilation)
        return z if b is None else z + b[None, :, None, None]
    (top, bottom), (left, right) = _pads(padding)
    _, _, kh, kw = w.shape
    oh = _out_size(x.shape[2], kh, stride[0], top + bottom, dilation[0])
    ow = _out_size(x.shape[3], kw, stride[1], left + right, dilation[1])
    a_pad = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    z = np.zeros((x.shape[0], w.shape[0], oh, ow), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            patch = _windows(a_pad, i, j, (oh, ow), stride, dilation)     # (N, C, OH, OW)
            z += np.einsum("nchw,fc->nfhw", patch, w[:, :, i, j])
    if b is not None:
        z += b[None, :, None, None]
    return z


def conv2d_backward(x, w, grad_out, stride, padding, dilation,
                    need_dx=True, need_dw=True, need_db=True, groups=1):
    """(dL/dA, dL/dW, dL/db) for Z = W ⊛ A + b, given Z' = grad_out (N, F, OH, OW)."""
    if groups > 1:     # each group on its own: its channels, its filters, its part of Z'
        parts = [conv2d_backward(xg, wg, gg, stride, padding, dilation, need_dx, need_dw,
                                 need_db)
                 for xg, wg, gg in zip(np.split(x, groups, axis=1), np.split(w, groups),
                                       np.split(grad_out, groups, axis=1))]
        dx, dw, db = (None if part[0] is None else np.concatenate(part, axis=axis)
                      for part, axis in zip(zip(*parts), (1, 0, 0)))
        return dx, dw, db
    dx = dw = db = None
    (top, bottom), (left, right) = _pads(padding)
    (sh, sw), (dh, dw_), (_, _, kh, kw) = stride, dilation, w.shape
    oh, ow = grad_out.shape[2:]
    if need_dw:
        # dL/dW = Z' ⊛ A: channel f of Z' correlated over channel c of A, summed over the batch
        a_pad = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
        dw = np.zeros_like(w)
        for i in range(kh):
            for j in range(kw):
                patch = _windows(a_pad, i, j, (oh, ow), stride, dilation)
                dw[:, :, i, j] = np.einsum("nfhw,nchw->fc", grad_out, patch)
    if need_db:
        # dL/db = Z' summed over every axis but F
        db = grad_out.sum(axis=(0, 2, 3))
    if need_dx:
        # dL/dA = W_180 ⊛ pad(dilate(Z', s), k-1): put s-1 zeros between the entries of Z',
        # pad by the (dilated) kernel extent minus one, correlate with the flipped kernel
        # (channels kept, summed over filters), then crop off the forward's padding.
        n, f = grad_out.shape[:2]
        z_dil = np.zeros((n, f, sh * (oh - 1) + 1, sw * (ow - 1) + 1), dtype=grad_out.dtype)
        z_dil[:, :, ::sh, ::sw] = grad_out
        eh, ew = dh * (kh - 1), dw_ * (kw - 1)
        z_pad = np.pad(z_dil, ((0, 0), (0, 0), (eh, eh), (ew, ew)))
        w_180 = w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)                 # (C, F, KH, KW)
        da_pad = conv2d_forward(z_pad, np.ascontiguousarray(w_180), None, (1, 1), (0, 0),
                                dilation)
        # rows and columns that no window reached (the forward's floor division) stay zero
        full = np.zeros((n, x.shape[1], x.shape[2] + top + bottom, x.shape[3] + left + right),
                        x.dtype)
        full[:, :, :da_pad.shape[2], :da_pad.shape[3]] = da_pad
        dx = full[:, :, top: top + x.shape[2], left: left + x.shape[3]]
    return dx, dw, db


def max_pool2d_forward(x, kernel_size, stride, padding):
    """(A, argmax): the max of each window of Z (implicit -inf padding) and its flat index
    h*W + w in the input plane; first maximum in row-major window order wins, NaN wins."""
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    n, c, h, w = x.shape
    oh, ow = 1 + (h + 2 * ph - kh) // sh, 1 + (w + 2 * pw - kw) // sw
    best = np.full((n, c, oh, ow), -np.inf, dtype=x.dtype)
    argmax = np.full((n, c, oh, ow), -1, dtype=np.int64)
    rows = np.arange(oh)[:, None] * sh - ph        # top-left corner of each window
    cols = np.arange(ow)[None, :] * sw - pw
    for i in range(kh):                            # window taps in row-major order
        for j in range(kw):
            r, q = rows + i, cols + j
            inside = (r >= 0) & (r < h) & (q >= 0) & (q < w)
            v = np.where(inside, x[:, :, np.clip(r, 0, h - 1), np.clip(q, 0, w - 1)], -np.inf)
            first = inside & (argmax < 0)          # the first real cell starts the window
            take = first | (inside & ((v > best) | np.isnan(v)))
            best = np.where(take, v, best)
            argmax = np.where(take, r * w + q, argmax)
    return best, argmax


def max_pool2d_backward(grad_out, argmax, h, w):
    """Z': zero, then Z'[argmax[i]] += A'[i] for every window; overlapping windows add up."""
    n, c = grad_out.shape[:2]
    dz = np.zeros((n * c, h * w), dtype=grad_out.dtype)
    planes = np.arange(n * c)[:, None]
    np.add.at(dz, (planes, argmax.reshape(n * c, -1)), grad_out.reshape(n * c, -1))
    return dz.reshape(n, c, h, w)
