# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False
"""conv2d forward and its gradients, in the tutorial's notation (A input, W weight, Z output,
Z' = dL/dZ the upstream gradient, ⊛ cross-correlation):

    Z     = W ⊛ A + b                                  conv2d_forward
    dL/dW = Z' ⊛ A       (summed over the batch)        conv2d_backward(need_dw)
    dL/db = Z' summed over every axis but F             conv2d_backward(need_db)
    dL/dA = W_180 ⊛ pad(dilate(Z', s), k-1)             conv2d_backward(need_dx)

How: a window of A, unrolled, is one column of a patch matrix ("im2col"):
cols[(c, i, j), (oh, ow)] = A_pad[c, oh*sh + i*dh, ow*sw + j*dw], where A_pad is a zero-bordered
copy of the image (so the unrolling loops need no bounds tests). Then per image

    Z     = W[F, C*kh*kw] @ cols + b
    dL/dW += Z'[F, OH*OW] @ cols^T

and dL/dA is computed exactly as the tutorial states it: Z' is dilated by the stride (s-1 zeros
between its entries) and padded by k_eff-1 (k_eff = d*(k-1)+1, the kernel's extent), then the
kernel rotated 180 degrees, with filters and channels swapped, slides over it at stride 1:

    dL/dA_pad[c] = sum over f of W_180[c, f] ⊛ pad(dilate(Z'[f], s), k_eff-1)

evaluated tap by tap, which is what sliding the kernel means: for each position (i, j) of the
rotated kernel, W_180[:, :, i, j] (a C x F matrix) times Z' shifted by that tap, all added up.
Each of these is one matrix product straight out of a zero-bordered copy of Z' (no unrolling).
The result covers A_pad, the padded input; rows and columns that no window reached come out
zero, and the padding is cropped off at the end.

For stride s > 1 most of the dilated Z' is zeros, and multiplying them would be wasted work.
Split the rows of A_pad by their phase r = y mod s: the rows of one phase always meet the
dilated Z' through the same taps, those i with (r + i*d - (k_eff-1)) divisible by s, and every
other tap lands on an inserted zero. Through those taps, row r + t*s of A_pad reads row
t + e_i of Z' itself (e_i = (r + i*d - (k_eff-1)) / s), so each phase (r, q) is the same
tap-by-tap sum over the undilated Z', written to rows r, r+s, ... and columns q, q+s, ... of
A_pad: the same formula with the zeros skipped. For s = 1 there is one phase and every tap.
NOTE: the scatter form, dcols = W^T @ Z' added back window by window (the tutorial's first
expression, sum over z' of z' * dz/dA), gives the same numbers and measured faster at stride 1
(fwd+bwd of (64,32,26,26)->64, 3x3: 21 ms against 26 ms, 2 threads, float32), but slower at
stride 2; we keep the tutorial's form so that the kernel is the derivation. reference.py
computes the same formula in NumPy, as plainly as it can be written.

Work is split over images with OpenMP; each thread unrolls a band of output rows small enough
to stay in L2 into its own reused workspace and calls single-threaded BLAS on it. Threads take
images as they come free (a busy machine preempts one thread now and then), and dL/dW and dL/db
go into per-chunk buffers added in chunk order, so results are bit-for-bit the same whatever the
number of threads and whoever ran what.
"""

import threading

import numpy as np

from cython.parallel cimport parallel, prange, threadid
from libc.string cimport memcpy, memset

from kernels cimport floating, gemm, sum_of

from tinygrad_conv._threads import get_num_threads

# One band of the patch matrix (C*kh*kw rows by some output rows) is kept near this size so it
# and the slice of Z or Z' it multiplies stay in the L2 cache (2 MiB per core where we measured;
# 256 KiB to 8 MiB bands all ran within 5% of each other on the benchmark shapes).
cdef Py_ssize_t BAND_BYTES = 1 << 20

_workspaces = threading.local()


def _workspace(str name, Py_ssize_t threads, Py_ssize_t size, dtype):
    """A (threads, size) scratch array, reused across calls from the same Python thread."""
    key = (name, np.dtype(dtype).char)
    cached = getattr(_workspaces, "arrays", None)
    if cached is None:
        cached = _workspaces.arrays = {}
    buf = cached.get(key)
    if buf is None or buf.size < threads * size:
        buf = cached[key] = np.empty(threads * size, dtype=dtype)
    return buf[:threads * size].reshape(threads, size)


