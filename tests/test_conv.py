"""The convolution kernels on every SIMD path the CPU has, against PyTorch: groups, padding
strings, odd channel counts, padded taps that are skipped, repeatable sums, the choice of path."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygrad_conv
import tinygrad_conv.reference as R
from tinygrad_conv import Tensor, _conv, _threads, nn
from tinygrad_conv.cnn_ops import conv2d
from tinygrad_conv.shapes import out_size

PATHS = _conv.supported_paths()
# PyTorch's note that 'same' with an even kernel copies the input: true, and not our concern
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@contextlib.contextmanager
def using_path(path: str):
    """Run the kernels on one SIMD path within the block, then go back to the one before."""
    before = _conv.get_simd_path()
    _conv.set_simd_path(path)
    try:
        yield path
    finally:
        _conv.set_simd_path(before)


@pytest.fixture(params=PATHS)
def simd_path(request):
    """Run the test on one SIMD path, then go back to the default one."""
    with using_path(request.param):
        yield request.param


def rel_err(ours: np.ndarray, expected: np.ndarray) -> float:
    """Largest absolute difference, relative to the largest expected magnitude."""
    assert ours.shape == expected.shape, (ours.shape, expected.shape)
    scale = max(float(np.abs(expected).max(initial=0.0)), 1e-30)
    return float(np.abs(ours.astype(np.float64) - expected).max(initial=0.0)) / scale


def torch_conv(x, w, b, grad_out, stride, padding, dilation, groups, dtype=torch.float64):
    """PyTorch's Z, dL/dA, dL/dW, dL/db (as float64 arrays) for the given arrays."""
    tx, tw = (torch.tensor(a, dtype=dtype, requires_grad=True) for a in (x, w))
    tb = None if b is None else torch.tensor(b, dtype=dtype, requires_grad=True)
    z = torch.nn.functional.conv2d(tx, tw, tb, stride, padding, dilation, groups)
    z.backward(torch.tensor(grad_out, dtype=dtype))
    grads = [t.grad.numpy().astype(np.float64) for t in (tx, tw)]
    return [z.detach().numpy().astype(np.float64), *grads,
            None if b is None else tb.grad.numpy().astype(np.float64)]


@st.composite
def conv_cases(draw):
    """(x shape, w shape, stride, padding, dilation, groups) that PyTorch accepts: any groups
    (depthwise too), channel counts that are not multiples of a vector, 'same' and 'valid',
    kernels as large as the padded input, 1x1 images, empty batches."""
    kind = draw(st.sampled_from(["plain", "plain", "grouped", "depthwise"]))
    groups = {"plain": 1, "grouped": draw(st.integers(2, 3)), "depthwise": 0}[kind]
    if kind == "depthwise":
        groups = c = f = draw(st.integers(1, 19))
    else:
        c, f = groups * draw(st.integers(1, 7)), groups * draw(st.integers(1, 21))
    n = draw(st.integers(0, 3))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = draw(st.one_of(st.just("same"), st.just("valid"),
                             st.tuples(st.integers(0, 3), st.integers(0, 3))))
    stride = (1, 1) if padding == "same" else (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    pads = (0, 0) if isinstance(padding, str) else padding
    extent = (dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1)
    h = max(1, extent[0] - 2 * pads[0]) + draw(st.integers(0, 5))
    w = max(1, extent[1] - 2 * pads[1]) + draw(st.integers(0, 5))
    if padding == "valid":
        h, w = h + extent[0] - 1, w + extent[1] - 1
    return (n, c, h, w), (f, c // groups, kh, kw), stride, padding, dilation, groups


def conv_arrays(case, dtype, seed):
    x_shape, w_shape, stride, padding, dilation, groups = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    z = torch.nn.functional.conv2d(torch.tensor(x), torch.tensor(w), None, stride, padding,
                                   dilation, groups)
    g = rng.standard_normal(tuple(z.shape)).astype(dtype)
    return x, w, b, g


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@settings(max_examples=40, deadline=None)
@given(case=conv_cases(), seed=st.integers(0, 2**32 - 1))
def test_conv2d_matches_pytorch_on_every_simd_path(path, dtype, case, seed):
    assert_conv2d_matches_pytorch(path, dtype, case, seed)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", [
    ((2, 3, 5, 40), (3, 1, 3, 3), (1, 1), (1, 20), (1, 9), 3),     # padding wider than a vector
    ((1, 2, 4, 17), (4, 1, 2, 16), (2, 1), (0, 15), (1, 1), 2),    # the widest kernel a band takes
    ((1, 2, 4, 20), (2, 1, 1, 17), (1, 1), (0, 8), (1, 1), 2),     # one wider: plane_task
])
def test_depthwise_bands_edges_match_pytorch_on_every_simd_path(path, dtype, case):
    # tgc_band masks the vectors at a row's edges; padding wider than a vector masks the ones
    # between them too (each alone), and a kernel wider than a band's masks goes to plane_task
    assert_conv2d_matches_pytorch(path, dtype, case, seed=5)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", [
    ((2, 4, 9, 40), (4, 1, 3, 3), (1, 1), (1, 1), (1, 1), 4),
    ((1, 3, 12, 37), (6, 1, 5, 3), (2, 1), (2, 0), (1, 2), 3),      # row stride, multiplier 2
    ((2, 2, 7, 64), (2, 1, 3, 7), (1, 1), (3, 3), (2, 1), 2),
])
def test_depthwise_bands_give_plane_tasks_bits(simd_path, dtype, case):
    # tgc_band sums each output's real terms in plane_task's order, its masked lanes adding
    # nothing: the two ways give the very same bits (Z, and dL/dA at stride 1)
    x, w, b, g = conv_arrays(case, dtype, seed=9)
    x_shape, w_shape, stride, padding, dilation, groups = case
    assert _conv.ways(x_shape, w_shape, stride, padding, dilation, groups, dtype)["Z"] == "bands"
    runs = []
    try:
        for bands in (True, False):
            _conv.use_bands(bands)
            runs.append([_conv.conv2d_forward(x, w, b, stride, padding, dilation, groups),
                         _conv.conv2d_backward(x, w, g, stride, padding, dilation, True, False,
                                               False, groups)[0]])
    finally:
        _conv.use_bands(True)
    for name, with_bands, without in zip(["Z", "dL/dA"], *runs):
        assert with_bands.tobytes() == without.tobytes(), name


