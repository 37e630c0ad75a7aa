# cython: language_level=3
"""How many threads the kernels use (OpenMP's count; 1 in a build without OpenMP)."""

cdef extern from "omp_compat.h":
    int TGC_HAVE_OPENMP
    void omp_set_num_threads(int n) nogil
    int omp_get_max_threads() nogil

HAVE_OPENMP = bool(TGC_HAVE_OPENMP)


def set_omp_threads(int n):
    omp_set_num_threads(n)


def get_omp_threads():
    return omp_get_max_threads()
