#include "common.cuh"
#include "embed.cuh"

/* One block row per token; threads walk the row (rows are contiguous, so loads coalesce). */
template <typename T>
__global__ void embed_kernel(const T *table, int64_t d, const int32_t *tokens, int64_t n_rows, float *out) {
    for (int64_t t = blockIdx.x; t < n_rows; t += gridDim.x) {
        const T *src = table + (int64_t)tokens[t] * d;
        float *dst = out + t * d;
        for (int64_t i = threadIdx.x; i < d; i += blockDim.x) dst[i] = to_f32(src[i]);
    }
}

mr_status mr_cuda_embed(mr_dtype dtype, const void *table, int64_t d, const int32_t *tokens, int64_t T,
                        float *out, cudaStream_t stream, mr_error *err) {
    if (T == 0) return MR_OK;
    unsigned blocks = T < 65535 * 4 ? (unsigned)T : 65535u * 4;
    int threads = d >= 256 ? 256 : 128;
    MR_DISPATCH_DTYPE(dtype, AT, embed_kernel<AT><<<blocks, threads, 0, stream>>>((const AT *)table, d, tokens, T, out));
    return mr_cuda_launched(err, "embed");
}
