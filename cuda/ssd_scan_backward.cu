/* Mamba-2's SSD scan for training (float32): forward and backward over a packed batch, the math
 * of csrc/ops/mr_ssd_backward.c.
 *
 * Per sequence, head h (group g = h / (H / G)), channel p and state index n, rows t = 0..L-1:
 *   raw_t = dt[t, h] + dt_bias[h],  sp_t = softplus(raw_t),  delta_t = min(max(sp_t, dt_min), dt_max)
 *   a_t = exp(delta_t A[h])
 *   h_t[n, p] = a_t h_{t-1}[n, p] + delta_t B_t[n] x_t[p]                  (h_{-1} = 0)
 *   y_t[p] = sum_n C_t[n] h_t[n, p] + D[h] x_t[p]
 * Given dy = dL/dy, the gradient of the state (through y_t and h_{t+1}), walking t down:
 *   G_t[n, p] = C_t[n] dy_t[p] + a_{t+1} G_{t+1}[n, p]                     (G_L = 0)
 * and then, term by term as mr_ssd_backward.c's head_backward writes them:
 *   dC_t[n]  += sum_p dy_t[p] h_t[n, p]                                     (its sc -> gc)
 *   dB_t[n]  += delta_t sum_p G_t[n, p] x_t[p]                              (sb * delta -> gb)
 *   dx_t[p]   = delta_t sum_n G_t[n, p] B_t[n] + D[h] dy_t[p]               (delta dx + skip dy)
 *   da_t      = sum_{n, p} G_t[n, p] h_{t-1}[n, p]                          (da)
 *   ddelta_t  = sum_{n, p} G_t[n, p] B_t[n] x_t[p] + A[h] a_t da_t          (dxdot + da decay A)
 *   dA[h]    += delta_t a_t da_t                                            (grad_A)
 *   ddt_t     = ddelta_t * (dt_min <= sp_t <= dt_max ? sigmoid(raw_t) : 0)  (graw: clamped, no gradient)
 *   ddt_bias[h] = sum_t ddt_t,   dD[h] = sum_{t, p} dy_t[p] x_t[p].
 * dC and dB also sum over the heads of a group (B and C are shared by them).
 *
 * Layout. A block is 4 warps; its lanes are 32 channels of one head, and warp w owns the state
 * indices n = w, w + 4, ... (each (n, p) pair is a recurrence of its own: the state dimension
 * is split across warps). Grid y = sequence slots (slot q takes sequences q, q + slots, ...);
 * rows go in chunks of MR_CUDA_TRAIN_SCAN_CHUNK (64).
 *   Forward: grid x = (head, 32-channel tile). Per chunk, each warp runs its states over the
 *   chunk's rows, adding its share of the readout into shared memory; one barrier, then the
 *   warps' shares are summed per row. The state after every chunk but a sequence's last is
 *   written to the boundaries ([count, H, N, P]).
 *   Backward: grid x = head; the block walks the head's channel tiles itself, so every sum over
 *   channels (dB, dC, ddt) stays inside one block. Chunks are taken from a sequence's end. Per
 *   chunk and per n, a thread recomputes its 64 states from the entering boundary state into
 *   registers (the forward's exact expression, so the same values), then walks them backwards
 *   carrying G; the carry into the chunk before lives in shared memory per (n, lane). The sums
 *   over n of each row (for dx and ddelta) are per-warp partials in shared memory, added after
 *   one barrier; sums over the channels are warp shuffles. dB and dC go to per-head partial rows
 *   [H / G, T, G*N] (gB and gC themselves when H == G); dA, dD and ddt_bias to per-slot
 *   partials [slots, H]; mr_cuda_sum_partials adds them in a fixed order: no atomics, so two
 *   backward passes agree bit for bit. Values summed over a head's channel tiles (dB, dC, ddt)
 *   are accumulated in place by the one thread that owns them. */
#include "common.cuh"
#include "selective_scan_backward.cuh"
#include "ssd_scan_backward.cuh"

#define SSD_CHUNK MR_CUDA_TRAIN_SCAN_CHUNK
#define SSD_WARPS 4
#define SSD_MAX_SLOTS 128
#define SSD_MAX_STATE 256

struct SsdTrainArgs {
    int64_t S, H, P, G, N, slots, ptiles;
    const int64_t *offsets, *first_boundary;
    const float *x; int64_t ldx;
    const float *dt; int64_t lddt;
    const float *dt_bias, *A;
    float dt_min, dt_max;
    const float *B, *C; int64_t ldbc;
    const float *D;
    float *boundaries, *y;
    const float *gy; int64_t ldgy;
    float *gx, *gdt;
    float *gB_part, *gC_part;               /* [H / G, T, G*N] */
    float *gA_part, *gD_part, *gbias_part;  /* [slots, H] */
    int64_t T;
};