# first layers: a reduction of at most 32 terms, no column stride (strips_fit)
STRIP_CASES = [
    ((3, 1, 28, 28), (32, 1, 3, 3), (1, 1), (0, 0), (1, 1), 1),     # c1: rows of 26
    ((2, 3, 9, 40), (13, 3, 3, 3), (2, 1), (1, 1), (1, 1), 1),      # RGB, row stride, 13 filters
    ((2, 1, 6, 7), (5, 1, 5, 5), (1, 1), (2, 3), (1, 1), 1),        # rows narrower than a vector
    ((1, 2, 7, 50), (6, 1, 3, 3), (1, 1), (2, 20), (2, 1), 2),      # padding wider than a vector
    ((2, 1, 10, 33), (9, 1, 2, 16), (1, 1), (0, 7), (1, 2), 1),     # the widest kernel strips take
    ((1, 4, 6, 24), (8, 2, 1, 1), (1, 1), (0, 0), (1, 1), 2),       # 1x1, two groups
]


def strips_take(path, dtype, case):
    """Whether conv2d's forward goes strip by strip on `path` for this case (strips_fit)."""
    x_shape, w_shape, stride, padding, dilation, _ = case
    out_w = out_size(x_shape[3], w_shape[3], stride[1], padding[1], dilation[1])
    cols = _conv.forward_axis(out_w, x_shape[3], w_shape[3], stride[1], padding[1], dilation[1])
    with using_path(path):
        lanes = _conv.vector_lanes(dtype)
    return _conv.strips_fit(w_shape[1], w_shape[2], cols, _conv.PATHS[path], lanes)


@pytest.mark.parametrize("path, dtype, case", [
    (path, dtype, case) for path in PATHS for dtype in (np.float64, np.float32)
    for case in STRIP_CASES if strips_take(path, dtype, case)])
def test_strips_give_the_tiles_bits(path, dtype, case):
    # tgc_strip sums each output's real terms in the tiles' order, from zero, then adds the
    # bias as unstage does: the two ways give the very same bits (on the paths that take
    # strips: AVX-512 all these cases, AVX2 and portable those where no lane is masked)
    x, w, b, _ = conv_arrays(case, dtype, seed=11)
    x_shape, w_shape, stride, padding, dilation, groups = case
    runs = []
    try:
        with using_path(path):
            way = _conv.ways(x_shape, w_shape, stride, padding, dilation, groups, dtype)["Z"]
            assert way.startswith("strips"), way       # (else both runs would be the tiles)
            for strips in (True, False):
                _conv.use_strips(strips)
                runs.append([_conv.conv2d_forward(x, w, b, stride, padding, dilation, groups),
                             _conv.conv2d_forward(x, w, None, stride, padding, dilation, groups)])
    finally:
        _conv.use_strips(True)
    for name, with_strips, without in zip(["Z + b", "Z"], *runs):
        assert with_strips.tobytes() == without.tobytes(), name


@pytest.mark.parametrize("x_shape, padding", [((2, 1, 9, 37), 1), ((2, 3, 12, 20), 2)])
def test_an_inf_gradient_reaches_only_the_real_taps_of_dw(simd_path, x_shape, padding):
    # dL/dW of a first layer (strips on AVX-512: Z' read in place, masked lanes): an Inf in Z'
    # at a border output meets padding through some taps; those taps must stay finite, not
    # 0 * Inf = NaN, as real_taps_conv sums them
    rng = np.random.default_rng(4)
    c = x_shape[1]
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal((5, c, 3, 3)).astype(np.float32)
    z = _conv.conv2d_forward(x, w, None, (1, 1), (padding, padding), (1, 1))
    g = rng.standard_normal(z.shape).astype(np.float32)
    g[0, 1, 0, 0], g[1, 3, -1, -1] = np.inf, -np.inf       # corners: their outer taps are padding
    dw = _conv.conv2d_backward(x, w, g, (1, 1), (padding, padding), (1, 1), False, True,
                               False)[1]
    for k in range(c):      # real_taps_conv takes one input channel (a group) at a time
        with np.errstate(invalid="ignore"):
            _, _, want = real_taps_conv(x[:, k:k + 1], w[:, k:k + 1], g, 1, padding, 1, 1)
        got = dw[:, k:k + 1]
        assert np.array_equal(np.isnan(got), np.isnan(want)), k
        assert np.array_equal(np.isinf(got), np.isinf(want)), k
        finite = np.isfinite(want)
        assert rel_err(got[finite], want[finite]) < 1e-4
    assert np.isfinite(dw[1, :, 0, 0]).all()     # a corner tap the Inf meets only as padding


