/* Conv + SiLU backward (training) variants on one packed batch, checked against the CPU
 * reference (csrc/ops/mr_ops_backward_ref.c) and timed.
 *
 *   1  direct: one thread per (row, channel) recomputes the K pre-activation gradients its input
 *      feeds (K^2 work per element) and adds to dw and d bias with atomics.
 *   2  three kernels (production, cuda/conv_silu_backward.cu): the pre-activation gradient once
 *      per element with per-slot weight sums, then dx from it, then a fixed-order sum.
 *
 * Build: make -C dev/cuda conv_silu_backward; run: ./conv_silu_backward [check | variant] [T] [E] [K] [length] */
#include <string.h>

#include <vector>

#include "../../cuda/conv_silu_backward.cu"
#include "dev_common.h"
#include "ops/mr_ops_backward.h"

__device__ float pre_activation(int64_t r, int64_t e, int64_t E, int64_t K, const float *x, const float *w,
                                const float *bias, const int32_t *pos) {
    float pre = bias[e];
    for (int64_t k = 0; k < K; k++)
        if (K - 1 - k <= pos[r]) pre += w[e * K + k] * x[(r - (K - 1) + k) * E + e];
    return pre;
}

/* Variant 1. */
__global__ void conv_backward_direct_kernel(int64_t T, int64_t E, int64_t K, const float *x, const float *w,
                                            const float *bias, const int32_t *pos, const float *gout, float *gx,
                                            float *gw, float *gbias) {
    const int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x, r = blockIdx.y;
    if (e >= E) return;
    float acc = 0.0f;
    for (int64_t k = 0; k < K; k++) {
        const int64_t ahead = K - 1 - k, dst = r + ahead;
        if (dst >= T || pos[dst] - pos[r] != ahead) continue;
        const float pre = pre_activation(dst, e, E, K, x, w, bias, pos), sig = 1.0f / (1.0f + expf(-pre));
        const float g = gout[dst * E + e] * sig * (1.0f + pre * (1.0f - sig));
        acc += w[e * K + k] * g;
        atomicAdd(&gw[e * K + k], g * x[r * E + e]);
        if (ahead == 0) atomicAdd(&gbias[e], g);
    }
    gx[r * E + e] = acc;
}

