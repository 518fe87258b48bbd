/* The conv + SiLU backward in three kernels:
 *   1. per row slot and channel: the pre-activation gradient g = gout * silu'(pre) (kept in
 *      scratch) and this slot's sums of g * x for each tap and of g (the bias);
 *   2. gx[t] = sum_k w[k] g[t + K-1 - k] over the rows of t's own sequence;
 *   3. the slots' sums added up in a fixed order (no atomics: deterministic).
 * Threads run over channels, so every row access coalesces. */
#include "common.cuh"
#include "conv_silu_backward.cuh"

#define CONV_BWD_THREADS 128
#define CONV_BWD_MAX_SLOTS 1024

__global__ void __launch_bounds__(CONV_BWD_THREADS)
conv_silu_grad_pre_kernel(int64_t T, int64_t E, int64_t K, int64_t rows_per_slot, const float *x, int64_t ldx,
                          const float *w, const float *bias, const int32_t *pos, const float *gout, int64_t ldgo,
                          float *g_out, float *part) {
    extern __shared__ float tap_sums[]; /* [K][threads]: this thread's sums of g * x per tap */
    const int64_t e = blockIdx.x * (int64_t)CONV_BWD_THREADS + threadIdx.x;
    if (e >= E) return; /* no barriers below */
    const float b = bias ? bias[e] : 0.0f;
    const float *we = w + e * K;
    for (int64_t k = 0; k < K; k++) tap_sums[k * CONV_BWD_THREADS + threadIdx.x] = 0.0f;
    float gb = 0.0f;
    const int64_t r0 = (int64_t)blockIdx.y * rows_per_slot, r1 = r0 + rows_per_slot < T ? r0 + rows_per_slot : T;
    for (int64_t r = r0; r < r1; r++) {
        const int64_t visible = pos[r]; /* inputs this far back are still in the sequence */
        float pre = b;
        for (int64_t k = 0; k < K; k++)
            if (K - 1 - k <= visible) pre = fmaf(we[k], x[(r - (K - 1) + k) * ldx + e], pre);
        const float sig = 1.0f / (1.0f + expf(-pre));
        const float g = gout[r * ldgo + e] * sig * (1.0f + pre * (1.0f - sig));
        g_out[r * E + e] = g;
        gb += g;
        for (int64_t k = 0; k < K; k++)
            if (K - 1 - k <= visible)
                tap_sums[k * CONV_BWD_THREADS + threadIdx.x] =
                    fmaf(g, x[(r - (K - 1) + k) * ldx + e], tap_sums[k * CONV_BWD_THREADS + threadIdx.x]);
    }
    float *slot = part + ((int64_t)blockIdx.y * E + e) * (K + 1);
    for (int64_t k = 0; k < K; k++) slot[k] = tap_sums[k * CONV_BWD_THREADS + threadIdx.x];
    slot[K] = gb;
}

__global__ void conv_silu_grad_input_kernel(int64_t T, int64_t E, int64_t K, const float *w, const int32_t *pos,
                                            const float *g, float *gx) {
    const int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (e >= E) return;
    const float *we = w + e * K;
    for (int64_t r = blockIdx.y; r < T; r += gridDim.y) {
        float acc = 0.0f;
        for (int64_t k = 0; k < K; k++) {
            const int64_t ahead = K - 1 - k, dst = r + ahead;
            /* row dst read row r through tap k when both are in one sequence */
            if (dst < T && (int64_t)pos[dst] - pos[r] == ahead) acc = fmaf(we[k], g[dst * E + e], acc);
        }
        gx[r * E + e] = acc;
    }
}

__global__ void conv_silu_grad_weights_kernel(int64_t slots, int64_t E, int64_t K, const float *part, float *gw,
                                              float *gbias) {
    const int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (e >= E) return;
    for (int64_t k = 0; k <= K; k++) {
        float sum = 0.0f;
        for (int64_t p = 0; p < slots; p++) sum += part[(p * E + e) * (K + 1) + k];
        if (k < K) gw[e * K + k] = sum;
        else if (gbias) gbias[e] = sum;
    }
}

mr_status mr_cuda_conv_silu_backward(const mr_cuda_conv_train_args *t, cudaStream_t stream, mr_error *err) {
    const int64_t T = t->T, E = t->E, K = t->K;
    if (E == 0) return MR_OK;
    if (T == 0) {
        mr_status st = mr_cuda_check(cudaMemsetAsync(t->gw, 0, (size_t)(E * K) * sizeof(float), stream), err, "cudaMemsetAsync");
        if (!st && t->gbias) st = mr_cuda_check(cudaMemsetAsync(t->gbias, 0, (size_t)E * sizeof(float), stream), err, "cudaMemsetAsync");
        return st;
    }
    int64_t rows_per_slot = (T + CONV_BWD_MAX_SLOTS - 1) / CONV_BWD_MAX_SLOTS;
    if (rows_per_slot < 32) rows_per_slot = 32;
    const int64_t slots = (T + rows_per_slot - 1) / rows_per_slot;
    const size_t gfloats = (size_t)(T * E), pfloats = (size_t)(slots * E * (K + 1));
    float *scratch = NULL;
    mr_status st = mr_cuda_check(cudaMallocAsync((void **)&scratch, (gfloats + pfloats) * sizeof(float), stream), err,
                                 "cudaMallocAsync(conv backward scratch)");
    if (st) return st;
    float *g = scratch, *part = scratch + gfloats;
    const size_t smem = (size_t)K * CONV_BWD_THREADS * sizeof(float);
    st = mr_cuda_check(cudaFuncSetAttribute(conv_silu_grad_pre_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            (int)smem),
                       err, "cudaFuncSetAttribute(conv_silu_grad_pre)");
    if (!st) {
        conv_silu_grad_pre_kernel<<<dim3(mr_blocks(E, CONV_BWD_THREADS), (unsigned)slots), CONV_BWD_THREADS, smem,
                                    stream>>>(T, E, K, rows_per_slot, t->x, t->ldx, t->w, t->bias, t->pos, t->gout,
                                              t->ldgo, g, part);
        st = mr_cuda_launched(err, "conv_silu_grad_pre");
    }
    if (!st) {
        const int threads = 128;
        conv_silu_grad_input_kernel<<<dim3(mr_blocks(E, threads), (unsigned)(T < 65535 ? T : 65535)), threads, 0,
                                      stream>>>(T, E, K, t->w, t->pos, g, t->gx);
        st = mr_cuda_launched(err, "conv_silu_grad_input");
    }
    if (!st) {
        const int threads = 128;
        conv_silu_grad_weights_kernel<<<mr_blocks(E, threads), threads, 0, stream>>>(slots, E, K, part, t->gw, t->gbias);
        st = mr_cuda_launched(err, "conv_silu_grad_weights");
    }
    cudaFreeAsync(scratch, stream);
    return st;
}