def test_first_layers_take_strips_for_dw_on_avx512():
    if "avx512" not in PATHS:
        pytest.skip("this CPU has no AVX-512")
    with using_path("avx512"):
        c1 = _conv.ways((64, 1, 28, 28), (32, 1, 3, 3), (1, 1), (0, 0), (1, 1), 1, np.float32)
        rgb = _conv.ways((64, 3, 32, 32), (32, 3, 3, 3), (1, 1), (1, 1), (1, 1), 1, np.float32)
        five = _conv.ways((64, 1, 28, 28), (6, 1, 5, 5), (1, 1), (2, 2), (1, 1), 1, np.float32)
        c2 = _conv.ways((64, 32, 26, 26), (64, 32, 3, 3), (1, 1), (0, 0), (1, 1), 1, np.float32)
    assert c1["dL/dW"] == rgb["dL/dW"] == "strips 2 filters x 3 x 3 taps"
    assert five["dL/dW"].startswith("tiles") and c2["dL/dW"].startswith("tiles")


def test_ways_names_how_each_gradient_is_computed():
    # what bench_kernels prints beside its rows, on the portable path (on every machine):
    # 4-wide vectors, tiles of (8, 6, 4, 3) pixels for 1..4 vectors; c1's dL/dA sums 32
    # filters, more than 4 vectors hold, so it does not fold them into the lanes
    with using_path("portable"):
        c1 = _conv.ways((64, 1, 28, 28), (32, 1, 3, 3), (1, 1), (0, 0), (1, 1), 1, np.float32)
        c4 = _conv.ways((8, 64, 56, 56), (64, 64, 3, 3), (1, 1), (1, 1), (1, 1), 1, np.float32)
        dw = _conv.ways((8, 64, 56, 56), (64, 1, 3, 3), (1, 1), (1, 1), (1, 1), 64, np.float32)
        dw2 = _conv.ways((8, 64, 56, 56), (64, 1, 3, 3), (2, 2), (1, 1), (1, 1), 64, np.float32)
    assert c1 == {"Z": "strips 4 filters x 2 vectors", "dL/dA": "tiles 1x8",
                  "dL/dW": "tiles 4x3"}
    assert c4 == {"Z": "tiles 4x3", "dL/dA": "tiles 4x3", "dL/dW": "tiles 4x3"}
    assert dw == {"Z": "bands", "dL/dA": "bands", "dL/dW": "planes"}
    assert dw2 == {"Z": "planes", "dL/dA": "planes", "dL/dW": "planes"}


def test_strips_are_taken_where_their_masks_are_cheap():
    c1 = ((3, 1, 28, 28), (32, 1, 3, 3), (1, 1), (0, 0), (1, 1), 1)
    padded = ((3, 3, 28, 28), (32, 3, 3, 3), (1, 1), (1, 1), (1, 1), 1)
    long = ((3, 4, 28, 28), (32, 4, 3, 3), (1, 1), (0, 0), (1, 1), 1)      # 36 terms
    strided = ((3, 1, 28, 28), (32, 1, 3, 3), (1, 2), (0, 0), (1, 1), 1)
    for path in PATHS:
        assert strips_take(path, np.float32, c1), path
        assert strips_take(path, np.float32, padded) == (path == "avx512"), path
        assert not strips_take(path, np.float32, long) and not strips_take(
            path, np.float32, strided), path


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", STRIP_CASES)
def test_strips_match_pytorch_on_every_simd_path(path, dtype, case):
    assert_conv2d_matches_pytorch(path, dtype, case, seed=13)


def assert_conv2d_matches_pytorch(path, dtype, case, seed):
    """Z, dL/dA, dL/dW, dL/db of conv2d (+ backward) on `path` against PyTorch's float64."""
    _, _, stride, padding, dilation, groups = case
    x, w, b, g = conv_arrays(case, dtype, seed)
    expected = torch_conv(x, w, b, g, stride, padding, dilation, groups)
    tx, tw, tb = (Tensor(a, requires_grad=True, dtype=dtype) for a in (x, w, b))
    with using_path(path):
        z = conv2d(tx, tw, tb, stride=stride, padding=padding, dilation=dilation,
                   groups=groups)
        z.backward(g)
    tol = 1e-10 if dtype == np.float64 else 1e-4
    for name, got, want in zip(["Z", "dL/dA", "dL/dW", "dL/db"],
                               [z.data, tx.grad, tw.grad, tb.grad], expected):
        assert got.dtype == dtype, name
        assert rel_err(got, want) < tol, (path, name, rel_err(got, want))


