/* Helpers for the standalone kernel programs in dev/cuda: checks, random data, timing. */
#ifndef MR_DEV_COMMON_H
#define MR_DEV_COMMON_H

#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/mr_error.h"

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

/* Host-side bfloat16 (round to nearest even) so harnesses can feed reduced-precision inputs and
 * build the CPU reference from exactly the values the kernel reads. */
static inline uint16_t dev_to_bf16(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    u += 0x7FFFu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline float dev_from_bf16(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float x;
    memcpy(&x, &u, 4);
    return x;
}

/* Rounds every value to bfloat16 in place (what a bf16 buffer of them holds). */
static inline void dev_round_bf16(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = dev_from_bf16(dev_to_bf16(x[i]));
}

/* A device copy of n host elements; bf16 narrows float input. Freed by the caller (cudaFree). */
template <typename T>
static T *dev_upload(const T *host, size_t n) {
    T *d = NULL;
    CUDA_CHECK(cudaMalloc(&d, n * sizeof(T) + 1));
    if (n) CUDA_CHECK(cudaMemcpy(d, host, n * sizeof(T), cudaMemcpyHostToDevice));
    return d;
}

static inline void *dev_upload_as(const float *host, size_t n, int bf16) {
    if (!bf16) return dev_upload(host, n);
    uint16_t *tmp = (uint16_t *)malloc(n * 2 + 2);
    for (size_t i = 0; i < n; i++) tmp[i] = dev_to_bf16(host[i]);
    void *d = dev_upload(tmp, n);
    free(tmp);
    return d;
}

/* n float32 (or bf16, widened) values from the device. */
static inline void dev_download_as(float *host, const void *dev, size_t n, int bf16) {
    if (!bf16) {
        if (n) CUDA_CHECK(cudaMemcpy(host, dev, n * 4, cudaMemcpyDeviceToHost));
        return;
    }
    uint16_t *tmp = (uint16_t *)malloc(n * 2 + 2);
    if (n) CUDA_CHECK(cudaMemcpy(tmp, dev, n * 2, cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < n; i++) host[i] = dev_from_bf16(tmp[i]);
    free(tmp);
}

/* Stops the harness with the core's message when a launcher reports a failure. */
static inline void dev_check_status(mr_status st, const mr_error *err, const char *what) {
    if (st != MR_OK) {
        fprintf(stderr, "%s failed: %s\n", what, err->message);
        exit(1);
    }
}

/* "check" as the first argument: correctness only, small shapes, no timing (what the tests run). */
static inline int dev_check_only(int argc, char **argv) { return argc > 1 && strcmp(argv[1], "check") == 0; }

#endif
