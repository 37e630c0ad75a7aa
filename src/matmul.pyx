# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False
"""The 2-D matrix product behind the engine's `@` (and so every Linear layer):

    C[m, n] = op(A)[m, k] @ op(B)[k, n]        op(X) = X or X^T

Why not numpy's `@`: numpy calls its own multithreaded OpenBLAS, whose worker threads keep
spinning for a while after each call. On a small machine they then compete with the conv and
pool kernels' OpenMP threads for the same cores (measured here, 2 cores: a classic MNIST training
step took about 2x as long). So the product runs on the same threads as the other kernels: the
output's columns (or rows) are split into one slab per OpenMP thread, and each thread calls the
single-threaded BLAS the kernels use on its slab. Each output element is computed by one thread
in one BLAS call, so the result does not depend on how many threads there are.
"""

import numpy as np

from cython.parallel cimport prange

from kernels cimport floating, gemm

from tinygrad_conv._threads import get_num_threads

# below this many multiply-adds one thread is faster than waking the others
cdef Py_ssize_t PARALLEL_MIN_WORK = 1 << 18
# BLAS takes its sizes as 32-bit ints
cdef Py_ssize_t BLAS_INT_MAX = 2**31 - 1


def matmul(const floating[:, ::1] a,    # IN  A (k, m) if trans_a else (m, k), row-major
           const floating[:, ::1] b,    # IN  B (n, k) if trans_b else (k, n), row-major
           bint trans_a, bint trans_b):
    """op(A) @ op(B) as a new (m, n) array; the caller checked that the shapes agree."""
    cdef Py_ssize_t m = a.shape[1] if trans_a else a.shape[0]
    cdef Py_ssize_t k = a.shape[0] if trans_a else a.shape[1]
    cdef Py_ssize_t n = b.shape[0] if trans_b else b.shape[1]
    dtype = np.float32 if floating is float else np.float64
    out = np.empty((m, n), dtype=dtype)
    cdef floating[:, ::1] c = out
    if m == 0 or n == 0:
        return out
    if k == 0:
        out.fill(0)
        return out
    if m > BLAS_INT_MAX or n > BLAS_INT_MAX or k > BLAS_INT_MAX:
        raise ValueError(f"matmul: ({m}, {k}) @ ({k}, {n}) has a dimension above "
                         f"{BLAS_INT_MAX}, the largest size BLAS takes")

    cdef int threads = get_num_threads()
    if <Py_ssize_t> m * n * k < PARALLEL_MIN_WORK:
        threads = 1
    cdef bint by_rows = m > n          # split the longer side of C into slabs
    cdef int length = m if by_rows else n
    if threads > length:
        threads = length
    cdef int slab = (length + threads - 1) // threads
    cdef int lda = a.shape[1], ldb = b.shape[1]
    cdef int t, start, size
    cdef const floating *a_ptr = &a[0, 0]
    cdef const floating *b_ptr = &b[0, 0]
    cdef floating *c_ptr = &c[0, 0]
    cdef floating one = 1, zero = 0
    with nogil:
        for t in prange(threads, num_threads=threads, schedule="static"):
            start = t * slab
            size = length - start if length - start < slab else slab
            if size <= 0:
                continue
            if by_rows:   # rows start..start+size of C need rows of op(A)
                gemm(trans_a, trans_b, size, n, k, one,
                     a_ptr + (start if trans_a else <Py_ssize_t> start * lda), lda,
                     b_ptr, ldb, zero, c_ptr + <Py_ssize_t> start * n, n)
            else:         # columns start..start+size of C need columns of op(B)
                gemm(trans_a, trans_b, m, size, k, one, a_ptr, lda,
                     b_ptr + (<Py_ssize_t> start * ldb if trans_b else start), ldb,
                     zero, c_ptr + start, n)
    return out
