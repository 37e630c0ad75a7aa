"""Declares the Cython kernels; the package metadata lives in pyproject.toml.

OpenMP is used when a test compile with -fopenmp succeeds (gcc, clang with libomp);
otherwise the same sources build serially. TINYGRAD_CONV_NO_OPENMP=1 forces the serial build.
"""

import os
import sys
import tempfile

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools._distutils.ccompiler import new_compiler
from setuptools._distutils.sysconfig import customize_compiler


def openmp_flags():
    """The compile/link flags that turn OpenMP on, or [] when the compiler lacks it."""
    if os.environ.get("TINYGRAD_CONV_NO_OPENMP") == "1" or sys.platform == "win32":
        return []
    compiler = new_compiler()
    customize_compiler(compiler)
    with tempfile.TemporaryDirectory() as tmp:
        source = os.path.join(tmp, "check_openmp.c")
        with open(source, "w") as f:
            f.write("#include <omp.h>\n"
                    "int main(void) { return omp_get_max_threads() > 0 ? 0 : 1; }\n")
        try:
            objects = compiler.compile([source], output_dir=tmp, extra_postargs=["-fopenmp"])
            compiler.link_executable(objects, os.path.join(tmp, "check_openmp"),
                                     extra_postargs=["-fopenmp"])
        except Exception:
            print("tinygrad_conv: no OpenMP, building the kernels serially", file=sys.stderr)
            return []
    return ["-fopenmp"]


OMP = openmp_flags()


def kernel(name, extra_compile_args=(), **kwargs):
    """One extension module tinygrad_conv._<name> built from src/<name>.pyx."""
    return Extension(
        f"tinygrad_conv._{name}",
        [f"src/{name}.pyx"],
        include_dirs=["src"],
        extra_compile_args=["-O3", *OMP, *extra_compile_args],
        extra_link_args=OMP,
        **kwargs,
    )


extensions = [kernel("threads"), kernel("conv"), kernel("pool"), kernel("matmul"), kernel("norm")]

setup(
    ext_modules=cythonize(
        extensions,
        include_path=["src"],
        compiler_directives={"language_level": 3},
    ),
)
