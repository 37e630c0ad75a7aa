# cython: language_level=3
"""Shared by every kernel: the fused float type and small nogil helpers.

`floating` lets one kernel body compile twice, once for float32 and once for float64.
`gemm` is a row-major matrix product on top of the (column-major, Fortran) BLAS that
scipy exports for Cython; src/matmul.pyx calls it from OpenMP threads, one slab per call (the
convolutions have their own micro-kernel, src/conv_tile.h).
"""

from scipy.linalg.cython_blas cimport dgemm, sgemm

ctypedef fused floating:
    float
    double


cdef inline void gemm(bint trans_a, bint trans_b, int m, int n, int k,
                      floating alpha, const floating *a, int lda,
                      const floating *b, int ldb,
                      floating beta, floating *c, int ldc) noexcept nogil:
    """C[m, n] = alpha * op(A) @ op(B) + beta * C, every matrix row-major.

    op(A) is A[m, k] (or A[k, m] transposed when trans_a), op(B) is B[k, n] (or B[n, k]
    transposed when trans_b); lda, ldb, ldc are the row lengths in memory.
    BLAS is column-major, and a row-major C is a column-major C^T = op(B)^T op(A)^T,
    so we call it with the operands swapped.
    """
    cdef char ta = b"T" if trans_a else b"N"
    cdef char tb = b"T" if trans_b else b"N"
    if floating is float:
        sgemm(&tb, &ta, &n, &m, &k, &alpha, <float *> b, &ldb, <float *> a, &lda,
              &beta, c, &ldc)
    else:
        dgemm(&tb, &ta, &n, &m, &k, &alpha, <double *> b, &ldb, <double *> a, &lda,
              &beta, c, &ldc)


cdef inline double sum_of(const floating *v, Py_ssize_t n) noexcept nogil:
    """v[0] + ... + v[n-1] in double, in eight interleaved partial sums (a fixed order, so
    repeatable) that the CPU can add in parallel instead of one long chain."""
    cdef double part[8]
    cdef Py_ssize_t i, k
    for k in range(8):
        part[k] = 0
    for i in range(0, n - n % 8, 8):
        for k in range(8):
            part[k] += v[i + k]
    for i in range(n - n % 8, n):
        part[0] += v[i]
    return ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]))
