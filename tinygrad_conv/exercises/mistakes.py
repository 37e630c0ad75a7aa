"""Models of the mistakes learners make, and the diagnosis: which model matches an answer.

Each model is the learner's function with one mistake in it, computed from a case's arguments
(mostly by the library's own reference functions on changed inputs). When a wrong answer equals
exactly one model's output (the same shape, the same numbers) and the case is one where that
mistake shows, the grader prints the model's sentence: what was done, and the formula meant.
A wrong shape is also matched against the shapes each mistake would give, from the settings.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tinygrad_conv import reference as ref
from tinygrad_conv.exercises.skeletons.value import Value as SkeletonValue
from tinygrad_conv.reference import _avg_windows, _pads


@dataclass
class Mistake:
    function: str
    sentence: str
    model: Callable[[dict], np.ndarray]     # the answer with this mistake, from the case's args


def same(a, b) -> bool:
    return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.shape == b.shape
            and np.allclose(a, b, rtol=1e-7, atol=1e-10))


# ---- conv: dL/dA ----------------------------------------------------------------------------

def input_grad(args, w=None, grad_out=None):
    """dL/dA by the reference, with W or Z' replaced (to model a mistake)."""
    w = args["w"] if w is None else w
    grad_out = args["grad_out"] if grad_out is None else grad_out
    x = np.zeros(args["input_shape"])
    return ref.conv2d_backward(x, w, grad_out, args["stride"], args["padding"],
                               args["dilation"], True, False, False, args["groups"])[0]


def full_correlation(args, stride):
    """W_180 ⊛ pad(dilate(Z', stride), d(k-1)) before any crop: the reference's dL/dA of an
    unpadded input just large enough for this Z' (stride (1, 1): Z' not dilated)."""
    (kh, kw), (dh, dw) = args["w"].shape[2:], args["dilation"]
    n, c = args["input_shape"][:2]
    oh, ow = args["grad_out"].shape[2:]
    x = np.zeros((n, c, stride[0] * (oh - 1) + 1 + dh * (kh - 1),
                  stride[1] * (ow - 1) + 1 + dw * (kw - 1)))
    return ref.conv2d_backward(x, args["w"], args["grad_out"], stride, (0, 0), args["dilation"],
                               True, False, False, args["groups"])[0]


def place_and_crop(args, da_pad):
    """The last step of dL/dA: into the padded input's frame (rows no window reached stay 0),
    then the forward's padding cropped off."""
    n, c, h, w = args["input_shape"]
    (top, bottom), (left, right) = _pads(args["padding"])
    full = np.zeros((n, c, h + top + bottom, w + left + right))
    rows, cols = min(full.shape[2], da_pad.shape[2]), min(full.shape[3], da_pad.shape[3])
    full[:, :, :rows, :cols] = da_pad[:, :, :rows, :cols]
    return full[:, :, top:top + h, left:left + w]


def input_grad_unflipped(args):
    return input_grad(args, w=args["w"][:, :, ::-1, ::-1])     # the reference flips it back


def input_grad_last_filter(args):
    """Each group's last filter only: `dA = ...` in the loop over filters."""
    grad_out = np.zeros_like(args["grad_out"])
    per_group = grad_out.shape[1] // args["groups"]
    last = slice(per_group - 1, None, per_group)
    grad_out[:, last] = args["grad_out"][:, last]
    return input_grad(args, grad_out=grad_out)


def input_grad_not_dilated(args):
    return place_and_crop(args, full_correlation(args, stride=(1, 1)))


def input_grad_padded_k_minus_1(args):
    """pad(dilate(Z', s), k-1): (d-1)(k-1) fewer rows each side of the full correlation."""
    full = full_correlation(args, args["stride"])
    (kh, kw), (dh, dw) = args["w"].shape[2:], args["dilation"]
    cut_h, cut_w = (dh - 1) * (kh - 1), (dw - 1) * (kw - 1)
    return place_and_crop(args, full[:, :, cut_h:full.shape[2] - cut_h,
                                     cut_w:full.shape[3] - cut_w])


def input_grad_uncropped(args):
    n, c, h, w = args["input_shape"]
    (top, bottom), (left, right) = _pads(args["padding"])
    full = np.zeros((n, c, h + top + bottom, w + left + right))
    da_pad = full_correlation(args, args["stride"])
    full[:, :, :da_pad.shape[2], :da_pad.shape[3]] = da_pad
    return full


def input_grad_uncropped_unplaced(args):
    return full_correlation(args, args["stride"])


# ---- conv: dL/dW and dL/db ------------------------------------------------------------------

