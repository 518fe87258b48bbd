/* Embedding gather into the float32 residual stream. */
#ifndef MR_CUDA_EMBED_CUH
#define MR_CUDA_EMBED_CUH

#include <cuda_runtime.h>
#include <stdint.h>

#include "base/mr_error.h"
#include "models/mr_model.h"

/* out[t, :] = table[tokens[t], :] widened to float32; table is [vocab, d] in `dtype`, ids valid. */
mr_status mr_cuda_embed(mr_dtype dtype, const void *table, int64_t d, const int32_t *tokens, int64_t T,
                        float *out, cudaStream_t stream, mr_error *err);

#endif
