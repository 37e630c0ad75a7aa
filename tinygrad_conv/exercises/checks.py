"""What is checked on one case: the learner's answer is computed, then in order
1. it ran (a stub not yet written is "not started"; an exception is reported with the line of
   the learner's file it came from),
2. the contract: a new float64 numpy array of the right shape, the arguments left unchanged,
3. the values, against the library's kernels (float64, to 1e-7 relative),
4. (fixed, tie-free cases) `gradcheck`: the learner's gradient, used by the engine, against
   central differences of the forward (the library's; the learner's own for a Function).
A wrong answer goes to mistakes.py for a diagnosis.
"""

from __future__ import annotations

import copy
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import tinygrad_conv
from tinygrad_conv import Tensor
from tinygrad_conv.cnn_ops import AvgPool2d, Conv2d, MaxPool2d
from tinygrad_conv.exercises.cases import Case
from tinygrad_conv.exercises.mistakes import diagnose, diagnose_shape, same, value_grads
from tinygrad_conv.exercises.student import using
from tinygrad_conv.gradcheck import GradcheckError, gradcheck
from tinygrad_conv.reference import _pads


@dataclass
class Result:
    case: Case
    status: str                 # "pass", "fail", "not started" or "error"
    problem: str = ""           # what is wrong, one line
    where: str = ""             # for an error: the learner's line it came from
    got: np.ndarray | None = None
    diagnosis: list[str] = field(default_factory=list)


class NotStarted(Exception):
    """The learner's function (or one it needs) still raises NotImplementedError."""


def check(case: Case, module) -> Result:
    """Run one case on the learner's module and judge the answer."""
    try:
        got = learner_answer(case, module)
    except NotStarted as e:
        return Result(case, "not started", str(e))
    except Exception as e:          # a bug in the learner's code: report it, keep grading
        return Result(case, "error", f"{type(e).__name__}: {e}", where=learner_line(e, module))
    if case.expected is None:
        case.expected = library_answer(case)
    problem = contract_problem(case, got)
    if problem and isinstance(got, np.ndarray) and got.shape != case.expected.shape:
        # a wrong shape: a mistake's model may give exactly this answer, or the settings may
        # say which step gives this shape
        diagnosis = diagnose(case, got) or diagnose_shape(case, got.shape)
        return Result(case, "fail", problem, got=got, diagnosis=diagnosis)
    if problem:                     # not an array, or not float64
        return Result(case, "fail", problem)
    if not same(got, case.expected):
        wrong = int((~np.isclose(got, case.expected, rtol=1e-7, atol=1e-10)).sum())
        return Result(case, "fail", f"{wrong} of {got.size} values differ from the right ones",
                      got=got, diagnosis=diagnose(case, got))
    if case.kind in ("call", "function") and not case.hidden and case.tie_free:
        problem = gradcheck_problem(case, getattr(module, case.function))
        if problem:
            return Result(case, "fail", problem)
    return Result(case, "pass")


# ---- the learner's answer and the library's -------------------------------------------------

def learner_answer(case: Case, module):
    fn = getattr(module, case.function if case.kind != "value" else "Value", None)
    if fn is None:
        raise NotStarted(f"{module.__file__} has no {case.function}")
    try:
        if case.kind == "call":
            args = copy.deepcopy(case.args)
            got = fn(*args.values())
            for name, value in case.args.items():
                if isinstance(value, np.ndarray) and not np.array_equal(value, args[name]):
                    raise ValueError(f"{case.function} changed its argument {name}: leave the "
                                     f"arguments as they are and return a new array")
            return got
        if case.kind == "graph":
            with using({case.function: fn}):
                return graph_grad(case)
        if case.kind == "value":
            return value_grads(fn, case.args)
        return function_grad(fn, case.args)
    except NotImplementedError as e:
        raise NotStarted(f"NotImplementedError: {e}") from None


def library_answer(case: Case) -> np.ndarray:
    """The right answer of a case computed through the engine (graph, value, function cases;
    the call cases have theirs from cases.py)."""
    if case.kind == "graph":
        return graph_grad(case)
    if case.kind == "value":
        return value_grads(tinygrad_conv.Value, case.args)
    library_ops = {"Sigmoid": lambda x: x.sigmoid(), "Mean": lambda x, axis: x.mean(axis)}
    return function_grad(library_ops[case.function], case.args, apply=False)


