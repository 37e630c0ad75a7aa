# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False
"""ReLU forward and backward: elementwise, on the kernels' threads, one pass each.

    A  = relu(Z)  = Z where Z > 0, else 0        (a NaN stays NaN)       relu_forward
    Z' = A' * [A > 0]                             (a NaN passes A' on)    relu_backward

The backward reads A, the forward's output: A > 0 exactly where Z > 0. Written with selects
(the compiler makes them vector blends), never multiplying by 0, so an Inf or NaN in A' where Z
<= 0 still gives 0, as in PyTorch. numpy needs a comparison, an inversion and a product (and a
check for non-finite values) for the same: three to four passes over memory, one thread. These
are in ops.ReLU; the NumPy formulas there are the reference.
"""

import numpy as np

from cython.parallel cimport prange

from kernels cimport floating

from tinygrad_conv._threads import get_num_threads

# below this many elements one thread is faster than waking the others
cdef Py_ssize_t PARALLEL_MIN = 1 << 16
cdef Py_ssize_t PIECE = 1 << 14         # elements a thread takes at a time


cdef inline void relu_piece(const floating *z, floating *a, Py_ssize_t n) noexcept nogil:
    """a = z where not (z <= 0), else 0: z > 0 and NaN go through."""
    cdef Py_ssize_t i
    for i in range(n):
        a[i] = 0 if z[i] <= 0 else z[i]


cdef inline void relu_grad_piece(const floating *a, const floating *da, floating *dz,
                                 Py_ssize_t n) noexcept nogil:
    """dz = da where not (a <= 0), else 0. da[i] is read whatever a[i] is, so the select
    compiles to a blend: a branch on a's sign mispredicts half the time (10x slower)."""
    cdef Py_ssize_t i
    cdef floating g
    for i in range(n):
        g = da[i]
        dz[i] = 0 if a[i] <= 0 else g


def relu_forward(const floating[::1] z):    # IN  Z, flattened
    """A = relu(Z), a new array of Z's length."""
    cdef Py_ssize_t n = z.shape[0], start
    out = np.empty(n, dtype=np.float32 if floating is float else np.float64)
    cdef floating[::1] a = out
    cdef int threads = get_num_threads() if n >= PARALLEL_MIN else 1
    if n == 0:
        return out
    with nogil:
        for start in prange(0, n, PIECE, num_threads=threads, schedule="static"):
            relu_piece(&z[start], &a[start], min(PIECE, n - start))
    return out


def relu_backward(const floating[::1] a,    # IN  A = relu(Z), flattened
                  const floating[::1] da):  # IN  A' = dL/dA, the same length
    """Z' = dL/dZ, a new array."""
    cdef Py_ssize_t n = a.shape[0], start
    out = np.empty(n, dtype=np.float32 if floating is float else np.float64)
    cdef floating[::1] dz = out
    cdef int threads = get_num_threads() if n >= PARALLEL_MIN else 1
    if n == 0:
        return out
    with nogil:
        for start in prange(0, n, PIECE, num_threads=threads, schedule="static"):
            relu_grad_piece(&a[start], &da[start], &dz[start], min(PIECE, n - start))
    return out