/* delta_s, decay_s (and ddt_s, the factor from ddelta to ddt, when not NULL) of the chunk's rows
 * r0 .. r0 + len - 1 of head h; rows past len get delta 0 and decay 1, the identity step. */
__device__ __forceinline__ void ssd_stage_rows(const SsdTrainArgs &a, int64_t h, int64_t r0, int len, float bias,
                                               float Ah, float *delta_s, float *decay_s, float *ddt_s) {
    for (int i = threadIdx.x; i < SSD_CHUNK; i += blockDim.x) {
        float delta = 0.0f, decay = 1.0f, ddt = 0.0f;
        if (i < len) {
            const float raw = a.dt[(r0 + i) * a.lddt + h] + bias, sp = softplus_f32(raw);
            delta = fminf(fmaxf(sp, a.dt_min), a.dt_max);
            decay = expf(delta * Ah);
            ddt = (sp >= a.dt_min && sp <= a.dt_max) ? 1.0f / (1.0f + expf(-raw)) : 0.0f;
        }
        delta_s[i] = delta;
        decay_s[i] = decay;
        if (ddt_s) ddt_s[i] = ddt;
    }
}

__global__ void __launch_bounds__(SSD_WARPS * 32, 1) ssd_train_forward_kernel(const SsdTrainArgs a) {
    extern __shared__ float smem[];
    const int64_t H = a.H, P = a.P, N = a.N, E = H * P;
    float *state_s = smem;                              /* [N][32]: row n kept by warp n % WARPS */
    float *ypart_s = state_s + N * 32;                  /* [WARPS][CHUNK][32]: each warp's readout share */
    float *xd_s = ypart_s + SSD_WARPS * SSD_CHUNK * 32; /* [CHUNK][32]: delta x */
    __shared__ float delta_s[SSD_CHUNK], decay_s[SSD_CHUNK];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int64_t h = blockIdx.x / a.ptiles, p = (blockIdx.x % a.ptiles) * 32 + lane;
    const bool live = p < P; /* idle lanes scan x = 0 from a zero state and store nothing */
    const int64_t gN = (h / (H / a.G)) * N;
    const float bias = a.dt_bias ? a.dt_bias[h] : 0.0f, Ah = a.A[h], skip = a.D ? a.D[h] : 0.0f;
    float *ypart = ypart_s + warp * SSD_CHUNK * 32;
    for (int64_t s = blockIdx.y; s < a.S; s += a.slots) {
        const int64_t start = a.offsets[s], end = a.offsets[s + 1];
        const int64_t nchunks = (end - start + SSD_CHUNK - 1) / SSD_CHUNK, first = a.first_boundary[s];
        for (int64_t n = warp; n < N; n += SSD_WARPS) state_s[n * 32 + lane] = 0.0f;
        for (int64_t c = 0; c < nchunks; c++) {
            const int64_t r0 = start + c * SSD_CHUNK;
            const int len = (int)(end - r0 < SSD_CHUNK ? end - r0 : SSD_CHUNK);
            ssd_stage_rows(a, h, r0, len, bias, Ah, delta_s, decay_s, NULL);
            __syncthreads(); /* delta_s */
            for (int i = warp; i < SSD_CHUNK; i += SSD_WARPS)
                xd_s[i * 32 + lane] = i < len && live ? delta_s[i] * a.x[(r0 + i) * a.ldx + h * P + p] : 0.0f;
            for (int i = 0; i < SSD_CHUNK; i++) ypart[i * 32 + lane] = 0.0f;
            __syncthreads(); /* xd_s */
            for (int64_t n = warp; n < N; n += SSD_WARPS) {
                const float *b = a.B + r0 * a.ldbc + gN + n, *cc = a.C + r0 * a.ldbc + gN + n;
                float st = state_s[n * 32 + lane];
                for (int i = 0; i < len; i++, b += a.ldbc, cc += a.ldbc) {
                    st = fmaf(decay_s[i], st, xd_s[i * 32 + lane] * *b);
                    ypart[i * 32 + lane] = fmaf(*cc, st, ypart[i * 32 + lane]);
                }
                state_s[n * 32 + lane] = st;
                if (c + 1 < nchunks && live) a.boundaries[((first + c) * H + h) * N * P + n * P + p] = st;
            }
            __syncthreads(); /* every warp's share of the readout */
            if (live)
                for (int i = warp; i < len; i += SSD_WARPS) {
                    const int64_t r = r0 + i;
                    float acc = 0.0f;
                    for (int w = 0; w < SSD_WARPS; w++) acc += ypart_s[(w * SSD_CHUNK + i) * 32 + lane];
                    a.y[r * E + h * P + p] = fmaf(skip, a.x[r * a.ldx + h * P + p], acc);
                }
            __syncthreads(); /* before the next chunk stages its rows */
        }
    }
}

