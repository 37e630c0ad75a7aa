# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False
"""conv2d forward and its gradients, in the tutorial's notation (A input, W weight, Z output,
Z' = dL/dZ the upstream gradient, ⊛ cross-correlation, k_eff = d*(k-1)+1 the dilated kernel's
extent). tinygrad_conv/reference.py computes the same formulas in NumPy, one screen each
(reference.conv2d_forward, reference.conv2d_backward): step into those to follow a number.

    Z     = W ⊛ A + b                                 conv2d_forward
    dL/dA = W_180 ⊛ pad(dilate(Z', s), k_eff-1)       input_grad
    dL/dW = Z' ⊛ A, summed over the batch             weight_and_bias_grad
    dL/db = Z' summed over every axis but F           weight_and_bias_grad

How: one micro-kernel (src/conv_tile.h, C with SIMD intrinsics) computes all three
correlations. It keeps a tile of outputs in registers, a few vectors of output channels by a
handful of pixels, and adds up `vector of weights x one broadcast input value` over a reduction
written as three loops:
  - Z = W ⊛ A: over input channels c and taps (i, j), the filters' W[f, c, i, j] (a vector of
    f) times A[c, y*s + i*d, x*s + j*d] for each pixel (y, x) of the tile;
  - dL/dA = W_180 ⊛ pad(dilate(Z', s), k_eff-1): the same, applied to Z' with the kernel rotated
    180 degrees and filters and channels swapped;
  - dL/dW = Z' ⊛ A: the window slides over A with Z' in the role of the weights: vectors of Z'
    over filters, broadcast A, the reduction over the output pixels.
A and Z' are read where they lie (NCHW), stride and dilation are steps of the loops, and only
the weights and Z' are repacked, so that a vector of output channels is one load.

Groups of one input channel (depthwise) would use one lane of each vector that way. When its
output rows are a vector or more wide, each plane's pixels go in the lanes instead (`planes_fit`,
the "Planes" section at the end): an output row is a run of vectors, out[x] = sum of weight *
input[x + offset] over the real taps, read and written in NCHW where they lie (a stride along
the rows deals them into phases first), and dL/dW sums Z' * A along the rows, four vectors a
tap. Without a column stride (Z, and dL/dA at stride 1) a band of output rows shares each
input row's loads, and a row's edge vectors load and add only their real lanes (`tgc_band`,
"Bands"). Narrower planes put the groups side by side in the lanes (`groups_in_lanes`): the input is
staged channels-last (`stage_groups`) and read as vectors, not broadcast, by a variant of the
same micro-kernel. dL/dA of a single-channel input (C = 1) puts its reduction, the filters, in the
lanes (`reduction_in_lanes`), and each output adds up its tile's lanes (`fold`). A tile holds
its pixels' channels side by side (pixel-major); a band of them goes to the NCHW output through
a 16 x 16 transpose (`unstage`), which writes whole cache lines.
A reduction of a few terms (a first layer: one or three channels, `strips_fit`) would spend as
long in that transpose as in its sums: there an output row's pixels go in the lanes and a block
of filters in the registers, each input vector loaded once for all of them, and each filter's
row written where it lies (`tgc_strip`, "Strips"). Its dL/dW, on the AVX-512 path with 3
columns of taps, reads Z' where it lies too, rather than transposing it for the tiles: two
filters by 3 x 3 taps of sums in registers (`tgc_strip_grad`).

Padding, and the zeros the stride inserts into Z', are never multiplied: for each output row
(and column) a plan says which taps reach a real input cell (`plan_axis`). Rows with the same
taps form a class, and each tile is made of pixels of one row class and one column class, so
all its pixels share their taps. An Inf or NaN weight therefore reaches only the outputs and
input gradients its taps touch, as in PyTorch.

Threads (OpenMP): Z and dL/dA are split into tasks (a band of rows of an image, or a few small
images), which never write the same memory. dL/dW and dL/db are sums over images: dL/dW's
batch is cut into runs that depend on the shapes only, each summed into its own partial sum,
and the partials are added in run order. Bands, reduction chunks and slabs are sized from the
CPU's cache sizes, read at run time (tinygrad_conv/cpu.py), but they only cut a chain of fused
multiply-adds, which goes on where it stopped: the order of every sum depends on the shapes
and the SIMD path only, so the results are bit for bit the same whatever the number of threads
and the cache sizes.
"""

import functools
import os
import threading

import numpy as np

from cython.parallel cimport parallel, prange, threadid

from kernels cimport floating, sum_of

from tinygrad_conv._threads import get_num_threads
from tinygrad_conv.cpu import cache_sizes
from tinygrad_conv.shapes import out_size


from microkernels cimport *


# ---------------------------------------------------------------------------------------------
# The entry points (arguments already validated by cnn_ops: C-contiguous arrays of one float
# dtype, shapes that agree, sizes that fit)
# ---------------------------------------------------------------------------------------------

def conv2d_forward(const floating[:, :, :, ::1] a,   # IN  A: (N, C, H, W)
                   const floating[:, :, :, ::1] w,   # IN  W: (F, C/groups, KH, KW)
                   const floating[::1] b,            # IN  b: (F,) or None
                   stride, padding, dilation,        # IN  (h, w) pairs of ints
                   Py_ssize_t groups=1):
    """Z = W ⊛ A + b, shape (N, F, OH, OW), OH = out_size(H, KH, sh, top + bottom, dh).
    padding is (ph, pw) or ((top, bottom), (left, right)). Its NumPy twin:
    reference.conv2d_forward."""
    cdef Py_ssize_t N = a.shape[0], F = w.shape[0]
    top, bottom, left, right = four_pads(padding)
    OH = out_size(a.shape[2], w.shape[2], stride[0], (top, bottom), dilation[0])
    OW = out_size(a.shape[3], w.shape[3], stride[1], (left, right), dilation[1])
    dtype = np.float32 if floating is float else np.float64
    out = np.empty((N, F, OH, OW), dtype=dtype)
    if N == 0:
        return out
    cdef Axis rows = forward_axis(OH, a.shape[2], w.shape[2], stride[0], top, dilation[0])
    cdef Axis cols = forward_axis(OW, a.shape[3], w.shape[3], stride[1], left, dilation[1])
    # Z = W ⊛ A + b
    correlate_kernel(a, np.asarray(w), b, groups, rows, cols, out)
    return out


