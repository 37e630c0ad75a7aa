/* OpenMP when the compiler has it, a serial stand-in when it does not.
   Kernels include this instead of <omp.h>, so the same .pyx builds either way. */
#ifndef TINYGRAD_CONV_OMP_COMPAT_H
#define TINYGRAD_CONV_OMP_COMPAT_H
#ifdef _OPENMP
#include <omp.h>
#define TGC_HAVE_OPENMP 1
/* clang links LLVM's libomp, which rebuilds its threads in a fork() child; gcc's libgomp
   does not (a child's first parallel region with more than one thread never returns) */
#ifdef __clang__
#define TGC_OPENMP_SURVIVES_FORK 1
#else
#define TGC_OPENMP_SURVIVES_FORK 0
#endif
#else
#define TGC_HAVE_OPENMP 0
#define TGC_OPENMP_SURVIVES_FORK 1
static inline void omp_set_num_threads(int n) { (void)n; }
static inline int omp_get_max_threads(void) { return 1; }
static inline int omp_get_thread_limit(void) { return 2147483647; }   /* no limit */
static inline int omp_get_thread_num(void) { return 0; }
#endif
#endif