def graph_grad(case: Case) -> np.ndarray:
    """Gradients that meet in the engine: a weight shared by two convs (dL/dW), or an input
    reused by a skip connection (dL/dA)."""
    a = case.args
    rng = np.random.default_rng(0)
    x = Tensor(a["x"], requires_grad=case.function == "conv2d_input_grad")
    w = Tensor(a["w"], requires_grad=case.function == "conv2d_weight_grad")
    settings = dict(stride=(1, 1), dilation=(1, 1), groups=1)
    if a["build"] == "shared weight":
        z1 = Conv2d.apply(x, w, padding=((0, 0), (0, 0)), **settings)
        z2 = Conv2d.apply(Tensor(a["x2"]), w, padding=((0, 0), (0, 0)), **settings)
        loss = (z1 * Tensor(rng.standard_normal(z1.shape))).sum() \
            + (z2 * Tensor(rng.standard_normal(z2.shape))).sum()
        loss.backward()
        return w.grad
    y = x + Conv2d.apply(x, w, padding=((1, 1), (1, 1)), **settings)
    (y * Tensor(rng.standard_normal(y.shape))).sum().backward()
    return x.grad


def function_grad(op, args, apply=True) -> np.ndarray:
    """dL/dx for L = sum(op(x) * R), op a Function subclass (apply) or a library op."""
    x = Tensor(args["x"], requires_grad=True)
    params = {"axis": args["axis"]} if "axis" in args else {}
    out = op.apply(x, **params) if apply else op(x, **params)
    (out * Tensor(args["R"])).sum().backward()
    if x.grad is None:
        raise ValueError("no gradient reached x: does backward return it?")
    return x.grad


# ---- the contract and gradcheck -------------------------------------------------------------

def contract_problem(case: Case, got) -> str:
    """What is wrong with the answer's type, dtype or shape ('' when nothing)."""
    if not isinstance(got, np.ndarray):
        return f"returned {type(got).__name__}, not a numpy array"
    if got.shape != case.expected.shape:
        return f"returned shape {got.shape}, expected {case.expected.shape}"
    if got.dtype != np.float64:
        return f"returned dtype {got.dtype}, expected float64 (the inputs' dtype)"
    return ""


def gradcheck_problem(case: Case, fn) -> str:
    """'' when the learner's gradient, used by the engine, passes gradcheck on this case."""
    a, rng = case.args, np.random.default_rng(1)
    name = case.function
    if case.kind == "function":             # a Function subclass: Sigmoid or Mean
        params = {"axis": a["axis"]} if "axis" in a else {}
        tensors = [Tensor(a["x"], requires_grad=True)]

        def op(x):
            return fn.apply(x, **params)
    elif name.startswith("conv2d"):
        if name == "conv2d_bias_grad":      # any layer with an output of Z's shape
            n, f, oh, ow = a["grad_out"].shape
            x, w, settings = rng.standard_normal((n, 1, oh, ow)), rng.standard_normal(
                (f, 1, 1, 1)), dict(stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1)
        else:
            x = a["x"] if "x" in a else rng.standard_normal(a["input_shape"])
            w = a["w"] if "w" in a else rng.standard_normal(a["weight_shape"])
            settings = {key: a[key] for key in ("stride", "padding", "dilation", "groups")}
        settings["padding"] = _pads(settings["padding"])
        wanted = ("conv2d_input_grad", "conv2d_weight_grad", "conv2d_bias_grad").index(name)
        tensors = [Tensor(v, requires_grad=i == wanted)
                   for i, v in enumerate((x, w, rng.standard_normal(w.shape[0])))]

        def op(*t):
            return Conv2d.apply(*t, **settings)
    elif name == "max_pool2d_backward":
        tensors = [Tensor(a["x"], requires_grad=True)]

        def op(x):
            return MaxPool2d.apply(x, kernel_size=a["kernel_size"], stride=a["stride"],
                                   padding=a["padding"])
    else:
        tensors = [Tensor(rng.standard_normal(a["x_shape"]), requires_grad=True)]

        def op(x):
            return AvgPool2d.apply(x, kernel_size=a["kernel_size"], stride=a["stride"],
                                   padding=a["padding"], ceil_mode=a["ceil_mode"],
                                   count_include_pad=a["count_include_pad"])
    try:
        with using({name: fn}):
            gradcheck(op, tensors)
    except GradcheckError as e:
        return f"values right, but gradcheck fails through the engine: {e}"
    return ""


def learner_line(error: BaseException, module) -> str:
    """'file, line N, in fn: code' of the deepest frame in the learner's own files."""
    folder = Path(module.__file__).resolve().parent
    frames = [f for f in traceback.extract_tb(error.__traceback__)
              if Path(f.filename).resolve().parent == folder]
    if not frames:
        return ""
    f = frames[-1]
    return f"{Path(f.filename).name}, line {f.lineno}, in {f.name}: {(f.line or '').strip()}"
