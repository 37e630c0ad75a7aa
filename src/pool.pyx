# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False
"""max_pool2d forward (with the argmax of every window) and its gradient.

In the tutorial's notation (Z the input, A = MaxPool(Z), A' = dL/dA):

    A[oh, ow]  = max of Z over the window of (oh, ow)             max_pool2d_forward
    Z'[z_i]   += A'[i]  where z_i is the argmax of window i       max_pool2d_backward

Reference: each kernel has a NumPy twin of the same name and signature in
tinygrad_conv/reference.py (reference.max_pool2d_forward, reference.max_pool2d_backward), the
formula written plainly; inside `tinygrad_conv.reference_kernels()` the engine runs those.

The argmax is the flat index h*W + w into the input plane (PyTorch's return_indices
convention). On ties the first maximum in row-major window order wins, and a NaN wins over
any number (a later NaN over an earlier one), exactly like PyTorch's CPU kernel. Padding is
implicit -inf: it never wins. Work is split over the N*C planes, which never share memory,
so the += in the backward needs no atomics and the result does not depend on the threads.
"""

import numpy as np

from cython.parallel cimport prange
from libc.math cimport INFINITY
from libc.string cimport memset
from libc.stdint cimport int64_t

from kernels cimport floating

from tinygrad_conv._threads import get_num_threads
from tinygrad_conv.shapes import pooled_size


cdef void max_pool_plane(const floating *z,    # IN  one input plane (H, W)
                         floating *a,          # OUT its pooled plane (OH, OW)
                         int64_t *argmax,      # OUT flat index of each window's max
                         Py_ssize_t H, Py_ssize_t W, Py_ssize_t OH, Py_ssize_t OW,
                         Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                         Py_ssize_t ph, Py_ssize_t pw) noexcept nogil:
    """A[oh, ow] = max Z[h, w] over h in [oh*sh - ph, +kh), w in [ow*sw - pw, +kw), clipped.

    One window at a time, each cell in row-major order. NOTE: written with selects instead of
    an `if`, the compiler emits max/cmov instructions: 2.7x faster on random data, where the
    branch is mispredicted about once a window. Looping over the taps outside and a row of
    windows inside instead measured 1.1-1.4x slower.
    """
    cdef Py_ssize_t oh, ow, h, w, h0, h1, w0, w1, at, best_at, nan_at
    cdef floating best, v
    for oh in range(OH):
        h0 = oh * sh - ph
        h1 = min(h0 + kh, H)
        h0 = max(h0, 0)
        for ow in range(OW):
            w0 = ow * sw - pw
            w1 = min(w0 + kw, W)
            w0 = max(w0, 0)
            best = -INFINITY
            best_at = h0 * W + w0
            nan_at = -1
            for h in range(h0, h1):
                for w in range(w0, w1):
                    at = h * W + w
                    v = z[at]
                    # selects, not branches (which cell wins is unpredictable): a strictly
                    # larger value takes over, so on ties the first stays
                    best_at = at if v > best else best_at
                    best = v if v > best else best
                    nan_at = at if v != v else nan_at
            if nan_at >= 0:          # a NaN wins, the last one in the window (like PyTorch)
                best_at = nan_at
                best = z[nan_at]
            a[oh * OW + ow] = best
            argmax[oh * OW + ow] = best_at


def max_pool2d_forward(const floating[:, :, :, ::1] x,   # IN  Z: (N, C, H, W)
                       kernel_size, stride, padding):    # IN  (h, w) pairs of ints
    """(A, argmax): A (N, C, OH, OW) with OH = 1 + (H + 2*ph - kh) // sh, argmax int64.

    Arguments are validated by cnn_ops: 0 <= padding <= kernel // 2 and OH, OW >= 1, so every
    window holds at least one real input cell.
    """
    cdef Py_ssize_t kh = kernel_size[0], kw = kernel_size[1], sh = stride[0], sw = stride[1]
    cdef Py_ssize_t ph = padding[0], pw = padding[1]
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t OH = 1 + (H + 2 * ph - kh) // sh, OW = 1 + (W + 2 * pw - kw) // sw
    cdef Py_ssize_t q, planes = N * C
    dtype = np.float32 if floating is float else np.float64
    out = np.empty((N, C, OH, OW), dtype=dtype)
    argmax = np.empty((N, C, OH, OW), dtype=np.int64)
    if planes == 0:
        return out, argmax
    cdef floating[:, :, :, ::1] a = out
    cdef int64_t[:, :, :, ::1] arg = argmax
    cdef Py_ssize_t plane_in = H * W, plane_out = OH * OW
    cdef int threads = get_num_threads()
    for q in prange(planes, nogil=True, schedule="guided", num_threads=threads):
        max_pool_plane(&x[0, 0, 0, 0] + q * plane_in, &a[0, 0, 0, 0] + q * plane_out,
                       &arg[0, 0, 0, 0] + q * plane_out, H, W, OH, OW, kh, kw, sh, sw, ph, pw)
    return out, argmax


