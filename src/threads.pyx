# cython: language_level=3
"""How many threads the kernels use.

The kernels split their work (images of a batch, planes of a max-pool) over OpenMP threads, and
each OpenMP thread calls BLAS on its own share. A multithreaded BLAS under that would run
threads * blas_threads threads on the cores, so the BLAS the kernels call (scipy's bundled
OpenBLAS) is kept at one thread: set_num_threads(n) therefore means n threads in total.
numpy's own BLAS (used by the engine's matmul) is a different library and is left alone.
In a build without OpenMP the kernels run serially and get_num_threads() returns 1.

After os.fork() (multiprocessing's default start method on Linux) the child runs the kernels on
one thread. GNU OpenMP (libgomp, what gcc links) keeps a pool of worker threads that fork does
not copy: the child's first parallel region would wait forever for workers that do not exist.
A team of one thread never touches that pool, so `_after_fork_in_child` drops the child to one
thread; there set_num_threads(n > 1) is refused with a RuntimeError rather than left to hang.
LLVM's OpenMP (libomp, clang) rebuilds its pool after fork, so there the child may raise the
count again.

set_num_threads accepts at most max_num_threads(): THREADS_PER_CPU (8) threads per logical CPU
(os.cpu_count()), and no more than the OpenMP runtime's thread limit (OMP_THREAD_LIMIT). More
threads than cores never speed the kernels up, though a few per core still run (tests use that);
far more crash the process where no error can be caught: libgomp starts a team with about 200
bytes a thread on the calling thread's stack (65,536 threads overflow an 8 MB stack: a
segfault), and a thread it cannot create ends the process ("Thread creation failed"). So larger
counts are a ValueError naming the limit, and an OMP_NUM_THREADS above it is lowered to it, with
a warning.
"""

import ctypes
import operator
import os
import warnings

cdef extern from "omp_compat.h":
    int TGC_HAVE_OPENMP
    int TGC_OPENMP_SURVIVES_FORK
    void omp_set_num_threads(int n) nogil
    int omp_get_max_threads() nogil
    int omp_get_thread_limit() nogil

HAVE_OPENMP = bool(TGC_HAVE_OPENMP)
OPENMP_SURVIVES_FORK = bool(TGC_OPENMP_SURVIVES_FORK)

THREADS_PER_CPU = 8


def max_num_threads():
    """The most threads set_num_threads accepts: THREADS_PER_CPU per logical CPU, within the
    OpenMP runtime's thread limit (the same in a build without OpenMP, which runs on one)."""
    return max(1, min(THREADS_PER_CPU * (os.cpu_count() or 1), omp_get_thread_limit()))


def _limit_text():
    """max_num_threads() and where it comes from, for messages."""
    per_cpu = THREADS_PER_CPU * (os.cpu_count() or 1)
    why = (f"{THREADS_PER_CPU} per logical CPU, {os.cpu_count() or 1} CPUs"
           if per_cpu <= omp_get_thread_limit() else "OpenMP's thread limit, OMP_THREAD_LIMIT")
    return f"{max_num_threads()} ({why})"


cdef int _num_threads = omp_get_max_threads() if TGC_HAVE_OPENMP else 1
if _num_threads > max_num_threads():   # OMP_NUM_THREADS asked for more than the limit
    warnings.warn(f"tinygrad_conv: OMP_NUM_THREADS asks for {_num_threads} threads, more than "
                  f"this machine runs; the kernels use the limit, {_limit_text()}",
                  RuntimeWarning, stacklevel=2)
    _num_threads = max_num_threads()
    omp_set_num_threads(_num_threads)
cdef bint _forked_child = False   # this process is a fork() child (of a process using OpenMP)


def _pin_kernel_blas_to_one_thread():
    """Set the OpenBLAS behind scipy.linalg.cython_blas to one thread, if it is OpenBLAS.

    dlsym on that module's handle also searches the libraries it links (the bundled
    OpenBLAS). MKL and OpenMP builds of OpenBLAS already run serially inside an OpenMP
    parallel region, so finding no setter is fine.
    """
    import scipy.linalg.cython_blas as cython_blas

    lib = ctypes.CDLL(cython_blas.__file__)
    for name in ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
                 "openblas_set_num_threads64_", "openblas_set_num_threads"):
        setter = getattr(lib, name, None)
        if setter is not None:
            setter.argtypes = [ctypes.c_int]
            setter.restype = None
            setter(1)
            return True
    return False


def set_num_threads(n):
    """Use n threads (a positive int, Python or numpy) in every kernel from now on.

    n above max_num_threads() (THREADS_PER_CPU per logical CPU, and the OpenMP thread limit)
    is a ValueError: see the module docstring. In a build without OpenMP the kernels stay on
    one thread whatever n is (and the same n are refused)."""
    global _num_threads
    if isinstance(n, bool):
        raise TypeError(f"set_num_threads: n must be a positive int, got {n!r}")
    try:
        n = operator.index(n)
    except TypeError:
        raise TypeError(f"set_num_threads: n must be a positive int, got {n!r}") from None
    if n < 1:
        raise ValueError(f"set_num_threads: n must be a positive int, got {n}")
    if n > max_num_threads():
        raise ValueError(f"set_num_threads: n={n} is more threads than this machine runs; "
                         f"the limit is {_limit_text()}")
    if not TGC_HAVE_OPENMP:
        return
    if n > 1 and _forked_child and not TGC_OPENMP_SURVIVES_FORK:
        raise RuntimeError(
            f"set_num_threads: this process is a fork() child, where GNU OpenMP cannot run "
            f"threads (its thread pool did not survive the fork), so the kernels stay on 1 "
            f"thread; got n={n}. For workers with several threads each, start them with "
            f"multiprocessing's 'spawn' or 'forkserver' method")
    _num_threads = n
    omp_set_num_threads(_num_threads)
    _pin_kernel_blas_to_one_thread()


def get_num_threads():
    """The number of threads the kernels use (1 in a build without OpenMP)."""
    return _num_threads


def _after_fork_in_child():
    """Drop a fork() child to one thread (see the module docstring for why)."""
    global _num_threads, _forked_child
    _forked_child = True
    if TGC_HAVE_OPENMP:
        _num_threads = 1
        omp_set_num_threads(1)


BLAS_PINNED = _pin_kernel_blas_to_one_thread()
os.register_at_fork(after_in_child=_after_fork_in_child)



cdef extern from "build_info.h":
    const char *TGC_COMPILER
    const char *TGC_OPENMP
    int TGC_OPENMP_VERSION

# How these kernels were built, as the compiler saw it (src/build_info.h), for show_config():
# "openmp" names the flavour ("gcc -fopenmp (libgomp)", "MSVC /openmp (vcomp)", ...) or says
# why the build is serial; "openmp_version" is _OPENMP (yyyymm of the spec; 0 without OpenMP).
BUILD_INFO = {
    "compiler": TGC_COMPILER.decode("utf-8", "replace").strip(),
    "openmp": TGC_OPENMP.decode("utf-8", "replace"),
    "openmp_version": TGC_OPENMP_VERSION,
}
