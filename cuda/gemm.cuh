/* The model's matrix products through cuBLAS, and the bias add that cuBLAS does not fuse. */
#ifndef MR_CUDA_GEMM_CUH
#define MR_CUDA_GEMM_CUH

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "base/mr_error.h"
#include "models/mr_model.h"

/* out[M, N] = beta * out + a[M, K] @ w[N, K]^T, row-major with leading dimensions lda, ldw, ldo.
 * a and w are `dtype`; out is float32 when out_f32, else `dtype`. Accumulation is float32;
 * float32 inputs use CUBLAS_COMPUTE_32F_PEDANTIC, so TF32 is never used (whatever the math mode
 * or NVIDIA_TF32_OVERRIDE says). The handle's stream is the caller's business. */
mr_status mr_cuda_gemm(cublasHandle_t handle, mr_dtype dtype, int64_t M, int64_t N, int64_t K, const void *a,
                       int64_t lda, const void *w, int64_t ldw, void *out, int64_t ldo, int out_f32, float beta,
                       mr_error *err);

/* out[t, j] += bias[j] for M rows of N (out in `out_dtype`, row stride ldo; bias float32). */
mr_status mr_cuda_add_bias(mr_dtype out_dtype, void *out, int64_t M, int64_t N, int64_t ldo, const float *bias,
                           cudaStream_t stream, mr_error *err);

/* cuBLAS's status as text, for error messages. */
const char *mr_cublas_status_string(cublasStatus_t status);

#endif
