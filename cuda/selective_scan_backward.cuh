/* The backward of the training scan (float32): the gradients of mr_ops_backward.h's
 * mr_selective_scan_backward_f32 from the boundary states the forward kept. */
#ifndef MR_CUDA_SELECTIVE_SCAN_BACKWARD_CUH
#define MR_CUDA_SELECTIVE_SCAN_BACKWARD_CUH

#include <cuda_runtime.h>
#include <stdint.h>

#include "mr_cuda.h"
#include "base/mr_error.h"

/* offsets ([S + 1]) and first_boundary ([S]: the index of each sequence's first kept state) are
 * device arrays; everything else is as in mr_cuda_scan_train_args (its host offsets unused).
 * Scratch for the partial sums is allocated and freed on `stream`. */
mr_status mr_cuda_selective_scan_backward(const mr_cuda_scan_train_args *args, const int64_t *offsets,
                                          const int64_t *first_boundary, cudaStream_t stream, mr_error *err);

/* out[i] = sum over p < parts of in[p * n + i]: partial sums added up in a fixed order. */
mr_status mr_cuda_sum_partials(const float *in, int64_t parts, int64_t n, float *out, cudaStream_t stream,
                               mr_error *err);

#endif