def weight_grad(args, images=slice(None)):
    x = args["x"][images]
    return ref.conv2d_backward(x, np.zeros(args["weight_shape"]), args["grad_out"][images],
                               args["stride"], args["padding"], args["dilation"], False, True,
                               False, args["groups"])[1]


def bias_grad(args, images=slice(None)):
    return args["grad_out"][images].sum(axis=(0, 2, 3))


# ---- pooling --------------------------------------------------------------------------------

def max_windows(args):
    """(i, j, rows, cols) of every max-pool window, clipped to the real cells (the -inf
    padding never wins)."""
    (kh, kw), (sh, sw), (ph, pw) = args["kernel_size"], args["stride"], args["padding"]
    h, w = args["x"].shape[2:]
    oh, ow = args["grad_out"].shape[2:]
    for i in range(oh):
        for j in range(ow):
            top, left = i * sh - ph, j * sw - pw
            yield i, j, slice(max(top, 0), min(top + kh, h)), slice(max(left, 0),
                                                                   min(left + kw, w))


def route_max(args, share, accumulate=True):
    """Z' when each window's A' goes to its cells in the proportions `share(values)` gives
    (values: the window's cells, row-major, shape (N, C, cells)); `accumulate=False` writes
    (=) where it should add (+=), so a later window overwrites an earlier one."""
    x, grad_out = args["x"], args["grad_out"]
    dz = np.zeros_like(x)
    for i, j, rows, cols in max_windows(args):
        values = x[:, :, rows, cols]
        weights = share(values.reshape(values.shape[:2] + (-1,))).reshape(values.shape)
        given = weights * grad_out[:, :, i, j, None, None]
        if accumulate:
            dz[:, :, rows, cols] += given
        else:
            dz[:, :, rows, cols] = np.where(weights != 0, given, dz[:, :, rows, cols])
    return dz


def one_hot(index, values):
    return (np.arange(values.shape[-1]) == index[..., None]).astype(float)


def first_max(values):
    return one_hot(values.argmax(axis=-1), values)


def last_max(values):
    return one_hot(values.shape[-1] - 1 - values[..., ::-1].argmax(axis=-1), values)


def every_max(values):
    return (values == values.max(axis=-1, keepdims=True)).astype(float)


def split_max(values):
    tied = every_max(values)
    return tied / tied.sum(axis=-1, keepdims=True)


def every_cell(values):
    return np.ones_like(values)


def route_avg(args, count_include_pad=None, divide=True, accumulate=True):
    """Z' of an average pool, with the divisor rule or the accumulation changed."""
    grad_out, (n, c, h, w) = args["grad_out"], args["x_shape"]
    if count_include_pad is None:
        count_include_pad = args["count_include_pad"]
    dz = np.zeros((n, c, h, w))
    for i, j, rows, cols, divisor in _avg_windows(h, w, args["kernel_size"], args["stride"],
                                                  args["padding"], args["ceil_mode"],
                                                  count_include_pad):
        share = grad_out[:, :, i, j, None, None] / (divisor if divide else 1)
        if accumulate:
            dz[:, :, rows, cols] += share
        else:
            dz[:, :, rows, cols] = share
    return dz


# ---- the mistakes ---------------------------------------------------------------------------

