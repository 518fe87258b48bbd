/* Mamba-2's SSD scan of one micro-batch (the recurrent form), and its gated RMSNorm. */
#ifndef MR_CUDA_SSD_SCAN_CUH
#define MR_CUDA_SSD_SCAN_CUH

#include <cuda_runtime.h>
#include <stdint.h>

#include "base/mr_error.h"
#include "models/mr_model.h"

/* For every row r of the micro-batch and head h (group g = h / (H / G)), channel p < P:
 *   delta = min(max(softplus(dt[r, h] + dt_bias[h]), dt_min), dt_max)
 *   s[n, p] = 2^(delta * A2[h]) * s[n, p] + delta * B[r, g, n] * x[r, h, p]   (s = 0 where pos[r] = 0)
 *   y[r, h, p] = sum_n C[r, g, n] * s[n, p] + D[h] * x[r, h, p]
 * A2 = -exp(A_log) * log2(e) [H]. x [T, H*P] (stride ldx), dt [T, H] (stride lddt), B and C
 * [T, G*N] (stride ldbc) and y [T, H*P] (stride ldy) are in `dtype`; dt_bias, A2, D and the
 * states ([H, N, P]) are float32. Row 0 continues state_in when it is not NULL and pos[0] > 0;
 * state_out (NULL: not kept) receives the state after the last row. dt_bias and D may be NULL. */
mr_status mr_cuda_ssd_scan(mr_dtype dtype, int64_t T, int64_t H, int64_t P, int64_t G, int64_t N, const void *x,
                           int64_t ldx, const void *dt, int64_t lddt, const float *dt_bias, const float *A2,
                           float dt_min, float dt_max, const void *B, const void *C, int64_t ldbc, const float *D,
                           const int32_t *pos, const float *state_in, float *state_out, void *y, int64_t ldy,
                           cudaStream_t stream, mr_error *err);

/* out[r, i] = w[i] * v[i] / sqrt(mean of v^2 over i's group of `group` channels + eps), with
 * v = y[r, i] * silu(z[r, i]); y, z and out in `dtype` (row strides ldy, ldz, ldo; out may be y). */
mr_status mr_cuda_gated_rmsnorm(mr_dtype dtype, int64_t T, int64_t E, int64_t group, const void *y, int64_t ldy,
                                const void *z, int64_t ldz, const float *w, float eps, void *out, int64_t ldo,
                                cudaStream_t stream, mr_error *err);

#endif
