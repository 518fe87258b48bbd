/* Selective scan backward (training) variants on one packed batch, checked against the CPU
 * reference (csrc/ops/mr_ops_backward_ref.c: every state stored, one channel at a time) and timed.
 * The boundary states come from the production forward (cuda/selective_scan.cu).
 *
 *   1  sequential: one thread per (sequence, channel) walks the chunks backwards, recomputing a
 *      chunk's states into local memory, dB/dC with atomics; few threads and no reuse of B/C.
 *   2  chunked (production, cuda/selective_scan_backward.cu): 32 channels x 4 warps per block,
 *      n outer, forward and backward affine maps composed across warps in shared memory, dB/dC
 *      summed by warp shuffles into per-group partial rows, then a fixed-order sum.
 *
 * Build: make -C dev/cuda selective_scan_backward;
 * run: ./selective_scan_backward [check | variant] [T] [E] [N] [length] */
#include <string.h>

#include <vector>

#include "../../cuda/selective_scan.cu"
#include "../../cuda/selective_scan_backward.cu"
#include "dev_common.h"
#include "ops/mr_ops_backward.h"

#define SEQ_MAX_N 16

/* Variant 1. */
__global__ void scan_backward_sequential_kernel(int64_t S, const int64_t *offsets, const int64_t *first_boundary,
                                                int64_t E, int64_t N, const float *u, const float *dt,
                                                const float *dt_bias, const float *A, const float *B, const float *C,
                                                int64_t ldbc, const float *D, const float *z, const float *boundaries,
                                                const float *gy, float *gu, float *gdt, float *gz, float *gA,
                                                float *gB, float *gC, float *gD, float *gbias) {
    const int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x, s = blockIdx.y;
    if (e >= E || s >= S) return;
    const int64_t CH = MR_CUDA_TRAIN_SCAN_CHUNK, start = offsets[s], end = offsets[s + 1];
    float hs[(MR_CUDA_TRAIN_SCAN_CHUNK + 1) * SEQ_MAX_N], gh[SEQ_MAX_N], gA_acc[SEQ_MAX_N];
    float gD_acc = 0.0f, gbias_acc = 0.0f;
    for (int64_t n = 0; n < N; n++) gh[n] = gA_acc[n] = 0.0f;
    const int64_t nchunks = (end - start + CH - 1) / CH;
    for (int64_t c = nchunks - 1; c >= 0; c--) {
        const int64_t t0 = start + c * CH, len = end - t0 < CH ? end - t0 : CH;
        for (int64_t n = 0; n < N; n++)
            hs[n] = c == 0 ? 0.0f : boundaries[(first_boundary[s] + c - 1) * E * N + e * N + n];
        for (int64_t i = 0; i < len; i++) {
            const int64_t t = t0 + i;
            const float delta = softplus_f32(dt[t * E + e] + dt_bias[e]);
            for (int64_t n = 0; n < N; n++)
                hs[(i + 1) * N + n] = expf(delta * A[e * N + n]) * hs[i * N + n] + delta * B[t * ldbc + n] * u[t * E + e];
        }
        for (int64_t i = len - 1; i >= 0; i--) {
            const int64_t t = t0 + i;
            const float x = dt[t * E + e] + dt_bias[e], delta = softplus_f32(x), ut = u[t * E + e];
            float readout = D[e] * ut;
            for (int64_t n = 0; n < N; n++) readout += C[t * ldbc + n] * hs[(i + 1) * N + n];
            const float zt = z[t * E + e], sig = 1.0f / (1.0f + expf(-zt)), g_in = gy[t * E + e];
            gz[t * E + e] = g_in * readout * sig * (1.0f + zt * (1.0f - sig));
            const float g_read = g_in * zt * sig;
            float g_u = g_read * D[e], g_delta = 0.0f;
            gD_acc += g_read * ut;
            for (int64_t n = 0; n < N; n++) {
                const float cn = C[t * ldbc + n], bn = B[t * ldbc + n], decay = expf(delta * A[e * N + n]);
                atomicAdd(&gC[t * N + n], g_read * hs[(i + 1) * N + n]);
                const float g = gh[n] + g_read * cn, carried = g * decay * hs[i * N + n];
                g_delta += A[e * N + n] * carried + g * bn * ut;
                gA_acc[n] += delta * carried;
                atomicAdd(&gB[t * N + n], g * delta * ut);
                g_u += g * delta * bn;
                gh[n] = g * decay;
            }
            const float g_dt = g_delta * (x > 20.0f ? 1.0f : 1.0f / (1.0f + expf(-x)));
            gbias_acc += g_dt;
            gu[t * E + e] = g_u;
            gdt[t * E + e] = g_dt;
        }
    }
    for (int64_t n = 0; n < N; n++) atomicAdd(&gA[e * N + n], gA_acc[n]);
    atomicAdd(&gD[e], gD_acc);
    atomicAdd(&gbias[e], gbias_acc);
}

