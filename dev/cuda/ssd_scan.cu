/* Mamba-2's SSD scan and gated RMSNorm on the GPU (cuda/ssd_scan.cu), checked against the CPU
 * references (csrc/ops/mr_ssd_ref.c) on one packed micro-batch, then timed.
 *
 * Build: make -C dev/cuda ssd_scan; run: ./ssd_scan [check] [T] [H] [P] [G] [N] [length] */
#include <math.h>
#include <string.h>

#include <vector>

#include "../../cuda/ssd_scan.cu"
#include "dev_common.h"
#include "ops/mr_ops.h"

int main(int argc, char **argv) {
    const int check = argc > 1 && strcmp(argv[1], "check") == 0;
    const int a0 = check ? 2 : 1;
    const int64_t T = argc > a0 ? atoll(argv[a0]) : (check ? 700 : 8192);
    const int64_t H = argc > a0 + 1 ? atoll(argv[a0 + 1]) : 24, P = argc > a0 + 2 ? atoll(argv[a0 + 2]) : 64;
    const int64_t G = argc > a0 + 3 ? atoll(argv[a0 + 3]) : 1, N = argc > a0 + 4 ? atoll(argv[a0 + 4]) : 128;
    const int64_t length = argc > a0 + 5 ? atoll(argv[a0 + 5]) : 512, E = H * P, GN = G * N;
    printf("ssd scan: T=%lld rows in parts of %lld, H=%lld P=%lld G=%lld N=%lld\n", (long long)T, (long long)length,
           (long long)H, (long long)P, (long long)G, (long long)N);
    std::vector<float> x(T * E), dt(T * H), B(T * GN), C(T * GN), z(T * E), bias(H), A(H), A2(H), D(H), w(E);
    std::vector<float> ref(T * E), ref_norm(T * E), state(H * N * P);
    dev_fill(x.data(), x.size(), -1, 1, 1);
    dev_fill(dt.data(), dt.size(), -3, 1, 2);
    dev_fill(B.data(), B.size(), -1, 1, 3);
    dev_fill(C.data(), C.size(), -1, 1, 4);
    dev_fill(z.data(), z.size(), -2, 2, 5);
    dev_fill(bias.data(), H, -4, -1, 6);
    dev_fill(D.data(), H, 0.5f, 1.5f, 7);
    dev_fill(w.data(), E, 0.5f, 1.5f, 8);
    for (int64_t h = 0; h < H; h++) {
        A[h] = -(float)(h % 8 + 1) * 0.5f;
        A2[h] = A[h] * 1.4426950408889634f;
    }
    const float dt_min = 0.001f, dt_max = 2.0f;
    std::vector<int32_t> pos(T);
    for (int64_t r = 0; r < T; r += length) {
        const int64_t len = r + length <= T ? length : T - r;
        for (int64_t i = 0; i < len; i++) pos[r + i] = (int32_t)i;
        mr_ssd_scan_f32_ref(len, H, P, G, N, &x[r * E], E, &dt[r * H], H, bias.data(), A.data(), dt_min, dt_max,
                            &B[r * GN], &C[r * GN], GN, D.data(), NULL, state.data(), &ref[r * E], E);
    }
    mr_gated_rmsnorm_f32_ref(T, E, E / G, ref.data(), E, z.data(), E, w.data(), 1e-5f, ref_norm.data(), E);

    float *d_x, *d_dt, *d_B, *d_C, *d_z, *d_bias, *d_A2, *d_D, *d_w, *d_y;
    int32_t *d_pos;
    CUDA_CHECK(cudaMalloc(&d_x, x.size() * 4)); CUDA_CHECK(cudaMalloc(&d_dt, dt.size() * 4));
    CUDA_CHECK(cudaMalloc(&d_B, B.size() * 4)); CUDA_CHECK(cudaMalloc(&d_C, C.size() * 4));
    CUDA_CHECK(cudaMalloc(&d_z, z.size() * 4)); CUDA_CHECK(cudaMalloc(&d_bias, H * 4));
    CUDA_CHECK(cudaMalloc(&d_A2, H * 4)); CUDA_CHECK(cudaMalloc(&d_D, H * 4)); CUDA_CHECK(cudaMalloc(&d_w, E * 4));
    CUDA_CHECK(cudaMalloc(&d_y, x.size() * 4)); CUDA_CHECK(cudaMalloc(&d_pos, T * 4));
    CUDA_CHECK(cudaMemcpy(d_x, x.data(), x.size() * 4, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(d_dt, dt.data(), dt.size() * 4, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(d_B, B.data(), B.size() * 4, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(d_C, C.data(), C.size() * 4, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(d_z, z.data(), z.size() * 4, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(d_bias, bias.data(), H * 4, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(d_A2, A2.data(), H * 4, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(d_D, D.data(), H * 4, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(d_w, w.data(), E * 4, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(d_pos, pos.data(), T * 4, cudaMemcpyHostToDevice));

    mr_error err = {};
    auto scan = [&] {
        if (mr_cuda_ssd_scan(MR_DTYPE_F32, T, H, P, G, N, d_x, E, d_dt, H, d_bias, d_A2, dt_min, dt_max, d_B, d_C, GN,
                             d_D, d_pos, NULL, NULL, d_y, E, 0, &err)) {
            fprintf(stderr, "%s\n", err.message);
            exit(1);
        }
    };
    auto norm = [&] {
        if (mr_cuda_gated_rmsnorm(MR_DTYPE_F32, T, E, E / G, d_y, E, d_z, E, d_w, 1e-5f, d_y, E, 0, &err)) {
            fprintf(stderr, "%s\n", err.message);
            exit(1);
        }
    };
    std::vector<float> got(T * E);
    scan();
    CUDA_CHECK(cudaDeviceSynchronize());
    CUDA_CHECK(cudaMemcpy(got.data(), d_y, got.size() * 4, cudaMemcpyDeviceToHost));
    int ok = dev_compare("ssd scan", got.data(), ref.data(), got.size(), 1e-4f);
    norm();
    CUDA_CHECK(cudaDeviceSynchronize());
    CUDA_CHECK(cudaMemcpy(got.data(), d_y, got.size() * 4, cudaMemcpyDeviceToHost));
    ok &= dev_compare("gated rmsnorm", got.data(), ref_norm.data(), got.size(), 1e-4f);
    if (!check) {
        const float ms = dev_time_ms(scan, 10);
        printf("  ssd scan       %8.3f ms  %7.1f Mtok/s\n", ms, T / ms / 1e3);
        printf("  gated rmsnorm  %8.3f ms\n", dev_time_ms(norm, 10));
    }
    return ok ? 0 : 1;
}
