"""TINYGRAD_CONV_PURE_PYTHON=1: run the engine from its .py sources, not from the copies Cython
compiled from them (setup.py's ENGINE: autograd, dtypes, tensor).

A build leaves `autograd.py` and `autograd.cpython-*.so` side by side, and Python imports the
compiled one. pdb cannot step into compiled code, so a learner sets this switch: the finder
below, put first on `sys.meta_path` by `tinygrad_conv/__init__.py` before anything else is
imported, answers for those modules with their .py files. Both run the same source.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys

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


def install_if_requested() -> bool:
    """Put the finder first when the switch is set ("1"); whether it is on."""
    if os.environ.get(SWITCH) != "1":
        return False
    if not any(isinstance(f, _SourceFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _SourceFinder())
    return True


PURE_PYTHON = install_if_requested()
