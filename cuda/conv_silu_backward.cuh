/* The backward of the causal depthwise conv + bias + SiLU over a packed batch (training, float32). */
#ifndef MR_CUDA_CONV_SILU_BACKWARD_CUH
#define MR_CUDA_CONV_SILU_BACKWARD_CUH

#include <cuda_runtime.h>
#include <stdint.h>

#include "mr_cuda.h"
#include "base/mr_error.h"

/* gx [T, E], gw [E, K] and gbias [E] of out = silu(bias + sum_k w[:, k] x[t - (K-1) + k]) given
 * gout, as in mr_conv_silu_backward_f32; rows see only their own sequence (pos). The
 * pre-activations are recomputed; scratch (the pre-activation gradient and the per-slot weight
 * sums) is allocated and freed on `stream`. */
mr_status mr_cuda_conv_silu_backward(const mr_cuda_conv_train_args *args, cudaStream_t stream, mr_error *err);

#endif
