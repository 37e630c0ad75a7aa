"""The levels of each task and their cases: the inputs a learner's function gets, and the right
answer, computed by the library's compiled kernels in float64.

Every level has fixed cases (printed by name, the same every run) and hidden ones (random
shapes and values from the run's seed), so copying a printed answer does not pass. The fixed
cases are chosen so that each known mistake shows (see mistakes.py): a kernel that is not
180°-symmetric shows a missing flip, F > 1 shows filters overwriting each other, N > 1 shows
batch mistakes, overlapping windows (stride < kernel) show pooling gradients overwriting.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from tinygrad_conv import _conv, _pool
from tinygrad_conv.reference import _pads
from tinygrad_conv.shapes import out_size, pooled_size

TASKS = ("conv", "pool", "value")
FUNCTIONS = {
    "conv": ("conv2d_input_grad", "conv2d_weight_grad", "conv2d_bias_grad"),
    "pool": ("max_pool2d_backward", "avg_pool2d_backward"),
    "value": ("add", "mul", "pow", "relu", "tanh", "exp", "Sigmoid", "Mean"),
}
LEVELS = {
    "conv": ("the tutorial's example", "channels, filters, batch", "padding", "stride",
             "dilation", "groups"),
    "pool": ("non-overlapping windows", "overlapping windows", "padding", "ties"),
    "value": ("each op on its own", "a Value used twice", "Tensor-level Functions"),
}


@dataclass
class Case:
    """One call of a learner's function (kind "call"), or one small graph whose gradient goes
    through it (kind "graph", run by the engine), or one Value expression (kind "value"), or
    one Tensor-level Function (kind "function")."""

    task: str
    function: str
    level: int
    name: str
    args: dict
    kind: str = "call"
    hidden: bool = False
    tie_free: bool = True            # gradcheck only where the function is differentiable
    expected: np.ndarray | None = field(default=None, repr=False)


# ---- conv -----------------------------------------------------------------------------------

@dataclass
class ConvLayer:
    """Z = W ⊛ A + b with its settings, and an upstream gradient Z'."""

    x: np.ndarray
    w: np.ndarray
    grad_out: np.ndarray
    stride: tuple = (1, 1)
    padding: tuple = (0, 0)      # as the learner gets it: (ph, pw) or ((top, bottom), (l, r))
    dilation: tuple = (1, 1)
    groups: int = 1


