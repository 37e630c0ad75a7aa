"""Our conv2d / max_pool2d against PyTorch's, both on the same number of threads, float32.

    python3 benchmarks/bench_kernels.py [--threads 2] [--repeats 30] [--dtype float32]
    python3 benchmarks/bench_kernels.py --threads 1 --cpu-time   # on a busy shared machine

For each shape it prints the median time of the forward alone (under no_grad) and of forward +
backward, ours and PyTorch's measured in the same run (in alternating blocks of calls: see
`medians`), their ratio (ours / PyTorch: below 1.0 means we are faster), our achieved GFLOP/s
(for max-pool: billions of window elements compared per second) and, for the convolutions, that
as a percentage of the machine's peak. The calls go through the public ops (`cnn_ops.conv2d(...)`
+ `.backward(grad)`), so the graph's overhead is included.

Beside the table it prints the same run's matrix-product rate, (2048 x 2048) @ (2048 x 2048) on
the same threads through torch.mm (MKL or oneDNN) and through NumPy (OpenBLAS), and each
convolution's fwd+bwd rate as a percentage of the faster of the two ("% gemm"): the issue's
yardstick for c2 and c4 (at least 80%).

The peak is measured, not looked up: the kernels' own FMA probe (independent fused multiply-adds
on registers, in the SIMD path the kernels use) gives one core's rate, the clock this machine
really runs at times the FMAs per cycle of that path's vectors; times the threads.

--cpu-time measures the process's CPU time instead of wall time: on a machine other jobs keep
busy it still compares the work each side does (with one thread only: with more it would also
count the time idle threads spin).

--passive-wait sets OMP_WAIT_POLICY=PASSIVE for both OpenMP runtimes (ours and PyTorch's)
before they start: their idle threads sleep at once instead of spinning. On 2 cores and 2
threads a runtime still spinning from the other side's call takes a core from the call being
timed; for sub-millisecond rows (dw1, dw2) the untimed call does not always absorb that, and
the default run's ratios come out bimodal from one process to the next.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import sys
import time

if "--passive-wait" in sys.argv:        # before either OpenMP runtime starts (see above)
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

import numpy as np  # noqa: E402
import torch  # noqa: E402

from tinygrad_conv import _conv, _threads  # noqa: E402
from tinygrad_conv.cnn_ops import conv2d, max_pool2d  # noqa: E402
from tinygrad_conv.shapes import out_size  # noqa: E402
from tinygrad_conv.tensor import Tensor, no_grad  # noqa: E402

# name: (N, C, H, W, F, k, stride, padding, groups, input gradient)
CONVS = {
    "c1": (64, 1, 28, 28, 32, 3, 1, 0, 1, False),   # a first layer: the images need no gradient
    "c2": (64, 32, 26, 26, 64, 3, 1, 0, 1, True),
    "c3": (64, 16, 14, 14, 32, 5, 2, 2, 1, True),
    "c4": (8, 64, 56, 56, 64, 3, 1, 1, 1, True),
    "c1dA": (64, 1, 28, 28, 32, 3, 1, 0, 1, True),  # c1 with dL/dA (C = 1: one channel a group)
    "rgb": (64, 3, 32, 32, 32, 3, 1, 1, 1, False),  # a first layer on colour images, padded
    "dw1": (8, 64, 56, 56, 64, 3, 1, 1, 64, True),  # depthwise 3x3 (MobileNet), stride 1
    "dw2": (8, 64, 56, 56, 64, 3, 2, 1, 64, True),  # ... stride 2
}
# name: (N, C, H, W, kernel, stride)
POOLS = {
    "p1": (64, 64, 24, 24, 2, 2),
    "p2": (64, 32, 26, 26, 3, 1),
}


CLOCK = time.perf_counter


def medians(fns, repeats: int, block: int = 5, settle: int = 5,
            pause: float = 0.02) -> list[float]:
    """Median wall time in ms of each function over `repeats` timed calls, taken in blocks:
    each function in turn waits `pause` seconds, runs `settle` untimed calls and then `block`
    timed ones in a row.

    Both sides' OpenMP threads spin for a few milliseconds after a call before they sleep: on
    2 cores, the other side's spinning threads take a core from the calls being timed (after
    PyTorch's c4 fwd+bwd, our dw2 forward ran at one thread's speed, 0.41-0.45 ms instead of
    0.25-0.29). The pause lets them go to sleep; the untimed calls then wake this side's own
    threads and warm the caches (after a pause, PyTorch's dw2 forward took 4.4, 1.9, 1.4, 1.1
    and 1.1 times its steady time in its first five calls; ours 2.9, 1.6, 1.3, 1.1, 1.0), and
    the calls in a row measure each side in its steady state, as a training loop that uses one
    of them runs. (Alternating call by call, as
    earlier rounds did, the sub-millisecond rows' ratios moved by 2x from one process to the
    next.)
    """
    for fn in fns:                                  # warm up: workspaces, thread pools
        fn()
    times = [[] for _ in fns]
    for _ in range(-(-repeats // block)):
        for fn, ts in zip(fns, times):
            time.sleep(pause)
            for _ in range(settle):
                fn()
            for _ in range(block):
                start = CLOCK()
                fn()
                ts.append(CLOCK() - start)
    return [1e3 * float(np.median(ts[:repeats])) for ts in times]


def bench_conv(shape, dtype, repeats):
    n, c, h, w, f, k, s, p, groups, input_grad = shape
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    wt = (rng.standard_normal((f, c // groups, k, k)) * 0.1).astype(dtype)
    b = rng.standard_normal(f).astype(dtype)
    oh, ow = out_size(h, k, s, p), out_size(w, k, s, p)
    g = rng.standard_normal((n, f, oh, ow)).astype(dtype)

    ours_x = Tensor(x, requires_grad=input_grad, dtype=dtype)
    ours_w, ours_b = Tensor(wt, requires_grad=True, dtype=dtype), Tensor(b, True, dtype=dtype)
    th_x = torch.tensor(x, requires_grad=input_grad)
    th_w, th_b = torch.tensor(wt, requires_grad=True), torch.tensor(b, requires_grad=True)
    th_g = torch.tensor(g)

    def ours_fwd():
        with no_grad():
            conv2d(ours_x, ours_w, ours_b, stride=s, padding=p, groups=groups)

    def torch_fwd():
        with torch.no_grad():
            torch.nn.functional.conv2d(th_x, th_w, th_b, s, p, 1, groups)

    def ours_fwd_bwd():
        ours_x.grad = ours_w.grad = ours_b.grad = None
        conv2d(ours_x, ours_w, ours_b, stride=s, padding=p, groups=groups).backward(g)

    def torch_fwd_bwd():
        th_x.grad = th_w.grad = th_b.grad = None
        torch.nn.functional.conv2d(th_x, th_w, th_b, s, p, 1, groups).backward(th_g)

    times = medians([ours_fwd, torch_fwd, ours_fwd_bwd, torch_fwd_bwd], repeats)
    flops = 2.0 * n * f * oh * ow * (c // groups) * k * k
    return times, (flops, flops * (3 if input_grad else 2))


def bench_pool(shape, dtype, repeats):
    n, c, h, w, k, s = shape
    x = np.random.default_rng(0).standard_normal((n, c, h, w)).astype(dtype)
    oh, ow = out_size(h, k, s), out_size(w, k, s)
    g = np.random.default_rng(1).standard_normal((n, c, oh, ow)).astype(dtype)
    ours_x, th_x = Tensor(x, requires_grad=True, dtype=dtype), torch.tensor(x, requires_grad=True)
    th_g = torch.tensor(g)

    def ours_fwd():
        with no_grad():
            max_pool2d(ours_x, k, s)

    def torch_fwd():
        with torch.no_grad():
            torch.nn.functional.max_pool2d(th_x, k, s)

    def ours_fwd_bwd():
        ours_x.grad = None
        max_pool2d(ours_x, k, s).backward(g)

    def torch_fwd_bwd():
        th_x.grad = None
        torch.nn.functional.max_pool2d(th_x, k, s).backward(th_g)

    times = medians([ours_fwd, torch_fwd, ours_fwd_bwd, torch_fwd_bwd], repeats)
    compares = float(n * c * oh * ow * k * k)
    return times, (compares, compares)


def peak_gflops(threads: int, dtype) -> float:
    """The machine's peak GFLOP/s on `threads` cores in the kernels' SIMD path: one thread runs
    the FMA probe (about 0.2 s; the best of three, since another job may take the core for a
    moment) and that is multiplied by the threads: the clock this machine really runs at, times
    the FMAs per cycle of the path's vectors, times the cores."""
    rounds = 5_000_000
    best = 0.0
    for _ in range(3):
        start = time.perf_counter()
        flops = _conv.fma_probe(_conv.get_simd_path(), dtype, rounds)
        best = max(best, flops / (time.perf_counter() - start) / 1e9)
    return best * threads


