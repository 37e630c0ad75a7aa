"""TINYGRAD_CONV_PURE_PYTHON=1: run the engine from its .py sources, not from the copies Cython
compiled from them (setup.py's ENGINE: autograd, dtypes, tensor).

A build leaves `autograd.py` and `autograd.cpython-*.so` side by side, and Python imports the
compiled one. pdb cannot step into compiled code, so a learner sets this switch: the finder
below, put first on `sys.meta_path` by `tinygrad_conv/__init__.py` before anything else is
imported, answers for those modules with their .py files. Both run the same source.

In a source checkout (an editable install, or a build in place) an engine file edited after
the last build would otherwise be shadowed by its stale compiled copy, and the edit would
silently do nothing: there the .py files run too, with a warning that says how to rebuild.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import warnings

SWITCH = "TINYGRAD_CONV_PURE_PYTHON"
COMPILED = ("autograd", "dtypes", "ops", "tensor")  # setup.py's ENGINE
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


class _SourceFinder(importlib.abc.MetaPathFinder):
    """Finds tinygrad_conv.<name> for each compiled name as its .py source file."""

    def find_spec(self, fullname, path=None, target=None):
        package, _, name = fullname.rpartition(".")
        if package != "tinygrad_conv" or name not in COMPILED:
            return None
        return importlib.util.spec_from_file_location(
            fullname, os.path.join(_PACKAGE_DIR, f"{name}.py"))


def stale_compiled_modules(package_dir: str = _PACKAGE_DIR) -> list[str]:
    """The engine files edited after their compiled copy was built, in a source checkout
    (setup.py beside the package) only: an installed wheel's file times mean nothing."""
    if not os.path.isfile(os.path.join(os.path.dirname(package_dir), "setup.py")):
        return []
    stale = []
    for name in COMPILED:
        source = os.path.join(package_dir, f"{name}.py")
        built = [os.path.join(package_dir, name + suffix)
                 for suffix in importlib.machinery.EXTENSION_SUFFIXES]
        built = [path for path in built if os.path.isfile(path)]
        if built and os.path.getmtime(source) > max(map(os.path.getmtime, built)):
            stale.append(f"{name}.py")
    return stale


def install_if_requested() -> bool:
    """Put the finder first when the switch is set ("1"), or when an engine file is newer than
    its compiled copy; whether the .py files run."""
    if os.environ.get(SWITCH) != "1":
        stale = stale_compiled_modules()
        if not stale:
            return False
        warnings.warn(f"tinygrad_conv: {', '.join(stale)} changed after the engine was compiled, "
                      f"so the engine runs from its .py files (slower); rebuild to compile it "
                      f"again: pip install -e . (or python setup.py build_ext --inplace)",
                      RuntimeWarning, stacklevel=2)
    if not any(isinstance(f, _SourceFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _SourceFinder())
    return True


PURE_PYTHON = install_if_requested()