def max_pool2d_backward(const floating[:, :, :, ::1] grad_out,   # IN  A': (N, C, OH, OW)
                        const int64_t[:, :, :, ::1] argmax,      # IN  from the forward
                        Py_ssize_t H, Py_ssize_t W):              # IN  the input's plane size
    """Z' (N, C, H, W): zero, then Z'[argmax[i]] += A'[i] for every window i of every plane.

    Where windows overlap, one input cell can win several of them and its gradients add up
    (the tutorial's a'1 + a'2). An argmax outside [0, H*W) raises ValueError.
    """
    cdef Py_ssize_t N = grad_out.shape[0], C = grad_out.shape[1]
    cdef Py_ssize_t plane_out = grad_out.shape[2] * grad_out.shape[3], plane_in = H * W
    cdef Py_ssize_t q, i, at, bad = 0
    cdef const floating *g
    cdef const int64_t *src
    cdef floating *dz
    if tuple(argmax.shape) != tuple(grad_out.shape):
        raise ValueError(f"max_pool2d_backward: argmax shape {tuple(argmax.shape)} does not "
                         f"match grad_out shape {tuple(grad_out.shape)}")
    dtype = np.float32 if floating is float else np.float64
    if N * C * plane_out == 0:
        return np.zeros((N, C, H, W), dtype=dtype)
    # each plane is zeroed by the thread that fills it, just before: it is then in that
    # thread's cache, and the fresh memory is touched by both threads instead of one
    dx = np.empty((N, C, H, W), dtype=dtype)
    cdef floating[:, :, :, ::1] dz_v = dx
    cdef int threads = get_num_threads()
    for q in prange(N * C, nogil=True, schedule="guided", num_threads=threads):
        g = &grad_out[0, 0, 0, 0] + q * plane_out
        src = &argmax[0, 0, 0, 0] + q * plane_out
        dz = &dz_v[0, 0, 0, 0] + q * plane_in
        memset(dz, 0, plane_in * sizeof(floating))
        for i in range(plane_out):
            at = src[i]
            if at < 0 or at >= plane_in:
                bad += 1   # a reduction: never written through, only counted
            else:
                dz[at] += g[i]
    if bad:
        raise ValueError(f"max_pool2d_backward: {bad} argmax entries outside [0, {plane_in})")
    return dx


# ---------------------------------------------------------------------------------------------
# Average pooling: each window's mean, and its gradient spread evenly back over the window
#
#     A[oh, ow]  = Σ Z over window (oh, ow) / divisor(oh, ow)        avg_pool2d_forward
#     Z'[z]     += A'[oh, ow] / divisor(oh, ow)  for every cell z     avg_pool2d_backward
#                  of window (oh, ow)
#
# Where max-pool routes all of A'[i] to the one cell that won window i, average pooling gives
# every cell of the window an equal share: each contributed 1/divisor of the mean. Windows are
# rectangles, [h_lo, h_hi) x [w_lo, w_hi) of the real input (padding holds zeros, so it adds
# nothing to a sum), and the divisor is h_count * w_count: the window's size counting padding
# (count_include_pad) or not. Both are computed once per output row and column by
# `avg_windows` and `adaptive_windows` below, and the kernels only sum and spread.
# ---------------------------------------------------------------------------------------------


