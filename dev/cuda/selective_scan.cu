/* Selective scan variants on one packed micro-batch, checked against the CPU reference
 * (csrc/ops/mr_ops_ref.c) and timed.
 *
 *   1  sequential: one thread per (sequence part, channel), the whole part in a loop; exp once
 *      per element but only parts x E threads, so long sequences leave the GPU idle.
 *   2  chunked (production, cuda/selective_scan.cu): 32 channels x 4 warps per block, n outer,
 *      warps combine their composed affine maps through shared memory.
 *
 * Build: make -C dev/cuda selective_scan; run: ./selective_scan [variant] [T] [E] [N] [length] */
#include <vector>

#include "../../cuda/selective_scan.cu"
#include "dev_common.h"
#include "ops/mr_ops.h"

/* Variant 1: the simplest correct GPU scan. */
__global__ void scan_sequential_kernel(int64_t E, int64_t N, const float *u, const float *dt, const float *dt_bias,
                                       const float *A2, const float *B, const float *C, int64_t ldbc, const float *D,
                                       const float *z, const int32_t *part_row0, const int32_t *part_rows, float *y) {
    const int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (e >= E) return;
    const int64_t r0 = part_row0[blockIdx.y], rows = part_rows[blockIdx.y];
    float h[256];
    for (int64_t n = 0; n < N; n++) h[n] = 0.0f;
    for (int64_t r = r0; r < r0 + rows; r++) {
        const float delta = softplus_f32(dt[r * E + e] + dt_bias[e]), ut = u[r * E + e];
        float acc = 0.0f;
        for (int64_t n = 0; n < N; n++) {
            h[n] = exp2f(delta * A2[e * N + n]) * h[n] + delta * B[r * ldbc + n] * ut;
            acc += h[n] * C[r * ldbc + n];
        }
        y[r * E + e] = (acc + D[e] * ut) * silu_f32(z[r * E + e]);
    }
}

