/* What the kernels were built with, for tinygrad_conv.show_config(): the compiler, and whether
   and how OpenMP is on. The compiler states all of it through its own macros, except why a build
   is serial, which setup.py passes as TGC_SERIAL_REASON (1: TINYGRAD_CONV_NO_OPENMP=1 asked for
   it, 2: no OpenMP was found). Included by src/threads.pyx only. */
#ifndef TINYGRAD_CONV_BUILD_INFO_H
#define TINYGRAD_CONV_BUILD_INFO_H

#define TGC_STRINGIFY_(x) #x
#define TGC_STRINGIFY(x) TGC_STRINGIFY_(x)

#if defined(__apple_build_version__)
#define TGC_COMPILER "Apple clang " __clang_version__
#elif defined(__clang__)
#define TGC_COMPILER "clang " __clang_version__
#elif defined(__GNUC__)
#define TGC_COMPILER "gcc " __VERSION__
#elif defined(_MSC_VER)
#define TGC_COMPILER "MSVC " TGC_STRINGIFY(_MSC_FULL_VER)
#else
#define TGC_COMPILER "unknown compiler"
#endif

/* _OPENMP is the date (yyyymm) of the OpenMP specification the compiler implements:
   200203 is 2.0 (MSVC's /openmp), 201107 is 3.1, 201511 is 4.5. 0: no OpenMP. */
#if defined(_OPENMP)
#define TGC_OPENMP_VERSION _OPENMP
#if defined(_MSC_VER) && !defined(__clang__)
#define TGC_OPENMP "MSVC /openmp (vcomp)"
#elif defined(__apple_build_version__)
#define TGC_OPENMP "Apple clang -Xpreprocessor -fopenmp (libomp)"
#elif defined(__clang__)
#define TGC_OPENMP "clang -fopenmp"
#else
#define TGC_OPENMP "gcc -fopenmp (libgomp)"
#endif
#else
#define TGC_OPENMP_VERSION 0
#if defined(TGC_SERIAL_REASON) && TGC_SERIAL_REASON == 1
#define TGC_OPENMP "none: serial build requested (TINYGRAD_CONV_NO_OPENMP=1)"
#else
#define TGC_OPENMP "none: the compiler had no OpenMP (serial build)"
#endif
#endif

#endif