@st.composite
def one_channel_group_cases(draw):
    """Shapes whose groups have one input channel: depthwise with a channel multiplier
    (F = m * C), or a single-channel input (C = 1: dL/dA sums over the filters only), with
    group counts around a vector's lanes (4, 8, 16), strides, paddings and dilations."""
    if draw(st.booleans()):
        groups = c = draw(st.sampled_from([1, 3, 4, 7, 8, 15, 16, 17, 33]))
        f = c * draw(st.integers(1, 3))
    else:
        groups, c, f = 1, 1, draw(st.integers(1, 40))
    n = draw(st.integers(1, 3))
    (kh, kw), stride, padding, dilation, (h, w) = draw_window(draw, 4, 2, 3)
    h, w = h + draw(st.integers(0, 9)), w + draw(st.integers(0, 9))
    return (n, c, h, w), (f, 1, kh, kw), stride, padding, dilation, groups


def draw_window(draw, max_k, max_dilation, max_padding):
    """Kernel size, stride (1-3), padding and dilation pairs, and the smallest (H, W) with at
    least one output."""
    kh, kw = draw(st.integers(1, max_k)), draw(st.integers(1, max_k))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, max_dilation)), draw(st.integers(1, max_dilation)))
    padding = (draw(st.integers(0, max_padding)), draw(st.integers(0, max_padding)))
    smallest = (max(1, dilation[0] * (kh - 1) + 1 - 2 * padding[0]),
                max(1, dilation[1] * (kw - 1) + 1 - 2 * padding[1]))
    return (kh, kw), stride, padding, dilation, smallest


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@settings(max_examples=25, deadline=None)
@given(case=one_channel_group_cases(), seed=st.integers(0, 2**32 - 1))
def test_one_channel_groups_match_pytorch_on_every_simd_path(path, dtype, case, seed):
    # depthwise and single-channel convolutions put the groups (or the reduction) in the
    # vectors' lanes instead of the filters: the same Z, dL/dA, dL/dW, dL/db as PyTorch
    assert_conv2d_matches_pytorch(path, dtype, case, seed)


@st.composite
def wide_depthwise_cases(draw):
    """Depthwise shapes (multipliers 1-3) whose output rows are a vector or more wide on every
    path: each plane's pixels go in the lanes (kernels that sum over planes, tgc_terms and
    tgc_dot), strided rows dealt into phases and woven back."""
    groups = c = draw(st.sampled_from([1, 2, 3, 5, 8, 17]))
    f = c * draw(st.integers(1, 3))
    (kh, kw), stride, padding, dilation, (h, w) = draw_window(draw, 5, 3, 4)
    h, w = h + draw(st.integers(0, 12)), w + 17 * stride[1] + draw(st.integers(0, 40))
    return (draw(st.integers(1, 3)), c, h, w), (f, 1, kh, kw), stride, padding, dilation, groups


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@settings(max_examples=25, deadline=None)
@given(case=wide_depthwise_cases(), seed=st.integers(0, 2**32 - 1))
def test_wide_depthwise_planes_match_pytorch_on_every_simd_path(path, dtype, case, seed):
    assert_conv2d_matches_pytorch(path, dtype, case, seed)


@settings(max_examples=40, deadline=None)
@given(case=conv_cases(), seed=st.integers(0, 2**32 - 1))
def test_grouped_reference_matches_pytorch(case, seed):
    _, _, stride, padding, dilation, groups = case
    x, w, b, g = conv_arrays(case, np.float64, seed)
    expected = torch_conv(x, w, b, g, stride, padding, dilation, groups)
    ours = tinygrad_conv._args.conv_pads("conv2d", padding, stride, (
        dilation[0] * (w.shape[2] - 1) + 1, dilation[1] * (w.shape[3] - 1) + 1))
    z = R.conv2d_forward(x, w, b, stride, ours, dilation, groups)
    grads = R.conv2d_backward(x, w, g, stride, ours, dilation, groups=groups)
    for got, want in zip([z, *grads], expected):
        assert rel_err(got, want) < 1e-10


@pytest.mark.parametrize("shape", [(3, 1, 28, 28, 32, 3, 1, 0), (2, 32, 26, 26, 64, 3, 1, 0),
                                   (3, 16, 14, 14, 32, 5, 2, 2), (1, 64, 56, 56, 64, 3, 1, 1),
                                   (2, 40, 9, 9, 80, 3, 1, 1), (2, 17, 8, 8, 33, 1, 1, 0),
                                   (2, 5, 1, 1, 7, 3, 1, 1), (3, 4, 1, 1, 6, 1, 1, 0)])