int main(int argc, char **argv) {
    const bool check_only = argc > 1 && strcmp(argv[1], "check") == 0;
    const int variant = argc > 1 && !check_only ? atoi(argv[1]) : 0; /* 0: all */
    const int64_t T = argc > 2 ? atoll(argv[2]) : (check_only ? 700 : 16384), E = argc > 3 ? atoll(argv[3]) : (check_only ? 70 : 1536);
    const int64_t N = argc > 4 ? atoll(argv[4]) : 16, length = argc > 5 ? atoll(argv[5]) : (check_only ? 150 : 512);
    if (N > SEQ_MAX_N) {
        fprintf(stderr, "N at most %d here\n", SEQ_MAX_N);
        return 2;
    }
    const int64_t ldbc = 2 * N;
    printf("selective scan backward: T=%lld rows in sequences of %lld, E=%lld, N=%lld\n", (long long)T,
           (long long)length, (long long)E, (long long)N);

    std::vector<float> u(T * E), dt(T * E), z(T * E), gy(T * E), bc(T * ldbc), dt_bias(E), A(E * N), D(E);
    dev_fill(u.data(), u.size(), -1, 1, 1);
    dev_fill(dt.data(), dt.size(), -3, 1, 2);
    dev_fill(z.data(), z.size(), -2, 2, 3);
    dev_fill(bc.data(), bc.size(), -1, 1, 4);
    dev_fill(dt_bias.data(), E, -4, -1, 5);
    dev_fill(D.data(), E, 0.5f, 1.5f, 6);
    dev_fill(gy.data(), gy.size(), -1, 1, 7);
    for (int64_t e = 0; e < E; e++)
        for (int64_t n = 0; n < N; n++) A[e * N + n] = -(float)(n + 1) * (0.5f + (float)(e % 7) / 7.0f);
    std::vector<int64_t> offsets(1, 0), first_boundary;
    std::vector<int32_t> pos(T);
    std::vector<mr_scan_piece> pieces;
    int64_t kept = 0;
    for (int64_t r = 0; r < T; r += length) {
        const int64_t len = r + length <= T ? length : T - r;
        pieces.push_back({(int32_t)r, (int32_t)len, 0, 0, (int32_t)kept});
        first_boundary.push_back(kept);
        kept += (len + MR_CUDA_TRAIN_SCAN_CHUNK - 1) / MR_CUDA_TRAIN_SCAN_CHUNK - 1;
        offsets.push_back(r + len);
        for (int64_t i = 0; i < len; i++) pos[r + i] = (int32_t)i;
    }
    const int64_t S = (int64_t)pieces.size();

    /* the reference: every gradient from the stored states */
    std::vector<float> ref_gu(T * E), ref_gdt(T * E), ref_gz(T * E), ref_gA(E * N), ref_gB(T * N), ref_gC(T * N),
        ref_gD(E), ref_gbias(E), work((length + 1) * N);
    mr_selective_scan_backward_f32_ref(S, offsets.data(), E, N, u.data(), E, dt.data(), E, dt_bias.data(), A.data(),
                                       bc.data(), bc.data() + N, ldbc, D.data(), z.data(), E, gy.data(), E,
                                       ref_gu.data(), ref_gdt.data(), ref_gbias.data(), ref_gA.data(), ref_gD.data(),
                                       ref_gz.data(), ref_gB.data(), ref_gC.data(), work.data());

    const size_t TE = (size_t)(T * E) * 4;
    std::vector<float> A2(E * N);
    for (int64_t i = 0; i < E * N; i++) A2[i] = A[i] * 1.4426950408889634f;
    float *d_u, *d_dt, *d_z, *d_gy, *d_bc, *d_bias, *d_A, *d_A2, *d_D, *d_y, *d_bound;
    float *d_gu, *d_gdt, *d_gz, *d_gA, *d_gB, *d_gC, *d_gD, *d_gbias;
    int32_t *d_pos;
    int64_t *d_offsets, *d_first;
    auto upload = [](float **dst, const std::vector<float> &src) {
        CUDA_CHECK(cudaMalloc(dst, src.size() * 4));
        CUDA_CHECK(cudaMemcpy(*dst, src.data(), src.size() * 4, cudaMemcpyHostToDevice));
    };
    upload(&d_u, u); upload(&d_dt, dt); upload(&d_z, z); upload(&d_gy, gy); upload(&d_bc, bc);
    upload(&d_bias, dt_bias); upload(&d_A, A); upload(&d_A2, A2); upload(&d_D, D);
    CUDA_CHECK(cudaMalloc(&d_y, TE));
    CUDA_CHECK(cudaMalloc(&d_bound, (size_t)(kept > 0 ? kept : 1) * E * N * 4));
    CUDA_CHECK(cudaMalloc(&d_gu, TE)); CUDA_CHECK(cudaMalloc(&d_gdt, TE)); CUDA_CHECK(cudaMalloc(&d_gz, TE));
    CUDA_CHECK(cudaMalloc(&d_gA, E * N * 4)); CUDA_CHECK(cudaMalloc(&d_gB, T * N * 4));
    CUDA_CHECK(cudaMalloc(&d_gC, T * N * 4)); CUDA_CHECK(cudaMalloc(&d_gD, E * 4)); CUDA_CHECK(cudaMalloc(&d_gbias, E * 4));
    CUDA_CHECK(cudaMalloc(&d_pos, T * 4));
    CUDA_CHECK(cudaMemcpy(d_pos, pos.data(), T * 4, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMalloc(&d_offsets, offsets.size() * 8));
    CUDA_CHECK(cudaMemcpy(d_offsets, offsets.data(), offsets.size() * 8, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMalloc(&d_first, first_boundary.size() * 8));
    CUDA_CHECK(cudaMemcpy(d_first, first_boundary.data(), first_boundary.size() * 8, cudaMemcpyHostToDevice));

    mr_error err = {};
    if (mr_cuda_selective_scan(MR_DTYPE_F32, E, N, d_u, E, d_dt, E, d_bias, d_A2, d_bc, d_bc + N, ldbc, d_D, d_z, E,
                               d_pos, pieces.data(), S, NULL, NULL, d_bound, d_y, E, 0, &err)) {
        fprintf(stderr, "forward: %s\n", err.message);
        return 1;
    }
    mr_cuda_scan_train_args args = {};
    args.S = S; args.T = T; args.E = E; args.N = N; args.offsets = offsets.data(); args.pos = d_pos;
    args.u = d_u; args.ldu = E; args.dt = d_dt; args.lddt = E; args.dt_bias = d_bias; args.A = d_A;
    args.B = d_bc; args.C = d_bc + N; args.ldbc = ldbc; args.D = d_D; args.z = d_z; args.ldz = E;
    args.boundaries = d_bound; args.gy = d_gy; args.ldgy = E; args.gu = d_gu; args.gdt = d_gdt;
    args.gdt_bias = d_gbias; args.gA = d_gA; args.gB = d_gB; args.gC = d_gC; args.gD = d_gD; args.gz = d_gz;

    struct Output { const char *name; float *dev; const std::vector<float> *ref; };
    const Output outputs[] = {{"du", d_gu, &ref_gu}, {"d dt", d_gdt, &ref_gdt}, {"dz", d_gz, &ref_gz},
                              {"dA", d_gA, &ref_gA}, {"dB", d_gB, &ref_gB}, {"dC", d_gC, &ref_gC},
                              {"dD", d_gD, &ref_gD}, {"d dt_bias", d_gbias, &ref_gbias}};
    auto check = [&](const char *variant_name) {
        bool ok = true;
        printf(" %s\n", variant_name);
        for (const Output &o : outputs) {
            std::vector<float> got(o.ref->size());
            CUDA_CHECK(cudaMemcpy(got.data(), o.dev, got.size() * 4, cudaMemcpyDeviceToHost));
            ok &= dev_compare(o.name, got.data(), o.ref->data(), got.size(), 1e-4f);
        }
        return ok;
    };
    auto clear = [&] {
        for (const Output &o : outputs) CUDA_CHECK(cudaMemset(o.dev, 0, o.ref->size() * 4));
    };
    /* bytes a backward must move at least: the inputs and gradients of [T, E] rows, B and C */
    const double bytes = (double)T * E * 4 * 8 + (double)T * N * 4 * 4;
    bool ok = true;
    if (variant == 0 || variant == 1) {
        auto run = [&] {
            clear();
            dim3 grid(mr_blocks(E, 64), (unsigned)S);
            scan_backward_sequential_kernel<<<grid, 64>>>(S, d_offsets, d_first, E, N, d_u, d_dt, d_bias, d_A, d_bc,
                                                          d_bc + N, ldbc, d_D, d_z, d_bound, d_gy, d_gu, d_gdt, d_gz,
                                                          d_gA, d_gB, d_gC, d_gD, d_gbias);
        };
        run();
        CUDA_CHECK(cudaDeviceSynchronize());
        ok &= check("1 sequential");
        if (!check_only) {
            float ms = dev_time_ms(run, 3);
            printf("  1 sequential   %8.3f ms  %7.1f Mtok/s  %6.0f GB/s\n", ms, T / ms / 1e3, bytes / ms / 1e6);
        }
    }
    if (variant == 0 || variant == 2) {
        auto run = [&] {
            if (mr_cuda_selective_scan_backward(&args, d_offsets, d_first, 0, &err)) {
                fprintf(stderr, "%s\n", err.message);
                exit(1);
            }
        };
        clear();
        run();
        CUDA_CHECK(cudaDeviceSynchronize());
        ok &= check("2 chunked");
        if (!check_only) {
            float ms = dev_time_ms(run, 10);
            printf("  2 chunked      %8.3f ms  %7.1f Mtok/s  %6.0f GB/s\n", ms, T / ms / 1e3, bytes / ms / 1e6);
        }
    }
    return ok ? 0 : 1;
}