DA = "dL/dA = W_180 ⊛ pad(dilate(Z', s), d(k-1))"
MISTAKES = [
    Mistake("conv2d_input_grad",
            f"your dL/dA equals the correlation with the un-flipped kernel: rotate W by 180° "
            f"(W_180), {DA}", input_grad_unflipped),
    Mistake("conv2d_input_grad",
            f"your dL/dA holds only the last filter's term: the filters' terms must add up "
            f"(+=, not =), {DA} summed over f", input_grad_last_filter),
    Mistake("conv2d_input_grad",
            f"you did not dilate Z' by the stride: put s-1 zeros between its entries, {DA}",
            input_grad_not_dilated),
    Mistake("conv2d_input_grad",
            f"you padded dilate(Z', s) by k-1 instead of d(k-1), the dilated kernel's extent "
            f"minus one: {DA}", input_grad_padded_k_minus_1),
    Mistake("conv2d_input_grad",
            f"you did not crop: dL/dA has the input's shape, so cut the forward's padding off "
            f"{DA} (top and left first)", input_grad_uncropped),
    Mistake("conv2d_input_grad",
            f"you did not crop: dL/dA has the input's shape, so cut the forward's padding off "
            f"{DA} (top and left first)", input_grad_uncropped_unplaced),
    Mistake("conv2d_weight_grad",
            "your dL/dW is rotated by 180°: dL/dW = Z' ⊛ A needs no flip, dL/dW[f, c, i, j] = "
            "Σ Z'[n, f, oh, ow] A_pad[n, c, oh·s + i·d, ow·s + j·d]",
            lambda a: weight_grad(a)[:, :, ::-1, ::-1]),
    Mistake("conv2d_weight_grad",
            "your dL/dW holds only the first image's term: dL/dW = Z' ⊛ A sums over every image "
            "of the batch", lambda a: weight_grad(a, slice(0, 1))),
    Mistake("conv2d_weight_grad",
            "your dL/dW holds only the last image's term: the images' terms must add up (+=, "
            "not =), dL/dW = Z' ⊛ A summed over the batch",
            lambda a: weight_grad(a, slice(-1, None))),
    Mistake("conv2d_weight_grad",
            "your dL/dW is the batch's mean: dL/dW = Z' ⊛ A is the sum over the images, not the "
            "mean (the loss already averages, if it should)",
            lambda a: weight_grad(a) / a["x"].shape[0]),
    Mistake("conv2d_bias_grad",
            "your dL/db holds only the first image's term: dL/db sums Z' over the batch too "
            "(every axis but F)", lambda a: bias_grad(a, slice(0, 1))),
    Mistake("conv2d_bias_grad",
            "your dL/db holds only the last image's term: the images' terms must add up (+=, "
            "not =), dL/db = Z' summed over every axis but F",
            lambda a: bias_grad(a, slice(-1, None))),
    Mistake("conv2d_bias_grad",
            "your dL/db is the batch's mean: dL/db = Z' summed (not averaged) over every axis "
            "but F", lambda a: bias_grad(a) / a["grad_out"].shape[0]),
    Mistake("max_pool2d_backward",
            "overlapping windows overwrote each other's gradient (the tutorial's -0.1 instead of "
            "-0.2): Z'[argmax] += A'[i], adding (np.add.at, or a loop with +=) where a cell wins "
            "several windows", lambda a: route_max(a, first_max, accumulate=False)),
    Mistake("max_pool2d_backward",
            "you gave A'[i] to every cell of the window: only the window's maximum gets it, "
            "Z'[argmax of window i] += A'[i]", lambda a: route_max(a, every_cell)),
    Mistake("max_pool2d_backward",
            "a tie went to the last maximum: the first maximum in row-major window order gets "
            "A'[i] (np.argmax returns the first)", lambda a: route_max(a, last_max)),
    Mistake("max_pool2d_backward",
            "you split A'[i] among tied maxima: the whole A'[i] goes to the first maximum in "
            "row-major window order", lambda a: route_max(a, split_max)),
    Mistake("max_pool2d_backward",
            "you gave A'[i] to every tied maximum: only the first maximum in row-major window "
            "order gets it", lambda a: route_max(a, every_max)),
    Mistake("avg_pool2d_backward",
            "overlapping windows overwrote each other's share: every cell of window i gets "
            "Z'[z] += A'[i] / divisor, adding where windows overlap",
            lambda a: route_avg(a, accumulate=False)),
    Mistake("avg_pool2d_backward",
            "you did not divide: each cell of window i gets an even share, Z'[z] += A'[i] / "
            "divisor (the window's size)", lambda a: route_avg(a, divide=False)),
    Mistake("avg_pool2d_backward",
            "your divisor has count_include_pad the wrong way round: with True it counts the "
            "padding cells the window covers, with False only the real ones",
            lambda a: route_avg(a, count_include_pad=not a["count_include_pad"])),
]


# ---- Value: `=` instead of `+=` -------------------------------------------------------------

class OverwritingValue:
    """micrograd's Value in which the ops named in `overwrite` set `.grad =` in their backward
    instead of adding (`+=`): the model of that mistake (only a Value used twice shows it)."""

    overwrite: frozenset = frozenset()

    def __init__(self, data, children=(), op=""):
        self.data, self.grad, self._prev, self._op = float(data), 0.0, tuple(children), op
        self._backward = lambda: None

    def _give(self, op, node, amount):
        node.grad = amount if op in self.overwrite else node.grad + amount

    def _unary(self, data, op, derivative):
        out = type(self)(data, (self,), op)
        out._backward = lambda: self._give(op, self, derivative(out) * out.grad)
        return out

    def __add__(self, other):
        other = other if isinstance(other, OverwritingValue) else type(self)(other)
        out = type(self)(self.data + other.data, (self, other), "add")

        def _backward():
            self._give("add", self, out.grad)
            self._give("add", other, out.grad)
        out._backward = _backward
        return out

    def __mul__(self, other):
        other = other if isinstance(other, OverwritingValue) else type(self)(other)
        out = type(self)(self.data * other.data, (self, other), "mul")

        def _backward():
            self._give("mul", self, other.data * out.grad)
            self._give("mul", other, self.data * out.grad)
        out._backward = _backward
        return out

    __radd__, __rmul__ = __add__, __mul__

    def __pow__(self, k):
        return self._unary(self.data ** k, "pow", lambda out: k * self.data ** (k - 1))

    def relu(self):
        return self._unary(max(self.data, 0.0), "relu", lambda out: float(out.data > 0))

    def tanh(self):
        return self._unary(math.tanh(self.data), "tanh", lambda out: 1 - out.data ** 2)

    def exp(self):
        return self._unary(math.exp(self.data), "exp", lambda out: out.data)

    # the same walk as the skeleton's Value.backward, which the learner keeps as it is
    backward = SkeletonValue.backward


