"""Declares the Cython kernels; the package metadata lives in pyproject.toml.

OpenMP is found per compiler by a test compile: gcc and clang take -fopenmp, MSVC /openmp, and
Apple's clang, which has no -fopenmp of its own, -Xpreprocessor -fopenmp with libomp (from
$LIBOMP_PREFIX or Homebrew). When none works the same sources build serially, with a warning.
TINYGRAD_CONV_NO_OPENMP=1 forces the serial build. Which way a build went is compiled into the
kernels (src/build_info.h) and read back at run time from tinygrad_conv._threads.BUILD_INFO.
"""

import os
import sys
import tempfile

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools._distutils.ccompiler import new_compiler
from setuptools._distutils.errors import CompileError, LinkError
from setuptools._distutils.sysconfig import customize_compiler

# Why a build is serial, passed to src/build_info.h as TGC_SERIAL_REASON.
SERIAL_ON_REQUEST, SERIAL_NO_OPENMP = 1, 2


def libomp_prefixes():
    """Where libomp may be for Apple's clang: $LIBOMP_PREFIX, then Homebrew's two homes."""
    candidates = [os.environ.get("LIBOMP_PREFIX"), "/opt/homebrew/opt/libomp",
                  "/usr/local/opt/libomp"]
    return [p for p in candidates if p and os.path.isfile(os.path.join(p, "include", "omp.h"))]


def openmp_candidates(compiler):
    """The (compile args, link args) that may turn OpenMP on with this compiler, best first."""
    if compiler.compiler_type == "msvc":
        return [(["/openmp"], [])]
    candidates = [(["-fopenmp"], ["-fopenmp"])]  # gcc; clang where libomp is installed
    if sys.platform == "darwin":
        for prefix in libomp_prefixes():
            candidates.append((["-Xpreprocessor", "-fopenmp", f"-I{prefix}/include"],
                               [f"-L{prefix}/lib", "-lomp"]))
    return candidates


def compiles_and_links(compiler, compile_args, link_args):
    """Whether a program calling the OpenMP runtime builds with these arguments."""
    with tempfile.TemporaryDirectory() as tmp:
        source = os.path.join(tmp, "check_openmp.c")
        with open(source, "w") as f:
            f.write("#include <omp.h>\n"
                    "int main(void) { return omp_get_max_threads() > 0 ? 0 : 1; }\n")
        try:
            objects = compiler.compile([source], output_dir=tmp, extra_postargs=compile_args)
            compiler.link_executable(objects, os.path.join(tmp, "check_openmp"),
                                     extra_postargs=link_args)
        except (CompileError, LinkError):
            return False
    return True


def openmp_build():
    """(compile args, link args, macros) for the kernels: OpenMP's flags, or a serial build."""
    if os.environ.get("TINYGRAD_CONV_NO_OPENMP") == "1":
        print("tinygrad_conv: TINYGRAD_CONV_NO_OPENMP=1, building the kernels serially",
              file=sys.stderr)
        return [], [], [("TGC_SERIAL_REASON", str(SERIAL_ON_REQUEST))]
    compiler = new_compiler()
    customize_compiler(compiler)
    for compile_args, link_args in openmp_candidates(compiler):
        if compiles_and_links(compiler, compile_args, link_args):
            print(f"tinygrad_conv: OpenMP on (compile {' '.join(compile_args)}, "
                  f"link {' '.join(link_args) or 'as is'})", file=sys.stderr)
            return compile_args, link_args, []
    hint = " (install libomp: brew install libomp)" if sys.platform == "darwin" else ""
    print(f"tinygrad_conv: WARNING: the compiler has no OpenMP{hint}; the kernels are built "
          "serially and will use one thread", file=sys.stderr)
    return [], [], [("TGC_SERIAL_REASON", str(SERIAL_NO_OPENMP))]


OMP_COMPILE, OMP_LINK, OMP_MACROS = openmp_build()
OPTIMIZE = ["/O2"] if new_compiler().compiler_type == "msvc" else ["-O3"]


def kernel(name, extra_compile_args=(), define_macros=(), **kwargs):
    """One extension module tinygrad_conv._<name> built from src/<name>.pyx."""
    return Extension(
        f"tinygrad_conv._{name}",
        [f"src/{name}.pyx"],
        include_dirs=["src"],
        define_macros=[*OMP_MACROS, *define_macros],
        extra_compile_args=[*OPTIMIZE, *OMP_COMPILE, *extra_compile_args],
        extra_link_args=OMP_LINK,
        **kwargs,
    )


extensions = [
    kernel("threads"),
    # the C micro-kernels are headers included by conv.pyx: a change to them rebuilds it
    kernel("conv", depends=["src/microkernels.h", "src/conv_tile.h", "src/kernels.pxd",
                            "src/microkernels.pxd"]),
    kernel("pool"),
    kernel("matmul"),
    kernel("elementwise"),
    kernel("scalar"),
    kernel("norm"),
]

# The engine's hot path (recording an op, the backward walk, promotion's common cases), compiled
# from its .py sources by Cython's pure-Python mode (a .pxd beside a module types its helpers).
# The .py files stay the source: TINYGRAD_CONV_PURE_PYTHON=1 runs them uncompiled (for pdb).
# Type annotations stay documentation there (annotation_typing off): only the .pxd types count.
ENGINE = ["autograd", "dtypes", "ops", "tensor"]
engine = [Extension(f"tinygrad_conv.{name}", [f"tinygrad_conv/{name}.py"],
                    extra_compile_args=OPTIMIZE) for name in ENGINE]

setup(
    ext_modules=cythonize(
        extensions,
        include_path=["src"],
        compiler_directives={"language_level": 3},
    ) + cythonize(
        engine,
        compiler_directives={"language_level": 3, "annotation_typing": False, "binding": True},
    ),
)
