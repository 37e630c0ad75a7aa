"""The grading loop: for each task and function, level by level, run every case (fixed and
hidden), print one line per level passed, and stop a function at its first failing level.
The `new` command, which copies the skeletons, is here too."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np

import tinygrad_conv
from tinygrad_conv.exercises import report
from tinygrad_conv.exercises.cases import FUNCTIONS, LEVELS, TASKS, cases_for
from tinygrad_conv.exercises.checks import check, learner_line
from tinygrad_conv.exercises.student import load_module

SKELETONS = Path(__file__).resolve().parent / "skeletons"
EXERCISE_FILES = ("conv.py", "pool.py", "value.py")


def new(directory, force: bool = False, out=print) -> int:
    """Copy the skeletons into `directory`; an existing file is kept unless `force`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    kept = [name for name in EXERCISE_FILES if (directory / name).exists() and not force]
    if kept:
        out(f"{directory}: {', '.join(kept)} already there, nothing copied (--force overwrites "
            f"them, and loses your work in them)")
        return 1
    for name in EXERCISE_FILES:
        shutil.copyfile(SKELETONS / name, directory / name)
    out(f"{directory}: wrote {', '.join(EXERCISE_FILES)}. Start with conv.py, then run\n"
        f"  python -m tinygrad_conv.exercises grade {directory} --task conv --level 1")
    return 0


def grade(directory, tasks=TASKS, functions=(), level=None, seed=None, out=print) -> bool:
    """Grade the learner's files in `directory`: True when every case of every chosen
    function passes, up to `level` (all levels when None)."""
    directory = Path(directory)
    seed = random.randrange(10**6) if seed is None else seed
    out(f"grading {directory.resolve().name}/ (hidden cases from seed {seed}: --seed {seed} "
        f"repeats them)")
    all_pass = True
    threads = tinygrad_conv.get_num_threads()
    tinygrad_conv.set_num_threads(1)    # the cases are tiny: threads would only cost time
    try:
        for task in tasks:
            chosen = [f for f in FUNCTIONS[task] if not functions or f in functions]
            if chosen:
                all_pass &= grade_task(directory, task, chosen, level, seed, out)
    finally:
        tinygrad_conv.set_num_threads(threads)
    return all_pass


def grade_task(directory: Path, task: str, chosen, level, seed, out) -> bool:
    out(f"\n{task} task ({task}.py)")
    path = directory / f"{task}.py"
    if not path.exists():
        out(f"  not started: no {path} (make it with: python -m tinygrad_conv.exercises new "
            f"{directory})")
        return False
    try:
        module = load_module(path)
    except Exception as e:          # a syntax error, or an import that fails
        out(f"  {path.name} does not import: {type(e).__name__}: {e}")
        return False
    top = len(LEVELS[task]) if level is None else min(level, len(LEVELS[task]))
    cases = {lv: cases_for(task, lv, np.random.default_rng(1000 + lv), hidden=False)
             + cases_for(task, lv, np.random.default_rng([seed, TASKS.index(task), lv]),
                         hidden=True)
             for lv in range(1, top + 1)}
    passing = []
    for function in chosen:
        if grade_function(task, function, module, cases, out):
            passing.append(function)
    out(f"{task}: {len(passing)} of {len(chosen)} functions pass levels 1-{top}")
    return len(passing) == len(chosen)


def grade_function(task: str, function: str, module, cases: dict, out) -> bool:
    out(function)
    for lv, level_cases in cases.items():
        results = [check(case, module) for case in level_cases if case.function == function]
        if not results:
            continue
        stub = next((r for r in results if r.status == "not started"), None)
        if stub is not None:
            out(f"  {report.level_name(task, lv)}: not started ({stub.problem})")
            return False
        if all(r.status == "pass" for r in results):
            out(report.passed(task, lv, results))
            continue
        for line in report.failed(task, lv, results):
            out(line)
        if any(c.function == function for later in range(lv + 1, len(cases) + 1)
               for c in cases[later]):
            out("  (the next levels wait until this one passes)")
        return False
    return True


__all__ = ["grade", "learner_line", "new"]