def avg_windows(Py_ssize_t size, Py_ssize_t out, Py_ssize_t kernel, Py_ssize_t stride,
                Py_ssize_t padding, bint count_include_pad):
    """(lo, hi, count) int64 arrays (out,): window i covers input cells [lo, hi); count is its
    extent with the padding (clipped at the padded edge, as PyTorch does) or without."""
    start = np.arange(out, dtype=np.int64) * stride - padding
    end = np.minimum(start + kernel, size + padding)
    lo, hi = np.maximum(start, 0), np.minimum(end, size)
    return lo, hi, (end - start) if count_include_pad else (hi - lo)


def adaptive_windows(Py_ssize_t size, Py_ssize_t out):
    """(lo, hi, count) for adaptive pooling: window i covers [floor(i*size/out),
    ceil((i+1)*size/out)), so out windows tile the input (overlapping when they must)."""
    i = np.arange(out, dtype=np.int64)
    lo = i * size // out
    hi = -(-(i + 1) * size // out)
    return lo, hi, hi - lo


cdef void mean_windows_plane(const floating *z,    # IN  one input plane (H, W)
                             floating *a,          # OUT its pooled plane (OH, OW)
                             Py_ssize_t W, Py_ssize_t OH, Py_ssize_t OW,
                             const int64_t *h_lo, const int64_t *h_hi, const int64_t *h_count,
                             const int64_t *w_lo, const int64_t *w_hi,
                             const int64_t *w_count) noexcept nogil:
    """A[oh, ow] = Σ Z[h, w] over [h_lo, h_hi) x [w_lo, w_hi) / (h_count * w_count)."""
    cdef Py_ssize_t oh, ow, h, w
    cdef double total
    for oh in range(OH):
        for ow in range(OW):
            total = 0
            for h in range(h_lo[oh], h_hi[oh]):
                for w in range(w_lo[ow], w_hi[ow]):
                    total += z[h * W + w]
            a[oh * OW + ow] = <floating> (total / (h_count[oh] * w_count[ow]))


cdef void spread_windows_plane(const floating *g,   # IN  A' of one plane (OH, OW)
                               floating *dz,        # OUT Z' of that plane (H, W), zeroed
                               Py_ssize_t W, Py_ssize_t OH, Py_ssize_t OW,
                               const int64_t *h_lo, const int64_t *h_hi,
                               const int64_t *h_count, const int64_t *w_lo,
                               const int64_t *w_hi, const int64_t *w_count) noexcept nogil:
    """Z'[h, w] += A'[oh, ow] / (h_count * w_count) for every cell of every window."""
    cdef Py_ssize_t oh, ow, h, w
    cdef floating share
    for oh in range(OH):
        for ow in range(OW):
            share = g[oh * OW + ow] / <floating> (h_count[oh] * w_count[ow])
            for h in range(h_lo[oh], h_hi[oh]):
                for w in range(w_lo[ow], w_hi[ow]):
                    dz[h * W + w] += share


def _mean_windows(const floating[:, :, :, ::1] x, rows, cols):
    """A (N, C, OH, OW): every plane of x pooled over the windows rows x cols."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef const int64_t[::1] h_lo = rows[0], h_hi = rows[1], h_count = rows[2]
    cdef const int64_t[::1] w_lo = cols[0], w_hi = cols[1], w_count = cols[2]
    cdef Py_ssize_t OH = h_lo.shape[0], OW = w_lo.shape[0], q
    dtype = np.float32 if floating is float else np.float64
    out = np.empty((N, C, OH, OW), dtype=dtype)
    if N * C == 0:
        return out
    cdef floating[:, :, :, ::1] a = out
    cdef int threads = get_num_threads()
    for q in prange(N * C, nogil=True, schedule="guided", num_threads=threads):
        mean_windows_plane(&x[0, 0, 0, 0] + q * H * W, &a[0, 0, 0, 0] + q * OH * OW, W, OH,
                           OW, &h_lo[0], &h_hi[0], &h_count[0], &w_lo[0], &w_hi[0],
                           &w_count[0])
    return out


def _spread_windows(const floating[:, :, :, ::1] grad_out, Py_ssize_t H, Py_ssize_t W, rows,
                    cols):
    """Z' (N, C, H, W): each A' value shared evenly by the cells of its window."""
    cdef Py_ssize_t N = grad_out.shape[0], C = grad_out.shape[1]
    cdef Py_ssize_t OH = grad_out.shape[2], OW = grad_out.shape[3], q
    cdef const int64_t[::1] h_lo = rows[0], h_hi = rows[1], h_count = rows[2]
    cdef const int64_t[::1] w_lo = cols[0], w_hi = cols[1], w_count = cols[2]
    if h_lo.shape[0] != OH or w_lo.shape[0] != OW:
        raise ValueError(f"avg_pool2d_backward: grad_out has {OH}x{OW} windows, the windows "
                         f"given are {h_lo.shape[0]}x{w_lo.shape[0]}")
    dtype = np.float32 if floating is float else np.float64
    if N * C * OH * OW == 0:
        return np.zeros((N, C, H, W), dtype=dtype)
    dx = np.empty((N, C, H, W), dtype=dtype)
    cdef floating[:, :, :, ::1] dz = dx
    cdef int threads = get_num_threads()
    for q in prange(N * C, nogil=True, schedule="guided", num_threads=threads):
        # zeroed by the thread that fills it (see max_pool2d_backward)
        memset(&dz[0, 0, 0, 0] + q * H * W, 0, H * W * sizeof(floating))
        spread_windows_plane(&grad_out[0, 0, 0, 0] + q * OH * OW, &dz[0, 0, 0, 0] + q * H * W,
                             W, OH, OW, &h_lo[0], &h_hi[0], &h_count[0], &w_lo[0], &w_hi[0],
                             &w_count[0])
    return dx


def _avg_rows_cols(Py_ssize_t H, Py_ssize_t W, kernel_size, stride, padding, bint ceil_mode,
                   bint count_include_pad):
    rows = avg_windows(H, pooled_size(H, kernel_size[0], stride[0], padding[0], ceil_mode),
                       kernel_size[0], stride[0], padding[0], count_include_pad)
    cols = avg_windows(W, pooled_size(W, kernel_size[1], stride[1], padding[1], ceil_mode),
                       kernel_size[1], stride[1], padding[1], count_include_pad)
    return rows, cols


def avg_pool2d_forward(x,                                   # IN  Z: (N, C, H, W), contiguous
                       kernel_size, stride, padding,        # IN  (h, w) pairs of ints
                       bint ceil_mode, bint count_include_pad):
    """A (N, C, OH, OW), OH = pooled_size(H, kh, sh, ph, ceil_mode): each window's mean.

    Arguments are validated by cnn_ops (padding <= kernel // 2, OH, OW >= 1), so every window
    holds at least one real input cell.
    """
    rows, cols = _avg_rows_cols(x.shape[2], x.shape[3], kernel_size, stride, padding,
                                ceil_mode, count_include_pad)
    return _mean_windows(x, rows, cols)


def avg_pool2d_backward(grad_out,                            # IN  A': (N, C, OH, OW)
                        Py_ssize_t H, Py_ssize_t W,          # IN  the input's plane size
                        kernel_size, stride, padding,
                        bint ceil_mode, bint count_include_pad):
    """Z' (N, C, H, W): Z'[z] += A'[i] / divisor(i) for every cell z of every window i."""
    rows, cols = _avg_rows_cols(H, W, kernel_size, stride, padding, ceil_mode,
                                count_include_pad)
    return _spread_windows(grad_out, H, W, rows, cols)


def adaptive_avg_pool2d_forward(x, output_size):    # IN  Z (N, C, H, W); (OH, OW)
    """A (N, C, OH, OW): the mean of each adaptive window (the whole plane for 1x1)."""
    return _mean_windows(x, adaptive_windows(x.shape[2], output_size[0]),
                         adaptive_windows(x.shape[3], output_size[1]))


def adaptive_avg_pool2d_backward(grad_out, Py_ssize_t H, Py_ssize_t W):
    """Z' (N, C, H, W) for A' (N, C, OH, OW): each A' value spread evenly over its window."""
    return _spread_windows(grad_out, H, W, adaptive_windows(H, grad_out.shape[2]),
                           adaptive_windows(W, grad_out.shape[3]))
