/* Pooling of the final-norm states: last token (with the final norm fused) or mean, and the
 * optional L2 normalisation of pooled rows. */
#ifndef MR_CUDA_POOL_L2_CUH
#define MR_CUDA_POOL_L2_CUH

#include <cuda_runtime.h>
#include <stdint.h>

#include "base/mr_error.h"

/* For each sequence s in [seq_lo, seq_hi) whose last token lies in the micro-batch starting at
 * global token first_token: v = x[row] + mix[row] (mix may be NULL) at that token's row,
 * out[s] = rmsnorm(v) * norm_w, divided by its L2 norm when normalize. offsets on the device. */
mr_status mr_cuda_pool_last(const float *x, const float *mix, const float *norm_w, int64_t d, float eps,
                            const int64_t *offsets, int64_t seq_lo, int64_t seq_hi, int64_t first_token,
                            int normalize, float *out, cudaStream_t stream, mr_error *err);

/* out[s] += (sum of the rows of sequence s inside this micro-batch) / length(s) for s in
 * [seq_lo, seq_hi); rows is [T, d] float32 holding the final-norm states of the micro-batch. */
mr_status mr_cuda_pool_mean_add(const float *rows, int64_t T, int64_t d, const int64_t *offsets, int64_t seq_lo,
                                int64_t seq_hi, int64_t first_token, float *out, cudaStream_t stream, mr_error *err);

/* x[i] /= max(||x[i]||, 1e-12) for n rows of d. */
mr_status mr_cuda_l2_normalize(float *x, int64_t n, int64_t d, cudaStream_t stream, mr_error *err);

#endif
