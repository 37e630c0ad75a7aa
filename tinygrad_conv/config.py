"""`show_config()`: what a speed report needs, in one place.

    >>> import tinygrad_conv
    >>> tinygrad_conv.show_config()
    tinygrad_conv 0.1.0 (Python 3.11.7, numpy 2.4.6)
    compiler       gcc 12.2.0
    ...
"""

from __future__ import annotations

import sys

import numpy as np

from tinygrad_conv import _conv, _threads
from tinygrad_conv.cpu import cache_sizes


def _blas() -> str:
    """The BLAS behind the engine's matrix products (scipy's), as scipy describes it."""
    try:
        import scipy
        blas = scipy.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{blas['name']} {blas.get('version', '')}".strip()
    except Exception as e:  # an old or unusual scipy: say so rather than fail
        return f"unknown ({type(e).__name__})"


def _blocking_line(b: dict) -> str:
    """The kernels' blocking (src/conv.pyx's Blocking) in one line."""
    kib = lambda n: f"{n // 1024} KiB"  # noqa: E731
    return (f"staging {kib(b['stage_bytes'])}, kernel chunk {kib(b['kernel_bytes'])}, "
            f"dL/dW slab {kib(b['slab_bytes'])}, {b['tasks_per_thread']} tasks a thread "
            f"(from the L2: results do not depend on them); dL/dW {b['runs']} partial sums "
            f"(at most {b['partials_bytes'] >> 20} MiB), added {b['sum_piece']} at a time")


def show_config(file=None) -> dict:
    """Print (to `file`, default stdout) and return what a speed problem report needs: the
    build (compiler, OpenMP), the threads, the SIMD path in use, the BLAS, the cache sizes and
    the blocking the kernels derive from them."""
    from tinygrad_conv import __version__

    build = _threads.BUILD_INFO         # what the compiler saw (src/build_info.h)
    info = {
        "version": __version__,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "compiler": build["compiler"],
        "openmp": (f"{build['openmp']}, version {build['openmp_version']}"
                   if _threads.HAVE_OPENMP else build["openmp"]),
        "threads": _threads.get_num_threads(),
        "simd_path": _conv.get_simd_path(),
        "simd_paths_supported": _conv.supported_paths(),
        "blas": _blas(),
        "cache_bytes": {k: v for k, v in cache_sizes().items() if k != "source"},
        "cache_source": cache_sizes()["source"],
        "blocking": _conv.blocking_info(),
    }
    caches = ", ".join(f"{k} {v // 1024} KiB" for k, v in info["cache_bytes"].items())
    lanes = _conv.vector_lanes(np.float32)
    lines = [
        f"tinygrad_conv {info['version']} (Python {info['python']}, numpy {info['numpy']})",
        f"compiler       {info['compiler']}",
        f"OpenMP         {info['openmp']}",
        f"threads        {info['threads']}",
        f"SIMD path      {info['simd_path']} ({lanes} float32 lanes; this CPU supports "
        f"{', '.join(info['simd_paths_supported'])}; TINYGRAD_CONV_SIMD forces one)",
        f"BLAS           {info['blas']} (matrix products of Linear; the convolutions use "
        f"their own kernels)",
        f"caches         {caches} (from the {info['cache_source']})",
        f"blocking       {_blocking_line(info['blocking'])}",
    ]
    print("\n".join(lines), file=file)
    return info
