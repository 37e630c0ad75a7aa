"""The package's version, from its one source: `version` in pyproject.toml, as installed.

An install (wheel, sdist or editable) records it in the package metadata, read here. A checkout
built in place and never installed (`python setup.py build_ext --inplace`) has no metadata, so
the version is read from the checkout's pyproject.toml instead.
"""

import re
from importlib import metadata
from pathlib import Path

UNKNOWN = "0+unknown"


def _from_pyproject(path: Path) -> str:
    """The [project] table's version in the pyproject.toml at path, or UNKNOWN."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return UNKNOWN
    project = text.partition("\n[project]\n")[2].partition("\n[")[0]
    if not re.search(r'^name\s*=\s*"tinygrad_conv"', project, re.MULTILINE):
        return UNKNOWN
    version = re.search(r'^version\s*=\s*"([^"]+)"', project, re.MULTILINE)
    return version.group(1) if version else UNKNOWN


def _version() -> str:
    try:
        return metadata.version("tinygrad_conv")
    except metadata.PackageNotFoundError:
        return _from_pyproject(Path(__file__).resolve().parent.parent / "pyproject.toml")


__version__ = _version()
