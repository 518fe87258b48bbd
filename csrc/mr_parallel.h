/* Thread-team helpers: OpenMP when the build has it, one thread otherwise. */
#ifndef MR_PARALLEL_H
#define MR_PARALLEL_H

#ifdef _OPENMP
#include <omp.h>
static inline int mr_thread_index(void) { return omp_get_thread_num(); }
static inline int mr_thread_count(void) { return omp_get_num_threads(); }
static inline int mr_max_threads(void) { return omp_get_max_threads(); }
#else
static inline int mr_thread_index(void) { return 0; }
static inline int mr_thread_count(void) { return 1; }
static inline int mr_max_threads(void) { return 1; }
#endif

#endif