def numpy_blas_threads(threads: int) -> int | None:
    """Ask NumPy's OpenBLAS to use `threads` threads (through its exported setter, found in the
    library NumPy loaded, Linux only); returns the count it reports, or None when there is none."""
    try:
        with open("/proc/self/maps") as maps:
            libs = {line.split()[-1] for line in maps if "openblas" in line.lower()}
    except OSError:
        return None
    for path in sorted(libs):
        lib = ctypes.CDLL(path)
        for prefix in ("scipy_openblas", "openblas"):
            for suffix in ("64_", ""):
                setter = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
                getter = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
                if setter is not None and getter is not None:
                    setter(ctypes.c_int(threads))
                    return int(getter())
    return None


def gemm_gflops(dtype, repeats: int = 5) -> tuple[float, float]:
    """GFLOP/s of one (2048 x 2048) @ (2048 x 2048) product in `dtype`, median of `repeats`,
    through torch.mm and through NumPy's matmul (its BLAS), in blocks as `medians` takes them."""
    n = 2048
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n)).astype(dtype) for _ in range(2))
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    out, t_out = np.empty((n, n), dtype=dtype), torch.empty((n, n), dtype=ta.dtype)
    times = medians([lambda: torch.mm(ta, tb, out=t_out), lambda: np.matmul(a, b, out=out)],
                    repeats)
    return tuple(2.0 * n**3 / (t * 1e-3) / 1e9 for t in times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--only", nargs="*", help="shape names to run (default: all)")
    parser.add_argument("--passive-wait", action="store_true",
                        help="OMP_WAIT_POLICY=PASSIVE for both OpenMP runtimes (see above)")
    parser.add_argument("--cpu-time", action="store_true",
                        help="time with the process's CPU time (needs --threads 1)")
    args = parser.parse_args()
    if args.cpu_time:
        if args.threads != 1:
            parser.error("--cpu-time needs --threads 1")
        global CLOCK
        CLOCK = time.process_time
    torch.set_num_threads(args.threads)
    _threads.set_num_threads(args.threads)
    dtype = np.dtype(args.dtype).type

    clock = "CPU time" if args.cpu_time else "wall time"
    peak = peak_gflops(args.threads, dtype)
    wait = ", idle OpenMP threads sleep (--passive-wait)" if args.passive_wait else ""
    print(f"{args.dtype}, {args.threads} threads, median {clock} of {args.repeats} (ms){wait}; "
          f"SIMD path {_conv.get_simd_path()}, measured peak {peak:.0f} GFLOP/s")
    blas_threads = numpy_blas_threads(args.threads)
    torch_gemm, numpy_gemm = gemm_gflops(dtype)
    gemm = max(torch_gemm, numpy_gemm)
    print(f"gemm 2048^3 {args.dtype}, {args.threads} threads, median of 5: torch.mm "
          f"{torch_gemm:.0f} GFLOP/s, numpy (OpenBLAS, "
          f"{'its default threads' if blas_threads is None else f'{blas_threads} threads'}) "
          f"{numpy_gemm:.0f} GFLOP/s; '% gemm' is against the faster, {gemm:.0f}")
    header = (f"{'shape':<6}{'fwd ours':>10}{'torch':>8}{'ratio':>7}{'GFLOP/s':>9}"
              f"{'fwd+bwd ours':>14}{'torch':>8}{'ratio':>7}{'GFLOP/s':>9}{'% peak':>8}"
              f"{'% gemm':>8}")
    print(header)
    print("-" * len(header))
    cases = [(name, bench_conv, shape) for name, shape in CONVS.items()]
    cases += [(name, bench_pool, shape) for name, shape in POOLS.items()]
    for name, bench, shape in cases:
        if args.only and name not in args.only:
            continue
        (fwd, th_fwd, both, th_both), (work_fwd, work_both) = bench(shape, dtype, args.repeats)
        rate = work_both / both / 1e6
        percent = f"{100 * rate / peak:>7.0f}%{100 * rate / gemm:>7.0f}%" \
            if bench is bench_conv else ""
        print(f"{name:<6}{fwd:>10.2f}{th_fwd:>8.2f}{fwd / th_fwd:>7.2f}"
              f"{work_fwd / fwd / 1e6:>9.1f}{both:>14.2f}{th_both:>8.2f}{both / th_both:>7.2f}"
              f"{rate:>9.1f}{percent}")
    print("(p1, p2: the GFLOP/s columns are billions of window elements compared per second)")
    print_ways(args.only, dtype)


def print_ways(only, dtype) -> None:
    """How each convolution ran on this machine's SIMD path (_conv.ways): for the tiles, their
    shapes, vectors x pixels, which the paths' table picks from the path's registers."""
    print(f"\nhow each ran ({_conv.get_simd_path()}; tiles: vectors of output channels x "
          f"pixels, see src/microkernels.h)")
    for name, (n, c, h, w, f, k, s, p, groups, input_grad) in CONVS.items():
        if only and name not in only:
            continue
        ways = _conv.ways((n, c, h, w), (f, c // groups, k, k), (s, s), (p, p), (1, 1), groups,
                          dtype)
        if not input_grad:
            del ways["dL/dA"]
        print(f"{name:<6}" + "; ".join(f"{part} {how}" for part, how in ways.items()))


if __name__ == "__main__":
    main()
