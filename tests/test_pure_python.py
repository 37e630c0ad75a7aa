"""The engine (autograd.py, dtypes.py, tensor.py) runs compiled by Cython when built, and from
its .py files under TINYGRAD_CONV_PURE_PYTHON=1: the files a learner steps through in pdb. Both
are one source, so the engine's own tests pass both ways."""

from __future__ import annotations

import importlib.machinery
import os
import re
import textwrap
from pathlib import Path

import pytest

import tinygrad_conv
from tinygrad_conv import _pure_python

from helpers import ROOT, run_python

PURE = {"TINYGRAD_CONV_PURE_PYTHON": "1"}

PDB_SCRIPT = textwrap.dedent("""
    import inspect, io, pdb
    import numpy as np
    import tinygrad_conv.autograd as autograd
    from tinygrad_conv import Tensor

    a = Tensor(np.ones(16, np.float32), requires_grad=True)
    b = Tensor(np.full(16, 2.0, np.float32), requires_grad=True)
    lines, first = inspect.getsourcelines(autograd.Function.apply)
    body = first + next(i for i, l in enumerate(lines) if l.strip().startswith("ctx = cls()"))
    commands = f"break {autograd.__file__}:{body}\\ncontinue\\nwhere\\nnext\\np ctx\\ncontinue\\n"
    out = io.StringIO()
    pdb.Pdb(stdin=io.StringIO(commands), stdout=out).run("c = a * b")
    print(autograd.__file__)
    print(out.getvalue())
""")


def test_under_the_switch_pdb_stops_inside_function_apply_in_autograd_py():
    done = run_python(["-c", PDB_SCRIPT], env=PURE, timeout=120)
    first, _, session = done.stdout.partition("\n")
    assert first.endswith("autograd.py"), done.stdout
    assert "Breakpoint 1 at" in session and "autograd.py" in session, session
    # `where` shows Function.apply's frame in autograd.py, called from tensor.py's __mul__
    assert re.search(r"autograd\.py\(\d+\)apply\(\)", session), session
    assert re.search(r"tensor\.py\(\d+\)__mul__\(\)", session), session
    assert "<tinygrad_conv.ops.Mul object" in session, session  # `p ctx` after `next`


@pytest.mark.parametrize("name", _pure_python.COMPILED)
def test_the_switch_loads_each_engine_module_from_its_py_file(name):
    done = run_python(["-c", f"import tinygrad_conv.{name} as m; print(m.__file__)"], env=PURE)
    # the package's own .py file: the checkout's, or the installed wheel's
    package = Path(tinygrad_conv.__file__).resolve().parent
    assert Path(done.stdout.strip()).resolve() == package / f"{name}.py"


def test_without_the_switch_a_built_engine_is_the_compiled_one():
    compiled = [p for name in _pure_python.COMPILED for suffix in
                importlib.machinery.EXTENSION_SUFFIXES
                for p in (ROOT / "tinygrad_conv").glob(f"{name}{suffix}")]
    if not compiled:
        pytest.skip("the engine is not compiled in this checkout (setup.py build_ext)")
    assert not _pure_python.PURE_PYTHON or pytest.skip("this run has the switch on")
    done = run_python(["-c", "import tinygrad_conv.autograd as m; print(m.__file__)"],
                      env={"TINYGRAD_CONV_PURE_PYTHON": "0"})
    assert done.stdout.strip().endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))
    assert tinygrad_conv.autograd.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


def test_the_engines_tests_pass_from_the_py_files():
    files = ["tests/test_engine_pytorch_fidelity.py", "tests/test_inplace_versions.py",
             "tests/test_hooks.py", "tests/test_anomaly.py", "tests/test_custom_function.py",
             "tests/test_promotion.py"]
    done = run_python(["-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *files],
                      env=PURE, check=False, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]


def fake_checkout(tmp_path, with_setup_py: bool, source_age: float):
    """A package folder holding autograd.py and a compiled autograd beside it; the source is
    `source_age` seconds older (negative: newer) than the compiled file."""
    package = tmp_path / "tinygrad_conv"
    package.mkdir(parents=True)
    if with_setup_py:
        (tmp_path / "setup.py").write_text("")
    source = package / "autograd.py"
    built = package / f"autograd{importlib.machinery.EXTENSION_SUFFIXES[0]}"
    source.write_text("")
    built.write_bytes(b"")
    os.utime(built, (1_000_000, 1_000_000))
    os.utime(source, (1_000_000 - source_age, 1_000_000 - source_age))
    return str(package)


def test_an_engine_file_edited_after_the_build_is_named_stale_in_a_checkout(tmp_path):
    # an edit to autograd.py after `pip install -e .` would otherwise do nothing, silently
    assert _pure_python.stale_compiled_modules(fake_checkout(tmp_path, True, -5)) == ["autograd.py"]


def test_a_build_newer_than_its_sources_or_an_installed_wheel_is_not_stale(tmp_path):
    assert _pure_python.stale_compiled_modules(fake_checkout(tmp_path / "a", True, 5)) == []
    # no setup.py beside the package: an installed wheel, whose file times mean nothing
    assert _pure_python.stale_compiled_modules(fake_checkout(tmp_path / "b", False, -5)) == []


def test_a_stale_build_runs_the_py_files_with_a_warning_that_says_how_to_rebuild():
    script = textwrap.dedent("""
        import warnings
        from tinygrad_conv import _pure_python
        _pure_python.stale_compiled_modules = lambda: ["tensor.py"]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            print(_pure_python.install_if_requested())
        print(caught[0].message)
    """)
    # the switch off (the suite may run with it on): the warning is the stale build's own
    done = run_python(["-c", script], timeout=120, env={"TINYGRAD_CONV_PURE_PYTHON": "0"})
    on, message = done.stdout.splitlines()[:2]
    assert on == "True"
    assert "tensor.py changed after the engine was compiled" in message
    assert "pip install -e ." in message