def test_conv2d_layer_shapes_match_pytorch_on_every_simd_path(simd_path, shape):
    # the benchmark's layers (several row bands, slabs and channel blocks), channel counts
    # that leave part of a vector empty, and 1x1 images
    n, c, h, w, f, k, s, p = shape
    case = ((n, c, h, w), (f, c, k, k), (s, s), (p, p), (1, 1), 1)
    x, wt, b, g = conv_arrays(case, np.float32, seed=c + f)
    expected = torch_conv(x, wt, b, g, (s, s), (p, p), (1, 1), 1)
    z = _conv.conv2d_forward(x, wt, b, (s, s), (p, p), (1, 1))
    grads = _conv.conv2d_backward(x, wt, g, (s, s), (p, p), (1, 1), True, True, True)
    for got, want in zip([z, *grads], expected):
        assert got.dtype == np.float32
        assert rel_err(got, want) < 1e-4


@pytest.mark.parametrize("l2", [4096, 64 * 1024])
def test_blocking_for_a_small_cache_gives_the_same_numbers(monkeypatch, simd_path, l2):
    # the blocks follow the cache sizes: a tiny L2 cuts the reduction into chunks, the outputs
    # into one-row bands and dL/dW into many slabs; the results must not change
    monkeypatch.setattr(_conv, "cache_sizes", lambda: {"L1d": 4096, "L2": l2, "L3": 1 << 20})
    for case in [((2, 40, 7, 6), (20, 40, 3, 3), (1, 1), (1, 1), (1, 1), 1),
                 ((3, 12, 9, 8), (18, 4, 2, 3), (2, 1), (1, 2), (2, 1), 3)]:
        x, w, b, g = conv_arrays(case, np.float64, seed=5)
        _, _, stride, padding, dilation, groups = case
        expected = torch_conv(x, w, b, g, stride, padding, dilation, groups)
        ours = [_conv.conv2d_forward(x, w, b, stride, padding, dilation, groups),
                *_conv.conv2d_backward(x, w, g, stride, padding, dilation, True, True, True,
                                       groups)]
        for name, got, want in zip(["Z", "dL/dA", "dL/dW", "dL/db"], ours, expected):
            assert rel_err(got, want) < 1e-12, (name, l2)


@pytest.mark.parametrize("case", [
    ((9, 5, 13, 11), (20, 5, 3, 3), (2, 1), (1, 1), (1, 2), 1),
    ((33, 1, 12, 12), (32, 1, 3, 3), (1, 1), (0, 0), (1, 1), 1),
    ((5, 24, 10, 9), (48, 1, 3, 3), (2, 2), (1, 1), (1, 1), 24),
    ((3, 6, 9, 37), (12, 1, 3, 3), (2, 2), (1, 1), (1, 1), 6),      # depthwise planes
    ((4, 5, 11, 40), (5, 1, 3, 5), (1, 1), (2, 1), (1, 2), 5),
])
def test_the_same_bits_whatever_the_cache_sizes_and_the_threads(monkeypatch, simd_path, case):
    # a CPU with another L2 (or another thread count) cuts the work into other slabs and bands;
    # the order of every sum depends on the shapes and the SIMD path only, so the bits agree
    x, w, b, g = conv_arrays(case, np.float32, seed=11)
    _, _, stride, padding, dilation, groups = case
    before = _threads.get_num_threads()
    runs = []
    try:
        for l2, threads in [(1 << 20, 2), (4096, 1), (64 * 1024, 3), (32 << 20, 2)]:
            monkeypatch.setattr(_conv, "cache_sizes",
                                lambda l2=l2: {"L1d": 4096, "L2": l2, "L3": 1 << 20})
            _threads.set_num_threads(threads)
            runs.append([_conv.conv2d_forward(x, w, b, stride, padding, dilation, groups),
                         *_conv.conv2d_backward(x, w, g, stride, padding, dilation, True, True,
                                                True, groups)])
    finally:
        _threads.set_num_threads(before)
    for run in runs[1:]:
        for name, first, again in zip(["Z", "dL/dA", "dL/dW", "dL/db"], runs[0], run):
            assert first.tobytes() == again.tobytes(), name


@pytest.mark.parametrize("depthwise", [False, True])
def test_every_tile_shape_in_the_paths_table_computes_its_sums(simd_path, depthwise):
    # one table (microkernels.h) makes both the tiles' switch cases and the sizes the plans ask
    # for; a tile of every size, 1 to the most, for every vector count: one output row of that
    # many pixels, as many filters (or depthwise groups) as the vectors hold (depthwise: one
    # column, which keeps the groups in the lanes: a row that wide would put its pixels there)
    shapes, max_pixels = _conv.tile_shapes(simd_path)
    lanes = _conv.vector_lanes(np.float64)
    rng = np.random.default_rng(4)
    for vectors, most in shapes:
        assert 1 <= most <= max_pixels
        f = vectors * lanes
        for width in range(1, most + 1):
            x = rng.standard_normal((1, f, width, 1) if depthwise else (1, 3, 1, width))
            w = rng.standard_normal((f, 1 if depthwise else 3, 1, 1))
            groups = f if depthwise else 1
            z = _conv.conv2d_forward(x, w, None, (1, 1), (0, 0), (1, 1), groups)
            expected = torch.nn.functional.conv2d(torch.tensor(x), torch.tensor(w),
                                                  groups=groups).numpy()
            assert rel_err(z, expected) < 1e-12, (vectors, width)