cdef Py_ssize_t band_rows(Py_ssize_t K, Py_ssize_t OH, Py_ssize_t OW,
                          Py_ssize_t itemsize) noexcept nogil:
    """How many output rows one band of the patch matrix holds (at least one)."""
    cdef Py_ssize_t rows = BAND_BYTES // (K * OW * itemsize)
    if rows < 1:
        return 1
    return rows if rows < OH else OH


cdef Py_ssize_t reduction_chunks(Py_ssize_t N, Py_ssize_t part_bytes) noexcept nogil:
    """Into how many chunks the batch is cut for the dL/dW sum: up to 16 (enough for the
    threads to share out), fewer when the partial sums would pass 64 MiB; shapes only."""
    cdef Py_ssize_t chunks = min(N, 16, max(1, (64 << 20) // max(part_bytes, 1)))
    return max(chunks, 1)


cdef void pad_image(const floating *a,         # IN  A[n]: (C, H, W)
                    floating *a_pad,            # OUT (C, H + 2*ph, W + 2*pw), border untouched
                    Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                    Py_ssize_t ph, Py_ssize_t pw) noexcept nogil:
    """A_pad[c, ph + h, pw + w] = A[c, h, w] (the caller keeps the border zero)."""
    cdef Py_ssize_t c, h, Hp = H + 2 * ph, Wp = W + 2 * pw
    for c in range(C):
        for h in range(H):
            memcpy(a_pad + (c * Hp + ph + h) * Wp + pw, a + (c * H + h) * W,
                   W * sizeof(floating))


cdef void crop_image(const floating *a_pad,   # IN  (C, H + 2*ph, W + 2*pw)
                     floating *a,             # OUT (C, H, W)
                     Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                     Py_ssize_t ph, Py_ssize_t pw) noexcept nogil:
    """A[c, h, w] = A_pad[c, ph + h, pw + w]: the padding's gradient is dropped."""
    cdef Py_ssize_t c, h, Hp = H + 2 * ph, Wp = W + 2 * pw
    for c in range(C):
        for h in range(H):
            memcpy(a + (c * H + h) * W, a_pad + (c * Hp + ph + h) * Wp + pw,
                   W * sizeof(floating))


cdef void pad_grad(const floating *dz,   # IN  Z'[n]: (F, OH, OW)
                   floating *zp,         # OUT (F, Hz, Wz) (+ Wz of slack), zero but Z'
                   Py_ssize_t F, Py_ssize_t OH, Py_ssize_t OW, Py_ssize_t Hz,
                   Py_ssize_t Wz, Py_ssize_t top, Py_ssize_t left) noexcept nogil:
    """zp[f, top + oh, left + ow] = Z'[f, oh, ow], inside a zero border."""
    cdef Py_ssize_t f, oh
    memset(zp, 0, (F * Hz * Wz + Wz) * sizeof(floating))
    for f in range(F):
        for oh in range(OH):
            memcpy(zp + (f * Hz + top + oh) * Wz + left, dz + (f * OH + oh) * OW,
                   OW * sizeof(floating))


cdef void im2col(const floating *a_pad,   # IN  A_pad[n]: (C, Hp, Wp), padding included
                 floating *cols,          # OUT (C*KH*KW, nrows*OW)
                 Py_ssize_t C, Py_ssize_t Hp, Py_ssize_t Wp, Py_ssize_t KH, Py_ssize_t KW,
                 Py_ssize_t oh0, Py_ssize_t nrows, Py_ssize_t OW, Py_ssize_t sh,
                 Py_ssize_t sw, Py_ssize_t dh, Py_ssize_t dw) noexcept nogil:
    """cols[(c, i, j), (oh - oh0, ow)] = A_pad[c, oh*sh + i*dh, ow*sw + j*dw], for the output
    rows oh0 <= oh < oh0 + nrows: row (c, i, j) holds what tap (i, j) sees in each window."""
    cdef Py_ssize_t c, i, j, r, ow
    cdef floating *row
    cdef const floating *src
    for c in range(C):
        for i in range(KH):
            for j in range(KW):
                row = cols + ((c * KH + i) * KW + j) * nrows * OW
                src = a_pad + (c * Hp + oh0 * sh + i * dh) * Wp + j * dw
                for r in range(nrows):
                    for ow in range(OW):
                        row[r * OW + ow] = src[r * sh * Wp + ow * sw]


def conv2d_forward(const floating[:, :, :, ::1] a,   # IN  A: (N, C, H, W)
                   const floating[:, :, :, ::1] w,   # IN  W: (F, C, KH, KW)
                   const floating[::1] b,            # IN  b: (F,) or None
                   stride, padding, dilation):       # IN  (h, w) pairs of ints
    """Z = W ⊛ A + b, shape (N, F, OH, OW) with OH = 1 + (H + 2*ph - dh*(KH-1) - 1) // sh.

    Arguments are C-contiguous arrays of one float dtype, already validated by cnn_ops.
    """
    cdef Py_ssize_t sh = stride[0], sw = stride[1], ph = padding[0], pw = padding[1]
    cdef Py_ssize_t dh = dilation[0], dw = dilation[1]
    cdef Py_ssize_t N = a.shape[0], C = a.shape[1], H = a.shape[2], W = a.shape[3]
    cdef Py_ssize_t F = w.shape[0], KH = w.shape[2], KW = w.shape[3]
    cdef Py_ssize_t OH = 1 + (H + 2 * ph - dh * (KH - 1) - 1) // sh
    cdef Py_ssize_t OW = 1 + (W + 2 * pw - dw * (KW - 1) - 1) // sw
    cdef Py_ssize_t K = C * KH * KW, P = OH * OW
    cdef bint has_bias = b is not None
    cdef Py_ssize_t n, f, p, band, oh0, nrows, tid
    cdef floating *cols
    cdef floating *zb
    cdef floating beta = 1 if has_bias else 0
    dtype = np.float32 if floating is float else np.float64

    out = np.empty((N, F, OH, OW), dtype=dtype)
    if N == 0:
        return out
    cdef floating[:, :, :, ::1] z = out
    cdef Py_ssize_t rows = band_rows(K, OH, OW, sizeof(floating))
    cdef int threads = min(get_num_threads(), N)
    cdef floating[:, ::1] ws = _workspace("cols", threads, K * rows * OW, dtype)
    # each thread copies its image into a zero-bordered buffer, so im2col needs no bounds tests
    cdef bint padded = ph > 0 or pw > 0
    cdef Py_ssize_t Hp = H + 2 * ph, Wp = W + 2 * pw
    cdef floating[:, ::1] ws_pad = _workspace("pad", threads, C * Hp * Wp if padded else 1, dtype)
    cdef const floating *src

    with nogil, parallel(num_threads=threads):
        memset(&ws_pad[threadid(), 0], 0, ws_pad.shape[1] * sizeof(floating))
        for n in prange(N, schedule="dynamic"):    # images share nothing: take them as free
            tid = threadid()
            cols = &ws[tid, 0]
            src = &a[n, 0, 0, 0]
            if padded:
                pad_image(src, &ws_pad[tid, 0], C, H, W, ph, pw)
                src = &ws_pad[tid, 0]
            for band in range((OH + rows - 1) // rows):
                oh0 = band * rows
                nrows = min(rows, OH - oh0)
                im2col(src, cols, C, Hp, Wp, KH, KW, oh0, nrows, OW, sh, sw, dh, dw)
                # Z[n, :, band] = W @ cols + b: the bias goes in first, and gemm adds onto it
                zb = &z[n, 0, oh0, 0]
                if has_bias:
                    for f in range(F):
                        for p in range(nrows * OW):
                            zb[f * P + p] = b[f]
                gemm(False, False, F, nrows * OW, K, 1, &w[0, 0, 0, 0], K,
                     cols, nrows * OW, beta, zb, P)
    return out


def conv2d_backward(const floating[:, :, :, ::1] x,    # IN  A: (N, C, H, W)
                    const floating[:, :, :, ::1] w,    # IN  W: (F, C, KH, KW)
                    const floating[:, :, :, ::1] dz,   # IN  Z' = dL/dZ: (N, F, OH, OW)
                    stride, padding, dilation,         # IN  (h, w) pairs of ints
                    bint need_dx, bint need_dw, bint need_db):
    """(dL/dA, dL/dW, dL/db), each None unless asked for.

    dL/dA = W_180 ⊛ pad(dilate(Z', s), k-1) (N, C, H, W), dL/dW = Z' ⊛ A (F, C, KH, KW),
    dL/db = Z' summed over N, OH, OW (F,).
    """
    cdef Py_ssize_t sh = stride[0], sw = stride[1], ph = padding[0], pw = padding[1]
    cdef Py_ssize_t dh = dilation[0], dw = dilation[1]
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t F = w.shape[0], KH = w.shape[2], KW = w.shape[3]
    cdef Py_ssize_t OH = dz.shape[2], OW = dz.shape[3]
    cdef Py_ssize_t K = C * KH * KW, P = OH * OW
    cdef Py_ssize_t n, f, p, band, oh0, nrows, tid
    cdef const floating *dzb
    cdef floating *cols
    dtype = np.float32 if floating is float else np.float64
    assert dz.shape[0] == N and dz.shape[1] == F, "conv2d_backward: Z' does not match A and W"

    dx = np.zeros((N, C, H, W), dtype=dtype) if need_dx else None
    cdef Py_ssize_t rows = band_rows(K, OH, OW, sizeof(floating))
    # dL/dW and dL/db are sums over images. The batch is cut into a fixed number of chunks (it
    # depends on the shapes only), each summed into its own buffer by whichever thread takes
    # it, and the buffers are added in chunk order: the result does not depend on the number
    # of threads or on which thread ran what, so threads can take chunks as they come free.
    cdef Py_ssize_t chunks = reduction_chunks(N, F * K * sizeof(floating))
    cdef Py_ssize_t per_chunk = (N + chunks - 1) // chunks if N else 1
    chunks = (N + per_chunk - 1) // per_chunk
    cdef Py_ssize_t q, n_end
    cdef int threads = max(1, min(get_num_threads(), chunks))
    dw_parts = np.zeros((max(chunks, 1), F, K), dtype=dtype) if need_dw else None
    # (db in double: it sums N*OH*OW terms)
    db_parts = np.zeros((max(chunks, 1), F), dtype=np.float64) if need_db else None
    cdef floating[:, :, :, ::1] dx_v = dx if need_dx else np.zeros((1, 1, 1, 1), dtype)
    cdef floating[:, :, ::1] dw_v = dw_parts if need_dw else np.zeros((1, 1, 1), dtype)
    cdef double[:, ::1] db_v = db_parts if need_db else np.zeros((1, 1))
    cdef floating[:, ::1] ws_cols = _workspace("cols", threads, K * rows * OW * need_dw + 1,
                                               dtype)
    cdef bint padded = ph > 0 or pw > 0
    cdef Py_ssize_t Hp = H + 2 * ph, Wp = W + 2 * pw
    cdef floating[:, ::1] ws_pad = _workspace("pad", threads, C * Hp * Wp if padded else 1, dtype)

    # dL/dA: tap (i, j) of the rotated kernel, W_180[c, f, i, j] = W[f, c, KH-1-i, KW-1-j],
    # meets Z' shifted by (e_i, g_j) in the rows and columns of one phase of A_pad
    cdef Py_ssize_t KHe = dh * (KH - 1) + 1, KWe = dw * (KW - 1) + 1
    w_taps_array = np.ascontiguousarray(
        np.asarray(w)[:, :, ::-1, ::-1].transpose(2, 3, 1, 0)).reshape(KH * KW, C, F)
    cdef floating[:, :, ::1] w_taps = w_taps_array
    rows_of = {r: [(i, (r + i * dh - (KHe - 1)) // sh) for i in range(KH)
                   if (r + i * dh - (KHe - 1)) % sh == 0] for r in range(sh)}
    cols_of = {q: [(j, (q + j * dw - (KWe - 1)) // sw) for j in range(KW)
                   if (q + j * dw - (KWe - 1)) % sw == 0] for q in range(sw)}
    all_e = [e for taps in rows_of.values() for _, e in taps] or [0]
    all_g = [g for taps in cols_of.values() for _, g in taps] or [0]
    cdef Py_ssize_t TH = (Hp + sh - 1) // sh, TW = (Wp + sw - 1) // sw   # phase (0, 0)'s size
    cdef Py_ssize_t top = max(0, -min(all_e)), left = max(0, -min(all_g))
    cdef Py_ssize_t Hz = top + max(OH, TH + max(all_e)), Wz = left + max(OW, TW + max(all_g))
    # phase table: (r, q, first tap, tap count); tap table: (offset into padded Z', W_180 tap)
    phase_rows, tap_rows = [], []
    for r in range(sh):
        for q in range(sw):
            taps = [((e + top) * Wz + g + left, i * KW + j)
                    for i, e in rows_of[r] for j, g in cols_of[q]]
            if taps:
                phase_rows.append((r, q, len(tap_rows), len(taps)))
                tap_rows.extend(taps)
    cdef Py_ssize_t n_phases = len(phase_rows)
    cdef Py_ssize_t[:, ::1] phase = np.array(phase_rows or [(0, 0, 0, 0)], dtype=np.intp)
    cdef Py_ssize_t[:, ::1] tap = np.array(tap_rows or [(0, 0)], dtype=np.intp)
    # a band of a phase's rows: its output and the slice of Z' it reads stay in cache
    cdef Py_ssize_t rows_x = max(1, min(TH, BAND_BYTES // ((C + F) * Wz * sizeof(floating))))
    cdef floating[:, ::1] ws_zp = _workspace("zp", threads, (F * Hz * Wz + Wz) * need_dx + 1,
                                             dtype)
    cdef floating[:, ::1] ws_xout = _workspace("xout", threads, C * rows_x * Wz * need_dx + 1,
                                               dtype)
    cdef floating[:, ::1] ws_dpad = _workspace(
        "dpad", threads, C * Hp * Wp if padded and need_dx else 1, dtype)
    cdef const floating *src
    cdef floating *dst
    cdef floating *zp
    cdef floating *xout
    cdef Py_ssize_t k, pr, pc, T, U, t0, c, t, u

    with nogil, parallel(num_threads=threads):
        memset(&ws_pad[threadid(), 0], 0, ws_pad.shape[1] * sizeof(floating))
        for q in prange(chunks, schedule="dynamic"):
            tid = threadid()
            cols = &ws_cols[tid, 0]
            n_end = min(N, (q + 1) * per_chunk)
            for n in range(q * per_chunk, n_end):
                if need_db:
                    for f in range(F):
                        db_v[q, f] += sum_of(&dz[n, f, 0, 0], P)
                if need_dw:
                    # dL/dW += Z'[n, :, band] @ cols^T, band by band
                    src = &x[n, 0, 0, 0]
                    if padded:
                        pad_image(src, &ws_pad[tid, 0], C, H, W, ph, pw)
                        src = &ws_pad[tid, 0]
                    for band in range((OH + rows - 1) // rows):
                        oh0 = band * rows
                        nrows = min(rows, OH - oh0)
                        im2col(src, cols, C, Hp, Wp, KH, KW, oh0, nrows, OW, sh, sw, dh, dw)
                        gemm(False, True, F, K, nrows * OW, 1, &dz[n, 0, oh0, 0], P,
                             cols, nrows * OW, 1, &dw_v[q, 0, 0], K)
                if need_dx:
                    # dL/dA_pad = W_180 ⊛ pad(dilate(Z')): phase by phase, band by band, and
                    # for each tap, W_180[:, :, i, j] @ (Z' shifted by that tap)
                    zp = &ws_zp[tid, 0]
                    xout = &ws_xout[tid, 0]
                    pad_grad(&dz[n, 0, 0, 0], zp, F, OH, OW, Hz, Wz, top, left)
                    dst = &dx_v[n, 0, 0, 0]   # zeros: rows no phase reaches stay zero
                    if padded:
                        dst = &ws_dpad[tid, 0]
                        memset(dst, 0, C * Hp * Wp * sizeof(floating))
                    for p in range(n_phases):
                        pr = phase[p, 0]
                        pc = phase[p, 1]
                        T = (Hp - pr + sh - 1) // sh
                        U = (Wp - pc + sw - 1) // sw
                        for band in range((T + rows_x - 1) // rows_x):
                            t0 = band * rows_x
                            nrows = min(rows_x, T - t0)
                            # a band's rows are computed Wz wide; the columns past U are dropped
                            for k in range(phase[p, 2], phase[p, 2] + phase[p, 3]):
                                gemm(False, False, C, nrows * Wz, F, 1,
                                     &w_taps[tap[k, 1], 0, 0], F, zp + t0 * Wz + tap[k, 0],
                                     Hz * Wz, 0 if k == phase[p, 2] else 1, xout, nrows * Wz)
                            for c in range(C):   # rows pr + t*sh, columns pc + u*sw of A_pad
                                for t in range(nrows):
                                    if sw == 1:
                                        memcpy(dst + (c * Hp + pr + (t0 + t) * sh) * Wp + pc,
                                               xout + (c * nrows + t) * Wz,
                                               U * sizeof(floating))
                                    else:
                                        for u in range(U):
                                            dst[(c * Hp + pr + (t0 + t) * sh) * Wp + pc
                                                + u * sw] = xout[(c * nrows + t) * Wz + u]
                    if padded:   # the padding's gradient is dropped
                        crop_image(dst, &dx_v[n, 0, 0, 0], C, H, W, ph, pw)

    dweight = dbias = None
    if need_dw:
        dweight = dw_parts[0]
        for q in range(1, chunks):    # in chunk order, so the sum is repeatable
            dweight += dw_parts[q]
        dweight = dweight.reshape(F, C, KH, KW)
    if need_db:
        dbias = db_parts[0]
        for q in range(1, chunks):
            dbias += db_parts[q]
        dbias = dbias.astype(dtype)
    return dx, dweight, dbias