def value_grads(value_class, args) -> np.ndarray:
    """dL/d(leaf) for each leaf of a value case's expression, built with `value_class`."""
    leaves = [value_class(v) for v in args["leaves"]]
    args["expression"](value_class, *leaves).backward()
    return np.array([leaf.grad for leaf in leaves])


def overwriting(ops) -> type:
    return type("Overwriting", (OverwritingValue,), {"overwrite": frozenset(ops)})


ALL_OPS = ("add", "mul", "pow", "relu", "tanh", "exp")
for _op in ALL_OPS:
    for _ops in ((_op,), ALL_OPS):      # in this op only, or `=` everywhere
        MISTAKES.append(Mistake(
            _op, f"your backward of {_op} overwrote .grad instead of adding to it: a Value used "
            f"twice gets a gradient from each use, so write self.grad += (local derivative) · "
            f"out.grad", lambda a, ops=_ops: value_grads(overwriting(ops), a)))

MISTAKES.append(Mistake(
    "Mean", "you did not divide by n: dL/dx = dL/dm / n, copied along the averaged axis",
    lambda a: np.broadcast_to(np.expand_dims(a["R"], a["axis"]), a["x"].shape).copy()))


# ---- diagnosis ------------------------------------------------------------------------------

def diagnose(case, got) -> list[str]:
    """The sentences of the mistakes whose model gives exactly `got` on this case (and shows
    there: the model differs from the right answer). Empty when none does."""
    found = []
    for mistake in MISTAKES:
        if mistake.function != case.function or case.kind == "graph":
            continue
        model = mistake.model(case.args)
        if same(model, got) and not same(model, case.expected) and mistake.sentence not in found:
            found.append(mistake.sentence)
    return found


def shape_mistakes(case) -> dict[str, set]:
    """For dL/dA: the (H, W) a mistake gives, by sentence, from the settings alone (the
    learner's own way of cropping may differ from the model's, so both the uncropped and the
    cropped sizes count). Other functions: none."""
    if case.function != "conv2d_input_grad":
        return {}
    args = case.args
    n, c, h, w = args["input_shape"]
    pads = _pads(args["padding"])
    oh_ow, stride = args["grad_out"].shape[2:], args["stride"]

    def sizes(dilate: bool, pad_dk: bool, axis: int) -> tuple[int, int]:
        """(uncropped, cropped) size of one axis of W_180 ⊛ pad(Z'...) with these steps."""
        k, d, (before, after) = args["w"].shape[2 + axis], args["dilation"][axis], pads[axis]
        length = stride[axis] * (oh_ow[axis] - 1) + 1 if dilate else oh_ow[axis]
        full = length + 2 * (d * (k - 1) if pad_dk else k - 1) - d * (k - 1)
        return full, full - before - after

    def shapes(dilate, pad_dk, cropped):
        rows, cols = sizes(dilate, pad_dk, 0), sizes(dilate, pad_dk, 1)
        if cropped:
            return {(rows[1], cols[1])}
        return {(rows[0], cols[0]), (h + sum(pads[0]), w + sum(pads[1]))}

    found = {
        sentence_of(input_grad_not_dilated): shapes(False, True, True) | shapes(False, True,
                                                                                False),
        sentence_of(input_grad_padded_k_minus_1): shapes(True, False, True) | shapes(True, False,
                                                                                     False),
    }
    if pads != ((0, 0), (0, 0)):
        found[sentence_of(input_grad_uncropped)] = shapes(True, True, False)
    return found


def sentence_of(model) -> str:
    return next(m.sentence for m in MISTAKES if m.model is model)


def diagnose_shape(case, shape) -> list[str]:
    """The mistakes that would give an answer of this shape here (and not the right shape)."""
    if len(shape) != 4 or tuple(shape[:2]) != case.expected.shape[:2]:
        return []
    return [sentence for sentence, shapes in shape_mistakes(case).items()
            if tuple(shape[2:]) in shapes - {case.expected.shape[2:]}]