def test_conv2d_padding_is_never_materialized():
    # a padding of a million: only the middle window sees the image, the rest see only padding
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8))
    w = np.random.default_rng(2).standard_normal((4, 3, 3, 3))
    z = conv2d(Tensor(x, dtype=np.float64), Tensor(w, dtype=np.float64), padding=10**6,
               stride=10**6).data
    expected = np.zeros((2, 4, 3, 3))
    expected[:, :, 1, 1] = np.einsum("nchw,fchw->nf", x[:, :, :3, :3], w)
    assert np.allclose(z, expected, rtol=1e-12, atol=1e-12)


def test_padded_taps_are_skipped_so_nan_and_inf_weights_stay_where_pytorch_puts_them(simd_path):
    # PyTorch's float32 kernels skip padded taps (its float64 forward multiplies them: see the
    # closing note); an Inf weight times padding must not turn border outputs into NaN
    rng = np.random.default_rng(7)
    for stride, pad, dil in [(1, 1, 1), (2, 2, 1), (1, 2, 2), (3, 1, 1)]:
        x = rng.standard_normal((2, 3, 7, 6)).astype(np.float32)
        w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
        w[1, 2, 0, 0], w[2, 0, 2, 1] = np.inf, np.nan
        z = torch.nn.functional.conv2d(torch.tensor(x), torch.tensor(w), None, stride, pad, dil)
        g = rng.standard_normal(tuple(z.shape)).astype(np.float32)
        expected = torch_conv(x, w, None, g, stride, pad, dil, 1, dtype=torch.float32)
        s, p, d = (stride, stride), (pad, pad), (dil, dil)
        ours = [_conv.conv2d_forward(x, w, None, s, p, d),
                *_conv.conv2d_backward(x, w, g, s, p, d, True, True, False)[:2]]
        for name, got, want in zip(["Z", "dL/dA", "dL/dW"], ours, expected):
            assert np.array_equal(np.isnan(got), np.isnan(want)), (name, stride, pad, dil)
            assert np.array_equal(np.isinf(got), np.isinf(want)), (name, stride, pad, dil)
            finite = np.isfinite(want)
            assert rel_err(got[finite], want[finite]) < 1e-4


def real_taps_conv(x, w, g, stride, pad, dil, groups):
    """Z, dL/dA, dL/dW (float64) summing real taps only: a tap that meets padding (or a zero the
    stride put into Z') is never multiplied, the rule the kernels follow. Only the NaN/Inf
    pattern is compared: it does not depend on the order of the sums."""
    (n, _, h, wd), (f, _, kh, kw), (oh, ow) = x.shape, w.shape, g.shape[2:]
    x, w, g = (a.astype(np.float64) for a in (x, w, g))
    z, dx, dw = np.zeros((n, f, oh, ow)), np.zeros(x.shape), np.zeros(w.shape)
    chan = np.arange(f) // (f // groups)            # one input channel a group here
    for i in range(kh):
        rows = np.arange(oh) * stride - pad + i * dil
        ry = (rows >= 0) & (rows < h)
        for j in range(kw):
            cols = np.arange(ow) * stride - pad + j * dil
            cx = (cols >= 0) & (cols < wd)
            a = x[:, chan][:, :, rows[ry]][:, :, :, cols[cx]]         # (n, f, real y, real x)
            gz = g[:, :, ry][:, :, :, cx]
            z[:, :, np.flatnonzero(ry)[:, None], np.flatnonzero(cx)] += w[None, :, 0, i, j,
                                                                           None, None] * a
            dw[:, 0, i, j] += np.einsum("nfyx,nfyx->f", gz, a)
            for k in range(f):
                dx[:, chan[k], rows[ry][:, None], cols[cx]] += w[k, 0, i, j] * gz[:, k]
    return z, dx, dw


# (x shape, groups, multiplier): depthwise with the groups in the lanes (narrow rows: staged)
# or each plane's pixels in the lanes (wide rows), and a single-channel input (C = 1: dL/dA
# sums its filters in the lanes)
@pytest.mark.parametrize("x_shape, groups, mult", [
    ((2, 5, 7, 6), 5, 1), ((2, 4, 9, 40), 4, 2), ((2, 1, 7, 6), 1, 6), ((2, 1, 9, 37), 1, 20)])