int main(int argc, char **argv) {
    const bool check_only = argc > 1 && strcmp(argv[1], "check") == 0;
    const int variant = argc > 1 && !check_only ? atoi(argv[1]) : 0;
    const int64_t T = argc > 2 ? atoll(argv[2]) : (check_only ? 700 : 16384), E = argc > 3 ? atoll(argv[3]) : (check_only ? 70 : 1536);
    const int64_t K = argc > 4 ? atoll(argv[4]) : 4, length = argc > 5 ? atoll(argv[5]) : (check_only ? 150 : 512);
    printf("conv + SiLU backward: T=%lld rows in sequences of %lld, E=%lld, K=%lld\n", (long long)T, (long long)length,
           (long long)E, (long long)K);
    std::vector<float> x(T * E), gout(T * E), w(E * K), bias(E);
    dev_fill(x.data(), x.size(), -1, 1, 1);
    dev_fill(gout.data(), gout.size(), -1, 1, 2);
    dev_fill(w.data(), w.size(), -0.5f, 0.5f, 3);
    dev_fill(bias.data(), E, -0.5f, 0.5f, 4);
    std::vector<int64_t> offsets(1, 0);
    std::vector<int32_t> pos(T);
    for (int64_t r = 0; r < T; r += length) {
        const int64_t len = r + length <= T ? length : T - r;
        offsets.push_back(r + len);
        for (int64_t i = 0; i < len; i++) pos[r + i] = (int32_t)i;
    }
    const int64_t S = (int64_t)offsets.size() - 1;
    std::vector<float> ref_gx(T * E), ref_gw(E * K), ref_gb(E);
    mr_conv_silu_backward_f32_ref(S, offsets.data(), E, K, x.data(), E, w.data(), bias.data(), gout.data(), E,
                                  ref_gx.data(), ref_gw.data(), ref_gb.data());

    float *d_x, *d_gout, *d_w, *d_bias, *d_gx, *d_gw, *d_gb;
    int32_t *d_pos;
    const size_t TE = (size_t)(T * E) * 4;
    CUDA_CHECK(cudaMalloc(&d_x, TE)); CUDA_CHECK(cudaMalloc(&d_gout, TE)); CUDA_CHECK(cudaMalloc(&d_gx, TE));
    CUDA_CHECK(cudaMalloc(&d_w, E * K * 4)); CUDA_CHECK(cudaMalloc(&d_gw, E * K * 4));
    CUDA_CHECK(cudaMalloc(&d_bias, E * 4)); CUDA_CHECK(cudaMalloc(&d_gb, E * 4)); CUDA_CHECK(cudaMalloc(&d_pos, T * 4));
    CUDA_CHECK(cudaMemcpy(d_x, x.data(), TE, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(d_gout, gout.data(), TE, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(d_w, w.data(), E * K * 4, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(d_bias, bias.data(), E * 4, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(d_pos, pos.data(), T * 4, cudaMemcpyHostToDevice));

    auto check = [&](const char *name) {
        std::vector<float> gx(T * E), gw(E * K), gb(E);
        CUDA_CHECK(cudaMemcpy(gx.data(), d_gx, TE, cudaMemcpyDeviceToHost));
        CUDA_CHECK(cudaMemcpy(gw.data(), d_gw, E * K * 4, cudaMemcpyDeviceToHost));
        CUDA_CHECK(cudaMemcpy(gb.data(), d_gb, E * 4, cudaMemcpyDeviceToHost));
        printf(" %s\n", name);
        bool ok = dev_compare("dx", gx.data(), ref_gx.data(), gx.size(), 1e-5f);
        ok &= dev_compare("dw", gw.data(), ref_gw.data(), gw.size(), 1e-4f);
        return ok & dev_compare("d bias", gb.data(), ref_gb.data(), gb.size(), 1e-4f);
    };
    const double bytes = (double)T * E * 4 * 3;
    bool ok = true;
    if (variant == 0 || variant == 1) {
        auto run = [&] {
            CUDA_CHECK(cudaMemset(d_gw, 0, E * K * 4));
            CUDA_CHECK(cudaMemset(d_gb, 0, E * 4));
            conv_backward_direct_kernel<<<dim3(mr_blocks(E, 128), (unsigned)T), 128>>>(T, E, K, d_x, d_w, d_bias, d_pos,
                                                                                      d_gout, d_gx, d_gw, d_gb);
        };
        run();
        CUDA_CHECK(cudaDeviceSynchronize());
        ok &= check("1 direct");
        if (!check_only) {
            float ms = dev_time_ms(run, 10);
            printf("  1 direct       %8.3f ms  %7.1f Mtok/s  %6.0f GB/s\n", ms, T / ms / 1e3, bytes / ms / 1e6);
        }
    }
    if (variant == 0 || variant == 2) {
        mr_cuda_conv_train_args args = {};
        args.S = S; args.T = T; args.E = E; args.K = K; args.pos = d_pos; args.x = d_x; args.ldx = E; args.w = d_w;
        args.bias = d_bias; args.gout = d_gout; args.ldgo = E; args.gx = d_gx; args.gw = d_gw; args.gbias = d_gb;
        mr_error err = {};
        auto run = [&] {
            if (mr_cuda_conv_silu_backward(&args, 0, &err)) {
                fprintf(stderr, "%s\n", err.message);
                exit(1);
            }
        };
        run();
        CUDA_CHECK(cudaDeviceSynchronize());
        ok &= check("2 three kernels");
        if (!check_only) {
            float ms = dev_time_ms(run, 10);
            printf("  2 three kernels %7.3f ms  %7.1f Mtok/s  %6.0f GB/s\n", ms, T / ms / 1e3, bytes / ms / 1e6);
        }
    }
    return ok ? 0 : 1;
}
