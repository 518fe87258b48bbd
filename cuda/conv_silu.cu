#include "common.cuh"
#include "conv_silu.cuh"

/* The input at row r (r may be negative: then it is in carry_in) as seen from row q >= r of the
 * same micro-batch, whose position in its sequence is pos_q: zero before the sequence start. */
template <typename T>
__device__ __forceinline__ float conv_input(const T *in, int64_t ldi, int64_t r, int64_t q, int32_t pos_q, int64_t e,
                                            const float *carry_in, int64_t K, int64_t E) {
    if ((int64_t)pos_q < q - r) return 0.0f;
    if (r >= 0) return to_f32(in[r * ldi + e]);
    return carry_in ? carry_in[(K - 1 + r) * E + e] : 0.0f;
}

/* Threads over channels (coalesced rows), each thread ROWS consecutive rows; taps are re-read
 * from L1, which keeps the kernel correct for any K without a register window. */
template <typename T, int ROWS>
__global__ void conv_silu_kernel(int64_t Trows, int64_t E, int64_t K, const T *in, int64_t ldi, const float *w,
                                 const float *bias, const int32_t *pos, const float *carry_in, T *out,
                                 int64_t ldo) {
    const int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (e >= E) return;
    const float b = bias ? bias[e] : 0.0f;
    const float *we = w + e * K;
    for (int64_t r0 = (int64_t)blockIdx.y * ROWS; r0 < Trows; r0 += (int64_t)gridDim.y * ROWS) {
#pragma unroll
        for (int i = 0; i < ROWS; i++) {
            const int64_t q = r0 + i;
            if (q >= Trows) break;
            const int32_t pq = pos[q];
            float acc = b;
            for (int64_t k = 0; k < K; k++)
                acc += we[k] * conv_input(in, ldi, q - (K - 1) + k, q, pq, e, carry_in, K, E);
            out[q * ldo + e] = from_f32<T>(silu_f32(acc));
        }
    }
}

template <typename T>
__global__ void conv_save_state_kernel(int64_t Trows, int64_t E, int64_t K, const T *in, int64_t ldi,
                                       const int32_t *pos, const float *carry_in, float *carry_out) {
    const int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (e >= E) return;
    const int64_t q = Trows - 1; /* the last row: its sequence is the one carried on */
    const int32_t pq = pos[q];
    for (int64_t j = 0; j < K - 1; j++)
        carry_out[j * E + e] = conv_input(in, ldi, Trows - (K - 1) + j, q, pq, e, carry_in, K, E);
}

mr_status mr_cuda_conv_silu(mr_dtype dtype, int64_t T, int64_t E, int64_t K, const void *in, int64_t ldi,
                            const float *w, const float *bias, const int32_t *pos, const float *carry_in,
                            void *out, int64_t ldo, cudaStream_t stream, mr_error *err) {
    if (T == 0) return MR_OK;
    constexpr int ROWS = 4;
    const int threads = 128;
    const int64_t row_blocks = (T + ROWS - 1) / ROWS;
    dim3 grid(mr_blocks(E, threads), (unsigned)(row_blocks < 65535 ? row_blocks : 65535));
    MR_DISPATCH_DTYPE(dtype, AT,
                      conv_silu_kernel<AT, ROWS><<<grid, threads, 0, stream>>>(T, E, K, (const AT *)in, ldi, w, bias,
                                                                              pos, carry_in, (AT *)out, ldo));
    return mr_cuda_launched(err, "conv_silu");
}

mr_status mr_cuda_conv_save_state(mr_dtype dtype, int64_t T, int64_t E, int64_t K, const void *in, int64_t ldi,
                                  const int32_t *pos, const float *carry_in, float *carry_out,
                                  cudaStream_t stream, mr_error *err) {
    if (T == 0 || K < 2) return MR_OK;
    const int threads = 128;
    MR_DISPATCH_DTYPE(dtype, AT,
                      conv_save_state_kernel<AT><<<mr_blocks(E, threads), threads, 0, stream>>>(
                          T, E, K, (const AT *)in, ldi, pos, carry_in, carry_out));
    return mr_cuda_launched(err, "conv_save_state");
}
