/* The chunked backward of the selective scan (training, float32).
 *
 * Grid: x = groups of 32 channels (the lanes of a warp, so row loads coalesce), y = sequence
 * slots (slot p takes sequences p, p + slots, ...). Inside a block the 4 warps split each chunk
 * of 64 rows into runs of 16, as in the forward kernel; chunks are taken from a sequence's end.
 *
 * Per chunk, from the state the forward kept at its entry:
 *   1. the readout sum_n C h is recomputed with the forward's composed affine maps, for the
 *      gate's gradient and g_read = dL/d readout;
 *   2. per n, the states again and the gradient flowing back through them,
 *      g_t = a_{t+1} g_{t+1} + g_read_t C_t, composed backwards the same way: each warp's
 *      suffix map, folded across warps through shared memory, onto the carry from the chunk
 *      after (kept per (n, lane) in shared memory). One barrier per n exchanges both maps;
 *   3. row by row, the contributions to du, d delta, dA, dB and dC.
 * dB and dC sum over channels: a warp adds its 32 channels with shuffles and each channel group
 * writes its own partial rows [G, T, N]. dA, dD and d dt_bias sum over rows: each slot writes
 * [slots, E, N] / [slots, E] partials. mr_cuda_sum_partials then adds them up in a fixed order:
 * no atomics, so a backward is deterministic. */
#include "common.cuh"
#include "selective_scan_backward.cuh"

#define BWD_ITEMS 16
#define BWD_WARPS 4
#define BWD_MAX_SLOTS 128
static_assert(BWD_ITEMS * BWD_WARPS == MR_CUDA_TRAIN_SCAN_CHUNK, "a block's rows per step are the training chunk");

struct ScanBackwardArgs {
    int64_t S, T, E, N, slots;
    const int64_t *offsets, *first_boundary;
    const float *u; int64_t ldu;
    const float *dt; int64_t lddt;
    const float *dt_bias, *A, *B, *C; int64_t ldbc;
    const float *D, *z; int64_t ldz;
    const float *boundaries, *gy; int64_t ldgy;
    float *gu, *gdt, *gz;
    float *gB_part, *gC_part;    /* [G, T, N] */
    float *gA_part;              /* [slots, E, N] */
    float *gD_part, *gbias_part; /* [slots, E] */
};

__device__ __forceinline__ float sigmoid_f32(float x) { return 1.0f / (1.0f + expf(-x)); }

