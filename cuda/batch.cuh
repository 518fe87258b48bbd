/* Per-call preparation of a packed batch on the device: token ids checked against the
 * vocabulary (and narrowed to int32), and every token's position within its sequence. */
#ifndef MR_CUDA_BATCH_CUH
#define MR_CUDA_BATCH_CUH

#include <cuda_runtime.h>
#include <stdint.h>

#include "base/mr_error.h"

/* dst[i] = src[i] (int32 or int64 source) for ids in [0, vocab); ids outside become 0 and are
 * counted into *bad (device int, zeroed by the caller). */
mr_status mr_cuda_check_tokens(const void *src, int src_int64, int64_t n, int64_t vocab, int32_t *dst,
                               int *bad, cudaStream_t stream, mr_error *err);

/* pos[t] = t - offsets[s] for the sequence s holding token t (offsets on the device, [n_seqs + 1]).
 * Kernels use pos to find sequence starts (pos 0) and how far back a sequence reaches. */
mr_status mr_cuda_positions(const int64_t *offsets, int64_t n_seqs, int64_t n_tokens, int32_t *pos,
                            cudaStream_t stream, mr_error *err);

#endif
