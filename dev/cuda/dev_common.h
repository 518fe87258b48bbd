/* Helpers for the standalone kernel programs in dev/cuda: checks, random data, timing. */
#ifndef MR_DEV_COMMON_H
#define MR_DEV_COMMON_H

#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#define CUDA_CHECK(call)                                                                           \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) {                                                                   \
            fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, cudaGetErrorString(e_));            \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

static inline float dev_uniform(unsigned long long *state) { /* xorshift64*: reproducible, no libc rand */
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    return (float)((*state * 2685821657736338717ULL) >> 40) / (float)(1ULL << 24);
}

static inline void dev_fill(float *x, size_t n, float lo, float hi, unsigned long long seed) {
    unsigned long long s = seed * 0x9E3779B97F4A7C15ULL + 1;
    for (size_t i = 0; i < n; i++) x[i] = lo + (hi - lo) * dev_uniform(&s);
}

/* max |a - b| / max(1, max |b|), printed with a verdict. */
static inline int dev_compare(const char *what, const float *got, const float *ref, size_t n, float tol) {
    double max_err = 0, max_ref = 1;
    for (size_t i = 0; i < n; i++) {
        max_err = fmax(max_err, fabs((double)got[i] - ref[i]));
        max_ref = fmax(max_ref, fabs((double)ref[i]));
    }
    double rel = max_err / max_ref;
    printf("  %-28s max rel error %.3g %s\n", what, rel, rel <= tol ? "OK" : "MISMATCH");
    return rel <= tol;
}

/* Mean milliseconds of `reps` runs of launch() after one warm-up. */
template <typename F>
static float dev_time_ms(F launch, int reps) {
    cudaEvent_t a, b;
    CUDA_CHECK(cudaEventCreate(&a));
    CUDA_CHECK(cudaEventCreate(&b));
    launch();
    CUDA_CHECK(cudaEventRecord(a));
    for (int i = 0; i < reps; i++) launch();
    CUDA_CHECK(cudaEventRecord(b));
    CUDA_CHECK(cudaEventSynchronize(b));
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    return ms / reps;
}

#endif
