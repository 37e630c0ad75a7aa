"""Differential fuzzing: random small programs built from the public ops, run in float64 by us and
by PyTorch; every intermediate value and every leaf's gradient must agree.

A program is a list of steps. Each step applies one op (elementwise, broadcasting binary,
reduction, matmul, reshape/permute/transpose/index, softmax, conv2d, max_pool2d, a loss) to
values already computed, sometimes together with a fresh leaf. The program is built while it
runs on our side (so each step can pick arguments that fit the shapes it sees), then replayed on
PyTorch. The loss is sum_i sum(sink_i * R_i) over the values nobody consumed, with random R_i, so
every gradient is a full vector-Jacobian product and values used twice accumulate gradients.

Inputs are continuous random numbers, so exact ties (where the frameworks could legitimately
route a max's gradient differently) only arise from the program itself, e.g. relu's zeros; both
frameworks split a reduction's ties evenly and give a pooling window's gradient to its first
maximum, so those must agree too.

CI runs a fixed budget (FUZZ_CI_EXAMPLES programs); `pytest -m fuzz` runs FUZZ_LONG_EXAMPLES.
Each test prints how many programs it ran (`pytest -s` shows it).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tinygrad_conv.functional as F
from tinygrad_conv import Tensor
from tinygrad_conv.shapes import out_size

from helpers import assert_close

torch.set_num_threads(2)

FUZZ_CI_EXAMPLES = 800
FUZZ_LONG_EXAMPLES = 5000
RTOL = 1e-10


@dataclass
class Step:
    """One op: `ours(*tensors)` and `theirs(*tensors)` compute the same thing; `args` index
    values computed earlier (or new leaves)."""

    name: str
    args: tuple[int, ...]
    ours: Callable
    theirs: Callable


@dataclass
class Program:
    leaves: list[np.ndarray] = field(default_factory=list)   # values 0..len(leaves)-1
    steps: list[Step] = field(default_factory=list)           # value len(leaves)+i is steps[i]
    values: list = field(default_factory=list)                 # our Tensors, in value order
    order: list[tuple[str, int]] = field(default_factory=list)  # ("leaf", i) or ("step", i)

    def add_leaf(self, array: np.ndarray) -> int:
        self.leaves.append(array)
        self.order.append(("leaf", len(self.leaves) - 1))
        self.values.append(Tensor(array, dtype=np.float64, requires_grad=True))
        return len(self.values) - 1

    def add_step(self, name: str, args: tuple[int, ...], ours: Callable,
                 theirs: Callable) -> int:
        out = ours(*[self.values[i] for i in args])
        self.steps.append(Step(name, args, ours, theirs))
        self.order.append(("step", len(self.steps) - 1))
        self.values.append(out)
        return len(self.values) - 1

    def describe(self) -> str:
        lines = []
        for v, (kind, i) in enumerate(self.order):
            if kind == "leaf":
                lines.append(f"v{v} = leaf{self.leaves[i].shape}")
            else:
                step = self.steps[i]
                args = ", ".join(f"v{a}" for a in step.args)
                lines.append(f"v{v} = {step.name}({args}) -> {self.values[v].shape}")
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Building a program: each builder looks at one value and appends a step that fits it
# ----------------------------------------------------------------------------------------------


def _reduce_axes(draw, ndim: int):
    if ndim == 0 or draw(st.booleans()):
        return None
    k = draw(st.integers(1, ndim))
    return tuple(sorted(draw(st.permutations(range(ndim)))[:k]))


def _leaf(rng: np.random.Generator, shape) -> np.ndarray:
    return rng.uniform(-1.5, 1.5, size=shape)


def build_unary(draw, prog: Program, rng, v: int) -> None:
    x = prog.values[v].data
    amax = float(np.max(np.abs(x))) if x.size else 0.0
    choices = ["neg", "relu", "sigmoid", "tanh", "square", "cube", "log_shifted"]
    if amax < 4:
        choices.append("exp")
    if x.size and np.min(x) > 0.1:
        choices += ["log", "sqrt"]
    if x.size and np.min(np.abs(x)) > 0.1:
        choices.append("reciprocal")
    name = draw(st.sampled_from(choices))
    table = {
        "neg": (lambda a: -a, lambda a: -a),
        "relu": (lambda a: a.relu(), lambda a: a.relu()),
        "sigmoid": (lambda a: a.sigmoid(), lambda a: a.sigmoid()),
        "tanh": (lambda a: a.tanh(), lambda a: a.tanh()),
        "square": (lambda a: a ** 2, lambda a: a ** 2),
        "cube": (lambda a: a ** 3, lambda a: a ** 3),
        "exp": (lambda a: a.exp(), lambda a: a.exp()),
        "log": (lambda a: a.log(), lambda a: a.log()),
        "log_shifted": (lambda a: (a * a + 0.5).log(), lambda a: (a * a + 0.5).log()),
        "sqrt": (lambda a: a ** 0.5, lambda a: a ** 0.5),
        "reciprocal": (lambda a: a ** -1, lambda a: a ** -1),
    }
    prog.add_step(name, (v,), *table[name])


def build_binary(draw, prog: Program, rng, v: int) -> None:
    shape = prog.values[v].shape
    partners = [i for i, t in enumerate(prog.values) if _broadcastable(t.shape, shape)]
    how = draw(st.sampled_from(["value", "leaf", "scalar"]))
    op = draw(st.sampled_from(["add", "sub", "mul", "div"]))
    swap = draw(st.booleans())
    if how == "scalar":
        c = float(draw(st.sampled_from([-2.5, -0.5, 0.75, 3.0])))
        fns = {
            "add": lambda a: a + c, "sub": lambda a: c - a if swap else a - c,
            "mul": lambda a: a * c, "div": lambda a: a / c,
        }
        prog.add_step(f"{op}_scalar({c})", (v,), fns[op], fns[op])
        return
    if how == "value" and partners:
        w = draw(st.sampled_from(partners))
    else:
        # a fresh leaf whose shape broadcasts against v: leading dims dropped, some set to 1
        drop = draw(st.integers(0, len(shape)))
        sub = [1 if draw(st.booleans()) else n for n in shape[drop:]]
        w = prog.add_leaf(_leaf(rng, tuple(sub)))
    a, b = (w, v) if swap else (v, w)
    if op == "div":  # keep the divisor away from zero: b itself if it is, else b*b + 0.5
        bd = prog.values[b].data
        if bd.size and np.min(np.abs(bd)) > 0.1:
            prog.add_step("div", (a, b), lambda x, y: x / y, lambda x, y: x / y)
        else:
            prog.add_step("div_safe", (a, b), lambda x, y: x / (y * y + 0.5),
                          lambda x, y: x / (y * y + 0.5))
        return
    fns = {"add": lambda x, y: x + y, "sub": lambda x, y: x - y, "mul": lambda x, y: x * y}
    prog.add_step(op, (a, b), fns[op], fns[op])


def _broadcastable(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    try:
        return np.broadcast_shapes(a, b) == b
    except ValueError:
        return False


def build_reduce(draw, prog: Program, rng, v: int) -> None:
    t = prog.values[v]
    if t.size == 0:
        return build_unary(draw, prog, rng, v)
    axes = _reduce_axes(draw, t.ndim)
    keep = draw(st.booleans())
    name = draw(st.sampled_from(["sum", "mean", "max"]))
    dims = tuple(range(t.ndim)) if axes is None else axes
    if name == "max":
        # amax, not max(dim): both frameworks then split the gradient evenly between ties
        prog.add_step(f"max{axes, keep}", (v,), lambda a: a.max(axis=axes, keepdims=keep),
                      lambda a: torch.amax(a, dim=dims, keepdim=keep))
    elif name == "sum":
        prog.add_step(f"sum{axes, keep}", (v,), lambda a: a.sum(axis=axes, keepdims=keep),
                      lambda a: a.sum(dim=dims, keepdim=keep))
    else:
        prog.add_step(f"mean{axes, keep}", (v,), lambda a: a.mean(axis=axes, keepdims=keep),
                      lambda a: a.mean(dim=dims, keepdim=keep))


def build_matmul(draw, prog: Program, rng, v: int) -> None:
    shape = prog.values[v].shape
    if len(shape) == 0:
        return build_unary(draw, prog, rng, v)
    k = shape[-1]
    # the other operand: an existing value whose contracted dim fits, or a fresh leaf
    fits = [i for i, t in enumerate(prog.values)
            if i != v and 1 <= t.ndim <= 3 and (t.shape[-2] if t.ndim > 1 else t.shape[0]) == k
            and _matmul_batch_ok(shape, t.shape)]
    if fits and draw(st.booleans()):
        w = draw(st.sampled_from(fits))
    else:
        rank = draw(st.integers(1, 3))
        m = draw(st.integers(1, 4))
        batch = shape[:-2][-1:] if rank == 3 and len(shape) >= 3 else (2,)
        leaf_shape = {1: (k,), 2: (k, m), 3: (*batch, k, m)}[rank]
        if not _matmul_batch_ok(shape, leaf_shape):
            leaf_shape = (k, m)
        w = prog.add_leaf(_leaf(rng, leaf_shape))
    prog.add_step("matmul", (v, w), lambda a, b: a @ b, lambda a, b: a @ b)


def _matmul_batch_ok(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    try:
        np.broadcast_shapes(a[:-2], b[:-2])
        return True
    except ValueError:
        return False


def build_shape(draw, prog: Program, rng, v: int) -> None:
    t = prog.values[v]
    shape = t.shape
    kinds = ["reshape", "index_basic"] if t.ndim else ["reshape"]
    if t.ndim >= 2:
        kinds += ["permute", "transpose", "T"]
    if t.ndim >= 1 and shape[0] >= 1:
        kinds.append("index_array")
    kind = draw(st.sampled_from(kinds))
    if kind == "reshape":
        new = _new_shape(draw, shape)
        prog.add_step(f"reshape{new}", (v,), lambda a: a.reshape(new), lambda a: a.reshape(new))
    elif kind == "permute":
        perm = tuple(draw(st.permutations(range(t.ndim))))
        prog.add_step(f"permute{perm}", (v,), lambda a: a.permute(perm),
                      lambda a: a.permute(perm))
    elif kind == "transpose":
        d0, d1 = draw(st.integers(-t.ndim, t.ndim - 1)), draw(st.integers(-t.ndim, t.ndim - 1))
        prog.add_step(f"transpose{d0, d1}", (v,), lambda a: a.transpose(d0, d1),
                      lambda a: a.transpose(d0, d1))
    elif kind == "T":
        perm = tuple(range(t.ndim - 1, -1, -1))
        prog.add_step("T", (v,), lambda a: a.T, lambda a: a.permute(perm))
    elif kind == "index_basic":
        index = _basic_index(draw, shape)
        prog.add_step(f"index{index}", (v,), lambda a: a[index], lambda a: a[index])
    else:
        rows = draw(st.lists(st.integers(-shape[0], shape[0] - 1), min_size=1, max_size=5))
        index = np.array(rows)
        rest = ()
        if t.ndim >= 2 and draw(st.booleans()):  # an int on axis 1, and maybe a slice on 2
            rest = (draw(st.integers(-shape[1], shape[1] - 1)),)
            if t.ndim >= 3 and draw(st.booleans()):
                rest = (*rest, slice(None, None, 2))
        full = (index, *rest)
        prog.add_step(f"index[{rows}, {rest}]", (v,), lambda a: a[full],
                      lambda a: a[(torch.from_numpy(index), *rest)])


def _new_shape(draw, shape: tuple[int, ...]) -> tuple[int, ...]:
    """A random shape with the same number of elements (factors of the size, maybe a -1)."""
    size = int(np.prod(shape))
    if size == 0:
        return (0,)
    factors = []
    rest = size
    for p in (2, 3, 5, 7):
        while rest % p == 0:
            factors.append(p)
            rest //= p
    if rest > 1:
        factors.append(rest)
    factors = list(draw(st.permutations(factors)))
    groups = draw(st.integers(1, max(1, min(4, len(factors)))))
    cuts = sorted(draw(st.lists(st.integers(0, len(factors)), min_size=groups - 1,
                                max_size=groups - 1)))
    dims, start = [], 0
    for c in [*cuts, len(factors)]:
        dims.append(int(np.prod(factors[start:c])) if c > start else 1)
        start = c
    if draw(st.booleans()):  # sprinkle a size-1 axis
        dims.insert(draw(st.integers(0, len(dims))), 1)
    if draw(st.booleans()):
        dims[draw(st.integers(0, len(dims) - 1))] = -1
    return tuple(dims)


def _basic_index(draw, shape: tuple[int, ...]):
    """Ints, slices and None for the first m axes, or for the last m axes after an Ellipsis."""
    m = draw(st.integers(1, len(shape)))
    use_ellipsis = m < len(shape) and draw(st.booleans())
    items = []
    for n in (shape[-m:] if use_ellipsis else shape[:m]):
        kind = draw(st.sampled_from(["int", "slice", "full"]))
        if kind == "int":
            items.append(draw(st.integers(-n, n - 1)))
        elif kind == "slice":
            start = draw(st.integers(0, n - 1))
            stop = draw(st.integers(start + 1, n))
            items.append(slice(start, stop, draw(st.integers(1, 2))))
        else:
            items.append(slice(None))
    if draw(st.booleans()):
        items.insert(draw(st.integers(0, len(items))), None)
    return (Ellipsis, *items) if use_ellipsis else tuple(items)


def build_softmax(draw, prog: Program, rng, v: int) -> None:
    t = prog.values[v]
    if t.ndim == 0 or t.size == 0:
        return build_unary(draw, prog, rng, v)
    axis = draw(st.integers(-t.ndim, t.ndim - 1))
    if draw(st.booleans()):
        prog.add_step(f"log_softmax({axis})", (v,), lambda a: a.log_softmax(axis),
                      lambda a: TF.log_softmax(a, dim=axis))
    else:
        prog.add_step(f"softmax({axis})", (v,), lambda a: a.softmax(axis),
                      lambda a: TF.softmax(a, dim=axis))


def build_loss(draw, prog: Program, rng, v: int) -> None:
    t = prog.values[v]
    kind = draw(st.sampled_from(["mse", "cross_entropy", "nll"]))
    if kind == "mse" or t.ndim != 2 or 0 in t.shape:
        partners = [i for i, u in enumerate(prog.values) if i != v and u.shape == t.shape]
        if partners and draw(st.booleans()):
            w = draw(st.sampled_from(partners))
        else:
            w = prog.add_leaf(_leaf(rng, t.shape))
        prog.add_step("mse_loss", (v, w), F.mse_loss, TF.mse_loss)
        return
    n, c = t.shape
    targets = rng.integers(0, c, size=n)
    tt = torch.from_numpy(targets)
    if kind == "cross_entropy":
        prog.add_step(f"cross_entropy{targets.tolist()}", (v,),
                      lambda a: F.cross_entropy(a, targets), lambda a: TF.cross_entropy(a, tt))
    else:
        prog.add_step(f"nll_loss(log_softmax){targets.tolist()}", (v,),
                      lambda a: F.nll_loss(a.log_softmax(1), targets),
                      lambda a: TF.nll_loss(TF.log_softmax(a, 1), tt))


def build_conv(draw, prog: Program, rng, v: int) -> None:
    t = prog.values[v]
    if t.ndim != 4 or 0 in t.shape[1:]:
        return _make_image(draw, prog, rng, v)
    n, c, h, w = t.shape
    f = draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    s = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    p = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    d = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    if out_size(h, kh, s[0], p[0], d[0]) < 1 or out_size(w, kw, s[1], p[1], d[1]) < 1:
        kh = kw = 1  # the window does not fit
    wi = prog.add_leaf(_leaf(rng, (f, c, kh, kw)))
    if draw(st.booleans()):
        bi = prog.add_leaf(_leaf(rng, (f,)))
        prog.add_step(f"conv2d(s={s}, p={p}, d={d})", (v, wi, bi),
                      lambda x, wt, b: F.conv2d(x, wt, b, stride=s, padding=p, dilation=d),
                      lambda x, wt, b: TF.conv2d(x, wt, b, stride=s, padding=p, dilation=d))
    else:
        prog.add_step(f"conv2d(s={s}, p={p}, d={d}, no bias)", (v, wi),
                      lambda x, wt: F.conv2d(x, wt, stride=s, padding=p, dilation=d),
                      lambda x, wt: TF.conv2d(x, wt, stride=s, padding=p, dilation=d))


def build_pool(draw, prog: Program, rng, v: int) -> None:
    t = prog.values[v]
    if t.ndim != 4 or 0 in t.shape[1:]:
        return _make_image(draw, prog, rng, v)
    _, _, h, w = t.shape
    k = (draw(st.integers(1, min(3, h))), draw(st.integers(1, min(3, w))))
    s = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    p = (draw(st.integers(0, k[0] // 2)), draw(st.integers(0, k[1] // 2)))
    prog.add_step(f"max_pool2d(k={k}, s={s}, p={p})", (v,),
                  lambda x: F.max_pool2d(x, k, stride=s, padding=p),
                  lambda x: TF.max_pool2d(x, k, stride=s, padding=p))


def _make_image(draw, prog: Program, rng, v: int) -> None:
    """Reshape v to (N, C, H, W) when its size allows an image of at least 2x2."""
    shape = _image_shape(prog.values[v].size)
    if shape is None:
        return build_unary(draw, prog, rng, v)
    prog.add_step(f"reshape{shape}", (v,), lambda a: a.reshape(shape), lambda a: a.reshape(shape))


def _image_shape(size: int) -> tuple[int, int, int, int] | None:
    for n, c in itertools.product((1, 2, 3), (1, 2, 3)):
        if size % (n * c) == 0:
            hw = size // (n * c)
            for h in range(2, hw):
                if hw % h == 0 and hw // h >= 2:
                    return (n, c, h, hw // h)
    return None


BUILDERS = {
    "unary": build_unary, "binary": build_binary, "reduce": build_reduce,
    "matmul": build_matmul, "shape": build_shape, "softmax": build_softmax,
    "loss": build_loss, "conv": build_conv, "pool": build_pool,
}
# how often each kind is drawn: losses end a chain (they are scalars), so they come rarely
WEIGHTED_KINDS = [
    "unary", "unary", "binary", "binary", "binary", "reduce", "matmul", "shape", "shape",
    "softmax", "loss", "conv", "conv", "pool", "pool",
]


@st.composite
def programs(draw, max_steps: int = 10):
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    prog = Program()
    for _ in range(draw(st.integers(1, 2))):
        if draw(st.booleans()):  # an image, so conv and pool have something to work on
            shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3)),
                     draw(st.integers(3, 7)), draw(st.integers(3, 7)))
        else:
            shape = tuple(draw(st.lists(st.integers(1, 4), min_size=0, max_size=3)))
        prog.add_leaf(_leaf(rng, shape))
    for _ in range(draw(st.integers(3, max_steps))):  # at least a few ops composed
        # prefer recent values, so programs grow deep rather than wide
        v = len(prog.values) - 1 - draw(st.integers(0, min(2, len(prog.values) - 1)))
        kind = draw(st.sampled_from(WEIGHTED_KINDS))
        BUILDERS[kind](draw, prog, rng, v)
    return prog, rng


# ----------------------------------------------------------------------------------------------
# Running a program on both sides and comparing
# ----------------------------------------------------------------------------------------------


def _close(ours: np.ndarray, theirs: torch.Tensor, what: str, prog: Program) -> None:
    assert ours.dtype == np.float64, f"{what}: dtype {ours.dtype}\n" + prog.describe()
    # the leaves are O(1): a value that should be 0 carries rounding at scale 1 (atol)
    assert_close(ours, theirs, RTOL, f"{what}\n{prog.describe()}", atol=RTOL)


def check_program(prog: Program, rng: np.random.Generator) -> None:
    theirs: list[torch.Tensor] = []
    t_leaves = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in prog.leaves]
    for kind, i in prog.order:
        if kind == "leaf":
            theirs.append(t_leaves[i])
        else:
            step = prog.steps[i]
            theirs.append(step.theirs(*[theirs[a] for a in step.args]))
    for v, (ours, ref) in enumerate(zip(prog.values, theirs)):
        _close(ours.data, ref, f"value v{v}", prog)

    consumed = {a for step in prog.steps for a in step.args}
    sinks = [v for v in range(len(prog.values)) if v not in consumed and prog.order[v][0] == "step"]
    weights = [rng.standard_normal(prog.values[v].shape) for v in sinks]
    our_loss = sum((prog.values[v] * r).sum() for v, r in zip(sinks, weights))
    their_loss = sum((theirs[v] * torch.from_numpy(r)).sum() for v, r in zip(sinks, weights))
    our_loss.backward()
    their_loss.backward()
    our_leaves = [prog.values[v] for v, (kind, _) in enumerate(prog.order) if kind == "leaf"]
    for i, (o, t) in enumerate(zip(our_leaves, t_leaves)):
        if t.grad is None:
            assert o.grad is None or not np.any(o.grad), f"leaf {i}: torch has no grad\n" \
                + prog.describe()
            continue
        assert o.grad is not None, f"leaf {i} got no gradient\n" + prog.describe()
        _close(o.grad, t.grad, f"grad of leaf {i} {prog.leaves[i].shape}", prog)


_counts = {"ci": 0, "long": 0}


@settings(max_examples=FUZZ_CI_EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(programs())
def test_random_programs_match_torch_values_and_gradients(case):
    prog, rng = case
    check_program(prog, rng)
    _counts["ci"] += 1


@pytest.mark.fuzz
@settings(max_examples=FUZZ_LONG_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(programs(max_steps=14))
def test_random_programs_match_torch_long_run(case):
    prog, rng = case
    check_program(prog, rng)
    _counts["long"] += 1


def teardown_module(module) -> None:
    for mode, n in _counts.items():
        if n:
            print(f"\ntest_program_fuzz: {n} programs ran ({mode})")
