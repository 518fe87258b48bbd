/* Causal conv + SiLU variants over a packed micro-batch (a carried-in first sequence, several
 * whole ones, a last one carried out), checked against the CPU reference (mr_conv_silu_f32_ref,
 * one call per sequence segment) in float32 and bfloat16, and the carried-out state against
 * the reference's state_out; then timed.
 *
 *   1  element per thread: one thread per (row, channel).
 *   2  rows per thread (production, cuda/conv_silu.cu): 4 consecutive rows, taps from L1.
 *
 * Build: make -C dev/cuda conv_silu; run: ./conv_silu [check | variant] [T] [E] [K] [length] */
#include <vector>

#include "../../cuda/conv_silu.cu"
#include "dev_common.h"
#include "ops/mr_ops.h"

template <typename T>
__global__ void conv_silu_flat_kernel(int64_t Trows, int64_t E, int64_t K, const T *in, int64_t ldi, const float *w,
                                      const float *bias, const int32_t *pos, const float *carry_in, T *out,
                                      int64_t ldo) {
    const int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (i >= Trows * E) return;
    const int64_t q = i / E, e = i % E;
    float acc = bias ? bias[e] : 0.0f;
    for (int64_t k = 0; k < K; k++) acc += w[e * K + k] * conv_input(in, ldi, q - (K - 1) + k, q, pos[q], e, carry_in, K, E);
    out[q * ldo + e] = from_f32<T>(silu_f32(acc));
}

