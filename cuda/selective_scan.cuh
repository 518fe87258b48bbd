/* The selective scan of one micro-batch, with softplus, D skip and the SiLU(z) gate fused. */
#ifndef MR_CUDA_SELECTIVE_SCAN_CUH
#define MR_CUDA_SELECTIVE_SCAN_CUH

#include <cuda_runtime.h>
#include <stdint.h>

#include "mr_cuda.h"
#include "base/mr_error.h"
#include "models/mr_model.h"

/* A run of consecutive rows scanned by one thread block per 32 channels. Pieces hold whole
 * sequence parts (a row with pos 0 restarts the state), so pieces are independent except
 * through the carried state of the micro-batch's first and last sequence. */
typedef struct {
    int32_t row0, rows;
    int read_state;  /* the state before row0 is state_in (else zeros) */
    int write_state; /* the state after the piece's last row goes to state_out */
    int32_t first_boundary; /* with `boundaries`: where the state after the piece's first chunk goes */
} mr_scan_piece;

/* For every row r of every piece and channel e < E (row strides ldu, lddt, ldbc, ldz, ldy):
 *   delta = softplus(dt[r, e] + dt_bias[e])                  (identity above 20)
 *   h[e, n] = 2^(delta * A2[e, n]) * h[e, n] + delta * B[r, n] * u[r, e]   (h = 0 where pos[r] = 0)
 *   y[r, e] = (sum_n C[r, n] * h[e, n] + D[e] * u[r, e]) * silu(z[r, e])
 * A2 = -exp(A_log) * log2(e), [E, N] float32, so the decay is one exp2. u, dt, B, C, z and y
 * are in `dtype`; dt_bias, D, state_in and state_out ([E, N]) are float32. dt_bias, D and z may
 * be NULL. y may not alias u, dt or z. state_out must not alias state_in.
 * boundaries (training; NULL otherwise): every piece is one whole sequence, and the state after
 * each of its chunks of MR_CUDA_TRAIN_SCAN_CHUNK rows but the last goes to
 * boundaries[(first_boundary + c) * E * N + e * N + n], as mr_selective_scan_packed_f32 keeps them. */
mr_status mr_cuda_selective_scan(mr_dtype dtype, int64_t E, int64_t N, const void *u, int64_t ldu, const void *dt,
                                 int64_t lddt, const float *dt_bias, const float *A2, const void *B, const void *C,
                                 int64_t ldbc, const float *D, const void *z, int64_t ldz, const int32_t *pos,
                                 const mr_scan_piece *pieces, int64_t n_pieces, const float *state_in,
                                 float *state_out, float *boundaries, void *y, int64_t ldy, cudaStream_t stream,
                                 mr_error *err);

#endif