__global__ void __launch_bounds__(BWD_WARPS * 32) selective_scan_backward_kernel(const ScanBackwardArgs a) {
    extern __shared__ float smem[];
    const int64_t N = a.N, E = a.E, T = a.T;
    float *carry_s = smem;       /* [N][32]: gradient into the chunk's last row from the chunk after */
    float *gA_s = smem + N * 32; /* [N][WARPS][32]: each thread's own dA sums */
    __shared__ float4 agg[2][BWD_WARPS][32];
    __shared__ float red[2][BWD_WARPS][32];
    constexpr int CHUNK = BWD_ITEMS * BWD_WARPS;
    const float LOG2E = 1.4426950408889634f;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int64_t e_raw = (int64_t)blockIdx.x * 32 + lane;
    const bool ch_ok = e_raw < E;
    const int64_t e = ch_ok ? e_raw : E - 1; /* idle lanes read a valid channel with u = dy = 0 */
    const float bias = a.dt_bias ? a.dt_bias[e] : 0.0f;
    const float Dskip = a.D ? a.D[e] : 0.0f;
    float gD_acc = 0.0f, gbias_acc = 0.0f;
    for (int64_t n = 0; n < N; n++) gA_s[(n * BWD_WARPS + warp) * 32 + lane] = 0.0f;
    float *gB_rows = a.gB_part + (int64_t)blockIdx.x * T * N, *gC_rows = a.gC_part + (int64_t)blockIdx.x * T * N;
    int parity = 0;

    for (int64_t s = blockIdx.y; s < a.S; s += a.slots) {
        const int64_t start = a.offsets[s], end = a.offsets[s + 1];
        const int64_t nchunks = (end - start + CHUNK - 1) / CHUNK;
        const int64_t first = a.first_boundary[s];
        for (int64_t n = warp; n < N; n += BWD_WARPS) carry_s[n * 32 + lane] = 0.0f;
        __syncthreads();
        for (int64_t c = nchunks - 1; c >= 0; c--) {
            const int64_t base = start + c * CHUNK + (int64_t)warp * BWD_ITEMS;
            const float *entering = c == 0 ? NULL : a.boundaries + (first + c - 1) * E * N + e * N;
            /* rows past the sequence: delta 0 (decay 1) and u = dy = 0, the identity map */
            float delta[BWD_ITEMS], uval[BWD_ITEMS], gread[BWD_ITEMS], gdelta[BWD_ITEMS], gu[BWD_ITEMS];
#pragma unroll
            for (int i = 0; i < BWD_ITEMS; i++) {
                const int64_t r = base + i;
                delta[i] = uval[i] = gdelta[i] = 0.0f; /* gdelta holds the readout until step 3 */
                if (r < end) {
                    delta[i] = softplus_f32(a.dt[r * a.lddt + e] + bias);
                    uval[i] = ch_ok ? a.u[r * a.ldu + e] : 0.0f;
                }
            }
            /* 1. the readout */
            for (int64_t n = 0; n < N; n++) {
                const float A2n = a.A[e * N + n] * LOG2E;
                float av[BWD_ITEMS], bv[BWD_ITEMS], ap = 1.0f, bp = 0.0f;
#pragma unroll
                for (int i = 0; i < BWD_ITEMS; i++) {
                    const int64_t r = base + i;
                    av[i] = exp2f(delta[i] * A2n);
                    bv[i] = r < end ? delta[i] * uval[i] * a.B[r * a.ldbc + n] : 0.0f;
                    ap = av[i] * ap;
                    bp = fmaf(av[i], bp, bv[i]);
                }
                float h = entering ? entering[n] : 0.0f;
                agg[parity][warp][lane] = make_float4(ap, bp, 0.0f, 0.0f);
                __syncthreads();
                for (int w = 0; w < warp; w++) {
                    const float4 m = agg[parity][w][lane];
                    h = fmaf(m.x, h, m.y);
                }
#pragma unroll
                for (int i = 0; i < BWD_ITEMS; i++) {
                    const int64_t r = base + i;
                    h = fmaf(av[i], h, bv[i]);
                    if (r < end) gdelta[i] = fmaf(a.C[r * a.ldbc + n], h, gdelta[i]);
                }
                parity ^= 1;
            }
            /* the gate and the skip */
#pragma unroll
            for (int i = 0; i < BWD_ITEMS; i++) {
                const int64_t r = base + i;
                gread[i] = gu[i] = 0.0f;
                if (r < end) {
                    float g = ch_ok ? a.gy[r * a.ldgy + e] : 0.0f;
                    if (a.z) {
                        const float zt = a.z[r * a.ldz + e], sig = sigmoid_f32(zt);
                        const float readout = fmaf(Dskip, uval[i], gdelta[i]);
                        if (ch_ok) a.gz[r * E + e] = g * readout * sig * (1.0f + zt * (1.0f - sig));
                        g *= zt * sig;
                    }
                    gread[i] = g;
                    gu[i] = g * Dskip;
                    gD_acc = fmaf(g, uval[i], gD_acc);
                }
                gdelta[i] = 0.0f;
            }
            /* 2 and 3, state by state */
            for (int64_t n = 0; n < N; n++) {
                const float An = a.A[e * N + n], A2n = An * LOG2E;
                float av[BWD_ITEMS], bv[BWD_ITEMS], qv[BWD_ITEMS], ap = 1.0f, bp = 0.0f;
#pragma unroll
                for (int i = 0; i < BWD_ITEMS; i++) {
                    const int64_t r = base + i;
                    av[i] = exp2f(delta[i] * A2n);
                    bv[i] = r < end ? delta[i] * uval[i] * a.B[r * a.ldbc + n] : 0.0f;
                    qv[i] = r < end ? gread[i] * a.C[r * a.ldbc + n] : 0.0f;
                    ap = av[i] * ap;
                    bp = fmaf(av[i], bp, bv[i]);
                }
                /* backwards: the carry into row i is rp * (carry into the run's last row) + rq */
                float rp = 1.0f, rq = 0.0f;
#pragma unroll
                for (int i = BWD_ITEMS - 1; i >= 0; i--) {
                    rq = av[i] * (rq + qv[i]);
                    rp = av[i] * rp;
                }
                float h = entering ? entering[n] : 0.0f;
                float carry = carry_s[n * 32 + lane]; /* read before the barrier: warp 0 rewrites it after */
                agg[parity][warp][lane] = make_float4(ap, bp, rp, rq);
                __syncthreads();
                for (int w = 0; w < warp; w++) {
                    const float4 m = agg[parity][w][lane];
                    h = fmaf(m.x, h, m.y);
                }
                for (int w = BWD_WARPS - 1; w > warp; w--) {
                    const float4 m = agg[parity][w][lane];
                    carry = fmaf(m.z, carry, m.w);
                }
                const float h_entering = h;
#pragma unroll
                for (int i = 0; i < BWD_ITEMS; i++) {
                    h = fmaf(av[i], h, bv[i]);
                    bv[i] = h; /* bv now holds the state after row i */
                }
                float gA_local = 0.0f;
#pragma unroll
                for (int i = BWD_ITEMS - 1; i >= 0; i--) {
                    const int64_t r = base + i;
                    if (r >= end) continue; /* uniform over the warp */
                    const float g = carry + qv[i];
                    const float h_prev = i > 0 ? bv[i - 1] : h_entering;
                    const float bn = a.B[r * a.ldbc + n];
                    const float carried = g * av[i] * h_prev;
                    gdelta[i] += fmaf(An, carried, g * bn * uval[i]);
                    gA_local = fmaf(delta[i], carried, gA_local);
                    gu[i] = fmaf(g * delta[i], bn, gu[i]);
                    const float dC = warp_sum(gread[i] * bv[i]);
                    const float dB = warp_sum(g * delta[i] * uval[i]);
                    if (lane == i) gC_rows[r * N + n] = dC;
                    if (lane == i + BWD_ITEMS) gB_rows[r * N + n] = dB;
                    carry = av[i] * g;
                }
                if (warp == 0) carry_s[n * 32 + lane] = carry; /* into the previous chunk's last row */
                gA_s[(n * BWD_WARPS + warp) * 32 + lane] += gA_local;
                parity ^= 1;
            }
            /* through softplus */
#pragma unroll
            for (int i = 0; i < BWD_ITEMS; i++) {
                const int64_t r = base + i;
                if (r >= end || !ch_ok) continue;
                const float x = a.dt[r * a.lddt + e] + bias;
                const float g_dt = gdelta[i] * (x > 20.0f ? 1.0f : sigmoid_f32(x));
                gbias_acc += g_dt;
                a.gu[r * E + e] = gu[i];
                a.gdt[r * E + e] = g_dt;
            }
            __syncthreads(); /* carry_s settled before the next chunk or sequence touches it */
        }
    }
    /* this slot's per-channel sums, over the warps */
    red[0][warp][lane] = gD_acc;
    red[1][warp][lane] = gbias_acc;
    __syncthreads();
    if (!ch_ok) return;
    for (int64_t n = warp; n < N; n += BWD_WARPS) {
        float sum = 0.0f;
        for (int w = 0; w < BWD_WARPS; w++) sum += gA_s[(n * BWD_WARPS + w) * 32 + lane];
        a.gA_part[((int64_t)blockIdx.y * E + e) * N + n] = sum;
    }
    if (warp == 0) {
        float dD = 0.0f, dbias = 0.0f;
        for (int w = 0; w < BWD_WARPS; w++) {
            dD += red[0][w][lane];
            dbias += red[1][w][lane];
        }
        a.gD_part[(int64_t)blockIdx.y * E + e] = dD;
        a.gbias_part[(int64_t)blockIdx.y * E + e] = dbias;
    }
}