static int run_case(int variant, int check, int64_t T, int64_t E, int64_t K, int64_t length) {
    const int64_t ldi = 2 * E; /* the conv reads the u half of in_proj's output, as in the model */
    const int64_t carried = length / 3 + 1 < T ? length / 3 + 1 : T; /* rows of a sequence begun earlier */
    printf("conv + silu: T=%lld E=%lld K=%lld, sequences of %lld, first %lld rows carried in\n", (long long)T,
           (long long)E, (long long)K, (long long)length, (long long)carried);
    std::vector<int64_t> starts = {0};
    for (int64_t r = carried; r < T; r += length) starts.push_back(r);
    std::vector<int32_t> pos(T);
    for (size_t s = 0; s < starts.size(); s++) {
        const int64_t end = s + 1 < starts.size() ? starts[s + 1] : T;
        for (int64_t r = starts[s]; r < end; r++) pos[r] = (int32_t)(r - starts[s] + (s == 0 ? 7 : 0));
    }
    std::vector<float> in(T * ldi), w(E * K), bias(E), carry_in((K - 1) * E + 1), ref(T * E), got(T * E);
    std::vector<float> ref_state((K - 1) * E + 1), got_state((K - 1) * E + 1);
    int32_t *d_pos = dev_upload(pos.data(), pos.size());
    float *d_w, *d_bias, *d_carry_in, *d_carry_out;
    void *d_out;
    CUDA_CHECK(cudaMalloc(&d_out, T * E * 4 + 4));
    CUDA_CHECK(cudaMalloc(&d_carry_out, ((K - 1) * E + 1) * 4));
    int ok = 1;
    for (int bf16 = 0; bf16 <= 1; bf16++) {
        dev_fill(in.data(), in.size(), -2, 2, 1);
        dev_fill(w.data(), w.size(), -1, 1, 2);
        dev_fill(bias.data(), E, -0.5f, 0.5f, 3);
        dev_fill(carry_in.data(), carry_in.size(), -2, 2, 4);
        if (bf16) dev_round_bf16(in.data(), in.size());
        for (size_t s = 0; s < starts.size(); s++) {
            const int64_t r = starts[s], L = (s + 1 < starts.size() ? starts[s + 1] : T) - r;
            const int last = s + 1 == starts.size();
            mr_conv_silu_f32_ref(L, E, K, &in[r * ldi], ldi, w.data(), bias.data(), s == 0 ? carry_in.data() : NULL,
                                 last ? ref_state.data() : NULL, &ref[r * E], E);
        }
        void *d_in = dev_upload_as(in.data(), in.size(), bf16);
        d_w = dev_upload(w.data(), w.size());
        d_bias = dev_upload(bias.data(), E);
        d_carry_in = dev_upload(carry_in.data(), carry_in.size());
        const mr_dtype dtype = bf16 ? MR_DTYPE_BF16 : MR_DTYPE_F32;
        for (int v = 1; v <= 2; v++) {
            if (variant && variant != v) continue;
            mr_error err = {};
            auto run = [&] {
                if (v == 1) {
                    MR_DISPATCH_DTYPE(dtype, AT, conv_silu_flat_kernel<AT><<<mr_blocks(T * E, 256), 256>>>(
                                                     T, E, K, (const AT *)d_in, ldi, d_w, d_bias, d_pos, d_carry_in,
                                                     (AT *)d_out, E));
                } else {
                    dev_check_status(mr_cuda_conv_silu(dtype, T, E, K, d_in, ldi, d_w, d_bias, d_pos, d_carry_in,
                                                       d_out, E, 0, &err), &err, "conv_silu");
                }
            };
            run();
            CUDA_CHECK(cudaDeviceSynchronize());
            dev_download_as(got.data(), d_out, got.size(), bf16);
            char name[64];
            snprintf(name, sizeof name, "%d %s %s", v, v == 1 ? "element per thread" : "rows per thread",
                     bf16 ? "bf16" : "f32");
            ok &= dev_compare(name, got.data(), ref.data(), got.size(), bf16 ? 1e-2f : 1e-5f);
            if (!check) {
                const float ms = dev_time_ms(run, 20);
                const double bytes = (double)T * E * (bf16 ? 4 : 8);
                printf("  %-28s %8.3f ms  %6.0f GB/s\n", name, ms, bytes / ms / 1e6);
            }
        }
        mr_error err = {};
        dev_check_status(mr_cuda_conv_save_state(dtype, T, E, K, d_in, ldi, d_pos, d_carry_in, d_carry_out, 0, &err),
                         &err, "conv_save_state");
        CUDA_CHECK(cudaDeviceSynchronize());
        dev_download_as(got_state.data(), d_carry_out, (K - 1) * E, 0);
        ok &= dev_compare(bf16 ? "  carried-out state bf16" : "  carried-out state f32", got_state.data(),
                          ref_state.data(), (K - 1) * E, 0.0f);
        CUDA_CHECK(cudaFree(d_in));
        CUDA_CHECK(cudaFree(d_w));
        CUDA_CHECK(cudaFree(d_bias));
        CUDA_CHECK(cudaFree(d_carry_in));
    }
    CUDA_CHECK(cudaFree(d_out));
    CUDA_CHECK(cudaFree(d_carry_out));
    CUDA_CHECK(cudaFree(d_pos));
    return ok;
}

int main(int argc, char **argv) {
    const int check = dev_check_only(argc, argv), variant = check || argc <= 1 ? 0 : atoi(argv[1]);
    if (check) { /* odd channel counts, K from 1 to 4, a last sequence shorter than K - 1 */
        int ok = run_case(0, 1, 203, 37, 4, 50) & run_case(0, 1, 64, 130, 2, 9) & run_case(0, 1, 33, 5, 1, 4) &
                 run_case(0, 1, 101, 48, 4, 50) & run_case(0, 1, 16, 37, 4, 10);
        return ok ? 0 : 1;
    }
    const int64_t T = argc > 2 ? atoll(argv[2]) : 16384, E = argc > 3 ? atoll(argv[3]) : 1536;
    const int64_t K = argc > 4 ? atoll(argv[4]) : 4, length = argc > 5 ? atoll(argv[5]) : 512;
    return run_case(variant, 0, T, E, K, length) ? 0 : 1;
}
