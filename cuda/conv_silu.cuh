/* Causal depthwise convolution + bias + SiLU over the packed rows of one micro-batch. */
#ifndef MR_CUDA_CONV_SILU_CUH
#define MR_CUDA_CONV_SILU_CUH

#include <cuda_runtime.h>
#include <stdint.h>

#include "base/mr_error.h"
#include "models/mr_model.h"

/* The rows of a micro-batch hold whole or partial sequences back to back; pos[r] is row r's
 * position within its sequence, so a row never sees inputs of the sequence before it. Row 0's
 * sequence may have started in an earlier micro-batch: its K-1 previous inputs are in carry_in
 * ([K-1, E], oldest first, float32; NULL when no sequence is carried over).
 *   out[r, e] = silu(bias[e] + sum_k w[e, k] * in[r - (K-1) + k, e])
 * in and out ([T, E] views with row strides ldi, ldo) are in `dtype`; w is [E, K] float32;
 * bias may be NULL. */
mr_status mr_cuda_conv_silu(mr_dtype dtype, int64_t T, int64_t E, int64_t K, const void *in, int64_t ldi,
                            const float *w, const float *bias, const int32_t *pos, const float *carry_in,
                            void *out, int64_t ldo, cudaStream_t stream, mr_error *err);

/* carry_out[j, e] = the input K-1-j rows before the end of the micro-batch (reaching into
 * carry_in when T < K-1), zero where that is before the last sequence's start. carry_out must
 * not alias carry_in. */
mr_status mr_cuda_conv_save_state(mr_dtype dtype, int64_t T, int64_t E, int64_t K, const void *in, int64_t ldi,
                                  const int32_t *pos, const float *carry_in, float *carry_out,
                                  cudaStream_t stream, mr_error *err);

#endif
