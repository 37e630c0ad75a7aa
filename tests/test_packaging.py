"""The package as built and installed: every kernel inside it, one version, the build recorded.

CI runs these (with the whole suite) twice: against the editable install of the checkout, and
against the wheel built from the sdist, installed in a fresh environment, from a directory that
holds no package source (see .ci/run). The second run is the one that catches a kernel missing
from the wheel or a version that drifted from pyproject.toml.
"""

from __future__ import annotations

import importlib
import os
from importlib import metadata
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import pytest

import tinygrad_conv
from tinygrad_conv import _threads
from tinygrad_conv._version import UNKNOWN, _from_pyproject

ROOT = Path(__file__).resolve().parent.parent


def test_every_kernel_source_is_an_extension_module_of_the_imported_package():
    sources = sorted((ROOT / "src").glob("*.pyx"))
    assert sources, f"no kernel sources in {ROOT / 'src'}"
    package_dir = Path(tinygrad_conv.__file__).resolve().parent
    for pyx in sources:
        module = importlib.import_module(f"tinygrad_conv._{pyx.stem}")
        path = Path(module.__file__).resolve()
        assert path.parent == package_dir, f"{module.__name__} comes from {path}"
        assert path.name.endswith(tuple(EXTENSION_SUFFIXES)), f"{path} is not an extension"


def test_version_is_pyprojects_and_the_installed_metadatas():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    with open(ROOT / "pyproject.toml", "rb") as f:
        declared = tomllib.load(f)["project"]["version"]
    assert tinygrad_conv.__version__ == declared
    try:
        installed = metadata.version("tinygrad_conv")
    except metadata.PackageNotFoundError:  # built in place, never installed
        return
    assert installed == declared


def test_version_fallback_reads_only_this_projects_pyproject(tmp_path):
    pyproject = tmp_path / "pyproject.toml"
    assert _from_pyproject(pyproject) == UNKNOWN  # no file
    pyproject.write_text('[build-system]\nrequires = []\n\n[project]\nname = "tinygrad_conv"\n'
                         'version = "1.2.3"\n\n[tool.other]\nversion = "9"\n')
    assert _from_pyproject(pyproject) == "1.2.3"
    pyproject.write_text('[project]\nname = "other"\nversion = "1.2.3"\n')
    assert _from_pyproject(pyproject) == UNKNOWN


def test_build_info_names_the_compiler_and_agrees_with_the_openmp_runtime():
    info = _threads.BUILD_INFO
    assert set(info) == {"compiler", "openmp", "openmp_version"}
    assert info["compiler"], info
    if _threads.HAVE_OPENMP:
        # 200203 is OpenMP 2.0 (MSVC's /openmp), the oldest any supported compiler reports
        assert info["openmp_version"] >= 200203 and not info["openmp"].startswith("none"), info
    else:
        assert info["openmp_version"] == 0 and info["openmp"].startswith("none"), info
        assert tinygrad_conv.get_num_threads() == 1


@pytest.mark.skipif(os.environ.get("TINYGRAD_CONV_EXPECT_OPENMP") != "1",
                    reason="only where the build must have OpenMP (CI sets the variable)")
def test_openmp_is_on_where_the_build_must_have_it():
    info = _threads.BUILD_INFO
    assert _threads.HAVE_OPENMP, f"built without OpenMP: {info['openmp']} ({info['compiler']})"
