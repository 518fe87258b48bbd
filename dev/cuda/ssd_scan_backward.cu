/* Mamba-2's SSD scan for training (forward and backward, float32) on one packed batch, checked
 * against the CPU kernels (csrc/ops/mr_ssd_ref.c for the forward, csrc/ops/mr_ssd_backward.c for
 * the backward, one thread) and timed. The boundary states come from the production forward
 * (cuda/ssd_scan_backward.cu).
 *
 *   1  per state: one thread per (sequence, head, channel, state index) walks the chunks
 *      backwards, recomputing its 64 states into local memory; every sum with atomics.
 *   2  production (cuda/ssd_scan_backward.cu): a block per (head, sequence slot), 4 warps
 *      splitting the state indices, 32 channels a warp; sums over n in shared memory, over
 *      channels by shuffles, dB / dC / dA / dD / d dt_bias as partials added in a fixed order.
 *
 * Build: make -C dev/cuda ssd_scan_backward;
 * run: ./ssd_scan_backward [check | variant] [T] [H] [P] [G] [N] [length] */
#include <string.h>

#include <vector>

#include "../../cuda/selective_scan_backward.cu"
#include "../../cuda/ssd_scan_backward.cu"
#include "dev_common.h"
#include "ops/mr_ops.h"
#include "ops/mr_ops_backward.h"

/* Variant 1. */
__global__ void ssd_backward_per_state_kernel(const int64_t *offsets, const int64_t *first_boundary, int64_t H,
                                              int64_t P, int64_t G, int64_t N, const float *x, const float *dt,
                                              const float *dt_bias, const float *A, float dt_min, float dt_max,
                                              const float *B, const float *C, const float *D, const float *boundaries,
                                              const float *gy, float *gx, float *gdt, float *gbias, float *gA,
                                              float *gB, float *gC, float *gD) {
    const int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x, s = blockIdx.y, h = blockIdx.z;
    if (idx >= P * N) return;
    const int64_t p = idx / N, n = idx % N, E = H * P, GN = G * N, gN = (h / (H / G)) * N;
    const int64_t CH = MR_CUDA_TRAIN_SCAN_CHUNK, start = offsets[s], end = offsets[s + 1];
    const int64_t nchunks = (end - start + CH - 1) / CH;
    float hs[MR_CUDA_TRAIN_SCAN_CHUNK + 1], gh = 0.0f, gA_acc = 0.0f, gD_acc = 0.0f;
    for (int64_t c = nchunks - 1; c >= 0; c--) {
        const int64_t t0 = start + c * CH, len = end - t0 < CH ? end - t0 : CH;
        hs[0] = c == 0 ? 0.0f : boundaries[((first_boundary[s] + c - 1) * H + h) * N * P + n * P + p];
        for (int64_t i = 0; i < len; i++) {
            const int64_t t = t0 + i;
            const float delta = fminf(fmaxf(softplus_f32(dt[t * H + h] + dt_bias[h]), dt_min), dt_max);
            hs[i + 1] = expf(delta * A[h]) * hs[i] + delta * B[t * GN + gN + n] * x[t * E + h * P + p];
        }
        for (int64_t i = len - 1; i >= 0; i--) {
            const int64_t t = t0 + i;
            const float raw = dt[t * H + h] + dt_bias[h], sp = softplus_f32(raw);
            const float delta = fminf(fmaxf(sp, dt_min), dt_max), decay = expf(delta * A[h]);
            const float ddt = sp >= dt_min && sp <= dt_max ? 1.0f / (1.0f + expf(-raw)) : 0.0f;
            const float dy = gy[t * E + h * P + p], xv = x[t * E + h * P + p], bn = B[t * GN + gN + n];
            const float g = gh + C[t * GN + gN + n] * dy;
            atomicAdd(&gC[t * GN + gN + n], dy * hs[i + 1]);
            atomicAdd(&gB[t * GN + gN + n], delta * g * xv);
            atomicAdd(&gx[t * E + h * P + p], delta * g * bn + (n == 0 ? D[h] * dy : 0.0f));
            const float g_dt = (g * bn * xv + A[h] * decay * g * hs[i]) * ddt;
            atomicAdd(&gdt[t * H + h], g_dt);
            atomicAdd(&gbias[h], g_dt);
            gA_acc += delta * decay * g * hs[i];
            if (n == 0) gD_acc += dy * xv;
            gh = decay * g;
        }
    }
    atomicAdd(&gA[h], gA_acc);
    if (n == 0) atomicAdd(&gD[h], gD_acc);
}

