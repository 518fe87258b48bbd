#include "common.cuh"
#include "gemm.cuh"

const char *mr_cublas_status_string(cublasStatus_t status) { return cublasGetStatusString(status); }

static cudaDataType_t cuda_type(mr_dtype dtype) {
    return dtype == MR_DTYPE_BF16 ? CUDA_R_16BF : dtype == MR_DTYPE_F16 ? CUDA_R_16F : CUDA_R_32F;
}

mr_status mr_cuda_gemm(cublasHandle_t handle, mr_dtype dtype, int64_t M, int64_t N, int64_t K, const void *a,
                       int64_t lda, const void *w, int64_t ldw, void *out, int64_t ldo, int out_f32, float beta,
                       mr_error *err) {
    if (M == 0 || N == 0) return MR_OK;
    if (M > INT32_MAX || N > INT32_MAX || K > INT32_MAX || lda > INT32_MAX || ldw > INT32_MAX || ldo > INT32_MAX)
        return mr_fail(err, MR_ERR_VALUE, "matrix product too large for cuBLAS (%lld x %lld x %lld)", (long long)M,
                       (long long)N, (long long)K);
    const float alpha = 1.0f;
    const cudaDataType_t in_type = cuda_type(dtype);
    const cudaDataType_t out_type = out_f32 ? CUDA_R_32F : in_type;
    const cublasComputeType_t compute = dtype == MR_DTYPE_F32 ? CUBLAS_COMPUTE_32F_PEDANTIC : CUBLAS_COMPUTE_32F;
    /* Row-major out = a @ w^T is column-major out^T = w^T(as stored: op T) x a^T(as stored: op N). */
    cublasStatus_t s = cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, (int)N, (int)M, (int)K, &alpha, w, in_type,
                                    (int)ldw, a, in_type, (int)lda, &beta, out, out_type, (int)ldo, compute,
                                    CUBLAS_GEMM_DEFAULT);
    if (s != CUBLAS_STATUS_SUCCESS)
        return mr_fail(err, s == CUBLAS_STATUS_ALLOC_FAILED ? MR_ERR_MEMORY : MR_ERR_RUNTIME,
                       "cuBLAS GemmEx (%lld x %lld x %lld) failed: %s", (long long)M, (long long)N, (long long)K,
                       cublasGetStatusString(s));
    return MR_OK;
}

template <typename T>
__global__ void add_bias_kernel(T *out, int64_t M, int64_t N, int64_t ldo, const float *bias) {
    const int64_t total = M * N;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = i / N, c = i - r * N;
        T *p = out + r * ldo + c;
        *p = from_f32<T>(to_f32(*p) + bias[c]);
    }
}

mr_status mr_cuda_add_bias(mr_dtype out_dtype, void *out, int64_t M, int64_t N, int64_t ldo, const float *bias,
                           cudaStream_t stream, mr_error *err) {
    if (M == 0 || N == 0) return MR_OK;
    unsigned blocks = mr_blocks(M * N, 256);
    if (blocks > 65535u * 8) blocks = 65535u * 8;
    MR_DISPATCH_DTYPE(out_dtype, OT, add_bias_kernel<OT><<<blocks, 256, 0, stream>>>((OT *)out, M, N, ldo, bias));
    return mr_cuda_launched(err, "add_bias");
}