def conv_layer(rng, n, c, f, hw, k, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1,
               x=None, w=None, grad_out=None) -> ConvLayer:
    """A layer of these sizes, random values where none are given."""
    x = rng.standard_normal((n, c) + hw) if x is None else np.asarray(x, float)
    w = rng.standard_normal((f, c // groups) + k) if w is None else np.asarray(w, float)
    pads = _pads(padding)
    oh = out_size(hw[0], k[0], stride[0], pads[0], dilation[0])
    ow = out_size(hw[1], k[1], stride[1], pads[1], dilation[1])
    grad_out = rng.standard_normal((n, f, oh, ow)) if grad_out is None else np.asarray(grad_out,
                                                                                       float)
    return ConvLayer(x, w, grad_out, stride, padding, dilation, groups)


def conv_answers(layer: ConvLayer):
    """(dL/dA, dL/dW, dL/db) by the library's compiled kernel."""
    return _conv.conv2d_backward(layer.x, layer.w, layer.grad_out, layer.stride,
                                 _pads(layer.padding), layer.dilation, True, True, True,
                                 layer.groups)


def conv_cases(level: int, name: str, layer: ConvLayer, hidden=False) -> list[Case]:
    """The three functions' cases for one layer."""
    dx, dw, db = conv_answers(layer)
    settings = dict(stride=layer.stride, padding=layer.padding, dilation=layer.dilation,
                    groups=layer.groups)
    calls = {
        "conv2d_input_grad": (dict(grad_out=layer.grad_out, w=layer.w,
                                   input_shape=layer.x.shape, **settings), dx),
        "conv2d_weight_grad": (dict(x=layer.x, grad_out=layer.grad_out,
                                    weight_shape=layer.w.shape, **settings), dw),
        "conv2d_bias_grad": (dict(grad_out=layer.grad_out), db),
    }
    return [Case("conv", fn, level, name, args, hidden=hidden, expected=answer)
            for fn, (args, answer) in calls.items()]


def conv_graph_cases(level: int, rng) -> list[Case]:
    """Gradients that meet in the engine: the learner's function must return a fresh array
    and leave its arguments alone for the engine to add them up."""
    x, x2 = rng.standard_normal((2, 2, 5, 5)), rng.standard_normal((2, 2, 5, 5))
    w = rng.standard_normal((2, 2, 3, 3))
    shared = dict(x=x, x2=x2, w=w, build="shared weight")
    skip = dict(x=x, w=w, build="skip connection")
    if level == 2:
        return [Case("conv", "conv2d_weight_grad", level, "a weight shared by two convs",
                     shared, kind="graph")]
    return [Case("conv", "conv2d_input_grad", level, "an input reused in a skip connection "
                 "(x + conv(x), 3x3 kernel, padding 1)", skip, kind="graph")]


def conv_level(level: int, rng, hidden: bool) -> list[Case]:
    """The conv cases of one level: the fixed ones, or (hidden) random ones of the same kind."""
    if hidden:
        return [case for _ in range(2) for case in conv_cases(
            level, "hidden", random_conv_layer(level, rng), hidden=True)]
    if level == 1:
        # the tutorial's layer: A 3x3, W 2x2 (not 180°-symmetric), one channel, one filter
        tutorial = conv_layer(rng, 1, 1, 1, (3, 3), (2, 2),
                              x=np.arange(1.0, 10).reshape(1, 1, 3, 3),
                              w=[[[[1.0, 2], [3, 4]]]], grad_out=[[[[1.0, -2], [0.5, 3]]]])
        return conv_cases(1, "the tutorial's example: A 3x3, W 2x2, one channel, one filter",
                          tutorial)
    if level == 2:
        return (conv_cases(2, "N=2, C=3, F=2, 5x4 input, 3x2 kernel",
                           conv_layer(rng, 2, 3, 2, (5, 4), (3, 2)))
                + conv_cases(2, "N=3, C=1, F=4, 4x4 input, 2x2 kernel",
                             conv_layer(rng, 3, 1, 4, (4, 4), (2, 2)))
                + conv_graph_cases(2, rng))
    if level == 3:
        return (conv_cases(3, "padding 1, N=2, C=2, F=3, 4x5 input, 3x3 kernel",
                           conv_layer(rng, 2, 2, 3, (4, 5), (3, 3), padding=(1, 1)))
                + conv_cases(3, "padding ((1, 0), (2, 1)), 5x4 input, 3x2 kernel",
                             conv_layer(rng, 2, 2, 3, (5, 4), (3, 2), padding=((1, 0), (2, 1))))
                + conv_cases(3, "padding 'same' with an even kernel (2x4: one more at the "
                             "bottom and right)",
                             conv_layer(rng, 2, 3, 2, (5, 6), (2, 4),
                                        padding=((0, 1), (1, 2))))
                + conv_graph_cases(3, rng))
    if level == 4:
        return (conv_cases(4, "stride 2, 6x6 input, 3x3 kernel: the last row and column are "
                           "never reached", conv_layer(rng, 2, 2, 3, (6, 6), (3, 3),
                                                       stride=(2, 2)))
                + conv_cases(4, "stride 2, padding 1, 6x6 input, 3x3 kernel",
                             conv_layer(rng, 2, 2, 3, (6, 6), (3, 3), stride=(2, 2),
                                        padding=(1, 1)))
                + conv_cases(4, "stride (3, 1), 7x5 input, 2x3 kernel",
                             conv_layer(rng, 2, 3, 2, (7, 5), (2, 3), stride=(3, 1))))
    if level == 5:
        return (conv_cases(5, "dilation 2, 7x7 input, 3x3 kernel",
                           conv_layer(rng, 2, 2, 3, (7, 7), (3, 3), dilation=(2, 2)))
                + conv_cases(5, "dilation (2, 1), stride 2, padding 1, 8x6 input, 3x2 kernel",
                             conv_layer(rng, 2, 3, 2, (8, 6), (3, 2), stride=(2, 2),
                                        padding=(1, 1), dilation=(2, 1))))
    return (conv_cases(6, "groups 2: C=4, F=6, 5x5 input, 3x3 kernel",
                       conv_layer(rng, 2, 4, 6, (5, 5), (3, 3), groups=2))
            + conv_cases(6, "depthwise: groups = C = F = 3, stride 2, padding 1",
                         conv_layer(rng, 2, 3, 3, (6, 6), (3, 3), stride=(2, 2),
                                    padding=(1, 1), groups=3)))


def random_conv_layer(level: int, rng) -> ConvLayer:
    """A random layer using the features of levels 1 to `level`."""
    pick = rng.integers
    n, c, f = (1, 1, 1) if level == 1 else (pick(2, 4), pick(1, 4), pick(2, 5))
    groups = 1
    if level >= 6:
        groups = int(rng.choice([2, 3]))
        c, f = groups * pick(1, 3), groups * pick(1, 3)
    k = (int(pick(2, 4)), int(pick(2, 4)))
    stride = (int(pick(1, 4)), int(pick(1, 4))) if level >= 4 else (1, 1)
    dilation = (int(pick(1, 3)), int(pick(1, 3))) if level >= 5 else (1, 1)
    padding = ((int(pick(0, k[0])), int(pick(0, k[0]))),
               (int(pick(0, k[1])), int(pick(0, k[1])))) if level >= 3 else (0, 0)
    hw = tuple(int(pick(d * (kk - 1) + 1, d * (kk - 1) + 6)) for d, kk in zip(dilation, k))
    return conv_layer(rng, int(n), int(c), int(f), hw, k, stride, padding, dilation, groups)


# ---- pool -----------------------------------------------------------------------------------

def max_pool_case(level, name, x, kernel_size, stride, padding=(0, 0), grad_out=None, rng=None,
                  hidden=False, tie_free=True) -> Case:
    x = np.asarray(x, float)
    a, argmax = _pool.max_pool2d_forward(x, kernel_size, stride, padding)
    if grad_out is None:
        grad_out = rng.standard_normal(a.shape)
    expected = _pool.max_pool2d_backward(grad_out, argmax, x.shape[2], x.shape[3])
    args = dict(grad_out=grad_out, x=x, kernel_size=kernel_size, stride=stride,
                padding=padding)
    return Case("pool", "max_pool2d_backward", level, name, args, hidden=hidden,
                tie_free=tie_free, expected=expected)


def avg_pool_case(level, name, x_shape, kernel_size, stride, padding=(0, 0), ceil_mode=False,
                  count_include_pad=True, rng=None, hidden=False) -> Case:
    h, w = x_shape[2:]
    oh = pooled_size(h, kernel_size[0], stride[0], padding[0], ceil_mode)
    ow = pooled_size(w, kernel_size[1], stride[1], padding[1], ceil_mode)
    grad_out = rng.standard_normal(x_shape[:2] + (oh, ow))
    expected = _pool.avg_pool2d_backward(grad_out, h, w, kernel_size, stride, padding,
                                         ceil_mode, count_include_pad)
    args = dict(grad_out=grad_out, x_shape=tuple(x_shape), kernel_size=kernel_size,
                stride=stride, padding=padding, ceil_mode=ceil_mode,
                count_include_pad=count_include_pad)
    return Case("pool", "avg_pool2d_backward", level, name, args, hidden=hidden,
                expected=expected)


def tutorial_pool_case() -> Case:
    """The tutorial's example: Z 3x3, a 2x2 window at stride 1, A' = d(-log A)/dA = -1/A; the
    10 wins two windows, so its gradient is -0.1 + -0.1 = -0.2."""
    z = np.array([[1.0, 2, 3], [4, 10, 5], [11, 12, 13]])[None, None]
    a = np.array([[10.0, 10], [12, 13]])[None, None]
    return max_pool_case(2, "the tutorial's example: 3x3 Z, 2x2 window, stride 1, A' = -1/A",
                         z, (2, 2), (1, 1), grad_out=-1 / a)


def shared_winner(rng, shape) -> np.ndarray:
    """Random values with one large cell at (2, 2) of each plane: it wins every window of a
    3x3 pool at stride 2 that covers it (four of them)."""
    x = rng.standard_normal(shape)
    x[:, :, 2, 2] = 5 + rng.random(shape[:2])
    return x


def pool_level(level: int, rng, hidden: bool) -> list[Case]:
    if hidden:
        return [case for _ in range(2) for case in random_pool_cases(level, rng)]
    normal = rng.standard_normal
    if level == 1:
        return [max_pool_case(1, "2x2 windows, stride 2, N=2, C=2, 4x6 input",
                              normal((2, 2, 4, 6)), (2, 2), (2, 2), rng=rng),
                max_pool_case(1, "2x3 windows, stride (2, 3), 4x6 input",
                              normal((2, 3, 4, 6)), (2, 3), (2, 3), rng=rng),
                avg_pool_case(1, "2x2 windows, stride 2, N=2, C=2, 4x6 input", (2, 2, 4, 6),
                              (2, 2), (2, 2), rng=rng),
                avg_pool_case(1, "2x3 windows, stride (2, 3), 4x6 input", (2, 3, 4, 6),
                              (2, 3), (2, 3), rng=rng)]
    if level == 2:
        return [tutorial_pool_case(),
                max_pool_case(2, "3x3 windows, stride 2, one cell the maximum of four windows",
                              shared_winner(rng, (2, 2, 5, 5)), (3, 3), (2, 2), rng=rng),
                max_pool_case(2, "3x2 windows, stride 1, 5x4 input", normal((2, 2, 5, 4)),
                              (3, 2), (1, 1), rng=rng),
                avg_pool_case(2, "3x3 windows, stride 1, 5x5 input", (2, 2, 5, 5), (3, 3),
                              (1, 1), rng=rng),
                avg_pool_case(2, "3x2 windows, stride (2, 1), 5x4 input", (2, 2, 5, 4), (3, 2),
                              (2, 1), rng=rng)]
    if level == 3:
        return [max_pool_case(3, "3x3 windows, stride 2, padding 1, 5x6 input",
                              normal((2, 2, 5, 6)), (3, 3), (2, 2), (1, 1), rng=rng),
                max_pool_case(3, "all-negative input, 2x2 windows, stride 1, padding 1 (the "
                              "padding is -inf, never 0)", -1 - rng.random((2, 2, 3, 4)),
                              (2, 2), (1, 1), (1, 1), rng=rng),
                avg_pool_case(3, "3x3 windows, stride 2, padding 1, padding counted",
                              (2, 2, 5, 6), (3, 3), (2, 2), (1, 1), rng=rng),
                avg_pool_case(3, "3x3 windows, stride 2, padding 1, count_include_pad=False",
                              (2, 2, 5, 6), (3, 3), (2, 2), (1, 1), count_include_pad=False,
                              rng=rng),
                avg_pool_case(3, "ceil_mode: 6x6 input, 3x3 windows, stride 2, padding 1 (a "
                              "last, partial window)", (2, 2, 6, 6), (3, 3), (2, 2), (1, 1),
                              ceil_mode=True, rng=rng)]
    # level 4: ties. Small whole numbers tie often; the first maximum in row-major order wins
    ties = rng.integers(0, 3, (2, 2, 5, 5)).astype(float)
    return [max_pool_case(4, "ties: values in {0, 1, 2}, 2x2 windows, stride 1", ties, (2, 2),
                          (1, 1), rng=rng, tie_free=False),
            max_pool_case(4, "ties: values in {0, 1, 2}, 3x3 windows, stride 2, padding 1",
                          ties, (3, 3), (2, 2), (1, 1), rng=rng, tie_free=False),
            max_pool_case(4, "a constant plane: every cell ties", np.ones((1, 2, 4, 4)), (2, 2),
                          (2, 2), rng=rng, tie_free=False)]


def random_pool_cases(level: int, rng) -> list[Case]:
    """A random max-pool case and avg-pool case using the features of levels 1 to `level`."""
    pick = rng.integers
    k = (int(pick(2, 4)), int(pick(2, 4)))
    stride = k if level == 1 else (int(pick(1, k[0] + 1)), int(pick(1, k[1] + 1)))
    padding = (int(pick(0, k[0] // 2 + 1)), int(pick(0, k[1] // 2 + 1))) if level >= 3 else (0,
                                                                                             0)
    shape = (int(pick(1, 3)), int(pick(1, 3)), int(pick(k[0], 8)), int(pick(k[1], 8)))
    x = rng.integers(0, 3, shape).astype(float) if level >= 4 else rng.standard_normal(shape)
    ceil_mode, count_include_pad = bool(pick(0, 2)) and level >= 3, bool(pick(0, 2)) or level < 3
    cases = [max_pool_case(level, "hidden", x, k, stride, padding, rng=rng, hidden=True,
                           tie_free=level < 4)]
    if level < 4:       # ties do not matter to an average
        cases.append(avg_pool_case(level, "hidden", shape, k, stride, padding, ceil_mode,
                                   count_include_pad, rng=rng, hidden=True))
    return cases


# ---- value ----------------------------------------------------------------------------------

# (function, level, name, expression of the leaves (V is the Value class), leaf values)
VALUE_CASES: list[tuple[str, int, str, Callable, tuple]] = [
    ("add", 1, "x + y", lambda V, x, y: x + y, (2.0, -3.0)),
    ("add", 1, "x + 5", lambda V, x: x + 5, (1.5,)),
    ("mul", 1, "x * y", lambda V, x, y: x * y, (2.0, -3.0)),
    ("mul", 1, "x * 3", lambda V, x: x * 3, (1.5,)),
    ("pow", 1, "x ** 3", lambda V, x: x ** 3, (1.5,)),
    ("pow", 1, "x ** -2", lambda V, x: x ** -2, (0.7,)),
    ("relu", 1, "relu(x), x > 0", lambda V, x: x.relu(), (0.7,)),
    ("relu", 1, "relu(x), x < 0", lambda V, x: x.relu(), (-1.2,)),
    ("tanh", 1, "tanh(x)", lambda V, x: x.tanh(), (0.6,)),
    ("exp", 1, "exp(x)", lambda V, x: x.exp(), (0.4,)),
    ("add", 2, "x + x", lambda V, x: x + x, (1.5,)),
    ("add", 2, "(x + y) + x", lambda V, x, y: (x + y) + x, (2.0, -3.0)),
    ("mul", 2, "x * x", lambda V, x: x * x, (1.5,)),
    ("mul", 2, "(x * y) * x", lambda V, x, y: (x * y) * x, (2.0, -3.0)),
    ("pow", 2, "x ** 2 * x", lambda V, x: x ** 2 * x, (1.5,)),
    ("relu", 2, "relu(x) * x", lambda V, x: x.relu() * x, (0.7,)),
    ("tanh", 2, "tanh(x) + x", lambda V, x: x.tanh() + x, (0.6,)),
    ("exp", 2, "exp(x) * x", lambda V, x: x.exp() * x, (0.4,)),
]


def value_level(level: int, rng, hidden: bool) -> list[Case]:
    if level == 3:
        return function_cases(rng, hidden)
    cases = []
    for fn, lv, name, expression, leaves in VALUE_CASES:
        if lv == level:
            if hidden:      # the same expression at other numbers
                leaves = tuple(float(v) for v in rng.uniform(0.2, 1.5, len(leaves))
                               * rng.choice([-1, 1], len(leaves)))
            args = dict(expression=expression, leaves=leaves, text=name)
            cases.append(Case("value", fn, level, "hidden" if hidden else name, args,
                              kind="value", hidden=hidden))
    return cases


def function_cases(rng, hidden: bool) -> list[Case]:
    """Sigmoid (elementwise) and Mean (a reduction), with L = sum(op(x) * R)."""
    shape = (int(rng.integers(2, 5)), int(rng.integers(2, 5))) if hidden else (3, 4)
    name = "hidden" if hidden else f"x {shape}, L = sum(op(x) * R)"
    x = rng.standard_normal(shape)
    cases = [Case("value", "Sigmoid", 3, name, dict(x=x, R=rng.standard_normal(shape)),
                  kind="function", hidden=hidden)]
    for axis in (0, 1):
        out_shape = shape[:axis] + shape[axis + 1:]
        cases.append(Case("value", "Mean", 3, name if hidden else f"{name}, axis={axis}",
                          dict(x=x, R=rng.standard_normal(out_shape), axis=axis),
                          kind="function", hidden=hidden))
    return cases


LEVEL_CASES = {"conv": conv_level, "pool": pool_level, "value": value_level}


def cases_for(task: str, level: int, rng, hidden: bool) -> list[Case]:
    """The fixed (or hidden) cases of one level of one task."""
    return LEVEL_CASES[task](level, rng, hidden)
