"""What the grader prints: a line per level passed, and for the first failing case of a
function its problem, the diagnosis, and a map of which cells differ."""

from __future__ import annotations

import inspect

import numpy as np

from tinygrad_conv.exercises.cases import LEVELS
from tinygrad_conv.exercises.checks import Result

NO_MATCH = ("no single known mistake matches (two mistakes at once, or one the grader does "
            "not know): the map shows which cells differ")
MAX_PLANES, MAX_CELLS = 3, 6


def level_name(task: str, level: int) -> str:
    return f"level {level} ({LEVELS[task][level - 1]})"


def passed(task: str, level: int, results: list[Result]) -> str:
    hidden = sum(r.case.hidden for r in results)
    fixed = len(results) - hidden
    return (f"  {level_name(task, level)}: pass ({fixed} case{'s' * (fixed != 1)} and "
            f"{hidden} hidden)")


def failed(task: str, level: int, results: list[Result]) -> list[str]:
    """The first failing case in full, the other failing ones by name."""
    bad = [r for r in results if r.status != "pass"]
    first = bad[0]
    case = first.case
    name = "a hidden case" if case.hidden else f"case \"{case.name}\""
    lines = [f"  {level_name(task, level)}: FAIL on {name}"]
    if first.status == "error":
        lines.append(f"    your code raised {first.problem}")
        if first.where:
            lines.append(f"      at {first.where}")
        return lines + others(bad)
    lines.append(f"    {first.problem}")
    if first.got is not None and first.got.shape != case.expected.shape and not first.diagnosis:
        lines.append("    diagnosis: no known mistake gives this shape with these settings")
    elif first.got is not None:
        lines += ["    " + line for line in diagnosis(first.diagnosis)]
        lines += ["    " + line for line in cell_map(case.expected, first.got, case)]
    return lines + others(bad)


def diagnosis(sentences: list[str]) -> list[str]:
    if not sentences:
        return [f"diagnosis: {NO_MATCH}"]
    if len(sentences) == 1:
        return [f"diagnosis: {sentences[0]}"]
    return ["diagnosis: several known mistakes match:"] + [f"  - {s}" for s in sentences]


def others(bad: list[Result]) -> list[str]:
    if len(bad) == 1:
        return []
    names = [r.case.name for r in bad[1:] if not r.case.hidden]
    hidden = sum(r.case.hidden for r in bad[1:])
    if hidden:
        names.append(f"{hidden} hidden case{'s' * (hidden > 1)}")
    return [f"    also failing: {'; '.join(dict.fromkeys(names))}"]


def cell_map(expected: np.ndarray, got: np.ndarray, case) -> list[str]:
    """Which cells differ ('x') and which agree ('.'), plane by plane, then a few cells with
    both values. Answers of another shape get the two shapes only."""
    if expected.shape != got.shape:
        return []
    wrong = ~np.isclose(got, expected, rtol=1e-7, atol=1e-10)
    if case.kind == "value":      # the gradient of each leaf, named as in the expression
        leaves = list(inspect.signature(case.args["expression"]).parameters)[1:]
        return [f"L = {case.args['text']}:"] + [
            f"  dL/d{name} = {right:.6g} (yours {mine:.6g})" + ("" if ok else "  <- differs")
            for name, right, mine, ok in zip(leaves, expected, got, ~wrong)]
    planes = wrong.reshape((-1,) + wrong.shape[-2:]) if wrong.ndim >= 2 else wrong[None, None]
    lines = ["cells that differ (x) and agree (.):"]
    shown = 0
    for index in np.ndindex(*wrong.shape[:-2]) if wrong.ndim >= 2 else [()]:
        plane = wrong[index] if wrong.ndim >= 2 else wrong[None]
        if not plane.any():
            continue
        if shown == MAX_PLANES:
            lines.append(f"  ... and {sum(p.any() for p in planes) - shown} more planes")
            break
        label = ("filter {} channel {}" if case.function == "conv2d_weight_grad" else
                 "image {} channel {}" if wrong.ndim == 4 else "").format(*index)
        if label:
            lines.append(f"  {label}:")
        lines += ["    " + " ".join("x" if cell else "." for cell in row) for row in plane]
        shown += 1
    cells = list(zip(*np.nonzero(wrong)))
    lines.append(f"{len(cells)} cell{'s differ' if len(cells) > 1 else ' differs'}"
                 f"{'; the first ones' if len(cells) > MAX_CELLS else ''}, [index]: right vs "
                 f"yours:")
    for cell in cells[:MAX_CELLS]:
        lines.append(f"  {list(map(int, cell))}: {expected[cell]:.6g} vs {got[cell]:.6g}")
    return lines


def not_started(function: str, result: Result) -> str:
    return f"{function}: not started ({result.problem})"
