#include "batch.cuh"
#include "common.cuh"

template <typename I>
__global__ void check_tokens_kernel(const I *src, int64_t n, int64_t vocab, int32_t *dst, int *bad) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t id = (int64_t)src[i];
        bool ok = id >= 0 && id < vocab;
        dst[i] = ok ? (int32_t)id : 0;
        if (!ok) atomicAdd(bad, 1);
    }
}

mr_status mr_cuda_check_tokens(const void *src, int src_int64, int64_t n, int64_t vocab, int32_t *dst,
                               int *bad, cudaStream_t stream, mr_error *err) {
    if (n == 0) return MR_OK;
    unsigned blocks = mr_blocks(n, 256);
    if (blocks > 65535u * 8) blocks = 65535u * 8;
    if (src_int64)
        check_tokens_kernel<<<blocks, 256, 0, stream>>>((const int64_t *)src, n, vocab, dst, bad);
    else
        check_tokens_kernel<<<blocks, 256, 0, stream>>>((const int32_t *)src, n, vocab, dst, bad);
    return mr_cuda_launched(err, "check_tokens");
}

__global__ void positions_kernel(const int64_t *offsets, int64_t n_seqs, int64_t n_tokens, int32_t *pos) {
    for (int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; t < n_tokens;
         t += (int64_t)gridDim.x * blockDim.x) {
        /* the last s with offsets[s] <= t; empty sequences share an offset with the next one */
        int64_t lo = 0, hi = n_seqs - 1;
        while (lo < hi) {
            int64_t mid = (lo + hi + 1) >> 1;
            if (offsets[mid] <= t) lo = mid;
            else hi = mid - 1;
        }
        pos[t] = (int32_t)(t - offsets[lo]);
    }
}

mr_status mr_cuda_positions(const int64_t *offsets, int64_t n_seqs, int64_t n_tokens, int32_t *pos,
                            cudaStream_t stream, mr_error *err) {
    if (n_tokens == 0 || n_seqs == 0) return MR_OK;
    unsigned blocks = mr_blocks(n_tokens, 256);
    if (blocks > 65535u * 8) blocks = 65535u * 8;
    positions_kernel<<<blocks, 256, 0, stream>>>(offsets, n_seqs, n_tokens, pos);
    return mr_cuda_launched(err, "positions");
}
