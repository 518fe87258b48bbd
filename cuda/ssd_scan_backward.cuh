/* Mamba-2's SSD scan for training (float32): the forward over a packed batch, keeping the state
 * entering every chunk of a sequence but the first, and the backward from those states; the
 * math of csrc/ops/mr_ssd_backward.c (mr_cuda.h's mr_cuda_ssd_train_args). */
#ifndef MR_CUDA_SSD_SCAN_BACKWARD_CUH
#define MR_CUDA_SSD_SCAN_BACKWARD_CUH

#include <cuda_runtime.h>
#include <stdint.h>

#include "mr_cuda.h"
#include "base/mr_error.h"

/* offsets ([S + 1]) and first_boundary ([S]: the index of each sequence's first kept state) are
 * device arrays; everything else is as in mr_cuda_ssd_train_args (its host offsets unused).
 * The forward writes y and the boundary states. */
mr_status mr_cuda_ssd_scan_train(const mr_cuda_ssd_train_args *args, const int64_t *offsets,
                                 const int64_t *first_boundary, cudaStream_t stream, mr_error *err);

/* The backward: gx, gdt, gB, gC, gA and (when not NULL) gdt_bias, gD, all overwritten. Scratch
 * for the partial sums is allocated and freed on `stream`. */
mr_status mr_cuda_ssd_scan_backward(const mr_cuda_ssd_train_args *args, const int64_t *offsets,
                                    const int64_t *first_boundary, cudaStream_t stream, mr_error *err);

#endif