def input_grad(const floating[:, :, :, ::1] dz, const floating[:, :, :, ::1] w, input_shape,
               stride, pads, dilation, Py_ssize_t groups):
    """dL/dA = W_180 ⊛ pad(dilate(Z', s), k_eff-1), shape input_shape (N, C, H, W). Its NumPy
    twin: reference.conv2d_backward's dx."""
    cdef Py_ssize_t N = dz.shape[0], F = w.shape[0], C = input_shape[1]
    cdef Py_ssize_t KH = w.shape[2], KW = w.shape[3], per_group = w.shape[1]
    dtype = np.float32 if floating is float else np.float64
    dx = np.empty(input_shape, dtype=dtype)
    if N == 0:
        return dx
    # W_180[c, f, i, j] = W[f, c, KH-1-i, KW-1-j] in each group: rotated 180 degrees, with
    # filters and channels swapped (the channels of A are what dL/dA has one plane each for)
    w_180 = np.asarray(w)[:, :, ::-1, ::-1].reshape(groups, F // groups, per_group, KH, KW)
    w_180 = w_180.transpose(0, 2, 1, 3, 4).reshape(C, F // groups, KH, KW)
    cdef Axis rows = input_grad_axis(input_shape[2], dz.shape[2], KH, stride[0], pads[0],
                                     dilation[0])
    cdef Axis cols = input_grad_axis(input_shape[3], dz.shape[3], KW, stride[1], pads[2],
                                     dilation[1])
    # dL/dA = W_180 ⊛ pad(dilate(Z', s), k_eff-1)
    correlate_kernel(dz, w_180, None, groups, rows, cols, dx)
    return dx


def conv2d_backward(const floating[:, :, :, ::1] a,    # IN  A: (N, C, H, W)
                    const floating[:, :, :, ::1] w,    # IN  W: (F, C/groups, KH, KW)
                    const floating[:, :, :, ::1] dz,   # IN  Z' = dL/dZ: (N, F, OH, OW)
                    stride, padding, dilation,         # IN  as for conv2d_forward
                    bint need_dx, bint need_dw, bint need_db, Py_ssize_t groups=1):
    """(dL/dA, dL/dW, dL/db), each None unless asked for (reference.conv2d_backward)."""
    pads = four_pads(padding)
    dx = None
    if need_dx:
        dx = input_grad(dz, w, (a.shape[0], a.shape[1], a.shape[2], a.shape[3]), stride, pads,
                        dilation, groups)
    dw, db = None, None
    if need_dw or need_db:
        dw, db = weight_and_bias_grad(a, dz, (w.shape[0], w.shape[1], w.shape[2], w.shape[3]),
                                      stride, pads, dilation, groups, need_dw, need_db)
    return dx, dw, db


def bias_grad(const floating[:, :, :, ::1] dz):
    """dL/db = Z' summed over every axis but F (in double, image by image; reference:
    grad_out.sum(axis=(0, 2, 3)))."""
    cdef Py_ssize_t N = dz.shape[0], F = dz.shape[1], P = dz.shape[2] * dz.shape[3], f, n
    cdef double total
    dbias = np.zeros(F)
    cdef double[::1] db = dbias
    cdef int threads = get_num_threads()
    with nogil:
        for f in prange(F, num_threads=threads, schedule="static"):
            total = 0       # (summed here, not in db: its neighbours are other threads')
            for n in range(N):
                total = total + sum_of(&dz[n, f, 0, 0], P)
            db[f] = total
    return dbias.astype(np.float32 if floating is float else np.float64)


def weight_and_bias_grad(const floating[:, :, :, ::1] a, const floating[:, :, :, ::1] dz,
                         kernel_shape, stride, pads, dilation, Py_ssize_t groups,
                         bint need_dw, bint need_db):
    """(dL/dW = Z' ⊛ A summed over the batch, dL/db = Z' summed over all axes but F), each
    None unless asked for. Its NumPy twin: reference.conv2d_backward's dw and db.

    Depthwise with wide rows: weight_grad_planes (one filter a task, dL/db on the way). A first
    layer on AVX-512 (3 columns of taps): weight_grad_strips (Z' read where it lies).
    Otherwise the batch's rows (image, output row) are cut into runs, one partial dL/dW each,
    which depend on the shapes only. A thread takes a run and, slab after slab (a slab fits the L2),
    packs the slab's Z' and adds every tile's sums to the run's partial: all in its own cache,
    with no waiting for the other threads. The partials are then added in run order: the same
    bits whatever the number of threads and the cache sizes."""
    dtype = np.float32 if floating is float else np.float64
    cdef Axis cols = forward_axis(dz.shape[3], a.shape[3], kernel_shape[3], stride[1], pads[2],
                                  dilation[1])
    way = weight_grad_way(groups, kernel_shape, cols, tgc_lanes(_path, sizeof(floating)))
    if need_dw and a.shape[0] and way == "planes":     # dL/db on the way (the same sums)
        return weight_grad_planes(a, dz, kernel_shape, stride, pads, dilation, groups, need_db)
    dbias = bias_grad(dz) if need_db else None
    if not need_dw or a.shape[0] == 0:
        return (np.zeros(kernel_shape, dtype=dtype) if need_dw else None), dbias
    if way == "strips":         # a first layer: Z' read where it lies
        return weight_grad_strips(a, dz, kernel_shape, stride, pads, dilation, groups, cols), \
            dbias
    cdef WeightGradPlan plan = weight_grad_plan(
        (a.shape[0], a.shape[1], a.shape[2], a.shape[3]),
        (dz.shape[0], dz.shape[1], dz.shape[2], dz.shape[3]), tuple(kernel_shape), tuple(stride),
        tuple(pads), tuple(dilation), groups, _path, sizeof(floating), cache_sizes()["L2"])
    cdef const WeightGrad *wg = &plan.wg
    cdef int threads = get_num_threads()
    cdef floating[:, ::1] zt = _workspace("zt", threads, plan.slab_size() + 1, dtype)
    cdef floating[:, ::1] part = _workspace("dw_parts", wg.runs, wg.part_size, dtype)
    cdef const floating *a_in = &a[0, 0, 0, 0]
    cdef const floating *z_in = &dz[0, 0, 0, 0]
    if wg.in_lanes:     # A and Z' staged whole, with the groups side by side
        a_in, z_in = stage_for_lanes(a, dz, wg, groups, threads)
    cdef Py_ssize_t q, rows = wg.images * wg.out_h
    with nogil, parallel(num_threads=threads):
        for q in prange(wg.runs, schedule="dynamic"):
            # partial q = Z' ⊛ A over the run's rows of the batch
            accumulate_run(a_in, z_in, wg, q * wg.rows_per_run,
                           min(rows, (q + 1) * wg.rows_per_run), &zt[threadid(), 0], &part[q, 0])
    dweight = np.empty(kernel_shape, dtype=dtype)
    cdef floating[::1] dw = dweight.reshape(-1)
    cdef floating[::1] summed = _workspace("dw_summed", 1, wg.part_size, dtype)[0]
    cdef const Py_ssize_t[::1] source = plan.source
    with nogil:     # dL/dW = the partials, added in run order
        sum_partials(part, source, summed, dw, threads)
    return dweight, dbias


def weight_grad_way(Py_ssize_t groups, kernel_shape, Axis cols, Py_ssize_t lanes):
    """How weight_and_bias_grad computes dL/dW (shapes and the SIMD path only): "planes"
    (depthwise with rows a vector wide: a plane's pixels in the lanes), "strips" (a first
    layer with 3 columns of taps on AVX-512: strip_grads_fit) or "tiles"."""
    F, R, KH, KW = kernel_shape
    if R == 1 and planes_fit(1, KH * KW, cols.params[0], lanes) and groups_in_lanes(
            groups, F // groups, lanes):
        return "planes"
    return "strips" if strip_grads_fit(groups, F // groups, R, KH, cols, _path, lanes) \
        else "tiles"


def four_pads(padding):
    """(top, bottom, left, right) from (ph, pw) or ((top, bottom), (left, right))."""
    ph, pw = padding
    top, bottom = (ph, ph) if isinstance(ph, (int, np.integer)) else ph
    left, right = (pw, pw) if isinstance(pw, (int, np.integer)) else pw
    return int(top), int(bottom), int(left), int(right)


def ways(x_shape, w_shape, stride, padding, dilation, Py_ssize_t groups, dtype):
    """How Z, dL/dA and dL/dW of conv2d are computed for these shapes on the current SIMD path:
    correlation_way's word (bands: planes band by band), then the tiles' shapes, vectors x
    pixels (from the paths' table): what bench_kernels prints beside its rows."""
    cdef Py_ssize_t lanes = tgc_lanes(_path, np.dtype(dtype).itemsize)
    (N, C, H, W), (F, R, KH, KW) = x_shape, w_shape
    top, bottom, left, right = four_pads(padding)
    OH = out_size(H, KH, stride[0], (top, bottom), dilation[0])
    OW = out_size(W, KW, stride[1], (left, right), dilation[1])
    z_rows = forward_axis(OH, H, KH, stride[0], top, dilation[0])
    z_cols = forward_axis(OW, W, KW, stride[1], left, dilation[1])
    a_rows = input_grad_axis(H, OH, KH, stride[0], top, dilation[0])
    a_cols = input_grad_axis(W, OW, KW, stride[1], left, dilation[1])
    dw = weight_grad_way(groups, w_shape, z_cols, lanes)
    if dw == "strips":
        dw = "strips 2 filters x 3 x 3 taps"
    elif dw == "tiles":
        dw = "tiles " + tiles_named(lane_blocks(groups, F // groups, lanes, _path)
                                    if groups_in_lanes(groups, F // groups, lanes) else
                                    channel_blocks(F // groups, groups, lanes, 0, _path))
    return {"Z": way_named(groups, F // groups, R, KH, KW, z_rows, z_cols, lanes),
            "dL/dA": way_named(groups, R, F // groups, KH, KW, a_rows, a_cols, lanes),
            "dL/dW": dw}


def way_named(Py_ssize_t groups, Py_ssize_t O, Py_ssize_t R, Py_ssize_t KH, Py_ssize_t KW,
              Axis rows, Axis cols, Py_ssize_t lanes):
    """correlation_way's word for one correlation, with its tiles' shapes."""
    way = correlation_way(groups, O, R, KH, KW, cols, lanes, _path)
    if way == "planes":
        return "bands" if bands_fit(rows, cols, KW) else "planes"
    if way == "strips":
        return f"strips {STRIP_FILTERS[_path]} filters x 2 vectors"
    if way == "tiles":
        return "tiles " + tiles_named(channel_blocks(O, groups, lanes, R * KH * KW, _path))
    if way == "fold":
        groups = R                  # the reduction channels as groups (correlate_kernel)
    return f"{way} " + tiles_named(lane_blocks(groups, O, lanes, _path))


def tiles_named(blocks):
    """The tiles' shapes of these blocks (their vectors in column 2), as "4x6/2x14"."""
    return "/".join(f"{v}x{tgc_max_pixels(_path, v)}" for v in sorted(set(blocks[:, 2]),
                                                                         reverse=True))


# ---------------------------------------------------------------------------------------------
# Which instruction set: the widest the CPU has, or TINYGRAD_CONV_SIMD=portable|avx2|avx512
# ---------------------------------------------------------------------------------------------

PATHS = {"portable": TGC_PORTABLE, "avx2": TGC_AVX2, "avx512": TGC_AVX512}
PATH_NAMES = {code: name for name, code in PATHS.items()}
BEST_PATH = PATH_NAMES[tgc_best_path()]
cdef int _path = tgc_best_path()


def supported_paths():
    """The SIMD paths this CPU can run, narrowest first."""
    return [name for name, code in PATHS.items() if code <= PATHS[BEST_PATH]]


def set_simd_path(name):
    """Use the named SIMD path ("portable", "avx2" or "avx512") from now on."""
    global _path
    if name not in PATHS:
        raise ValueError(f"set_simd_path: the SIMD path must be one of "
                         f"'portable', 'avx2', 'avx512', got {name!r}")
    if PATHS[name] > PATHS[BEST_PATH]:
        raise ValueError(f"set_simd_path: this CPU cannot run the {name} path (it supports "
                         f"{', '.join(supported_paths())})")
    _path = PATHS[name]


def get_simd_path():
    """The name of the SIMD path the kernels use."""
    return PATH_NAMES[_path]


def vector_lanes(dtype):
    """How many values of dtype one vector of the current path holds."""
    return tgc_lanes(_path, np.dtype(dtype).itemsize)


def fma_probe(str path, dtype, long rounds):
    """Flops done by `rounds` rounds of FMAs on registers only (to measure the peak)."""
    cdef int code = PATHS[path]
    cdef int is_double = np.dtype(dtype) == np.float64
    cdef double flops
    with nogil:
        flops = tgc_fma_probe(code, is_double, rounds)
    return flops


def tile_shapes(str path):
    """[(vectors, most pixels)] of the tiles `path` uses (the paths' table in microkernels.h),
    and TGC_MAX_PIX, the most any tile may hold."""
    cdef int code = PATHS[path]
    return [(v, tgc_max_pixels(code, v)) for v in range(1, tgc_max_vectors(code) + 1)], \
        TGC_MAX_PIX


_env_path = os.environ.get("TINYGRAD_CONV_SIMD")
if _env_path:
    try:
        set_simd_path(_env_path)
    except ValueError as e:
        raise ImportError(f"TINYGRAD_CONV_SIMD={_env_path!r}: {e}") from None


# ---------------------------------------------------------------------------------------------
# Blocking: every size the drivers cut the work by, in one place (show_config prints it)
# ---------------------------------------------------------------------------------------------

cdef struct Blocking:
    # from the L2 cache size: they only cut a chain of fused multiply-adds, which goes on where
    # it stopped, so they never change a result
    Py_ssize_t stage_bytes      # Z, dL/dA: a task's staging buffer (a quarter of the L2)
    Py_ssize_t kernel_bytes     # Z, dL/dA: a reduction chunk's packed kernel (half the L2)
    Py_ssize_t slab_bytes       # dL/dW: a slab's packed Z' and the rows of A it meets (half)
    Py_ssize_t tasks_per_thread     # Z, dL/dA: bands small enough for this many tasks a thread
    # constants: with the shapes, they fix the order of dL/dW's sums
    Py_ssize_t runs             # dL/dW's partial sums: enough to share out over the threads,
    Py_ssize_t partials_bytes   # unless they would pass this much memory
    Py_ssize_t sum_piece        # the partials are added in pieces of this many elements


cdef Blocking blocking(Py_ssize_t l2) noexcept nogil:
    """The blocking for a CPU whose L2 (per core) holds l2 bytes."""
    cdef Blocking b
    b.stage_bytes, b.kernel_bytes, b.slab_bytes = l2 // 4, l2 // 2, l2 // 2
    b.tasks_per_thread = 4
    b.runs, b.partials_bytes, b.sum_piece = 16, 64 << 20, 4096
    return b


def blocking_info():
    """The blocking on this machine, as a dict (tinygrad_conv.show_config prints it)."""
    return blocking(cache_sizes()["L2"])


# ---------------------------------------------------------------------------------------------
# Plans: which taps of the kernel reach a real input cell, output row by output row
# ---------------------------------------------------------------------------------------------

cdef inline Py_ssize_t ceil_div(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return (a + b - 1) // b     # a, b >= 0 (with cdivision, -(-a // b) would truncate)


cdef Py_ssize_t gcd(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    while b:
        a, b = b, a % b
    return a


cdef void plan_axis(Py_ssize_t[:, ::1] plan,   # OUT (out_len, 3): first tap, count, source
                    Py_ssize_t in_len, Py_ssize_t taps, Py_ssize_t mult, Py_ssize_t offset,
                    Py_ssize_t div, Py_ssize_t dil) noexcept nogil:
    """Output coordinate y meets tap i at input coordinate (y*mult + offset + i*dil) / div:
    a real cell only when the division is exact and the result lies in [0, in_len). Every
    other tap lands on padding (or on a zero the stride inserted into Z') and is skipped.
    plan[y] = (first real tap, how many, input coordinate of the first)."""
    cdef Py_ssize_t y, i, pos, first, count, source
    for y in range(plan.shape[0]):
        first = count = source = 0
        for i in range(taps):
            pos = y * mult + offset + i * dil
            if pos >= 0 and pos % div == 0 and pos // div < in_len:
                if count == 0:
                    first, source = i, pos // div
                count += 1
        plan[y, 0], plan[y, 1], plan[y, 2] = first, count, source


cdef Py_ssize_t group_axis(const Py_ssize_t[:, ::1] plan,   # IN  from plan_axis
                           Py_ssize_t[:, ::1] classes,      # OUT (first, count, start, size)
                           Py_ssize_t[::1] members) noexcept nogil:   # OUT coordinates
    """Gather the output coordinates with the same taps (first, count) into classes, and return
    how many: the coordinates of class k are members[start:start + size]."""
    cdef Py_ssize_t y, k, n_classes = 0, at = 0
    for y in range(plan.shape[0]):
        for k in range(n_classes):
            if classes[k, 0] == plan[y, 0] and classes[k, 1] == plan[y, 1]:
                break
        else:
            classes[n_classes, 0], classes[n_classes, 1] = plan[y, 0], plan[y, 1]
            n_classes += 1
    for k in range(n_classes):
        classes[k, 2] = at
        for y in range(plan.shape[0]):
            if plan[y, 0] == classes[k, 0] and plan[y, 1] == classes[k, 1]:
                members[at] = y
                at += 1
        classes[k, 3] = at - classes[k, 2]
    return n_classes


cdef class Axis:
    """One axis (rows or columns) of a correlation: which taps each output coordinate meets."""
    cdef Py_ssize_t[:, ::1] plan, classes
    cdef Py_ssize_t[::1] members
    cdef Py_ssize_t n_classes, tap_step, source_step
    cdef readonly tuple params      # (out_len, in_len, taps, mult, offset, div, dil)

    def __init__(self, Py_ssize_t out_len, Py_ssize_t in_len, Py_ssize_t taps,
                 Py_ssize_t mult, Py_ssize_t offset, Py_ssize_t div, Py_ssize_t dil):
        self.params = (out_len, in_len, taps, mult, offset, div, dil)
        self.plan = np.empty((out_len, 3), dtype=np.intp)
        self.classes = np.empty((out_len, 4), dtype=np.intp)
        self.members = np.empty(out_len, dtype=np.intp)
        plan_axis(self.plan, in_len, taps, mult, offset, div, dil)
        self.n_classes = group_axis(self.plan, self.classes, self.members)
        self.tap_step = div // gcd(div, dil)            # from one real tap to the next ...
        self.source_step = dil * self.tap_step // div   # ... the input moves this far


@functools.lru_cache(maxsize=256)
def forward_axis(out_len, in_len, taps, stride, pad, dil):
    """Z = W ⊛ A along one axis: tap i of output y reads A at y*stride - pad + i*dil."""
    return Axis(out_len, in_len, taps, stride, -pad, 1, dil)


@functools.lru_cache(maxsize=256)
def input_grad_axis(out_len, grad_len, taps, stride, pad, dil):
    """dL/dA = W_180 ⊛ pad(dilate(Z', s), k_eff-1) along one axis: tap i of the rotated kernel
    at A's coordinate y (y + pad in the padded A) reads the dilated, padded Z' at
    y + pad + i*dil, which is Z'[(y + pad + i*dil - (k_eff-1)) / s] when s divides it, and
    otherwise a zero the stride inserted (or padding): skipped."""
    k_eff = dil * (taps - 1) + 1
    return Axis(out_len, grad_len, taps, 1, pad - (k_eff - 1), stride, dil)


# ---------------------------------------------------------------------------------------------
# Blocks of output channels, and the kernel packed for them
# ---------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=256)
def channel_blocks(Py_ssize_t per_group, Py_ssize_t groups, Py_ssize_t lanes,
                   Py_ssize_t per_channel, int path):
    """Each group's output channels in blocks of at most tgc_max_vectors(path) vectors: rows of
    (group, first channel in the group, vectors, channels, where its packed kernel starts),
    read-only. The vectors are shared out evenly (5 vectors: 3 + 2, not 4 + 1), so tiles are
    wide. `per_channel` is how many vectors one output channel's kernel packs into (R*KH*KW):
    block k of every group is packed after block k-1 of every group (see `pack`)."""
    vectors = ceil_div(per_group, lanes)
    n_blocks = ceil_div(vectors, tgc_max_vectors(path))
    rows, first, start = [], 0, 0
    for k in range(n_blocks):
        v = vectors // n_blocks + (k < vectors % n_blocks)
        for g in range(groups):
            rows.append([g, first, v, min(v * lanes, per_group - first),
                         start + g * per_channel * v * lanes])
        first += v * lanes
        start += groups * per_channel * v * lanes
    blocks = np.array(sorted(rows), dtype=np.intp)      # group by group
    blocks.setflags(write=False)
    return blocks


def pack(kernel, const Py_ssize_t[:, ::1] blocks, Py_ssize_t groups, Py_ssize_t lanes):
    """kernel (groups * per_group, R, KH, KW), output channel first, packed block by block as
    [R][KH][KW][vectors * lanes], zeros in the lanes past the block's channels: the vector of
    output channels at one reduction index and tap is one load. Block k of all the groups is
    one numpy step (a depthwise convolution has as many groups as channels)."""
    per_group = kernel.shape[0] // groups
    by_group = kernel.reshape((groups, per_group) + kernel.shape[1:])
    parts = []
    for k in range(blocks.shape[0] // groups):         # the blocks of group 0, in order
        first, vectors, count = blocks[k, 1], blocks[k, 2], blocks[k, 3]
        part = np.zeros((groups,) + kernel.shape[1:] + (vectors * lanes,), dtype=kernel.dtype)
        part[..., :count] = np.moveaxis(by_group[:, first:first + count], 1, -1)
        parts.append(part.ravel())
    return np.concatenate(parts)


@functools.lru_cache(maxsize=256)
def lane_blocks(Py_ssize_t groups, Py_ssize_t out_per_group, Py_ssize_t lanes, int path):
    """With the groups in lanes: for each output channel j of a group, the groups in blocks
    of at most tgc_max_vectors(path) vectors (shared out evenly, as in channel_blocks):
    read-only rows of (first group g0, j, vectors, groups, 0); lane o is group g0 + o."""
    vectors = ceil_div(groups, lanes)
    n_blocks = ceil_div(vectors, tgc_max_vectors(path))
    rows = []
    for j in range(out_per_group):
        g0 = 0
        for k in range(n_blocks):
            v = vectors // n_blocks + (k < vectors % n_blocks)
            rows.append([g0, j, v, min(v * lanes, groups - g0), 0])
            g0 += v * lanes
    blocks = np.array(rows, dtype=np.intp).reshape(-1, 5)
    blocks.setflags(write=False)
    return blocks


cdef enum:     # the columns of a correlation's blocks (correlation_blocks)
    B_SRC, B_VECS, B_COUNT, B_KERNEL, B_OUT, B_STEP, B_BIAS, B_COLUMNS


def groups_in_lanes(Py_ssize_t groups, Py_ssize_t out_per_group, Py_ssize_t lanes):
    """Whether the groups side by side (channels in vectors) fill more lanes than each group's
    output channels (filters in vectors): a depthwise convolution has one output channel a
    group, so with filters in vectors it would use one lane of each vector."""
    return out_per_group * ceil_div(groups, lanes) < groups * ceil_div(out_per_group, lanes)


def reduction_in_lanes(Py_ssize_t groups, Py_ssize_t out_per_group, Py_ssize_t reduce,
                       Py_ssize_t lanes, int path):
    """Whether one group's reduction channels side by side fill more lanes than its output
    channels (the reduction then ends by adding up each output's lanes): dL/dA of a
    single-channel input sums the filters into one channel, which with filters in vectors
    would use one lane of each vector."""
    return (groups == 1 and reduce <= tgc_max_vectors(path) * lanes
            and out_per_group * ceil_div(reduce, lanes) < reduce * ceil_div(out_per_group, lanes))


@functools.lru_cache(maxsize=256)
def correlation_blocks(Py_ssize_t groups, Py_ssize_t out_per_group, Py_ssize_t reduce,
                       Py_ssize_t taps, Py_ssize_t plane, Py_ssize_t lanes, int path,
                       bint in_lanes, bint folds=False):
    """The blocks of a correlation's output channels, read-only rows of
      SRC     where the block's input starts (elements),
      VECS    vectors, COUNT output channels (the lanes past them are zeros),
      KERNEL  where its packed kernel starts,
      OUT     the output channel of lane 0, STEP from one lane's output channel to the next,
      BIAS    where lane 0's bias is in the bias array correlate gets.
    Filters in vectors: a block is some output channels of one group (channel_blocks), its
    input that group's `reduce` channels. Groups in lanes: lane o of a block is group g0 + o,
    all at output channel j of their group; the input is staged with the groups side by side
    (stage_groups), and the bias permuted to [j][group]. A reduction in lanes (folds) is the
    latter with the reduction channels as groups of one, each lane block adding up to output
    channel j (and bias j)."""
    if not in_lanes:
        rows = [[g * reduce * plane, v, count, start, g * out_per_group + first, 1,
                 g * out_per_group + first]
                for g, first, v, count, start in
                channel_blocks(out_per_group, groups, lanes, reduce * taps, path)]
    else:
        rows, start = [], 0
        for g0, j, v, count, _ in lane_blocks(groups, out_per_group, lanes, path):
            rows.append([g0, v, count, start, j if folds else g0 * out_per_group + j,
                         out_per_group, j if folds else j * groups + g0])
            start += reduce * taps * v * lanes
    blocks = np.array(rows, dtype=np.intp).reshape(-1, B_COLUMNS)
    blocks.setflags(write=False)
    return blocks


def pack_in_lanes(kernel, const Py_ssize_t[:, ::1] blocks, Py_ssize_t groups,
                  Py_ssize_t lanes):
    """kernel (groups * out_per_group, R, KH, KW) packed block by block as
    [R][KH][KW][vectors * lanes]: lane o holds group g0 + o's output channel j (zeros past the
    last group), so the vector of groups at one reduction index and tap is one load."""
    out_per_group = kernel.shape[0] // groups
    by_group = kernel.reshape((groups, out_per_group) + kernel.shape[1:])
    parts = []
    for b in range(blocks.shape[0]):
        g0, count = blocks[b, B_SRC], blocks[b, B_COUNT]
        part = np.zeros(kernel.shape[1:] + (blocks[b, B_VECS] * lanes,), dtype=kernel.dtype)
        part[..., :count] = np.moveaxis(
            by_group[g0:g0 + count, blocks[b, B_OUT] - g0 * out_per_group], 0, -1)
        parts.append(part.ravel())
    return np.concatenate(parts)


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


# ---------------------------------------------------------------------------------------------
# Correlation in tiles: Z = W ⊛ A (+ b) and dL/dA = W_180 ⊛ pad(dilate(Z', s), k_eff-1)
# ---------------------------------------------------------------------------------------------

cdef struct Correlation:
    # the input (A, or Z'): steps from one image, reduction channel, row and column to the
    # next (NCHW; or, with the groups in lanes, staged [image][channel][row][column][group]),
    # and how many channels a group sums over
    Py_ssize_t image, chan_step, pitch, pix_step, per_group
    # the output (Z, or dL/dA; NCHW): image and plane sizes, row length
    Py_ssize_t out_image, out_plane, out_pitch
    Py_ssize_t taps_h, taps_w   # kernel size
    Py_ssize_t band             # output rows a task computes (its staging buffer fits the L2)
    Py_ssize_t chunk            # reduction channels a pass takes (its kernel fits the L2)
    int path, lanes
    bint in_lanes               # the input's groups, or its reduction, in lanes (else broadcast)
    bint folds                  # the reduction in lanes: each output is its tile's lanes added


cdef struct AxisView:           # an Axis, seen from nogil code
    const Py_ssize_t *plan
    const Py_ssize_t *classes
    const Py_ssize_t *members
    Py_ssize_t n_classes, tap_step, source_step


cdef AxisView view(Axis axis):
    cdef AxisView v
    v.plan, v.classes, v.members = &axis.plan[0, 0], &axis.classes[0, 0], &axis.members[0]
    v.n_classes, v.tap_step, v.source_step = axis.n_classes, axis.tap_step, axis.source_step
    return v


cdef inline void run_tile(const floating *vec, const floating *src, const ptrdiff_t *pix,
                          int npix, const tgc_loops *loops, floating *out,
                          const ptrdiff_t *out_at, bint accumulate, int path,
                          int vectors, bint in_lanes) noexcept nogil:
    if floating is float:
        tgc_tile_fn_f32(path, vectors, in_lanes)(vec, src, pix, npix, loops, out, out_at,
                                                 accumulate)
    else:
        tgc_tile_fn_f64(path, vectors, in_lanes)(vec, src, pix, npix, loops, out, out_at,
                                                 accumulate)


cdef inline void unstage(const floating *stage, int width, Py_ssize_t npix, int count,
                         floating *out, Py_ssize_t plane, const floating *bias,
                         int path) noexcept nogil:
    """out[o * plane + q] = stage[q][o] (+ bias[o]): the tiles' pixel-major staging buffer to
    the NCHW output, a transpose (in registers, a block of vectors at a time)."""
    if floating is float:
        tgc_unstage_fn_f32(path)(stage, width, npix, count, out, plane, bias)
    else:
        tgc_unstage_fn_f64(path)(stage, width, npix, count, out, plane, bias)


cdef inline void fold(const floating *stage, int width, Py_ssize_t npix, floating *out,
                       const floating *bias, int path) noexcept nogil:
    """out[q] = sum over o < width of stage[q][o] (+ bias[0]): each pixel's lanes added up,
    when the reduction was in the lanes (in a fixed order, see tgc_fold)."""
    if floating is float:
        tgc_fold_fn_f32(path)(stage, width, npix, out, bias)
    else:
        tgc_fold_fn_f64(path)(stage, width, npix, out, bias)


cdef inline void stage_in(const floating *src, Py_ssize_t plane, int count, Py_ssize_t npix,
                          floating *stage, int width, int path) noexcept nogil:
    """stage[q][o] = src[o * plane + q] (zero for count <= o < width): NCHW planes to the
    pixel-major layout whose vector of channels is one load (the inverse of unstage)."""
    if floating is float:
        tgc_stage_fn_f32(path)(src, plane, count, npix, stage, width)
    else:
        tgc_stage_fn_f64(path)(src, plane, count, npix, stage, width)


cdef void correlate_class(const Correlation *cor, const floating *kernel,
                          const floating *src, const Py_ssize_t *block, const AxisView *rows,
                          const AxisView *cols, Py_ssize_t row_class, Py_ssize_t col_class,
                          Py_ssize_t n_images, Py_ssize_t y0, Py_ssize_t y1, Py_ssize_t r0,
                          Py_ssize_t r1, floating *stage) noexcept nogil:
    """The outputs (n, y, x) of n_images images, rows y0 <= y < y1, in (row class x column
    class), all with the same real taps, for one block of output channels, summed over the
    reduction channels r0 <= r < r1 of its group, tile by tile into the staging buffer:
    stage[(n * (y1 - y0) + y - y0) * out_w + x][channel]."""
    cdef const Py_ssize_t *rc = rows.classes + 4 * row_class
    cdef const Py_ssize_t *cc = cols.classes + 4 * col_class
    cdef Py_ssize_t width = block[B_VECS] * cor.lanes, n, i, j, y, x
    cdef int npix = 0, vectors = <int> block[B_VECS], most = tgc_max_pixels(cor.path, vectors)
    cdef ptrdiff_t pix[TGC_MAX_PIX]
    cdef ptrdiff_t at[TGC_MAX_PIX]
    cdef tgc_loops loops
    loops.n[0] = r1 - r0                                      # reduction channels
    loops.vec_step[0], loops.in_step[0] = cor.taps_h * cor.taps_w * width, cor.chan_step
    loops.n[1] = rc[1]                                        # kernel rows that are real
    loops.vec_step[1] = rows.tap_step * cor.taps_w * width
    loops.in_step[1] = rows.source_step * cor.pitch
    loops.n[2] = cc[1]                                        # kernel columns that are real
    loops.vec_step[2] = cols.tap_step * width
    loops.in_step[2] = cols.source_step * cor.pix_step
    kernel += block[B_KERNEL] + ((r0 * cor.taps_h + rc[0]) * cor.taps_w + cc[0]) * width
    src += block[B_SRC] + r0 * cor.chan_step
    cdef const Py_ssize_t *xs = cols.members + cc[2]
    cdef Py_ssize_t pix_step = cor.pix_step, n_cols = cc[3], row_at, out_at
    for n in range(n_images):
        for i in range(rc[3]):
            y = rows.members[rc[2] + i]
            if y < y0 or y >= y1:
                continue
            row_at = n * cor.image + rows.plan[3 * y + 2] * cor.pitch   # (the row's, once)
            out_at = (n * (y1 - y0) + y - y0) * cor.out_pitch
            for j in range(n_cols):
                x = xs[j]
                pix[npix] = row_at + cols.plan[3 * x + 2] * pix_step
                at[npix] = (out_at + x) * width
                npix += 1
                if npix == most:
                    run_tile(kernel, src, pix, npix, &loops, stage, at, r0 > 0, cor.path,
                             vectors, cor.in_lanes)
                    npix = 0
    if npix:
        run_tile(kernel, src, pix, npix, &loops, stage, at, r0 > 0, cor.path, vectors,
                 cor.in_lanes)


cdef void correlate_band(const Correlation *cor, const floating *kernel,
                         const floating *src, const floating *bias, floating *out,
                         const Py_ssize_t[:, ::1] blocks, const AxisView *rows,
                         const AxisView *cols, Py_ssize_t n_images, Py_ssize_t y0,
                         Py_ssize_t y1, floating *stage) noexcept nogil:
    """Output rows y0 <= y < y1 of n_images images, every block of output channels: the tiles
    go to the staging buffer, which then goes to `out` transposed (+ bias)."""
    cdef Py_ssize_t b, rk, ck, r0, r1, n, width, band = (y1 - y0) * cor.out_pitch
    for b in range(blocks.shape[0]):
        r0 = 0
        while r0 < cor.per_group:           # the reduction in chunks whose kernel fits the L2
            r1 = min(r0 + cor.chunk, cor.per_group)
            for rk in range(rows.n_classes):
                for ck in range(cols.n_classes):
                    correlate_class(cor, kernel, src, &blocks[b, 0], rows, cols, rk, ck,
                                    n_images, y0, y1, r0, r1, stage)
            r0 = r1
        width = blocks[b, B_VECS] * cor.lanes
        for n in range(n_images):
            if cor.folds:
                fold(stage + n * band * width, <int> width, band,
                     out + n * cor.out_image + blocks[b, B_OUT] * cor.out_plane
                     + y0 * cor.out_pitch, NULL if bias == NULL else bias + blocks[b, B_BIAS],
                     cor.path)
                continue
            unstage(stage + n * band * width, <int> width, band, <int> blocks[b, B_COUNT],
                    out + n * cor.out_image + blocks[b, B_OUT] * cor.out_plane
                    + y0 * cor.out_pitch, blocks[b, B_STEP] * cor.out_plane,
                    NULL if bias == NULL else bias + blocks[b, B_BIAS], cor.path)


cdef void correlate(Correlation *cor, const floating *src, const floating *kernel,
                    const floating *bias, const Py_ssize_t[:, ::1] blocks, Axis rows,
                    Axis cols, Py_ssize_t n_images, floating *out):
    """out = the correlation `cor` describes, in tasks of (images, band of output rows) shared
    out over the threads: tasks never write the same memory."""
    cdef AxisView rv = view(rows), cv = view(cols)
    cdef Py_ssize_t out_h = rows.plan.shape[0], task, n, y0, per_task
    cdef Py_ssize_t b, width = 0
    for b in range(blocks.shape[0]):
        width = max(width, blocks[b, B_VECS] * cor.lanes)
    cdef int threads = get_num_threads()
    cdef Blocking bl = blocking(cache_sizes()["L2"])
    # a task's staging buffer takes at most stage_bytes, and there are tasks for all threads: a
    # band of rows of an image, or (small images) a few whole images
    cdef Py_ssize_t row_bytes = cor.out_pitch * width * sizeof(floating)
    cdef Py_ssize_t tasks = bl.tasks_per_thread * threads, images = 1
    cor.band = max(1, min(bl.stage_bytes // row_bytes, ceil_div(out_h * n_images, tasks)))
    if cor.band >= out_h:
        cor.band = out_h
        images = max(1, min(bl.stage_bytes // (out_h * row_bytes), ceil_div(n_images, tasks)))
    cdef Py_ssize_t bands = ceil_div(out_h, cor.band), groups = ceil_div(n_images, images)
    # the reduction in chunks: all of it, unless one block's packed kernel passes kernel_bytes
    cor.chunk = max(1, min(cor.per_group, bl.kernel_bytes
                           // (cor.taps_h * cor.taps_w * width * sizeof(floating))))
    cdef floating[:, ::1] stage = _workspace(
        "stage", threads, images * cor.band * cor.out_pitch * width,
        np.float32 if floating is float else np.float64)
    with nogil, parallel(num_threads=threads):
        for task in prange(groups * bands, schedule="dynamic"):
            n, y0 = task // bands * images, (task % bands) * cor.band
            per_task = min(images, n_images - n)
            correlate_band(cor, kernel, src + n * cor.image, bias, out + n * cor.out_image,
                           blocks, &rv, &cv, per_task, y0, min(y0 + cor.band, out_h),
                           &stage[threadid(), 0])


cdef void stage_groups(const floating *src, Py_ssize_t n_images, Py_ssize_t reduce,
                       Py_ssize_t groups, Py_ssize_t plane, floating *staged, Py_ssize_t width,
                       int path, int threads) noexcept nogil:
    """staged[n, r, q, g] = src[n, g * reduce + r, q] (zeros for groups <= g < width): the
    input with its groups side by side, so that a vector of groups is one load."""
    cdef Py_ssize_t t
    for t in prange(n_images * reduce, num_threads=threads, schedule="static"):
        stage_in(src + (t // reduce * groups * reduce + t % reduce) * plane, reduce * plane,
                 <int> groups, plane, staged + t * plane * width, <int> width, path)


def correlation_way(Py_ssize_t groups, Py_ssize_t O, Py_ssize_t R, Py_ssize_t KH,
                    Py_ssize_t KW, Axis cols, Py_ssize_t lanes, int path):
    """How correlate_kernel computes a correlation of `groups` groups, O outputs and R
    reduction channels a group (shapes and the SIMD path only):
      "fold"    the reduction in the lanes, each output adding up its lanes (reduction_in_lanes);
      "planes"  a plane's pixels in the lanes (planes_fit; band by band where bands_fit);
      "groups"  the groups side by side in the lanes, tiles (groups_in_lanes);
      "strips"  an output row's pixels in the lanes, filters in registers (strips_fit);
      "tiles"   each group's output channels in the lanes, then the transpose (unstage)."""
    if reduction_in_lanes(groups, O, R, lanes, path):
        return "fold"
    if groups_in_lanes(groups, O, lanes):
        if planes_fit(R, KH * KW, ceil_div(cols.params[0], cols.params[5]), lanes):
            return "planes"
        return "groups"
    return "strips" if strips_fit(R, KH, cols, path, lanes) else "tiles"


def correlate_kernel(const floating[:, :, :, ::1] src, kernel, b, Py_ssize_t groups,
                     Axis rows, Axis cols, floating[:, :, :, ::1] out):
    """out = kernel ⊛ src (+ b) in `groups` groups, kernel (groups * O, R, KH, KW), src
    (N, groups * R, H, W), out (N, groups * O, OH, OW); rows and cols say which taps each
    output row and column meets. The plan puts each group's output channels in the vectors, or,
    when that fills more lanes (depthwise), the groups side by side."""
    cdef Py_ssize_t N = src.shape[0], O = kernel.shape[0] // groups, R = kernel.shape[1]
    cdef Py_ssize_t plane = src.shape[2] * src.shape[3], width
    cdef int threads
    cdef Correlation cor
    cor.lanes, cor.path = tgc_lanes(_path, sizeof(floating)), _path
    cor.taps_h, cor.taps_w = kernel.shape[2], kernel.shape[3]
    way = correlation_way(groups, O, R, cor.taps_h, cor.taps_w, cols, cor.lanes, _path)
    if way == "strips":
        correlate_strips(src, kernel, b, groups, rows, cols, out)
        return
    if way == "planes":
        correlate_planes(src, kernel, b, groups, rows, cols, out)
        return
    cor.folds = way == "fold"
    if cor.folds:       # the R reduction channels side by side, as R groups of one channel
        kernel = np.asarray(kernel).transpose(1, 0, 2, 3).reshape(
            (R * O, 1, cor.taps_h, cor.taps_w))
        groups, R = R, 1
    cor.in_lanes, cor.per_group = way != "tiles", R
    cor.out_plane, cor.out_pitch = out.shape[2] * out.shape[3], out.shape[3]
    cor.out_image = out.shape[1] * cor.out_plane
    cdef const Py_ssize_t[:, ::1] blocks = correlation_blocks(
        groups, O, R, cor.taps_h * cor.taps_w, plane, cor.lanes, _path, cor.in_lanes, cor.folds)
    cdef const floating *source = &src[0, 0, 0, 0]
    cdef floating[::1] staged, packed
    if cor.in_lanes:
        width = ceil_div(groups, cor.lanes) * cor.lanes
        staged = _workspace("groups_staged", 1, N * R * plane * width,
                            np.float32 if floating is float else np.float64)[0]
        threads = get_num_threads()
        with nogil:
            stage_groups(source, N, R, groups, plane, &staged[0], width, _path, threads)
        source = &staged[0]
        cor.image, cor.chan_step = R * plane * width, plane * width
        cor.pitch, cor.pix_step = src.shape[3] * width, width
        packed = pack_in_lanes(kernel, blocks, groups, cor.lanes)
        if b is not None and not cor.folds:     # [j][group], as the blocks' BIAS reads it
            b = np.ascontiguousarray(np.asarray(b).reshape(groups, O).T).reshape(-1)
    else:
        cor.image, cor.chan_step = src.shape[1] * plane, plane
        cor.pitch, cor.pix_step = src.shape[3], 1
        packed = pack(kernel, channel_blocks(O, groups, cor.lanes, R * cor.taps_h * cor.taps_w,
                                             _path), groups, cor.lanes)
    cdef const floating[::1] bias = b
    correlate(&cor, source, &packed[0], NULL if b is None else &bias[0], blocks, rows, cols,
              N, &out[0, 0, 0, 0])


# ---------------------------------------------------------------------------------------------
# Strips: Z = W ⊛ A with a short reduction (a first layer), an output row's pixels in the lanes
# ---------------------------------------------------------------------------------------------
# With one or three input channels a tile's sums are short, and writing them to NCHW through
# unstage's transpose costs as much again. A strip (tgc_strip) puts an output row's pixels in
# the lanes instead, a block of filters in registers, and writes each filter's row where it
# lies. Same terms, same order, same bits as the tiles (tests compare the two). dL/dW of such a
# layer (3 columns of taps, AVX-512) goes by strips too: Z' read in place, each run of images'
# sums in double, the runs added in order (its own order, not the tiles').

cdef enum:
    STRIP_MAX_TERMS = 32        # the longest reduction (channels x kernel rows x columns)
    STRIP_TASK_FILTERS = 8      # the filters of a task (tgc_strip takes them in its blocks)

cdef bint _strips = True        # (off: the tiles take them all; tests compare the two)
STRIP_FILTERS = {TGC_PORTABLE: TGC_STRIP_FILTERS_PORTABLE, TGC_AVX2: TGC_STRIP_FILTERS_AVX2,
                 TGC_AVX512: TGC_STRIP_FILTERS_AVX512}      # a strip's block (tgc_strip)


def use_strips(bint on):
    """Whether correlate_kernel may take the strips (tests and benchmarks compare them with
    the tiles: the same bits)."""
    global _strips
    _strips = on


def strips_fit(Py_ssize_t reduce, Py_ssize_t kernel_rows, Axis cols, int path,
               Py_ssize_t lanes):
    """Whether correlate_kernel takes this correlation strip by strip (shapes and the SIMD path
    only): no column stride or phases (an output row's pixels read a run of the input row), a
    kernel no wider than the masks hold, and a reduction short enough that the tiles'
    transpose would cost as much as their sums. On the AVX-512 path, where a masked FMA costs
    what a plain one does, always; on AVX2 (a masked FMA is a blend) and the portable path (a
    loop) only where no lane is ever masked: no column padding, rows a vector or wider.
    Measured on a Zen 4, one thread, strips' time / the tiles': AVX2 c1 0.90-0.93, a 5x5
    layer of 6 filters 0.50, an RGB layer of 16 filters 1.03-1.05, but padded RGB 1.3-1.4;
    portable c1 0.44-0.73, padded 2-6."""
    out_w, in_w, KW, mult, offset, div, dil = cols.params
    if not (_strips and mult == 1 and div == 1 and KW <= TGC_BAND_MAX_KW
            and reduce * kernel_rows * KW <= STRIP_MAX_TERMS):
        return False
    if path == TGC_AVX512:
        return True
    return offset >= 0 and offset + (KW - 1) * dil + out_w <= in_w and out_w >= lanes


@functools.lru_cache(maxsize=64)
def column_tables(Axis cols):
    """The column tables of the strips and bands (no column stride or phases), read-only:
    column tap j of output column u reads the input row at col[j] + u, a real cell for
    col_lo[j] <= u < col_hi[j] (within [0, out_w))."""
    out_w, in_w, KW, _, offset, _, dil = cols.params
    col = offset + dil * np.arange(KW, dtype=np.intp)
    lo = np.clip(-col, 0, out_w)
    hi = np.maximum(lo, np.minimum(out_w, in_w - col))
    for array in (col, lo, hi):
        array.setflags(write=False)
    return col, lo, hi


cdef inline void strip_rows(const tgc_strip_shape *sh, const floating *k, Py_ssize_t filters,
                            const floating *src, const ptrdiff_t *plan, Py_ssize_t y0,
                            Py_ssize_t y1, floating *out, const floating *bias,
                            int path) noexcept nogil:
    """Output rows y0 <= y < y1 of `filters` filters (tgc_strip)."""
    if floating is float:
        tgc_strip_fn_f32(path)(sh, k, filters, src, plan, y0, y1, out, bias)
    else:
        tgc_strip_fn_f64(path)(sh, k, filters, src, plan, y0, y1, out, bias)


def correlate_strips(const floating[:, :, :, ::1] src, kernel, b, Py_ssize_t groups,
                     Axis rows, Axis cols, floating[:, :, :, ::1] out):
    """out = kernel ⊛ src (+ b), as correlate_kernel, the output planes of STRIP_TASK_FILTERS
    filters of an image a task: out[n, g*O + f, y, :] = the sum over the group's R channels
    and the real taps of row y (rows.plan[y]: first tap, how many, the input row of the
    first)."""
    cdef const floating[:, :, :, ::1] k = np.ascontiguousarray(kernel)
    cdef Py_ssize_t N = src.shape[0], O = k.shape[0] // groups, R = k.shape[1]
    cdef Py_ssize_t OH = out.shape[2], t, n, g, f
    cdef tuple tables = column_tables(cols)
    cdef const ptrdiff_t[::1] col = tables[0], lo = tables[1], hi = tables[2]
    cdef const Py_ssize_t[:, ::1] plan = rows.plan
    cdef tgc_strip_shape sh
    sh.R, sh.KH, sh.KW, sh.chan = R, k.shape[2], k.shape[3], src.shape[2] * src.shape[3]
    sh.filter_step, sh.pitch = R * sh.KH * sh.KW, src.shape[3]
    sh.i_step, sh.row_step = rows.tap_step, rows.source_step
    sh.col, sh.col_lo, sh.col_hi = &col[0], &lo[0], &hi[0]
    sh.out_w, sh.out_plane = out.shape[3], OH * out.shape[3]
    cdef const floating[::1] bias = b
    cdef const floating *bias_at = NULL if b is None else &bias[0]
    cdef Py_ssize_t blocks = ceil_div(O, STRIP_TASK_FILTERS)
    cdef int threads = get_num_threads()
    with nogil:
        for t in prange(N * groups * blocks, num_threads=threads, schedule="guided"):
            n, g, f = t // (blocks * groups), t // blocks % groups, t % blocks * STRIP_TASK_FILTERS
            strip_rows(&sh, &k[g * O + f, 0, 0, 0], min(STRIP_TASK_FILTERS, O - f),
                       &src[n, g * R, 0, 0], <const ptrdiff_t *> &plan[0, 0], 0, OH,
                       &out[n, g * O + f, 0, 0],
                       NULL if bias_at == NULL else bias_at + g * O + f, _path)


def strip_grads_fit(Py_ssize_t groups, Py_ssize_t O, Py_ssize_t R, Py_ssize_t KH, Axis cols,
                    int path, Py_ssize_t lanes):
    """Whether dL/dW goes strip by strip (tgc_strip_grad; shapes and the SIMD path only): where
    Z does (strips_fit), with 3 columns of taps, on the AVX-512 path, whose masked
    multiply-adds it uses throughout."""
    return path == TGC_AVX512 and cols.params[2] == 3 and not groups_in_lanes(
        groups, O, lanes) and strips_fit(R, KH, cols, path, lanes)


cdef inline void strip_grad(const tgc_strip_grad_shape *sh, Py_ssize_t KH, const floating *z,
                            Py_ssize_t filters, const floating *a, Py_ssize_t images,
                            double *acc, Py_ssize_t acc_step, int path) noexcept nogil:
    """The taps of one input channel for `filters` filters over `images` images
    (tgc_strip_grad)."""
    if floating is float:
        tgc_strip_grad_fn_f32(path)(sh, KH, z, filters, a, images, acc, acc_step)
    else:
        tgc_strip_grad_fn_f64(path)(sh, KH, z, filters, a, images, acc, acc_step)


def weight_grad_strips(const floating[:, :, :, ::1] a, const floating[:, :, :, ::1] dz,
                       kernel_shape, stride, pads, dilation, Py_ssize_t groups, Axis cols):
    """dL/dW[f, r, i, j] = sum over images n, output rows y, columns x of Z'[n, f, y, x] *
    A[n, g*R + r, y*sh - pt + i*dh, x - pl + j*dw], strip by strip: the batch is cut into runs
    of images (Blocking.runs of them, from the shapes only), and a task is a run's
    STRIP_TASK_FILTERS filters of a group, channel after channel. Each run's sums go to its own
    row of `part`, in double; then the runs are added in order: the same bits whatever the
    threads. cols: forward_axis of the columns, as weight_and_bias_grad has it."""
    cdef Py_ssize_t F = kernel_shape[0], R = kernel_shape[1], KH = kernel_shape[2]
    cdef Py_ssize_t N = a.shape[0], O = F // groups, pairs = R * KH * 3, t, n, g, f, r, e, q
    cdef tuple tables = column_tables(cols)
    cdef const ptrdiff_t[::1] col = tables[0], lo = tables[1], hi = tables[2]
    cdef tgc_strip_grad_shape sh
    sh.out_h, sh.out_w, sh.z_plane = dz.shape[2], dz.shape[3], dz.shape[2] * dz.shape[3]
    sh.z_image, sh.in_h, sh.pitch = F * sh.z_plane, a.shape[2], a.shape[3]
    sh.a_image, sh.row_stride, sh.row_dil = a.shape[1] * a.shape[2] * a.shape[3], stride[0], \
        dilation[0]
    sh.top, sh.col, sh.col_lo, sh.col_hi = pads[0], &col[0], &lo[0], &hi[0]
    cdef Py_ssize_t per_run = ceil_div(N, blocking(0).runs), runs = ceil_div(N, per_run)
    cdef Py_ssize_t blocks = ceil_div(O, STRIP_TASK_FILTERS)
    cdef double[:, :, ::1] part = np.zeros((runs, F, pairs))
    cdef int threads = get_num_threads()
    with nogil:
        for t in prange(runs * groups * blocks, num_threads=threads, schedule="guided"):
            q, g, f = t // (blocks * groups), t // blocks % groups, t % blocks * STRIP_TASK_FILTERS
            n = q * per_run
            for r in range(R):      # part[q, f, (r, i, j)] = the run's sums
                strip_grad(&sh, KH, &dz[n, g * O + f, 0, 0], min(STRIP_TASK_FILTERS, O - f),
                           &a[n, g * R + r, 0, 0], min(per_run, N - n),
                           &part[q, g * O + f, r * KH * 3], pairs, _path)
    dweight = np.empty(kernel_shape, dtype=np.float32 if floating is float else np.float64)
    cdef floating[::1] dw = dweight.reshape(-1)
    cdef double total
    with nogil:         # dL/dW = the runs' sums, added in order
        for e in prange(F * pairs, num_threads=threads, schedule="static"):
            total = 0
            for q in range(runs):
                total = total + part[q, e // pairs, e % pairs]
            dw[e] = <floating> total
    return dweight


# ---------------------------------------------------------------------------------------------
# dL/dW = Z' ⊛ A: the window slides over A, with Z' in the role of the weights
# ---------------------------------------------------------------------------------------------

cdef Py_ssize_t TILE_ROW = 5 + 2 * TGC_MAX_PIX      # a row of weight_grad_tiles' table


cdef struct WeightGrad:         # a WeightGradPlan, seen from nogil code
    Py_ssize_t images, channels, height, width, per_group      # A: (N, C, H, W)
    Py_ssize_t filters, out_h, out_w, filters_per_group        # Z': (F, OH, OW)
    Py_ssize_t taps_h, taps_w, stride_h, stride_w, pad_top, pad_left, dil_h, dil_w
    int path, lanes
    # filters in vectors (blocks from channel_blocks, Z' packed a slab at a time), or the groups
    # in lanes (blocks from lane_blocks; A and Z' staged with the groups side by side, whole)
    bint in_lanes
    Py_ssize_t a_image, a_chan, a_pitch, a_pix    # A: steps to the next image, channel, row,
    Py_ssize_t z_image, z_chan, z_pitch, z_pix    # column; Z' staged: the same (in lanes)
    const Py_ssize_t *blocks        # rows of 5 (channel_blocks, or lane_blocks)
    const Py_ssize_t *lanes_before  # lanes of the blocks before block b, in a packed pixel
    const Py_ssize_t *tiles         # rows of TILE_ROW (weight_grad_tiles)
    Py_ssize_t n_blocks, n_tiles, width_all, part_size
    # runs: flat rows (image n, output row oh) -> n * OH + oh; run q sums the rows
    # [q * rows_per_run, (q + 1) * rows_per_run) into partial q. Shapes only: the order of
    # every sum.
    Py_ssize_t runs, rows_per_run
    # slabs: how many rows of one image (band), or whole images (per_slab), are packed at a
    # time; sized by the L2 cache, and they do not change any sum (see accumulate_run)
    Py_ssize_t band, per_slab


cdef void tap_range(Py_ssize_t out_len, Py_ssize_t in_len, Py_ssize_t stride, Py_ssize_t pad,
                    Py_ssize_t dil, Py_ssize_t tap, Py_ssize_t *lo,
                    Py_ssize_t *hi) noexcept nogil:
    """The outputs y in [lo, hi) whose tap `tap` reads a real cell: 0 <= y*s - pad + tap*d < in."""
    cdef Py_ssize_t first = pad - tap * dil, last = in_len - 1 + pad - tap * dil
    lo[0] = 0 if first <= 0 else (first + stride - 1) // stride
    hi[0] = 0 if last < 0 else min(out_len, last // stride + 1)
    hi[0] = max(hi[0], lo[0])


def weight_grad_tiles(Py_ssize_t filters_per_group, Py_ssize_t groups, Py_ssize_t per_group,
                      row_axis, col_axis, int path, Py_ssize_t lanes, bint in_lanes):
    """The tiles of dL/dW, and where their sums go. Each tile is a block of filters by up to a
    tile's worth of (channel, tap) pairs whose taps read A over the same output rows and columns
    (all taps, without padding), so one tile's pairs share their reduction. Returns, read-only:
      tiles (T, TILE_ROW): (block, i, j, count, at, c_0, tap_0, c_1, tap_1, ...),
        tap = i*KW + j with (i, j) the first pair's (it fixes the rows and columns); a tile's
        sums are kept as the micro-kernel leaves them, [pair][the block's lanes], from `at` in
        a partial sum;
      source (F * C/groups * KH * KW,): where in a partial sum each element of dL/dW is;
      the length of a partial sum.
    row_axis and col_axis: (out_len, in_len, taps, stride, pad, dil)."""
    cdef Py_ssize_t lo, hi
    ranges = []
    for out_len, in_len, taps, stride, pad, dil in (row_axis, col_axis):
        taps_of = {}                 # the taps that read the same outputs, by (lo, hi)
        for i in range(taps):
            tap_range(out_len, in_len, stride, pad, dil, i, &lo, &hi)
            taps_of.setdefault((lo, hi), []).append(i)
        ranges.append(list(taps_of.values()))
    if in_lanes:        # lane o: filter (g0 + o) * filters_per_group + j
        blocks = lane_blocks(groups, filters_per_group, lanes, path)
        first_filter = blocks[:, 0] * filters_per_group + blocks[:, 1]
        filter_step = filters_per_group
    else:               # lane o: filter g * filters_per_group + first + o
        blocks = channel_blocks(filters_per_group, groups, lanes, 0, path)
        first_filter, filter_step = blocks[:, 0] * filters_per_group + blocks[:, 1], 1
    n_taps = row_axis[2] * col_axis[2]
    source = np.empty(filters_per_group * groups * per_group * n_taps, dtype=np.intp)
    tiles, at = [], 0
    for b in range(blocks.shape[0]):
        width, count = blocks[b, 2] * lanes, blocks[b, 3]
        f = first_filter[b] + filter_step * np.arange(count)
        most = tgc_max_pixels(path, <int> blocks[b, 2])
        for rows in ranges[0]:
            for cols in ranges[1]:
                pairs = [(c, i * col_axis[2] + j) for c in range(per_group)
                         for i in rows for j in cols]
                for k in range(0, len(pairs), most):
                    part = pairs[k:k + most]
                    tiles.append([b, rows[0], cols[0], len(part), at]
                                 + [x for pair in part for x in pair]
                                 + [0] * (2 * (TGC_MAX_PIX - len(part))))
                    for p, (c, tap) in enumerate(part):   # dL/dW[f, c, tap], the block's f
                        source[(f * per_group + c) * n_taps + tap] = at + p * width \
                            + np.arange(count)
                    at += len(part) * width
    tiles = np.array(tiles, dtype=np.intp).reshape(-1, TILE_ROW)
    tiles.setflags(write=False)
    source.setflags(write=False)
    return tiles, source, at


cdef class WeightGradPlan:
    """How dL/dW = Z' ⊛ A is cut up for one shape and SIMD path (weight_grad_plan caches it):
    the blocks of filters, the tiles and where their sums go, the runs of the batch summed into
    the partial sums, and the slabs packed at a time."""
    cdef WeightGrad wg
    cdef object blocks, lanes_before, tiles, source     # the arrays wg points into

    def __init__(self, a_shape, dz_shape, kernel_shape, stride, pads, dilation,
                 Py_ssize_t groups, int path, Py_ssize_t itemsize, Py_ssize_t l2):
        cdef WeightGrad *wg = &self.wg
        wg.images, wg.channels, wg.height, wg.width = a_shape
        _, wg.filters, wg.out_h, wg.out_w = dz_shape
        wg.per_group, wg.filters_per_group = kernel_shape[1], wg.filters // groups
        wg.taps_h, wg.taps_w = kernel_shape[2], kernel_shape[3]
        wg.stride_h, wg.stride_w, wg.dil_h, wg.dil_w = stride[0], stride[1], dilation[0], \
            dilation[1]
        wg.pad_top, wg.pad_left, wg.path = pads[0], pads[2], path
        wg.lanes = tgc_lanes(path, itemsize)
        wg.in_lanes = groups_in_lanes(groups, wg.filters_per_group, wg.lanes)
        if wg.in_lanes:
            self.blocks = lane_blocks(groups, wg.filters_per_group, wg.lanes, path)
        else:
            self.blocks = channel_blocks(wg.filters_per_group, groups, wg.lanes, 0, path)
        self.lanes_before = np.concatenate(
            [[0], np.cumsum(self.blocks[:, 2])]).astype(np.intp) * wg.lanes
        self.tiles, self.source, wg.part_size = weight_grad_tiles(
            wg.filters_per_group, groups, wg.per_group,
            (wg.out_h, wg.height, wg.taps_h, wg.stride_h, wg.pad_top, wg.dil_h),
            (wg.out_w, wg.width, wg.taps_w, wg.stride_w, wg.pad_left, wg.dil_w), path, wg.lanes,
            wg.in_lanes)
        cdef const Py_ssize_t[:, ::1] blocks = self.blocks, tiles = self.tiles
        cdef const Py_ssize_t[::1] before = self.lanes_before
        wg.blocks, wg.tiles, wg.lanes_before = &blocks[0, 0], &tiles[0, 0], &before[0]
        wg.n_blocks, wg.n_tiles = blocks.shape[0], tiles.shape[0]
        wg.width_all = before[wg.n_blocks]
        # the runs, from the shapes only: whole images each when there are enough images
        cdef Py_ssize_t rows = wg.images * wg.out_h, dw_bytes = self.source.size * itemsize
        cdef Blocking bl = blocking(l2)
        wg.runs = max(1, min(rows, bl.runs, bl.partials_bytes // dw_bytes))
        if wg.images >= wg.runs:
            wg.rows_per_run = ceil_div(wg.images, wg.runs) * wg.out_h
        else:
            wg.rows_per_run = ceil_div(rows, wg.runs)
        wg.runs = ceil_div(rows, wg.rows_per_run)
        # a slab's Z', packed (all blocks' lanes a pixel), and the rows of A it meets take at
        # most slab_bytes
        cdef Py_ssize_t row_bytes = (wg.out_w * wg.width_all
                                     + wg.channels * wg.stride_h * wg.width) * itemsize
        wg.band = max(1, min(wg.out_h, bl.slab_bytes // row_bytes))
        wg.per_slab = 1 if wg.band < wg.out_h else \
            max(1, min(wg.images, bl.slab_bytes // (wg.band * row_bytes)))
        cdef Py_ssize_t gpad = ceil_div(groups, wg.lanes) * wg.lanes
        cdef Py_ssize_t plane = wg.height * wg.width, out_plane = wg.out_h * wg.out_w
        if wg.in_lanes:     # staged whole (nothing is packed), read a slab at a time
            wg.a_image, wg.a_chan, wg.a_pitch = wg.per_group * plane * gpad, plane * gpad, \
                wg.width * gpad
            wg.a_pix, wg.z_pix = gpad, gpad
            wg.z_image, wg.z_chan = wg.filters_per_group * out_plane * gpad, out_plane * gpad
            wg.z_pitch = wg.out_w * gpad
        else:
            wg.a_image, wg.a_chan, wg.a_pitch, wg.a_pix = wg.channels * plane, plane, wg.width, 1

    def arrays(self):
        """(blocks, lanes_before, tiles, source), read-only."""
        return self.blocks, self.lanes_before, self.tiles, self.source

    def slab_size(self):
        """Elements of a slab's Z', packed (none with the groups in lanes)."""
        if self.wg.in_lanes:
            return 0
        return self.wg.per_slab * self.wg.band * self.wg.out_w * self.wg.width_all


@functools.lru_cache(maxsize=64)
def weight_grad_plan(*args):
    return WeightGradPlan(*args)


cdef void pack_grad(const floating *dz,      # IN  Z'[n]: (F, OH, OW)
                    floating *zt,            # OUT [oh - r0][ow][width]
                    const WeightGrad *wg, const Py_ssize_t *block, Py_ssize_t r0,
                    Py_ssize_t r1) noexcept nogil:
    """zt[oh - r0, ow, lane] = Z'[the lane's filter, oh, ow] for rows r0 <= oh < r1 and the
    block's filters, zeros in the lanes past them: a vector of filters is one load."""
    cdef Py_ssize_t plane = wg.out_h * wg.out_w
    stage_in(dz + (block[0] * wg.filters_per_group + block[1]) * plane + r0 * wg.out_w, plane,
             <int> block[3], (r1 - r0) * wg.out_w, zt, <int> (block[2] * wg.lanes), wg.path)


cdef void weight_grad_tile(const floating *a,       # IN  A from image n0 (as wg says)
                           const floating *z,       # IN  Z' from image n0 (packed or staged)
                           floating *part,          # OUT a partial sum (see weight_grad_tiles)
                           const WeightGrad *wg, const Py_ssize_t *tile,
                           Py_ssize_t n_images, Py_ssize_t r0, Py_ssize_t r1,
                           bint add) noexcept nogil:
    """dL/dW[f, c, i, j] (+)= sum over the images and the output pixels (oh, ow) of rows r0..r1
    whose tap (i, j) is real, of Z'[n, f, oh, ow] * A[n, c, oh*s - pad + i*d, ow*s - pad + j*d]:
    the block's filters f (vectors) by the tile's (c, i*KW + j) pairs (broadcast, or in lanes),
    added in registers to the tile's sums in a partial sum (one chain of fused multiply-adds,
    image by image, row by row: where a slab ends does not change it)."""
    cdef ptrdiff_t pix[TGC_MAX_PIX]
    cdef ptrdiff_t at[TGC_MAX_PIX]
    cdef const Py_ssize_t *block = wg.blocks + 5 * tile[0]
    cdef Py_ssize_t width = block[2] * wg.lanes, a_base, oh_lo, oh_hi, ow_lo, ow_hi, p, i, j
    tap_range(wg.out_h, wg.height, wg.stride_h, wg.pad_top, wg.dil_h, tile[1], &oh_lo, &oh_hi)
    tap_range(wg.out_w, wg.width, wg.stride_w, wg.pad_left, wg.dil_w, tile[2], &ow_lo, &ow_hi)
    oh_lo, oh_hi = max(oh_lo, r0), min(oh_hi, r1)
    if oh_lo >= oh_hi or ow_lo >= ow_hi:      # these taps never read this slab's rows
        if add:
            return
        oh_lo = oh_hi = r0                    # (a first slab: the sums start at zero)
    # the block's first input channel (filters in vectors: its group's), or first group (lanes)
    a_base = block[0] if wg.in_lanes else block[0] * wg.per_group * wg.a_chan
    for p in range(tile[3]):
        i, j = tile[6 + 2 * p] // wg.taps_w, tile[6 + 2 * p] % wg.taps_w
        pix[p] = a_base + tile[5 + 2 * p] * wg.a_chan \
            + (oh_lo * wg.stride_h - wg.pad_top + i * wg.dil_h) * wg.a_pitch \
            + (ow_lo * wg.stride_w - wg.pad_left + j * wg.dil_w) * wg.a_pix
        at[p] = tile[4] + p * width
    cdef tgc_loops loops
    loops.n[0], loops.in_step[0] = n_images, wg.a_image                       # images
    loops.n[1], loops.in_step[1] = oh_hi - oh_lo, wg.stride_h * wg.a_pitch    # output rows
    loops.n[2], loops.in_step[2] = ow_hi - ow_lo, wg.stride_w * wg.a_pix      # output columns
    if wg.in_lanes:                 # Z' staged: output channel j of the groups from g0
        z += block[1] * wg.z_chan + block[0] + oh_lo * wg.z_pitch + ow_lo * wg.z_pix
        loops.vec_step[0], loops.vec_step[1], loops.vec_step[2] = \
            wg.z_image, wg.z_pitch, wg.z_pix
    else:                           # the slab's Z' packed: the block's part
        z += n_images * (r1 - r0) * wg.out_w * wg.lanes_before[tile[0]] \
            + ((oh_lo - r0) * wg.out_w + ow_lo) * width
        loops.vec_step[0], loops.vec_step[1], loops.vec_step[2] = \
            (r1 - r0) * wg.out_w * width, wg.out_w * width, width
    run_tile(z, a, pix, <int> tile[3], &loops, part, at, add, wg.path, <int> block[2],
             wg.in_lanes)


cdef void accumulate_run(const floating *a, const floating *dz, const WeightGrad *wg,
                         Py_ssize_t f0, Py_ssize_t f1, floating *zt,
                         floating *part) noexcept nogil:
    """part = dL/dW = Z' ⊛ A over the flat rows f0 <= f < f1 of the batch (image f // OH,
    output row f % OH), in that order, a slab at a time: a band of one image's rows, or whole
    images. Each slab's Z' is packed into zt (unless it is staged whole, with the groups in
    lanes), then every tile's sums continue in the partial."""
    cdef Py_ssize_t f = f0, n0, n1, r0, r1, m, b, t
    cdef Py_ssize_t out_image = wg.filters * wg.out_h * wg.out_w
    while f < f1:
        n0, r0 = f // wg.out_h, f % wg.out_h
        n1, r1 = n0 + 1, min(wg.out_h, r0 + wg.band, r0 + f1 - f)
        if r0 == 0 and r1 == wg.out_h:           # whole images
            n1 = n0 + max(1, min(wg.per_slab, (f1 - f) // wg.out_h))
        for m in range(0 if wg.in_lanes else n1 - n0):  # Z', packed: [block][image][row][col]
            for b in range(wg.n_blocks):
                pack_grad(dz + (n0 + m) * out_image,
                          zt + ((n1 - n0) * wg.lanes_before[b]
                                + m * wg.blocks[5 * b + 2] * wg.lanes) * (r1 - r0) * wg.out_w,
                          wg, wg.blocks + 5 * b, r0, r1)
        for t in range(wg.n_tiles):
            weight_grad_tile(a + n0 * wg.a_image, dz + n0 * wg.z_image if wg.in_lanes else zt,
                             part, wg, wg.tiles + TILE_ROW * t, n1 - n0, r0, r1, f > f0)
        f += (n1 - n0) * (r1 - r0)


cdef void sum_partials(const floating[:, ::1] part,   # IN  (runs, part_size)
                       const Py_ssize_t[::1] source,  # IN  where each dL/dW element is
                       floating[::1] summed,          # scratch (part_size,)
                       floating[::1] dw, int threads) noexcept nogil:
    """dw[k] = part[0, source[k]] + part[1, source[k]] + ..., run after run (so the sum is
    repeatable), in pieces the threads share."""
    cdef Py_ssize_t k0, k, q, size = part.shape[1], piece = blocking(0).sum_piece
    for k0 in prange(0, size, piece, num_threads=threads, schedule="static"):
        for k in range(k0, min(size, k0 + piece)):
            summed[k] = part[0, k]
        for q in range(1, part.shape[0]):
            for k in range(k0, min(size, k0 + piece)):
                summed[k] = summed[k] + part[q, k]
    for k in prange(dw.shape[0], num_threads=threads, schedule="static"):
        dw[k] = summed[source[k]]


cdef (const floating *, const floating *) stage_for_lanes(
        const floating[:, :, :, ::1] a, const floating[:, :, :, ::1] dz, const WeightGrad *wg,
        Py_ssize_t groups, int threads):
    """A and Z' staged with their groups side by side (stage_groups), in workspaces."""
    dtype = np.float32 if floating is float else np.float64
    cdef floating[::1] a_staged = _workspace("dw_a_staged", 1, wg.images * wg.a_image, dtype)[0]
    cdef floating[::1] z_staged = _workspace("dw_z_staged", 1, wg.images * wg.z_image, dtype)[0]
    with nogil:
        stage_groups(&a[0, 0, 0, 0], wg.images, wg.per_group, groups, wg.height * wg.width,
                     &a_staged[0], wg.a_pix, wg.path, threads)
        stage_groups(&dz[0, 0, 0, 0], wg.images, wg.filters_per_group, groups,
                     wg.out_h * wg.out_w, &z_staged[0], wg.z_pix, wg.path, threads)
    return &a_staged[0], &z_staged[0]



# ---------------------------------------------------------------------------------------------
# Planes: a depthwise correlation with one plane's pixels in the lanes, in NCHW as it lies
# ---------------------------------------------------------------------------------------------
#
# A group with one input channel (depthwise) and wide enough rows: each output row of a plane is
# a run of vectors, out[x] = sum of weight * input[x + offset] over the real taps, the weight
# broadcast (tgc_terms); dL/dW sums Z' * A along the rows, four vectors a tap (tgc_dot). Nothing
# is staged: A, Z' and the outputs are read and written where they lie. A stride along the
# rows splits them into phases first (tgc_deal, tgc_weave), so that every read is unit-stride.

cdef enum:
    PLANE_TERMS = 256       # the most terms (channels x taps) an output of a plane sums


def planes_fit(Py_ssize_t reduce, Py_ssize_t taps, Py_ssize_t run, Py_ssize_t lanes):
    """Whether a plane's pixels in the lanes suit this correlation (shapes and lanes only):
    few enough terms (reduction channels x taps) an output, and output runs (the columns of
    one phase) of a vector or more."""
    return reduce * taps <= PLANE_TERMS and run >= lanes


@functools.lru_cache(maxsize=256)
def phase_columns(Py_ssize_t out_len, Py_ssize_t in_len, Py_ssize_t taps, Py_ssize_t mult,
                  Py_ssize_t offset, Py_ssize_t div, Py_ssize_t dil):
    """The columns of a plane correlation. Output column x meets tap j at input column
    (x*mult + offset + j*dil) / div when that is exact (Z: mult = s, div = 1; dL/dA: mult = 1,
    div = s). The outputs are taken in div phases, x = p + div*u, and the input dealt into
    mult phases, input column q + mult*v: then real tap j of output phase p reads input phase q
    at v = u + shift, unit-stride in u. Returns read-only
      phases (div, 5): U (outputs in the phase), L, H (all its taps are real for L <= u < H),
        first, n (its taps' rows in `taps`);
      taps (T, 5): j, q, shift, lo, hi (tap j is real for lo <= u < hi)."""
    cdef object e                               # (Python's floor division and modulo)
    phases, rows = [], []
    for p in range(div):
        n_out, first, lo_all, hi_all = ceil_div(max(out_len - p, 0), div), len(rows), 0, None
        for j in range(taps):
            e = p * mult + offset + j * dil
            if e % div:
                continue                        # a zero the stride inserted: never real
            e //= div                           # input column u*mult + e
            lo = max(0, -(e // mult))
            hi = max(lo, min(n_out, (in_len - 1 - e) // mult + 1))
            rows.append([j, e % mult, e // mult, lo, hi])
            lo_all = max(lo_all, lo)
            hi_all = hi if hi_all is None else min(hi_all, hi)
        phases.append([n_out, lo_all, n_out if hi_all is None else hi_all, first,
                       len(rows) - first])
    phases = np.array(phases, dtype=np.intp).reshape(-1, 5)
    rows = np.array(rows, dtype=np.intp).reshape(-1, 5)
    phases.setflags(write=False)
    rows.setflags(write=False)
    return phases, rows


cdef struct Planes:             # a plane correlation's shapes, seen from nogil code
    Py_ssize_t R, KH, KW        # reduction channels a group, kernel size
    Py_ssize_t in_h, in_w, in_plane, out_h, out_w
    Py_ssize_t P, Q             # output phases (dL/dA's column stride), input phases (Z's)
    Py_ssize_t v_pitch, u_pitch     # an input phase's row, an output phase's row
    Py_ssize_t chan, pitch, qstep   # the input as the terms read it: next channel, row, phase
    const Py_ssize_t *taps      # phase 0's taps (phase_columns), n_taps of them
    Py_ssize_t n_taps
    const ptrdiff_t *runs       # (n_runs, 7) and (S, 5): see plane_segments
    Py_ssize_t n_runs
    const ptrdiff_t *segs
    const ptrdiff_t *koff       # the terms: weight in the (R, KH, KW) kernel, input offset
    const ptrdiff_t *ioff
    int path


cdef inline void terms(const floating *k, const ptrdiff_t *koff, const floating *src,
                       const ptrdiff_t *ioff, Py_ssize_t n, Py_ssize_t count, floating *out,
                       const floating *bias, Py_ssize_t rows, Py_ssize_t src_step,
                       Py_ssize_t out_step, int path) noexcept nogil:
    """out[r*out_step + u] = sum over t < n of k[koff[t]] * src[r*src_step + ioff[t] + u]
    (+ bias), u < count, r < rows."""
    if floating is float:
        tgc_terms_fn_f32(path)(k, koff, src, ioff, <int> n, count, out, bias, rows, src_step,
                               out_step)
    else:
        tgc_terms_fn_f64(path)(k, koff, src, ioff, <int> n, count, out, bias, rows, src_step,
                               out_step)


cdef inline void dot(const floating *z, Py_ssize_t zs, const floating *src, Py_ssize_t step,
                     Py_ssize_t ny, Py_ssize_t lo, Py_ssize_t hi, floating *acc,
                     int path) noexcept nogil:
    """acc[y % 4] (vectors) += z[y*zs + x] * src[y*step + x], y < ny, lo <= x < hi."""
    if floating is float:
        tgc_dot_fn_f32(path)(z, zs, src, step, ny, lo, hi, acc)
    else:
        tgc_dot_fn_f64(path)(z, zs, src, step, ny, lo, hi, acc)


cdef inline void deal(const floating *row, Py_ssize_t n, Py_ssize_t s, floating *out,
                      Py_ssize_t pitch, int path) noexcept nogil:
    """out[q * pitch + v] = row[v * s + q]: a row into its s phases."""
    if floating is float:
        tgc_deal_fn_f32(path)(row, n, s, out, pitch)
    else:
        tgc_deal_fn_f64(path)(row, n, s, out, pitch)


cdef inline void weave(const floating *phases, Py_ssize_t n, Py_ssize_t s, floating *row,
                       Py_ssize_t pitch, int path) noexcept nogil:
    """row[v * s + q] = phases[q * pitch + v]: s phases into a row."""
    if floating is float:
        tgc_weave_fn_f32(path)(phases, n, s, row, pitch)
    else:
        tgc_weave_fn_f64(path)(phases, n, s, row, pitch)


cdef Planes planes_shape(Py_ssize_t R, Py_ssize_t KH, Py_ssize_t KW, Axis rows, Axis cols,
                         int path):
    """The shapes of a plane correlation whose rows and columns `rows` and `cols` describe
    (the pointers are left NULL)."""
    cdef Planes pl
    pl.R, pl.KH, pl.KW, pl.path = R, KH, KW, path
    pl.out_w, pl.in_w, _, pl.Q, _, pl.P, _ = cols.params
    pl.out_h, pl.in_h = rows.params[0], rows.params[1]
    pl.in_plane = pl.in_h * pl.in_w
    pl.v_pitch, pl.u_pitch = ceil_div(pl.in_w, pl.Q), ceil_div(pl.out_w, pl.P)
    if pl.Q == 1:
        pl.chan, pl.pitch, pl.qstep = pl.in_plane, pl.in_w, 0
    else:                           # dealt: [channel][phase][row][v]
        pl.qstep, pl.pitch = pl.in_h * pl.v_pitch, pl.v_pitch
        pl.chan = pl.Q * pl.qstep
    pl.taps, pl.n_taps, pl.runs, pl.n_runs, pl.segs = NULL, 0, NULL, 0, NULL
    pl.koff, pl.ioff = NULL, NULL
    return pl


@functools.lru_cache(maxsize=64)
def plane_segments(Axis rows, Axis cols, Py_ssize_t R, Py_ssize_t KH, Py_ssize_t KW):
    """The work of a plane, as the terms read it (see Planes). Output rows with the same real
    kernel rows share their segments: columns that share their terms (a phase's interior, and
    each column whose taps meet padding), the terms listed in the micro-kernel's order
    (reduction channel, real kernel row, real tap). Read-only arrays, flat:
      runs (M * 7): first output row, rows, step between them, first segment, segments, the
        first row's input (source row * pitch), step between the rows' inputs;
      segs (S * 5): phase, first column u, columns, first term, terms; koff, ioff: the terms."""
    cdef Planes pl = planes_shape(R, KH, KW, rows, cols, 0)
    phases, taps = phase_columns(*cols.params)
    rows_of, runs, segs, koff, ioff = {}, [], [], [], []
    for y in range(pl.out_h):           # the rows of each (first real row, count), in order
        rows_of.setdefault((rows.plan[y, 0], rows.plan[y, 1]), []).append(y)
    for (first, count), ys in rows_of.items():
        start = len(segs)
        for p, (n_out, lo_all, hi_all, t0, nt) in enumerate(phases):
            parts = [(lo_all, hi_all - lo_all, -1)] if hi_all > lo_all else []
            parts += [(u, 1, u) for u in range(n_out) if not lo_all <= u < hi_all]
            for u0, n, at in parts:
                k0 = len(koff)
                for r, k in [(r, k) for r in range(R) for k in range(count)]:
                    for j, q, shift, lo, hi in taps[t0:t0 + nt]:
                        if at < 0 or lo <= at < hi:     # (else tap j reads padding)
                            koff.append((r * KH + first + k * rows.tap_step) * KW + j)
                            ioff.append(r * pl.chan + k * rows.source_step * pl.pitch
                                        + q * pl.qstep + shift)
                segs.append([p, u0, n, k0, len(koff) - k0])
        for run in arithmetic_runs(ys, [rows.plan[y, 2] for y in ys]):
            runs.append([run[0], run[1], run[2], start, len(segs) - start, run[3] * pl.pitch,
                         run[4] * pl.pitch])
    arrays = [np.array(runs, dtype=np.intp).reshape(-1), np.array(segs, dtype=np.intp).reshape(-1),
              np.array(koff + [0], dtype=np.intp), np.array(ioff + [0], dtype=np.intp)]
    for array in arrays:
        array.setflags(write=False)
    return arrays


def arithmetic_runs(ys, sources):
    """ys (increasing) and their sources cut into runs where both step evenly: a list of
    (first y, how many, y step, first source, source step)."""
    runs, k = [], 0
    while k < len(ys):
        n = 1
        if k + 1 < len(ys):
            dy, ds = ys[k + 1] - ys[k], sources[k + 1] - sources[k]
            while k + n < len(ys) and ys[k + n] - ys[k + n - 1] == dy \
                    and sources[k + n] - sources[k + n - 1] == ds:
                n += 1
        else:
            dy = ds = 0
        runs.append((ys[k], n, dy if n > 1 else 0, sources[k], ds if n > 1 else 0))
        k += n
    return runs


cdef const floating *dealt(const Planes *pl, const floating *src,
                           floating *buf) noexcept nogil:
    """The R input planes from src (one after the other) as the terms read them: src itself
    (one phase), or each row dealt into pl.Q phases in buf, [r][q][row][v]."""
    cdef Py_ssize_t r, row
    if pl.Q == 1:
        return src
    for r in range(pl.R):
        if pl.in_w % pl.Q == 0:     # rows of whole phases: the plane dealt as one row
            deal(src + r * pl.in_plane, pl.in_plane, pl.Q, buf + r * pl.chan, pl.qstep,
                 pl.path)
            continue
        for row in range(pl.in_h):
            deal(src + r * pl.in_plane + row * pl.in_w, pl.in_w, pl.Q,
                 buf + r * pl.chan + row * pl.pitch, pl.qstep, pl.path)
    return buf


cdef void plane_task(const Planes *pl, const floating *kernel, const floating *base,
                     const floating *bias, floating *out, floating *obuf) noexcept nogil:
    """One output plane, out[y, x] = its terms' sum (+ bias): run by run (rows that share
    their terms), segment by segment (a phase's interior a run of vectors, the columns whose
    taps meet padding one by one). With several output phases (dL/dA's stride), into obuf,
    [phase][row][u], then woven into out row by row."""
    cdef const ptrdiff_t *run
    cdef const ptrdiff_t *seg
    cdef Py_ssize_t m, k, y, row = pl.out_w, phase = 0
    cdef floating *dst = out
    if pl.P > 1:
        dst, row, phase = obuf, pl.u_pitch, pl.out_h * pl.u_pitch
    for m in range(pl.n_runs):
        run = pl.runs + 7 * m       # y0, rows, y step, first segment, segments, input, step
        for k in range(run[3], run[3] + run[4]):
            seg = pl.segs + 5 * k   # phase, u0, columns, first term, terms
            terms(kernel, pl.koff + seg[3], base + run[5] + seg[1], pl.ioff + seg[3], seg[4],
                  seg[2], dst + seg[0] * phase + run[0] * row + seg[1], bias, run[1], run[6],
                  run[2] * row, pl.path)
    if pl.P > 1 and pl.out_w % pl.P == 0:       # rows of whole phases: woven as one row
        weave(obuf, pl.out_h * pl.out_w, pl.P, out, phase, pl.path)
    elif pl.P > 1:
        for y in range(pl.out_h):
            weave(obuf + y * pl.u_pitch, pl.out_w, pl.P, out + y * pl.out_w, phase, pl.path)


def correlate_planes(const floating[:, :, :, ::1] src, kernel, b, Py_ssize_t groups,
                     Axis rows, Axis cols, floating[:, :, :, ::1] out):
    """out = kernel ⊛ src (+ b), as correlate_kernel, one output plane (image n, channel o)
    a task, the pixels in the lanes: band by band (band_plane) where bands_fit, else run by
    run (plane_task)."""
    dtype = np.float32 if floating is float else np.float64
    cdef const floating[:, :, :, ::1] k = np.ascontiguousarray(kernel, dtype=dtype)
    cdef Py_ssize_t N = out.shape[0], F = out.shape[1], O = F // groups, task, n, o
    cdef Planes pl = planes_shape(k.shape[1], k.shape[2], k.shape[3], rows, cols, _path)
    cdef bint bands = bands_fit(rows, cols, pl.KW)
    arrays = band_tables(rows, cols, pl.KH) if bands else \
        plane_segments(rows, cols, pl.R, pl.KH, pl.KW)
    cdef const ptrdiff_t[::1] t0 = arrays[0], t1 = arrays[1], t2 = arrays[2], t3 = arrays[3]
    cdef tgc_band_shape sh
    if bands:
        sh = band_shape(&pl, rows, &t0[0], &t1[0], &t2[0], &t3[0])
    else:                       # runs (7 numbers each), segments (5 each), the terms
        pl.runs, pl.n_runs, pl.segs = &t0[0], t0.shape[0] // 7, &t1[0]
        pl.koff, pl.ioff = &t2[0], &t3[0]
    cdef int threads = get_num_threads()
    cdef floating[:, ::1] ibuf = _workspace("planes_in", threads, pl.R * pl.chan, dtype)
    cdef floating[:, ::1] obuf = _workspace("planes_out", threads,
                                            1 if bands else pl.P * pl.out_h * pl.u_pitch, dtype)
    cdef const floating[::1] bias = b
    cdef const floating *base
    with nogil, parallel(num_threads=threads):
        for task in prange(N * F, schedule="guided"):
            n, o = task // F, task % F
            base = dealt(&pl, &src[n, (o // O) * pl.R, 0, 0], &ibuf[threadid(), 0])
            if bands:
                band_plane(&sh, &k[o, 0, 0, 0], base, &out[n, o, 0, 0],
                           NULL if b is None else &bias[o], _path)
            else:
                plane_task(&pl, &k[o, 0, 0, 0], base, NULL if b is None else &bias[o],
                           &out[n, o, 0, 0], &obuf[threadid(), 0])


# Bands: when no axis has output phases and the columns no stride (Z, and dL/dA at stride 1;
# see bands_fit), each output row of a plane is one run of vectors, padding columns and all: a
# vector that reaches into the padding loads and adds only its real lanes (tgc_band), and a
# band of output rows shares its loads. Same terms, same order, same bits as plane_task.

cdef bint _bands = True         # (off: plane_task takes them all; tests compare the two)


def use_bands(bint on):
    """Whether correlate_planes may take the bands (tests and benchmarks compare them with
    plane_task: the same bits)."""
    global _bands
    _bands = on


def bands_fit(Axis rows, Axis cols, Py_ssize_t kernel_width):
    """Whether correlate_planes takes this correlation band by band (shapes only): no output
    phases, and no column stride either (measured: dealing a plane into phases and then
    reading its edges through masks cost more than plane_task), and a kernel no wider than a
    band's masks."""
    return _bands and rows.params[5] == 1 and cols.params[5] == 1 and cols.params[3] == 1 \
        and kernel_width <= TGC_BAND_MAX_KW


cdef inline void band_plane(const tgc_band_shape *sh, const floating *k, const floating *src,
                            floating *out, const floating *bias, int path) noexcept nogil:
    """out = k ⊛ src (+ bias) for one output plane, band by band (tgc_band)."""
    if floating is float:
        tgc_band_fn_f32(path)(sh, k, src, out, bias)
    else:
        tgc_band_fn_f64(path)(sh, k, src, out, bias)


@functools.lru_cache(maxsize=64)
def band_tables(Axis rows, Axis cols, Py_ssize_t KH):
    """tgc_band's tables, read-only: column_tables' col, col_lo, col_hi (bands_fit: no column
    stride, so `dealt` leaves the input as it is) and meets (TGC_BAND_MAX rows an input row of
    a band, i*KW where output row m meets kernel row i there, else -1)."""
    row_step, row_dil, KW = rows.params[3], rows.params[6], cols.params[2]
    meets = np.full(((TGC_BAND_MAX - 1) * row_step + (KH - 1) * row_dil + 1, TGC_BAND_MAX), -1,
                    dtype=np.intp)
    for m in range(TGC_BAND_MAX):
        for i in range(KH):
            meets[m * row_step + i * row_dil, m] = i * KW
    meets = meets.reshape(-1)
    meets.setflags(write=False)
    return [*column_tables(cols), meets]


cdef tgc_band_shape band_shape(const Planes *pl, Axis rows, const ptrdiff_t *col,
                               const ptrdiff_t *col_lo, const ptrdiff_t *col_hi,
                               const ptrdiff_t *meets):
    """The shapes tgc_band reads, from the plane correlation's and band_tables'."""
    cdef tgc_band_shape sh
    sh.R, sh.KH, sh.KW, sh.in_h, sh.chan, sh.pitch = pl.R, pl.KH, pl.KW, pl.in_h, pl.chan, \
        pl.pitch
    sh.col, sh.col_lo, sh.col_hi, sh.meets = col, col_lo, col_hi, meets
    _, _, _, sh.row_step, sh.row_at, _, sh.row_dil = rows.params
    sh.out_h, sh.out_w, sh.out_pitch = pl.out_h, pl.out_w, pl.out_w
    return sh


cdef void plane_weight_grad(const Planes *pl, const Py_ssize_t *row_taps, Py_ssize_t images,
                            const floating *a, Py_ssize_t a_image, const floating *dz,
                            Py_ssize_t z_image, floating *acc, floating *ibuf, floating *dw,
                            double *db) noexcept nogil:
    """dL/dW[f, 0, i, j] = sum over images n, output rows y, columns x of Z'[n, f, y, x] *
    A[n, c, y*sh - pt + i*dh, x*sw - pl + j*dw] for one filter f (dz: its plane in image 0,
    a: its channel's): a tap's four vector sums (`dot`) go on image after image; then their
    lanes are added up in order. row_taps (KH, 3) + (sh,): the output rows [lo, hi) where
    kernel row i is real, and i*dh - pt. db (unless NULL): dL/db[f] as bias_grad sums it, image
    by image, while Z' is in the cache."""
    cdef Py_ssize_t lanes = tgc_lanes(pl.path, sizeof(floating)), per_tap = 4 * lanes
    cdef Py_ssize_t sh = row_taps[3 * pl.KH], n, i, c, t, l, lo
    cdef const Py_ssize_t *tap
    cdef const floating *base
    cdef floating *sums
    cdef floating total
    cdef double bias_total = 0
    for t in range(pl.KH * pl.KW * per_tap):
        acc[t] = 0
    for n in range(images):
        if db != NULL:
            bias_total = bias_total + sum_of(dz + n * z_image, pl.out_h * pl.out_w)
        base = dealt(pl, a + n * a_image, ibuf)
        for i in range(pl.KH):
            lo = row_taps[3 * i]
            for c in range(pl.n_taps):          # tap (i, j): rows lo.., columns tap[3]..
                tap = pl.taps + 5 * c
                sums = acc + (i * pl.KW + tap[0]) * per_tap
                dot(dz + n * z_image + lo * pl.out_w, pl.out_w,
                    base + (lo * sh + row_taps[3 * i + 2]) * pl.pitch + tap[1] * pl.qstep
                    + tap[2], sh * pl.pitch, row_taps[3 * i + 1] - lo, tap[3], tap[4], sums,
                    pl.path)
    for t in range(pl.KH * pl.KW):
        sums = acc + t * per_tap
        total = 0
        for l in range(lanes):              # lane l of the four sums, then the next lane
            total = total + (((sums[l] + sums[lanes + l]) + sums[2 * lanes + l])
                             + sums[3 * lanes + l])
        dw[t] = total
    if db != NULL:
        db[0] = bias_total


def weight_grad_planes(const floating[:, :, :, ::1] a, const floating[:, :, :, ::1] dz,
                       kernel_shape, stride, pads, dilation, Py_ssize_t groups, bint need_db):
    """(dL/dW = Z' ⊛ A summed over the batch, dL/db or None) for a depthwise convolution (one
    input channel a group) with the pixels in the lanes: one filter a task
    (plane_weight_grad), its sums in an order set by the shapes and the SIMD path only."""
    dtype = np.float32 if floating is float else np.float64
    cdef Py_ssize_t F = kernel_shape[0], KH = kernel_shape[2], f, m = F // groups, i
    cdef Axis cols = forward_axis(dz.shape[3], a.shape[3], kernel_shape[3], stride[1], pads[2],
                                  dilation[1])
    cdef Planes pl = planes_shape(1, KH, kernel_shape[3], forward_axis(
        dz.shape[2], a.shape[2], KH, stride[0], pads[0], dilation[0]), cols, _path)
    _, taps = phase_columns(*cols.params)
    cdef const Py_ssize_t[:, ::1] tp = taps
    pl.taps, pl.n_taps = &tp[0, 0], tp.shape[0]
    cdef Py_ssize_t[::1] row_taps = np.empty(3 * KH + 1, dtype=np.intp)
    for i in range(KH):
        tap_range(dz.shape[2], a.shape[2], stride[0], pads[0], dilation[0], i,
                  &row_taps[3 * i], &row_taps[3 * i + 1])
        row_taps[3 * i + 2] = i * dilation[0] - pads[0]
    row_taps[3 * KH] = stride[0]
    cdef Py_ssize_t per_tap = 4 * tgc_lanes(_path, sizeof(floating))
    cdef int threads = get_num_threads()
    cdef floating[:, ::1] acc = _workspace("planes_acc", threads, KH * pl.KW * per_tap, dtype)
    cdef floating[:, ::1] ibuf = _workspace("planes_in", threads, pl.chan, dtype)
    dweight, dbias = np.empty(kernel_shape, dtype=dtype), np.empty(F)
    cdef floating[:, :, :, ::1] dw = dweight
    cdef double[::1] db = dbias
    with nogil, parallel(num_threads=threads):
        for f in prange(F, schedule="guided"):
            plane_weight_grad(&pl, &row_taps[0], a.shape[0], &a[0, f // m, 0, 0],
                              a.shape[1] * pl.in_plane, &dz[0, f, 0, 0],
                              dz.shape[1] * dz.shape[2] * dz.shape[3], &acc[threadid(), 0],
                              &ibuf[threadid(), 0], &dw[f, 0, 0, 0],
                              &db[f] if need_db else NULL)
    return dweight, (dbias.astype(dtype) if need_db else None)
