#include "common.cuh"
#include "pool_l2.cuh"

#define MR_L2_EPS 1e-12f /* as torch.nn.functional.normalize */

/* One block per pooled sequence; two block reductions (RMS, then L2 of the normed row). */
__global__ void pool_last_kernel(const float *x, const float *mix, const float *norm_w, int64_t d, float eps,
                                 const int64_t *offsets, int64_t seq_lo, int64_t seq_hi, int64_t first_token,
                                 int normalize, float *out) {
    __shared__ float scratch[32];
    for (int64_t s = seq_lo + blockIdx.x; s < seq_hi; s += gridDim.x) {
        const int64_t end = offsets[s + 1];
        if (end == offsets[s]) continue; /* empty: nothing to pool (rejected before for 'last') */
        const int64_t row = end - 1 - first_token;
        const float *xr = x + row * d;
        const float *mr = mix ? mix + row * d : nullptr;
        float sum = 0.0f;
        for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
            const float v = xr[i] + (mr ? mr[i] : 0.0f);
            sum += v * v;
        }
        const float scale = rsqrtf(block_sum(sum, scratch) / (float)d + eps);
        float *o = out + s * d;
        float sq = 0.0f;
        for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
            const float v = norm_w[i] * ((xr[i] + (mr ? mr[i] : 0.0f)) * scale);
            o[i] = v;
            sq += v * v;
        }
        if (normalize) {
            const float inv = 1.0f / fmaxf(sqrtf(block_sum(sq, scratch)), MR_L2_EPS);
            for (int64_t i = threadIdx.x; i < d; i += blockDim.x) o[i] *= inv;
        }
    }
}

mr_status mr_cuda_pool_last(const float *x, const float *mix, const float *norm_w, int64_t d, float eps,
                            const int64_t *offsets, int64_t seq_lo, int64_t seq_hi, int64_t first_token,
                            int normalize, float *out, cudaStream_t stream, mr_error *err) {
    if (seq_hi <= seq_lo) return MR_OK;
    const int64_t n = seq_hi - seq_lo;
    const unsigned blocks = n < 65535 * 4 ? (unsigned)n : 65535u * 4;
    const int threads = d >= 1024 ? 256 : d >= 256 ? 128 : 64;
    pool_last_kernel<<<blocks, threads, 0, stream>>>(x, mix, norm_w, d, eps, offsets, seq_lo, seq_hi, first_token,
                                                      normalize, out);
    return mr_cuda_launched(err, "pool_last");
}

/* grid.x: sequences, grid.y: 128-column slices; each thread sums one column over the rows. */
__global__ void pool_mean_add_kernel(const float *rows, int64_t T, int64_t d, const int64_t *offsets,
                                     int64_t seq_lo, int64_t seq_hi, int64_t first_token, float *out) {
    const int64_t col = (int64_t)blockIdx.y * blockDim.x + threadIdx.x;
    if (col >= d) return;
    for (int64_t s = seq_lo + blockIdx.x; s < seq_hi; s += gridDim.x) {
        const int64_t length = offsets[s + 1] - offsets[s];
        if (length == 0) continue;
        int64_t r0 = offsets[s] - first_token, r1 = offsets[s + 1] - first_token;
        if (r0 < 0) r0 = 0;
        if (r1 > T) r1 = T;
        float acc = 0.0f;
        for (int64_t r = r0; r < r1; r++) acc += rows[r * d + col];
        out[s * d + col] += acc / (float)length;
    }
}

mr_status mr_cuda_pool_mean_add(const float *rows, int64_t T, int64_t d, const int64_t *offsets, int64_t seq_lo,
                                int64_t seq_hi, int64_t first_token, float *out, cudaStream_t stream, mr_error *err) {
    if (seq_hi <= seq_lo) return MR_OK;
    const int64_t n = seq_hi - seq_lo;
    dim3 grid(n < 65535 ? (unsigned)n : 65535u, mr_blocks(d, 128));
    pool_mean_add_kernel<<<grid, 128, 0, stream>>>(rows, T, d, offsets, seq_lo, seq_hi, first_token, out);
    return mr_cuda_launched(err, "pool_mean_add");
}

__global__ void l2_normalize_kernel(float *x, int64_t n, int64_t d) {
    __shared__ float scratch[32];
    for (int64_t r = blockIdx.x; r < n; r += gridDim.x) {
        float *row = x + r * d;
        float sq = 0.0f;
        for (int64_t i = threadIdx.x; i < d; i += blockDim.x) sq += row[i] * row[i];
        const float inv = 1.0f / fmaxf(sqrtf(block_sum(sq, scratch)), MR_L2_EPS);
        for (int64_t i = threadIdx.x; i < d; i += blockDim.x) row[i] *= inv;
    }
}

mr_status mr_cuda_l2_normalize(float *x, int64_t n, int64_t d, cudaStream_t stream, mr_error *err) {
    if (n == 0) return MR_OK;
    const unsigned blocks = n < 65535 * 4 ? (unsigned)n : 65535u * 4;
    l2_normalize_kernel<<<blocks, 128, 0, stream>>>(x, n, d);
    return mr_cuda_launched(err, "l2_normalize");
}