__global__ void sum_partials_kernel(const float *in, int64_t parts, int64_t n, float *out) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        float sum = 0.0f;
        for (int64_t p = 0; p < parts; p++) sum += in[p * n + i];
        out[i] = sum;
    }
}

mr_status mr_cuda_sum_partials(const float *in, int64_t parts, int64_t n, float *out, cudaStream_t stream,
                               mr_error *err) {
    if (n == 0) return MR_OK;
    const int threads = 256;
    const int64_t blocks = (n + threads - 1) / threads;
    sum_partials_kernel<<<(unsigned)(blocks < 65535 ? blocks : 65535), threads, 0, stream>>>(in, parts, n, out);
    return mr_cuda_launched(err, "sum_partials");
}

mr_status mr_cuda_selective_scan_backward(const mr_cuda_scan_train_args *t, const int64_t *offsets,
                                          const int64_t *first_boundary, cudaStream_t stream, mr_error *err) {
    const int64_t S = t->S, T = t->T, E = t->E, N = t->N;
    if (N < 1 || N > 256) return mr_fail(err, MR_ERR_VALUE, "selective_scan_backward: state size %lld outside [1, 256]", (long long)N);
    if (S == 0 || E == 0) return MR_OK;
    const int64_t groups = (E + 31) / 32, slots = S < BWD_MAX_SLOTS ? S : BWD_MAX_SLOTS;
    const size_t smem = (size_t)N * 32 * (1 + BWD_WARPS) * sizeof(float);
    mr_status st = mr_cuda_check(cudaFuncSetAttribute(selective_scan_backward_kernel,
                                                      cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem),
                                 err, "cudaFuncSetAttribute(selective_scan_backward)");
    if (st) return st;
    /* one allocation for every partial: dB and dC [G, T, N], dA [slots, E, N], dD and d bias [slots, E] */
    const size_t bc = (size_t)(groups * T * N), per_e = (size_t)(slots * E);
    const size_t floats = 2 * bc + per_e * (size_t)N + 2 * per_e;
    float *parts = NULL;
    if ((st = mr_cuda_check(cudaMallocAsync((void **)&parts, floats * sizeof(float), stream), err,
                            "cudaMallocAsync(scan backward partial sums)")))
        return st;
    ScanBackwardArgs a = {S, T, E, N, slots, offsets, first_boundary, t->u, t->ldu, t->dt, t->lddt, t->dt_bias, t->A,
                          t->B, t->C, t->ldbc, t->D, t->z, t->ldz, t->boundaries, t->gy, t->ldgy, t->gu, t->gdt,
                          t->gz, parts, parts + bc, parts + 2 * bc, parts + 2 * bc + per_e * N,
                          parts + 2 * bc + per_e * N + per_e};
    selective_scan_backward_kernel<<<dim3((unsigned)groups, (unsigned)slots), BWD_WARPS * 32, smem, stream>>>(a);
    st = mr_cuda_launched(err, "selective_scan_backward");
    if (!st) st = mr_cuda_sum_partials(a.gB_part, groups, T * N, t->gB, stream, err);
    if (!st) st = mr_cuda_sum_partials(a.gC_part, groups, T * N, t->gC, stream, err);
    if (!st) st = mr_cuda_sum_partials(a.gA_part, slots, E * N, t->gA, stream, err);
    if (!st && t->gD) st = mr_cuda_sum_partials(a.gD_part, slots, E, t->gD, stream, err);
    if (!st && t->gdt_bias) st = mr_cuda_sum_partials(a.gbias_part, slots, E, t->gdt_bias, stream, err);
    cudaFreeAsync(parts, stream); /* stream-ordered: after the sums read it */
    return st;
}
