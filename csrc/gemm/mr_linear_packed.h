/* Narrow linear layers with their weights packed once at load (x_proj and dt_proj of a Mamba-1
 * layer), where a BLAS spends as long packing the activations as multiplying them. The vector
 * kernels are mr_linear_packed_<isa>.c (one shared body, mr_linear_packed_body.h); the reference
 * twin is mr_linear_packed_ref.c. */
#ifndef MR_LINEAR_PACKED_H
#define MR_LINEAR_PACKED_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Narrow linear layers with their weights packed once at load: out[t, n] = sum_k a[t, k] w[n, k]
 * for w [N, K] (x_proj's 80 outputs, dt_proj's 48 inputs), where a BLAS spends as long packing
 * the activations as multiplying them. Packed layout: column groups of MR_PACK_GROUP outputs,
 * each [K][MR_PACK_GROUP], the last one zero-padded. Threads split the rows (in blocks of 4, as
 * the BLAS path does). `a` and `out` must not overlap. */
#define MR_PACK_GROUP 16
int64_t mr_packed_weight_floats(int64_t N, int64_t K);
void mr_pack_weight_f32(const float *w, int64_t N, int64_t K, float *packed);
/* Whether this CPU has a vector path for them; without one they fall back to the reference loops
 * and a BLAS is the faster choice. */
int mr_linear_packed_preferred(void);
void mr_linear_packed_f32(int64_t T, int64_t N, int64_t K, const float *a, int64_t lda, const float *packed,
                          float *out, int64_t ldo, int ith, int nth);

/* Reference twin: the same contract, plain loops, single-threaded. */
void mr_linear_packed_f32_ref(int64_t T, int64_t N, int64_t K, const float *a, int64_t lda,
                              const float *packed, float *out, int64_t ldo);

/* Rows [lo, hi) of mr_linear_packed_f32, per vector path (no portable one: without a vector path
 * the BLAS is faster). */
void mr_linear_packed_f32_avx2(int64_t N, int64_t K, const float *a, int64_t lda, const float *packed,
                               float *out, int64_t ldo, int64_t lo, int64_t hi);
void mr_linear_packed_f32_avx512(int64_t N, int64_t K, const float *a, int64_t lda, const float *packed,
                                 float *out, int64_t ldo, int64_t lo, int64_t hi);

#ifdef __cplusplus
}
#endif
#endif