def test_nan_and_inf_stay_where_their_real_taps_put_them_with_lanes(simd_path, x_shape,
                                                                    groups, mult):
    # the groups, the pixels or the reduction in the lanes: an Inf or NaN (weight or input)
    # reaches what its real taps reach, padding never multiplied, as the dense kernels above.
    # (PyTorch's own depthwise kernel multiplies padding for some shapes, NaN at the borders
    # where its dense float32 kernel has none, so the rule is checked directly.)
    rng = np.random.default_rng(8)
    f = x_shape[1] * mult
    for stride, pad, dil in [(1, 1, 1), (2, 2, 1), (1, 2, 2), (3, 1, 1), (2, 1, 1)]:
        x = rng.standard_normal(x_shape).astype(np.float32)
        w = rng.standard_normal((f, 1, 3, 3)).astype(np.float32)
        w[0, 0, 0, 0], w[f - 1, 0, 2, 1] = np.inf, np.nan
        x[0, 0, 1, 2] = np.inf
        z = torch.nn.functional.conv2d(torch.tensor(x), torch.tensor(w), None, stride, pad,
                                       dil, groups)
        g = rng.standard_normal(tuple(z.shape)).astype(np.float32)
        with np.errstate(invalid="ignore"):         # (Inf - Inf: the NaNs expected)
            expected = real_taps_conv(x, w, g, stride, pad, dil, groups)
        s, p, d = (stride, stride), (pad, pad), (dil, dil)
        ours = [_conv.conv2d_forward(x, w, None, s, p, d, groups),
                *_conv.conv2d_backward(x, w, g, s, p, d, True, True, False, groups)[:2]]
        for name, got, want in zip(["Z", "dL/dA", "dL/dW"], ours, expected):
            assert np.array_equal(np.isnan(got), np.isnan(want)), (name, stride, pad, dil)
            assert np.array_equal(np.isinf(got), np.isinf(want)), (name, stride, pad, dil)
            finite = np.isfinite(want)
            assert rel_err(got[finite], want[finite]) < 1e-4


@pytest.mark.parametrize("case", [
    ((9, 5, 13, 11), (20, 5, 3, 3), (2, 1), (1, 1), (1, 2), 1),
    ((7, 6, 10, 9), (9, 2, 3, 2), (1, 1), (1, 0), (1, 1), 3),
    ((33, 1, 12, 12), (32, 1, 3, 3), (1, 1), (0, 0), (1, 1), 1),
    ((3, 6, 9, 37), (12, 1, 3, 3), (2, 2), (1, 1), (1, 1), 6),
    ((3, 6, 9, 37), (12, 1, 3, 3), (1, 1), (1, 1), (1, 1), 6),      # depthwise bands
])
def test_conv2d_is_bit_identical_for_any_thread_count(simd_path, case):
    x, w, b, g = conv_arrays(case, np.float32, seed=3)
    _, _, stride, padding, dilation, groups = case
    before = _threads.get_num_threads()
    runs = []
    try:
        for threads in (1, 2, 3, 4, 2):
            _threads.set_num_threads(threads)
            runs.append([_conv.conv2d_forward(x, w, b, stride, padding, dilation, groups),
                         *_conv.conv2d_backward(x, w, g, stride, padding, dilation, True, True,
                                                True, groups)])
    finally:
        _threads.set_num_threads(before)
    for run in runs[1:]:
        for name, first, again in zip(["Z", "dL/dA", "dL/dW", "dL/db"], runs[0], run):
            assert np.array_equal(first, again), name     # the very same bits


def test_tutorial_gradients_are_the_written_out_sums_on_every_simd_path(simd_path):
    # the tutorial's 3x3 input and 2x2 filter: dL/dW = Z' ⊛ A, dL/dA = W_180 ⊛ pad(Z', k-1)
    a = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)             # a1..a9
    w = np.array([[[[2.0, -3.0], [5.0, 7.0]]]])              # w1..w4
    z_grad = np.array([[[[0.25, -2.0], [3.0, 1.5]]]])        # z'1..z'4
    dx, dw, db = _conv.conv2d_backward(a, w, z_grad, (1, 1), (0, 0), (1, 1), True, True, True)
    (a1, a2, a3, a4, a5, a6, a7, a8, a9), (w1, w2, w3, w4) = a.ravel(), w.ravel()
    z1, z2, z3, z4 = z_grad.ravel()
    assert np.array_equal(dw[0, 0], [[z1 * a1 + z2 * a2 + z3 * a4 + z4 * a5,
                                      z1 * a2 + z2 * a3 + z3 * a5 + z4 * a6],
                                     [z1 * a4 + z2 * a5 + z3 * a7 + z4 * a8,
                                      z1 * a5 + z2 * a6 + z3 * a8 + z4 * a9]])
    assert np.array_equal(dx[0, 0], [[z1 * w1, z1 * w2 + z2 * w1, z2 * w2],
                                     [z1 * w3 + z3 * w1, z1 * w4 + z2 * w3 + z3 * w2 + z4 * w1,
                                      z2 * w4 + z4 * w2],
                                     [z3 * w3, z3 * w4 + z4 * w3, z4 * w4]])
    assert db[0] == z1 + z2 + z3 + z4