__global__ void __launch_bounds__(SSD_WARPS * 32) ssd_train_backward_kernel(const SsdTrainArgs a) {
    extern __shared__ float smem[];
    const int64_t H = a.H, P = a.P, N = a.N, E = H * P, T = a.T, GN = a.G * N;
    float *carry_s = smem;                          /* [N][32]: G into the chunk's last row, from the chunk after */
    float *gx_s = carry_s + N * 32;                 /* [WARPS][CHUNK][32]: sum over a warp's n of G B */
    float *gd_s = gx_s + SSD_WARPS * SSD_CHUNK * 32; /* [WARPS][CHUNK][32]: ... of G (B x + A a h_prev) */
    float *x_s = gd_s + SSD_WARPS * SSD_CHUNK * 32;  /* [CHUNK][32] */
    float *dy_s = x_s + SSD_CHUNK * 32;              /* [CHUNK][32] */
    __shared__ float delta_s[SSD_CHUNK], decay_s[SSD_CHUNK], ddt_s[SSD_CHUNK];
    __shared__ float scratch[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int64_t h = blockIdx.x, per_group = H / a.G;
    const int64_t gN = (h / per_group) * N;
    float *gB_rows = a.gB_part + (h % per_group) * T * GN + gN, *gC_rows = a.gC_part + (h % per_group) * T * GN + gN;
    const float bias = a.dt_bias ? a.dt_bias[h] : 0.0f, Ah = a.A[h], skip = a.D ? a.D[h] : 0.0f;
    float *gx_w = gx_s + warp * SSD_CHUNK * 32, *gd_w = gd_s + warp * SSD_CHUNK * 32;
    float gA_acc = 0.0f, gD_acc = 0.0f, gbias_acc = 0.0f;
    for (int64_t tile = 0; tile < a.ptiles; tile++) {
        const int64_t p = tile * 32 + lane;
        const bool live = p < P; /* idle lanes: x = dy = 0 and a zero entering state, so G = 0 */
        const bool last_tile = tile + 1 == a.ptiles;
        for (int64_t s = blockIdx.y; s < a.S; s += a.slots) {
            const int64_t start = a.offsets[s], end = a.offsets[s + 1];
            const int64_t nchunks = (end - start + SSD_CHUNK - 1) / SSD_CHUNK, first = a.first_boundary[s];
            for (int64_t n = warp; n < N; n += SSD_WARPS) carry_s[n * 32 + lane] = 0.0f;
            for (int64_t c = nchunks - 1; c >= 0; c--) {
                const int64_t r0 = start + c * SSD_CHUNK;
                const int len = (int)(end - r0 < SSD_CHUNK ? end - r0 : SSD_CHUNK);
                ssd_stage_rows(a, h, r0, len, bias, Ah, delta_s, decay_s, ddt_s);
                for (int i = warp; i < SSD_CHUNK; i += SSD_WARPS) {
                    const bool row = i < len && live;
                    x_s[i * 32 + lane] = row ? a.x[(r0 + i) * a.ldx + h * P + p] : 0.0f;
                    dy_s[i * 32 + lane] = row ? a.gy[(r0 + i) * a.ldgy + h * P + p] : 0.0f;
                }
                for (int i = 0; i < SSD_CHUNK; i++) gx_w[i * 32 + lane] = gd_w[i * 32 + lane] = 0.0f;
                __syncthreads(); /* the chunk's rows staged */
                const float *entering = c == 0 ? NULL : a.boundaries + ((first + c - 1) * H + h) * N * P;
                for (int64_t n = warp; n < N; n += SSD_WARPS) {
                    const float *b = a.B + r0 * a.ldbc + gN + n, *cc = a.C + r0 * a.ldbc + gN + n;
                    const float h0 = entering && live ? entering[n * P + p] : 0.0f;
                    /* the chunk's states again: hv[i] = h after row i */
                    float hv[SSD_CHUNK], st = h0;
                    const float *bp = b;
#pragma unroll
                    for (int i = 0; i < SSD_CHUNK; i++, bp += a.ldbc) {
                        const float bi = i < len ? *bp : 0.0f;
                        st = fmaf(decay_s[i], st, delta_s[i] * x_s[i * 32 + lane] * bi);
                        hv[i] = st;
                    }
                    float carry = carry_s[n * 32 + lane], gA_local = 0.0f;
                    const float *cp = cc + (SSD_CHUNK - 1) * a.ldbc;
                    bp = b + (SSD_CHUNK - 1) * a.ldbc;
#pragma unroll
                    for (int i = SSD_CHUNK - 1; i >= 0; i--, bp -= a.ldbc, cp -= a.ldbc) {
                        if (i >= len) continue; /* past the sequence: uniform over the block */
                        const int64_t r = r0 + i;
                        const float bi = *bp, ci = *cp;
                        const float xv = x_s[i * 32 + lane], dyv = dy_s[i * 32 + lane];
                        const float h_prev = i > 0 ? hv[i - 1] : h0;
                        const float g = fmaf(ci, dyv, carry); /* G_t */
                        const float carried = g * h_prev;     /* this (n, p)'s share of da_t */
                        gx_w[i * 32 + lane] = fmaf(g, bi, gx_w[i * 32 + lane]);
                        gd_w[i * 32 + lane] += fmaf(Ah * decay_s[i], carried, g * bi * xv);
                        gA_local = fmaf(delta_s[i] * decay_s[i], carried, gA_local);
                        const float dC = warp_sum(dyv * hv[i]);
                        const float dB = warp_sum(g * xv) * delta_s[i];
                        if (lane == (i & 31)) { /* the same thread for every tile: it adds them up */
                            float *pb = gB_rows + r * GN + n, *pc = gC_rows + r * GN + n;
                            *pb = tile ? *pb + dB : dB;
                            *pc = tile ? *pc + dC : dC;
                        }
                        carry = decay_s[i] * g; /* a_t G_t, into row t - 1 */
                    }
                    carry_s[n * 32 + lane] = carry;
                    gA_acc += gA_local;
                }
                __syncthreads(); /* every warp's sums over its n */
                for (int i = warp; i < len; i += SSD_WARPS) {
                    const int64_t r = r0 + i;
                    float dx = 0.0f, gd = 0.0f;
                    for (int w = 0; w < SSD_WARPS; w++) {
                        dx += gx_s[(w * SSD_CHUNK + i) * 32 + lane];
                        gd += gd_s[(w * SSD_CHUNK + i) * 32 + lane];
                    }
                    const float xv = x_s[i * 32 + lane], dyv = dy_s[i * 32 + lane];
                    if (live) a.gx[r * E + h * P + p] = fmaf(delta_s[i], dx, skip * dyv);
                    gD_acc = fmaf(dyv, xv, gD_acc);
                    const float ddelta = warp_sum(gd); /* over this tile's channels */
                    if (lane == 0) { /* the same thread for every tile */
                        float v = tile ? a.gdt[r * H + h] + ddelta : ddelta;
                        if (last_tile) {
                            v *= ddt_s[i];
                            gbias_acc += v;
                        }
                        a.gdt[r * H + h] = v;
                    }
                }
                __syncthreads(); /* before the next chunk stages its rows */
            }
        }
    }
    const float gA = block_sum(gA_acc, scratch), gD = block_sum(gD_acc, scratch), gbias = block_sum(gbias_acc, scratch);
    if (threadIdx.x == 0) {
        a.gA_part[blockIdx.y * H + h] = gA;
        a.gD_part[blockIdx.y * H + h] = gD;
        a.gbias_part[blockIdx.y * H + h] = gbias;
    }
}

static mr_status ssd_check(const mr_cuda_ssd_train_args *t, mr_error *err) {
    if (t->N < 1 || t->N > SSD_MAX_STATE || t->H < 1 || t->G < 1 || t->H % t->G || t->P < 1)
        return mr_fail(err, MR_ERR_VALUE, "ssd scan: unsupported shape (H %lld, G %lld, P %lld, N %lld)",
                       (long long)t->H, (long long)t->G, (long long)t->P, (long long)t->N);
    return MR_OK;
}

static SsdTrainArgs ssd_args(const mr_cuda_ssd_train_args *t, const int64_t *offsets, const int64_t *first_boundary) {
    SsdTrainArgs a = {};
    a.S = t->S; a.T = t->T; a.H = t->H; a.P = t->P; a.G = t->G; a.N = t->N;
    a.slots = t->S < SSD_MAX_SLOTS ? t->S : SSD_MAX_SLOTS;
    a.ptiles = (t->P + 31) / 32;
    a.offsets = offsets; a.first_boundary = first_boundary;
    a.x = t->x; a.ldx = t->ldx; a.dt = t->dt; a.lddt = t->lddt; a.dt_bias = t->dt_bias; a.A = t->A;
    a.dt_min = t->dt_min; a.dt_max = t->dt_max;
    a.B = t->B; a.C = t->C; a.ldbc = t->ldbc; a.D = t->D;
    a.boundaries = t->boundaries; a.y = t->y; a.gy = t->gy; a.ldgy = t->ldgy; a.gx = t->gx; a.gdt = t->gdt;
    return a;
}

mr_status mr_cuda_ssd_scan_train(const mr_cuda_ssd_train_args *t, const int64_t *offsets,
                                 const int64_t *first_boundary, cudaStream_t stream, mr_error *err) {
    mr_status st = ssd_check(t, err);
    if (st || t->S == 0 || t->T == 0) return st;
    const SsdTrainArgs a = ssd_args(t, offsets, first_boundary);
    const size_t smem = (size_t)(t->N * 32 + (SSD_WARPS + 1) * SSD_CHUNK * 32) * sizeof(float);
    if ((st = mr_cuda_check(cudaFuncSetAttribute(ssd_train_forward_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                 (int)smem),
                            err, "cudaFuncSetAttribute(ssd_train_forward)")))
        return st;
    ssd_train_forward_kernel<<<dim3((unsigned)(t->H * a.ptiles), (unsigned)a.slots), SSD_WARPS * 32, smem, stream>>>(a);
    return mr_cuda_launched(err, "ssd_train_forward");
}

mr_status mr_cuda_ssd_scan_backward(const mr_cuda_ssd_train_args *t, const int64_t *offsets,
                                    const int64_t *first_boundary, cudaStream_t stream, mr_error *err) {
    mr_status st = ssd_check(t, err);
    if (st || t->S == 0) return st;
    SsdTrainArgs a = ssd_args(t, offsets, first_boundary);
    const int64_t per_group = t->H / t->G, H = t->H;
    const size_t smem = (size_t)(t->N * 32 + (2 * SSD_WARPS + 2) * SSD_CHUNK * 32) * sizeof(float);
    if ((st = mr_cuda_check(cudaFuncSetAttribute(ssd_train_backward_kernel,
                                                 cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem),
                            err, "cudaFuncSetAttribute(ssd_train_backward)")))
        return st;
    /* one allocation for every partial: dB and dC per head of a group [H / G, T, G*N] (none when
     * each group has one head: the kernel writes gB and gC), dA, dD and d dt_bias [slots, H] */
    const size_t bc = per_group > 1 ? (size_t)(per_group * t->T * t->G * t->N) : 0, per_h = (size_t)(a.slots * H);
    float *parts = NULL;
    if ((st = mr_cuda_check(cudaMallocAsync((void **)&parts, (2 * bc + 3 * per_h) * sizeof(float), stream), err,
                            "cudaMallocAsync(ssd scan backward partial sums)")))
        return st;
    a.gB_part = bc ? parts : t->gB;
    a.gC_part = bc ? parts + bc : t->gC;
    a.gA_part = parts + 2 * bc;
    a.gD_part = a.gA_part + per_h;
    a.gbias_part = a.gD_part + per_h;
    ssd_train_backward_kernel<<<dim3((unsigned)H, (unsigned)a.slots), SSD_WARPS * 32, smem, stream>>>(a);
    st = mr_cuda_launched(err, "ssd_train_backward");
    if (!st && bc) st = mr_cuda_sum_partials(a.gB_part, per_group, t->T * t->G * t->N, t->gB, stream, err);
    if (!st && bc) st = mr_cuda_sum_partials(a.gC_part, per_group, t->T * t->G * t->N, t->gC, stream, err);
    if (!st) st = mr_cuda_sum_partials(a.gA_part, a.slots, H, t->gA, stream, err);
    if (!st && t->gD) st = mr_cuda_sum_partials(a.gD_part, a.slots, H, t->gD, stream, err);
    if (!st && t->gdt_bias) st = mr_cuda_sum_partials(a.gbias_part, a.slots, H, t->gdt_bias, stream, err);
    cudaFreeAsync(parts, stream); /* stream-ordered: after the sums read it */
    return st;
}
