/* Thread-team helpers: OpenMP when the build has it, one thread otherwise. */
#ifndef MR_PARALLEL_H
#define MR_PARALLEL_H

#include <stdint.h>

/* [lo, hi) share of n items for thread ith of nth, in blocks of `align` items: the caller owns
 * the threads and every op takes its share this way (ggml's convention). */
void mr_split_range(int64_t n, int64_t align, int ith, int nth, int64_t *lo, int64_t *hi);

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