int main(int argc, char **argv) {
    const bool check_only = dev_check_only(argc, argv);
    const int variant = argc > 1 && !check_only ? atoi(argv[1]) : 0; /* 0: all */
    const int64_t T = argc > 2 ? atoll(argv[2]) : (check_only ? 700 : 16384);
    const int64_t H = argc > 3 ? atoll(argv[3]) : (check_only ? 6 : 24), P = argc > 4 ? atoll(argv[4]) : (check_only ? 40 : 64);
    const int64_t G = argc > 5 ? atoll(argv[5]) : (check_only ? 2 : 1), N = argc > 6 ? atoll(argv[6]) : (check_only ? 24 : 128);
    const int64_t length = argc > 7 ? atoll(argv[7]) : (check_only ? 150 : 512), E = H * P, GN = G * N;
    if (H % G) {
        fprintf(stderr, "G must divide H\n");
        return 2;
    }
    const float dt_min = 0.01f, dt_max = 0.5f; /* both clamps are hit by the deltas below */
    printf("ssd scan backward: T=%lld rows in sequences of up to %lld, H=%lld P=%lld G=%lld N=%lld\n", (long long)T,
           (long long)length, (long long)H, (long long)P, (long long)G, (long long)N);

    std::vector<float> x(T * E), dt(T * H), B(T * GN), C(T * GN), gy(T * E), dt_bias(H), A(H), D(H);
    dev_fill(x.data(), x.size(), -1, 1, 1);
    dev_fill(dt.data(), dt.size(), -3, 1, 2);
    dev_fill(B.data(), B.size(), -1, 1, 3);
    dev_fill(C.data(), C.size(), -1, 1, 4);
    dev_fill(dt_bias.data(), H, -4, -1, 5);
    dev_fill(D.data(), H, 0.5f, 1.5f, 6);
    dev_fill(gy.data(), gy.size(), -1, 1, 7);
    for (int64_t h = 0; h < H; h++) A[h] = -(float)(h % 8 + 1) * 0.5f;
    /* sequence lengths cycle through length, 1, a chunk and a bit, exactly a chunk */
    const int64_t cycle[4] = {length, 1, MR_CUDA_TRAIN_SCAN_CHUNK + 5, MR_CUDA_TRAIN_SCAN_CHUNK};
    std::vector<int64_t> offsets(1, 0), first_boundary;
    int64_t kept = 0;
    for (int64_t r = 0, k = 0; r < T; k++) {
        const int64_t len = r + cycle[k % 4] <= T ? cycle[k % 4] : T - r;
        first_boundary.push_back(kept);
        kept += (len + MR_CUDA_TRAIN_SCAN_CHUNK - 1) / MR_CUDA_TRAIN_SCAN_CHUNK - 1;
        r += len;
        offsets.push_back(r);
    }
    const int64_t S = (int64_t)offsets.size() - 1;

    /* the references: the forward sequence by sequence, the backward on one thread */
    std::vector<float> ref_y(T * E), state(H * N * P);
    for (int64_t s = 0; s < S; s++) {
        const int64_t r = offsets[s], len = offsets[s + 1] - r;
        mr_ssd_scan_f32_ref(len, H, P, G, N, &x[r * E], E, &dt[r * H], H, dt_bias.data(), A.data(), dt_min, dt_max,
                            &B[r * GN], &C[r * GN], GN, D.data(), NULL, state.data(), &ref_y[r * E], E);
    }
    int64_t longest = 0;
    for (int64_t s = 0; s < S; s++) longest = offsets[s + 1] - offsets[s] > longest ? offsets[s + 1] - offsets[s] : longest;
    std::vector<float> ref_gx(T * E), ref_gdt(T * H), ref_gbias(H), ref_gA(H), ref_gD(H), gB_heads(T * H * N),
        gC_heads(T * H * N), work(mr_ssd_backward_work_floats(longest, P, N)), ref_gB(T * GN, 0.0f), ref_gC(T * GN, 0.0f);
    mr_ssd_scan_backward_f32(S, offsets.data(), H, P, G, N, x.data(), dt.data(), dt_bias.data(), A.data(), dt_min,
                             dt_max, B.data(), C.data(), D.data(), gy.data(), ref_gx.data(), ref_gdt.data(),
                             ref_gbias.data(), ref_gA.data(), ref_gD.data(), gB_heads.data(), gC_heads.data(),
                             work.data(), 0, 1);
    for (int64_t t = 0; t < T; t++) /* B and C are shared by a group's heads */
        for (int64_t h = 0; h < H; h++)
            for (int64_t n = 0; n < N; n++) {
                ref_gB[t * GN + (h / (H / G)) * N + n] += gB_heads[(t * H + h) * N + n];
                ref_gC[t * GN + (h / (H / G)) * N + n] += gC_heads[(t * H + h) * N + n];
            }

    float *d_x = dev_upload(x.data(), x.size()), *d_dt = dev_upload(dt.data(), dt.size());
    float *d_B = dev_upload(B.data(), B.size()), *d_C = dev_upload(C.data(), C.size());
    float *d_gy = dev_upload(gy.data(), gy.size()), *d_bias = dev_upload(dt_bias.data(), H);
    float *d_A = dev_upload(A.data(), H), *d_D = dev_upload(D.data(), H);
    int64_t *d_offsets = dev_upload(offsets.data(), offsets.size());
    int64_t *d_first = dev_upload(first_boundary.data(), first_boundary.size());
    float *d_y, *d_bound, *d_gx, *d_gdt, *d_gbias, *d_gA, *d_gB, *d_gC, *d_gD;
    CUDA_CHECK(cudaMalloc(&d_y, T * E * 4));
    CUDA_CHECK(cudaMalloc(&d_bound, (size_t)(kept > 0 ? kept : 1) * H * N * P * 4));
    CUDA_CHECK(cudaMalloc(&d_gx, T * E * 4)); CUDA_CHECK(cudaMalloc(&d_gdt, T * H * 4));
    CUDA_CHECK(cudaMalloc(&d_gbias, H * 4)); CUDA_CHECK(cudaMalloc(&d_gA, H * 4)); CUDA_CHECK(cudaMalloc(&d_gD, H * 4));
    CUDA_CHECK(cudaMalloc(&d_gB, T * GN * 4)); CUDA_CHECK(cudaMalloc(&d_gC, T * GN * 4));

    mr_cuda_ssd_train_args args = {};
    args.S = S; args.T = T; args.H = H; args.P = P; args.G = G; args.N = N; args.offsets = offsets.data();
    args.x = d_x; args.ldx = E; args.dt = d_dt; args.lddt = H; args.dt_bias = d_bias; args.A = d_A;
    args.dt_min = dt_min; args.dt_max = dt_max; args.B = d_B; args.C = d_C; args.ldbc = GN; args.D = d_D;
    args.boundaries = d_bound; args.y = d_y; args.gy = d_gy; args.ldgy = E; args.gx = d_gx; args.gdt = d_gdt;
    args.gdt_bias = d_gbias; args.gA = d_gA; args.gB = d_gB; args.gC = d_gC; args.gD = d_gD;

    mr_error err = {};
    auto forward = [&] { dev_check_status(mr_cuda_ssd_scan_train(&args, d_offsets, d_first, 0, &err), &err, "forward"); };
    forward();
    CUDA_CHECK(cudaDeviceSynchronize());
    std::vector<float> got_y(T * E);
    CUDA_CHECK(cudaMemcpy(got_y.data(), d_y, got_y.size() * 4, cudaMemcpyDeviceToHost));
    bool ok = dev_compare("forward y", got_y.data(), ref_y.data(), got_y.size(), 1e-4f);
    if (!check_only) {
        const float ms = dev_time_ms(forward, 10);
        printf("  forward        %8.3f ms  %7.1f Mtok/s\n", ms, T / ms / 1e3);
    }

    struct Output { const char *name; float *dev; const std::vector<float> *ref; };
    const Output outputs[] = {{"dx", d_gx, &ref_gx}, {"d dt", d_gdt, &ref_gdt}, {"dA", d_gA, &ref_gA},
                              {"dB", d_gB, &ref_gB}, {"dC", d_gC, &ref_gC}, {"dD", d_gD, &ref_gD},
                              {"d dt_bias", d_gbias, &ref_gbias}};
    auto check = [&](const char *variant_name) {
        bool good = true;
        printf(" %s\n", variant_name);
        for (const Output &o : outputs) {
            std::vector<float> got(o.ref->size());
            CUDA_CHECK(cudaMemcpy(got.data(), o.dev, got.size() * 4, cudaMemcpyDeviceToHost));
            good &= dev_compare(o.name, got.data(), o.ref->data(), got.size(), 1e-4f);
        }
        return good;
    };
    auto clear = [&] {
        for (const Output &o : outputs) CUDA_CHECK(cudaMemset(o.dev, 0, o.ref->size() * 4));
    };
    if (variant == 0 || variant == 1) {
        auto run = [&] {
            clear();
            const dim3 grid(mr_blocks(P * N, 128), (unsigned)S, (unsigned)H);
            ssd_backward_per_state_kernel<<<grid, 128>>>(d_offsets, d_first, H, P, G, N, d_x, d_dt, d_bias, d_A,
                                                          dt_min, dt_max, d_B, d_C, d_D, d_bound, d_gy, d_gx, d_gdt,
                                                          d_gbias, d_gA, d_gB, d_gC, d_gD);
            CUDA_CHECK(cudaGetLastError());
        };
        run();
        CUDA_CHECK(cudaDeviceSynchronize());
        ok &= check("1 per state");
        if (!check_only) {
            const float ms = dev_time_ms(run, 3);
            printf("  1 per state    %8.3f ms  %7.1f Mtok/s\n", ms, T / ms / 1e3);
        }
    }
    if (variant == 0 || variant == 2) {
        auto run = [&] {
            dev_check_status(mr_cuda_ssd_scan_backward(&args, d_offsets, d_first, 0, &err), &err, "backward");
        };
        clear();
        run();
        CUDA_CHECK(cudaDeviceSynchronize());
        ok &= check("2 production");
        if (!check_only) {
            const float ms = dev_time_ms(run, 10);
            printf("  2 production   %8.3f ms  %7.1f Mtok/s\n", ms, T / ms / 1e3);
        }
    }
    return ok ? 0 : 1;
}
