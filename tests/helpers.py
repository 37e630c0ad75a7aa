"""What many test files need, in one place: comparing numbers, loading an example script,
comparing checkpoints, running Python in a fresh interpreter.

    from helpers import assert_close, assert_same_checkpoint, load_example, run_python
"""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


# ---- numbers -----------------------------------------------------------------------------------

def assert_close(ours, expected, rtol: float, what: str = "", *, atol: float = 0.0) -> None:
    """Every element of `ours` within atol + rtol * S of `expected`, S the largest |expected|.

    So `rtol` is relative to the scale of the values, everywhere: an element that cancels to
    near 0 is held to the accuracy of the largest one (its error is rounding at that scale, not
    at its own). NaN must come out NaN in the same places, and an infinity equal. `expected`
    may be a torch tensor. The shapes must agree; the dtype is the caller's to check.
    """
    if hasattr(expected, "detach"):
        expected = expected.detach().numpy()
    ours, expected = np.asarray(ours), np.asarray(expected)
    assert ours.shape == expected.shape, f"{what}: shape {ours.shape} != {expected.shape}"
    ours64, expected64 = ours.astype(np.float64), expected.astype(np.float64)
    nan = np.isnan(expected64)
    assert np.array_equal(np.isnan(ours64), nan), f"{what}: NaN in different places"
    infinite = np.isinf(expected64)
    assert np.array_equal(ours64[infinite], expected64[infinite]), f"{what}: infinities differ"
    finite = ~nan & ~infinite
    if not finite.any():
        return
    scale = float(np.abs(expected64[finite]).max())
    error = np.where(finite, np.abs(ours64 - np.where(finite, expected64, 0)), 0.0)
    allowed = atol + rtol * scale
    if error.max() > allowed:
        at = np.unravel_index(int(np.argmax(error)), error.shape)
        raise AssertionError(
            f"{what}: at index {tuple(int(i) for i in at)} ours {ours64[at]!r}, expected "
            f"{expected64[at]!r}: |difference| {error[at]:.3e} > {allowed:.3e} "
            f"(atol {atol:g} + rtol {rtol:g} * largest |expected| {scale:.3e})")


# ---- example scripts ---------------------------------------------------------------------------

def load_example(name: str) -> ModuleType:
    """examples/<name>.py as a fresh module (the examples are scripts, not in the package)."""
    spec = importlib.util.spec_from_file_location(f"{name}_example", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---- checkpoints -------------------------------------------------------------------------------

def assert_same_checkpoint(got: dict, expected: dict, where: str = "state",
                           skip: tuple[str, ...] = ()) -> None:
    """The two nested states are the same to the bit: the same keys in the same order, the
    same Python types, arrays of the same dtype, shape and bytes, floats with the same sign
    (NaN matching NaN). Keys whose path (`state/a/b`) starts with one of `skip` are not
    compared (only their presence is)."""
    assert isinstance(got, dict), f"{where}: {type(got).__name__}, not a dict"
    assert list(got) == list(expected), f"{where}: keys {list(got)} != {list(expected)}"
    for key, value in expected.items():
        path = f"{where}/{key}"
        if path.startswith(skip):
            continue
        out = got[key]
        if isinstance(value, dict):
            assert_same_checkpoint(out, value, path, skip)
        elif isinstance(value, np.ndarray):
            assert type(out) is np.ndarray, f"{path}: {type(out).__name__}, not an array"
            assert (out.dtype, out.shape) == (value.dtype, value.shape), \
                f"{path}: {out.dtype} {out.shape} != {value.dtype} {value.shape}"
            assert out.tobytes() == value.tobytes(), f"{path}: the values differ"
        else:
            assert type(out) is type(value), f"{path}: {type(out).__name__} != " \
                f"{type(value).__name__}"
            if isinstance(value, float):
                assert math.copysign(1, out) == math.copysign(1, value), f"{path}: sign"
                assert out == value or (math.isnan(out) and math.isnan(value)), \
                    f"{path}: {out!r} != {value!r}"
            else:
                assert out == value, f"{path}: {out!r} != {value!r}"


# ---- a fresh interpreter -----------------------------------------------------------------------

def python_env(path: tuple[str | os.PathLike, ...] = (), **variables: str) -> dict[str, str]:
    """os.environ with this checkout (after `path`) first on PYTHONPATH, plus `variables`."""
    entries = [os.fspath(p) for p in path] + [os.fspath(ROOT)]
    if os.environ.get("PYTHONPATH"):
        entries.append(os.environ["PYTHONPATH"])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(entries), **variables}


def run_python(args: list[str], *, cwd: str | os.PathLike = ROOT, timeout: float = 300,
               check: bool = True, path: tuple = (), env: dict[str, str] | None = None,
               input: str | None = None) -> subprocess.CompletedProcess:
    """`python *args` in a new interpreter that imports this checkout's tinygrad_conv; `input`
    on its stdin, output captured as text. With `check`, a non-zero exit fails the test
    showing its output."""
    done = subprocess.run([sys.executable, *map(os.fspath, args)], cwd=cwd, timeout=timeout,
                          env=python_env(path, **(env or {})), capture_output=True, text=True,
                          input=input)
    if check:
        assert done.returncode == 0, (
            f"python {' '.join(map(str, args))} exited with {done.returncode} (a negative "
            f"code is a signal)\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return done


def start_python(args: list[str], *, cwd: str | os.PathLike = ROOT,
                 env: dict[str, str] | None = None, **popen) -> subprocess.Popen:
    """The same interpreter set-up as `run_python`, started without waiting (to be killed)."""
    return subprocess.Popen([sys.executable, *map(os.fspath, args)], cwd=cwd,
                            env=python_env(**(env or {})), **popen)