int main(int argc, char **argv) {
    const int variant = argc > 1 ? atoi(argv[1]) : 0; /* 0: all */
    const int64_t T = argc > 2 ? atoll(argv[2]) : 16384, E = argc > 3 ? atoll(argv[3]) : 1536;
    const int64_t N = argc > 4 ? atoll(argv[4]) : 16, length = argc > 5 ? atoll(argv[5]) : 512;
    const int64_t ldbc = 2 * N;
    printf("selective scan: T=%lld rows in parts of %lld, E=%lld, N=%lld\n", (long long)T, (long long)length,
           (long long)E, (long long)N);

    std::vector<float> u(T * E), dt(T * E), z(T * E), bc(T * ldbc), dt_bias(E), A(E * N), A2(E * N), D(E), ref(T * E);
    dev_fill(u.data(), u.size(), -1, 1, 1);
    dev_fill(dt.data(), dt.size(), -3, 1, 2);
    dev_fill(z.data(), z.size(), -2, 2, 3);
    dev_fill(bc.data(), bc.size(), -1, 1, 4);
    dev_fill(dt_bias.data(), E, -4, -1, 5);
    dev_fill(D.data(), E, 0.5f, 1.5f, 6);
    for (int64_t e = 0; e < E; e++)
        for (int64_t n = 0; n < N; n++) {
            A[e * N + n] = -(float)(n + 1);
            A2[e * N + n] = A[e * N + n] * 1.4426950408889634f;
        }
    std::vector<int32_t> pos(T), row0, rows;
    std::vector<mr_scan_piece> pieces;
    for (int64_t r = 0; r < T; r += length) {
        const int64_t len = r + length <= T ? length : T - r;
        row0.push_back((int32_t)r);
        rows.push_back((int32_t)len);
        pieces.push_back({(int32_t)r, (int32_t)len, 0, 0, 0});
        for (int64_t i = 0; i < len; i++) pos[r + i] = (int32_t)i;
        mr_selective_scan_f32_ref(len, E, N, &u[r * E], E, &dt[r * E], E, dt_bias.data(), A.data(), &bc[r * ldbc],
                                  &bc[r * ldbc + N], ldbc, D.data(), &z[r * E], E, NULL, NULL, &ref[r * E], E);
    }

    float *d_u, *d_dt, *d_z, *d_bc, *d_bias, *d_A2, *d_D, *d_y;
    int32_t *d_pos, *d_row0, *d_rows;
    const size_t TE = (size_t)(T * E) * 4;
    CUDA_CHECK(cudaMalloc(&d_u, TE)); CUDA_CHECK(cudaMalloc(&d_dt, TE)); CUDA_CHECK(cudaMalloc(&d_z, TE));
    CUDA_CHECK(cudaMalloc(&d_y, TE)); CUDA_CHECK(cudaMalloc(&d_bc, bc.size() * 4));
    CUDA_CHECK(cudaMalloc(&d_bias, E * 4)); CUDA_CHECK(cudaMalloc(&d_A2, E * N * 4)); CUDA_CHECK(cudaMalloc(&d_D, E * 4));
    CUDA_CHECK(cudaMalloc(&d_pos, T * 4)); CUDA_CHECK(cudaMalloc(&d_row0, row0.size() * 4));
    CUDA_CHECK(cudaMalloc(&d_rows, rows.size() * 4));
    CUDA_CHECK(cudaMemcpy(d_u, u.data(), TE, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(d_dt, dt.data(), TE, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(d_z, z.data(), TE, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(d_bc, bc.data(), bc.size() * 4, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(d_bias, dt_bias.data(), E * 4, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(d_A2, A2.data(), E * N * 4, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(d_D, D.data(), E * 4, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(d_pos, pos.data(), T * 4, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(d_row0, row0.data(), row0.size() * 4, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(d_rows, rows.data(), rows.size() * 4, cudaMemcpyHostToDevice));

    std::vector<float> got(T * E);
    int ok = 1;
    const double bytes = 4.0 * TE + (double)bc.size() * 4; /* u, dt, z in, y out, B and C */
    if (variant == 0 || variant == 1) {
        auto run = [&] {
            dim3 grid((unsigned)((E + 127) / 128), (unsigned)row0.size());
            scan_sequential_kernel<<<grid, 128>>>(E, N, d_u, d_dt, d_bias, d_A2, d_bc, d_bc + N, ldbc, d_D, d_z, d_row0,
                                                  d_rows, d_y);
        };
        run();
        CUDA_CHECK(cudaDeviceSynchronize());
        CUDA_CHECK(cudaMemcpy(got.data(), d_y, TE, cudaMemcpyDeviceToHost));
        ok &= dev_compare("1 sequential", got.data(), ref.data(), got.size(), 1e-4f);
        float ms = dev_time_ms(run, 10);
        printf("  1 sequential   %8.3f ms  %7.1f Mtok/s  %6.0f GB/s\n", ms, T / ms / 1e3, bytes / ms / 1e6);
    }
    if (variant == 0 || variant == 2) {
        mr_error err = {};
        auto run = [&] {
            mr_status s = mr_cuda_selective_scan(MR_DTYPE_F32, E, N, d_u, E, d_dt, E, d_bias, d_A2, d_bc, d_bc + N, ldbc,
                                                 d_D, d_z, E, d_pos, pieces.data(), (int64_t)pieces.size(), NULL, NULL,
                                                 NULL, d_y, E, 0, &err);
            if (s) {
                fprintf(stderr, "%s\n", err.message);
                exit(1);
            }
        };
        CUDA_CHECK(cudaMemset(d_y, 0, TE));
        run();
        CUDA_CHECK(cudaDeviceSynchronize());
        CUDA_CHECK(cudaMemcpy(got.data(), d_y, TE, cudaMemcpyDeviceToHost));
        ok &= dev_compare("2 chunked", got.data(), ref.data(), got.size(), 1e-4f);
        float ms = dev_time_ms(run, 10);
        printf("  2 chunked      %8.3f ms  %7.1f Mtok/s  %6.0f GB/s\n", ms, T / ms / 1e3, bytes / ms / 1e6);
    }
    return ok ? 0 : 1;
}
