"""Differential fuzzing of conv2d and max_pool2d: thousands of random calls, valid and not.

The calls run in a subprocess (this file run as a script), so a crash of the interpreter (a
segfault in a kernel) fails the test instead of killing pytest. Every call must either raise
ValueError/TypeError or return what PyTorch returns, forward and gradients alike.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

from helpers import assert_close, run_python

# argument values to draw from: good ones, and every kind of bad one
INTS = [-1, 0, 0, 1, 1, 2, 2, 3, 4]
ODD = [None, 1.0, 2.5, True, False, "2", (), (1,), (1, 2, 3), [2, 1], (np.int64(2), 1),
       (1, 1.0), (1, -1), 2**31, 2**63, -(2**40)]


def draw_int_or_pair(rng: np.random.Generator, wild: bool, low: int):
    """An int or a pair; in a wild case sometimes anything at all, else values >= low."""
    if wild and rng.random() < 0.15:
        return ODD[rng.integers(len(ODD))]
    values = INTS if wild else [v for v in INTS if v >= low]
    if rng.random() < 0.5:
        return int(rng.choice(values))
    return (int(rng.choice(values)), int(rng.choice(values)))


def draw_array(rng: np.random.Generator, shape, wild: bool, dtype, nan: bool = True):
    x = rng.standard_normal(shape)
    r = rng.random() if wild else 1.0
    x = x.astype(np.int64 if r < 0.1 else np.float16 if r < 0.15 else
                 np.float64 if r < 0.3 else dtype)
    if x.ndim >= 1 and x.shape[-1] > 1 and rng.random() < 0.15:
        x = np.repeat(x, 2, axis=-1)[..., ::2]          # a non-contiguous view, same values
    if nan and x.dtype.kind == "f" and x.size and rng.random() < 0.05:
        x.flat[rng.integers(x.size)] = np.nan
    return x


def draw_shape(rng: np.random.Generator, base, wild: bool):
    shape = list(base)
    if wild and rng.random() < 0.2:                       # wrong ndim
        shape = shape[:-1] if rng.random() < 0.5 else shape + [2]
    if wild and shape and rng.random() < 0.2:             # an empty or odd dimension
        shape[rng.integers(len(shape))] = int(rng.integers(0, 3))
    return tuple(shape)


def tensor(array, requires_grad):
    from tinygrad_conv.tensor import Tensor

    t = Tensor(np.zeros(1), requires_grad=bool(requires_grad and array.dtype.kind == "f"))
    t.data = array                                        # keep the dtype and strides drawn
    return t


def one_case(rng: np.random.Generator, torch):
    """Draw a call, run ours and PyTorch's; return 'ok' or 'refused', raise on a mismatch."""
    from tinygrad_conv.cnn_ops import conv2d, max_pool2d

    n, c, h, w = (int(v) for v in rng.integers(1, 7, 4))
    is_conv = rng.random() < 0.6
    wild = rng.random() < 0.5                    # a wild case may be malformed in any way
    dtype = np.float32 if rng.random() < 0.6 else np.float64
    arrays = [draw_array(rng, draw_shape(rng, (n, c, h, w), wild), wild, dtype)]
    if is_conv:
        f, kh, kw = (int(v) for v in rng.integers(1, 5, 3))
        # NOTE: no NaN in weights: where a window hangs over the padding we compute 0 * NaN = NaN
        # (IEEE), while PyTorch's CPU backends skip the padded taps; no model has NaN weights
        arrays.append(draw_array(rng, draw_shape(rng, (f, c, kh, kw), wild), wild, dtype,
                                  nan=False))
        if rng.random() < 0.5:
            arrays.append(draw_array(rng, draw_shape(rng, (f,), wild), wild, dtype, nan=False))
        params = {"stride": draw_int_or_pair(rng, wild, 1),
                  "padding": draw_int_or_pair(rng, wild, 0),
                  "dilation": draw_int_or_pair(rng, wild, 1)}
    else:
        params = {"kernel_size": draw_int_or_pair(rng, wild, 1),
                  "padding": draw_int_or_pair(rng, wild, 0)}
        if rng.random() < 0.7:
            params["stride"] = draw_int_or_pair(rng, wild, 1)
    grads = [rng.random() < 0.7 for _ in arrays]
    ours_in = [tensor(a, g) for a, g in zip(arrays, grads)]
    op = "conv2d" if is_conv else "max_pool2d"
    try:
        out = conv2d(*ours_in, **params) if is_conv else max_pool2d(*ours_in, **params)
    except (ValueError, TypeError) as e:
        # a refusal of ours names the op; a numpy error leaking through would not
        assert str(e).startswith(f"{op}: "), f"{op} raised an error that does not name it: {e}"
        return "refused"

    # we accepted the call, so PyTorch must accept it and agree
    theirs_in = [torch.tensor(np.ascontiguousarray(a), requires_grad=t.requires_grad)
                 for a, t in zip(arrays, ours_in)]
    if is_conv:
        expected = torch.nn.functional.conv2d(*theirs_in, **params)
    else:
        expected = torch.nn.functional.max_pool2d(*theirs_in, **params)
    tol = 1e-4 if out.dtype == np.float32 else 1e-10
    assert out.dtype == arrays[0].dtype
    assert_close(out.data, expected, tol, "forward differs")
    if out.requires_grad and out.data.size:
        g = rng.standard_normal(out.shape).astype(out.dtype)
        out.backward(g)
        expected.backward(torch.tensor(g))
        for ours_t, theirs_t in zip(ours_in, theirs_in):
            if ours_t.requires_grad:
                assert_close(ours_t.grad, theirs_t.grad, tol, "gradient differs")
    return "ok"


def run(cases: int, seed: int) -> None:
    import torch

    torch.set_num_threads(1)
    rng = np.random.default_rng(seed)
    counts = {"ok": 0, "refused": 0}
    for i in range(cases):
        state = rng.bit_generator.state
        try:
            counts[one_case(rng, torch)] += 1
        except Exception:
            print(f"case {i} failed (rng state {state})", file=sys.stderr)
            raise
    print(f"fuzz ok: {counts}")
    # a fuzz run that only ever hits one outcome is testing nothing
    assert counts["ok"] > cases // 10 and counts["refused"] > cases // 10, counts


def run_in_subprocess(cases: int, seed: int, timeout: float) -> str:
    return run_python([__file__, str(cases), str(seed)], timeout=timeout).stdout


def test_fuzz_conv_and_pool_only_correct_results_or_clear_errors():
    assert "fuzz ok" in run_in_subprocess(cases=12000, seed=20240607, timeout=240)


@pytest.mark.fuzz
def test_fuzz_long_run():
    for seed in range(5):
        assert "fuzz ok" in run_in_subprocess(cases=20000, seed=seed, timeout=1800)


if __name__ == "__main__":
    run(int(sys.argv[1]), int(sys.argv[2]))
