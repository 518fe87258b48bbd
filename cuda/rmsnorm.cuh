/* RMSNorm fused with the residual add that precedes it. */
#ifndef MR_CUDA_RMSNORM_CUH
#define MR_CUDA_RMSNORM_CUH

#include <cuda_runtime.h>
#include <stdint.h>

#include "base/mr_error.h"
#include "models/mr_model.h"

/* For each of T rows of d:
 *   v = x[t] + mix[t]          (mix NULL: v = x[t]); when write_x, x[t] = v (the residual stream)
 *   out[t] = v / sqrt(mean(v^2) + eps) * w, stored as out_dtype (row stride ldo).
 * x and mix are float32 [T, d]; w is float32 [d]. */
mr_status mr_cuda_add_rmsnorm(float *x, const float *mix, int write_x, const float *w, int64_t T, int64_t d,
                              float eps, void *out, mr_dtype out_dtype, int64_t ldo, cudaStream_t stream,
                              mr_error *err);

#endif
