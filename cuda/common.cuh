/* Shared pieces of the CUDA kernels: element types, conversions and error reporting. */
#ifndef MR_CUDA_COMMON_CUH
#define MR_CUDA_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "base/mr_error.h"
#include "models/mr_model.h"

/* Loads and stores that widen to / narrow from float32, for every activation type. */
__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T> __device__ __forceinline__ T from_f32(float x);
template <> __device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_f32<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) {
    return __float2bfloat16_rn(x);
}

/* PyTorch's softplus with threshold 20: exact identity above it, so large inputs never overflow. */
__device__ __forceinline__ float softplus_f32(float x) { return x > 20.0f ? x : log1pf(expf(x)); }

__device__ __forceinline__ float silu_f32(float x) { return x / (1.0f + expf(-x)); }

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the total.
 * `scratch` holds 32 floats of shared memory; the block must be converged. */
__device__ __forceinline__ float block_sum(float v, float *scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads(); /* scratch may still be read from a previous call */
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : 0.0f;
    return warp_sum(v);
}

/* Makes `device` current for a scope and restores the caller's device afterwards, so a call
 * never changes which device the calling thread (or torch on it) works with. */
class MrDeviceGuard {
  public:
    explicit MrDeviceGuard(int device) : previous_(-1) {
        if (cudaGetDevice(&previous_) != cudaSuccess) previous_ = -1;
        if (previous_ != device) status_ = cudaSetDevice(device);
    }
    ~MrDeviceGuard() {
        int now = -1;
        if (previous_ >= 0 && cudaGetDevice(&now) == cudaSuccess && now != previous_) cudaSetDevice(previous_);
    }
    cudaError_t status() const { return status_; }

  private:
    int previous_;
    cudaError_t status_ = cudaSuccess;
};

/* Dispatches a templated launch on the activation dtype. */
#define MR_DISPATCH_DTYPE(dtype, T, ...)                                                           \
    do {                                                                                           \
        if ((dtype) == MR_DTYPE_BF16) {                                                            \
            typedef __nv_bfloat16 T;                                                               \
            __VA_ARGS__;                                                                           \
        } else if ((dtype) == MR_DTYPE_F16) {                                                      \
            typedef __half T;                                                                      \
            __VA_ARGS__;                                                                           \
        } else {                                                                                   \
            typedef float T;                                                                       \
            __VA_ARGS__;                                                                           \
        }                                                                                          \
    } while (0)

static inline size_t mr_dtype_size(mr_dtype dtype) { return dtype == MR_DTYPE_F32 ? 4 : 2; }

static inline unsigned mr_blocks(int64_t n, int threads) { return (unsigned)((n + threads - 1) / threads); }

/* Turns a CUDA error into an mr_error (RuntimeError, or MemoryError for allocations). The
 * error is also cleared from the runtime's last-error slot, so that a later launch check does
 * not report it again against an unrelated kernel (sticky errors stay: nothing clears those). */
static inline mr_status mr_cuda_check(cudaError_t e, mr_error *err, const char *what) {
    if (e == cudaSuccess) return MR_OK;
    cudaGetLastError();
    mr_status st = e == cudaErrorMemoryAllocation ? MR_ERR_MEMORY : MR_ERR_RUNTIME;
    return mr_fail(err, st, "CUDA error in %s: %s (%s)", what, cudaGetErrorString(e), cudaGetErrorName(e));
}

/* After a launch: configuration errors are reported at once, without waiting for the device. */
static inline mr_status mr_cuda_launched(mr_error *err, const char *kernel) {
    return mr_cuda_check(cudaGetLastError(), err, kernel);
}

#endif