# ---------------------------------------------------------------------------------------------
# nn.Conv2d with groups and padding strings
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("groups, padding", [(1, "same"), (2, "valid"), (4, "same"), (8, 1)])
def test_nn_conv2d_groups_and_padding_match_torch_module(groups, padding):
    ours = nn.Conv2d(8, 16, (2, 3), padding=padding, groups=groups, dtype=np.float64)
    theirs = torch.nn.Conv2d(8, 16, (2, 3), padding=padding, groups=groups).double()
    assert ours.weight.shape == tuple(theirs.weight.shape)
    theirs.load_state_dict({k: torch.tensor(v) for k, v in ours.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((2, 8, 7, 9))
    tx = torch.tensor(x, requires_grad=True)
    ox = Tensor(x, requires_grad=True, dtype=np.float64)
    t_out, o_out = theirs(tx), ours(ox)
    assert rel_err(o_out.data, t_out.detach().numpy()) < 1e-12
    t_out.square().sum().backward()
    (o_out * o_out).sum().backward()
    assert rel_err(ox.grad, tx.grad.numpy()) < 1e-12
    assert rel_err(ours.weight.grad, theirs.weight.grad.numpy()) < 1e-12


# ---------------------------------------------------------------------------------------------
# Bad arguments: a ValueError or TypeError naming the op and the argument
# ---------------------------------------------------------------------------------------------

def t(*shape):
    return Tensor(np.zeros(shape, dtype=np.float32))


@pytest.mark.parametrize("call, error, words", [
    (lambda: conv2d(t(2, 6, 8, 8), t(4, 2, 3, 3), groups=4), ValueError,
     ["conv2d", "groups=4", "6 channels", "4 filters"]),
    (lambda: conv2d(t(2, 6, 8, 8), t(3, 3, 3, 3), groups=2), ValueError,
     ["conv2d", "groups=2", "3 filters"]),
    (lambda: conv2d(t(2, 6, 8, 8), t(4, 2, 3, 3), groups=2), ValueError,
     ["conv2d", "6 channels", "expects 4", "groups=2"]),
    (lambda: conv2d(t(2, 6, 8, 8), t(4, 6, 3, 3), groups=0), ValueError, ["conv2d", "groups"]),
    (lambda: conv2d(t(2, 6, 8, 8), t(4, 6, 3, 3), groups=1.0), TypeError, ["conv2d", "groups"]),
    (lambda: conv2d(t(2, 6, 8, 8), t(4, 6, 3, 3), groups=True), TypeError, ["conv2d", "groups"]),
    (lambda: conv2d(t(2, 6, 8, 8), t(4, 6, 3, 3), padding="full"), ValueError,
     ["conv2d", "padding", "'full'", "'same'"]),
    (lambda: conv2d(t(2, 6, 8, 8), t(4, 6, 3, 3), padding="same", stride=2), ValueError,
     ["conv2d", "padding='same'", "stride"]),
    (lambda: conv2d(t(2, 6, 2, 2), t(4, 6, 3, 3), padding="valid"), ValueError,
     ["conv2d", "larger than the padded input"]),
    (lambda: nn.Conv2d(6, 4, 3, groups=4), ValueError, ["Conv2d", "groups=4"]),
    (lambda: nn.Conv2d(6, 4, 3, padding="SAME"), ValueError, ["Conv2d", "padding", "'SAME'"]),
    (lambda: nn.Conv2d(6, 4, 3, padding="same", stride=(1, 2)), ValueError,
     ["Conv2d", "padding='same'", "stride"]),
])
def test_bad_conv_arguments_raise_clear_errors(call, error, words):
    with pytest.raises(error) as info:
        call()
    for word in words:
        assert word in str(info.value), (word, str(info.value))


# ---------------------------------------------------------------------------------------------
# Choosing the SIMD path; show_config
# ---------------------------------------------------------------------------------------------

def run_python(code: str, **env) -> subprocess.CompletedProcess:
    environ = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               **env}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=environ, timeout=120)


@pytest.mark.parametrize("path", PATHS)
def test_environment_variable_forces_a_simd_path(path):
    result = run_python("from tinygrad_conv import _conv; print(_conv.get_simd_path())",
                        TINYGRAD_CONV_SIMD=path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == path


def test_environment_variable_with_an_unknown_path_is_refused_clearly():
    result = run_python("import tinygrad_conv", TINYGRAD_CONV_SIMD="sse9")
    assert result.returncode != 0
    assert "TINYGRAD_CONV_SIMD" in result.stderr and "'sse9'" in result.stderr


def test_a_path_the_cpu_lacks_is_refused(monkeypatch):
    # pretend the CPU stops at the portable path: the wider ones must be refused, by name
    monkeypatch.setattr(_conv, "BEST_PATH", "portable")
    assert _conv.supported_paths() == ["portable"]
    for path in ("avx2", "avx512"):
        with pytest.raises(ValueError, match=f"cannot run the {path} path"):
            _conv.set_simd_path(path)


def test_set_simd_path_refuses_unknown_names():
    with pytest.raises(ValueError, match="set_simd_path.*'fast'"):
        _conv.set_simd_path("fast")


def test_show_config_reports_what_a_speed_report_needs(capsys):
    info = tinygrad_conv.show_config()
    out = capsys.readouterr().out
    for key in ("simd path", "threads", "openmp", "blas", "L1d", "L2", "compiler", "blocking"):
        assert key in out.lower() or key in out, (key, out)
    assert info["simd_path"] == _conv.get_simd_path()
    assert info["threads"] == _threads.get_num_threads()
    assert info["cache_bytes"]["L2"] > 0
    assert info["blocking"]["slab_bytes"] == info["cache_bytes"]["L2"] // 2
