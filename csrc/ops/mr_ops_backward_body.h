/* The backward kernels' bodies, compiled once per instruction set: mr_ops_backward_<isa>.c
 * includes this file after mr_ops_backward_isa.h and after defining MR_BWD_TARGET (a target
 * attribute, or nothing for the portable build) and MR_BWD_NAME (the suffix of that build's names). Lane loops run over MR_BACKWARD_BLOCK
 * contiguous channels, which the compiler vectorises at the target's width. */

/* exp(x) over the float range, relative error below 2.5e-7 (softplus and sigmoid built on it
 * stay below 3e-7): 2^n by the exponent bits times a degree-6 Taylor polynomial on
 * |r| <= ln2 / 2. Rounding by adding 1.5 * 2^23 keeps it branch-free (vectorisable). */
static inline __attribute__((always_inline)) MR_BWD_TARGET float MR_BWD_NAME(exp_lane)(float x) {
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    const float n = (x * 1.44269504f + 12582912.0f) - 12582912.0f;
    float r = x - n * 0.693145752f;
    r = r - n * 1.42860677e-6f;
    float p = 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    union { int32_t i; float f; } scale = {.i = ((int32_t)n + 127) << 23};
    return p * scale.f;
}

static inline __attribute__((always_inline)) MR_BWD_TARGET float MR_BWD_NAME(sigmoid_lane)(float x) {
    return 1.0f / (1.0f + MR_BWD_NAME(exp_lane)(-x));
}


/* softplus with PyTorch's threshold as max(x, 0) + log1p(exp(-|x|)), log1p by the forward's
 * MR_LOG1P_* polynomial (mr_ops_isa.h), so that it vectorises too */
static inline __attribute__((always_inline)) MR_BWD_TARGET float MR_BWD_NAME(softplus_lane)(float x) {
    const float t = MR_BWD_NAME(exp_lane)(-fabsf(x)), s = t / (2.0f + t), s2 = s * s;
    float p = MR_LOG1P_P4;
    p = p * s2 + MR_LOG1P_P3;
    p = p * s2 + MR_LOG1P_P2;
    p = p * s2 + MR_LOG1P_P1;
    p = p * s2 + MR_LOG1P_P0;
    const float positive = x > 0.0f ? x : 0.0f;
    return x > 20.0f ? x : positive + s * p;
}

/* dst[0, BLK) = src[0, nb) then zeros: for a full block one straight copy, which vectorises where
 * a per-lane conditional load does not */
static inline __attribute__((always_inline)) MR_BWD_TARGET void MR_BWD_NAME(load_lanes)(float *dst, const float *src,
                                                                                   int64_t nb) {
    if (nb == BLK) {
        for (int64_t j = 0; j < BLK; j++) dst[j] = src[j];
        return;
    }
    for (int64_t j = 0; j < BLK; j++) dst[j] = 0.0f;
    for (int64_t j = 0; j < nb; j++) dst[j] = src[j];
}

/* Rows outer, a tile of channels inner (as the forward): each row of x, gout and gx is read once
 * per tile instead of once per 16 channels, and it is other pages than the row before, so the
 * next rows are prefetched. The tile is as wide as MR_BWD_CONV_FLOATS weights allow. */
MR_BWD_TARGET void MR_BWD_NAME(mr_conv_silu_backward_f32)(int64_t S, const int64_t *offsets, int64_t E, int64_t K,
                                                        const float *x, int64_t ldx, const float *w,
                                                        const float *bias, const float *gout, int64_t ldgo,
                                                        float *gx, float *gw, float *gbias, int64_t lo,
                                                        int64_t hi) {
    const int64_t fit = MR_BWD_CONV_FLOATS / K / BLK * BLK, tile = fit > BLK ? fit : BLK;
    float wt[MR_BWD_CONV_FLOATS > MR_MAX_CONV_KERNEL * BLK ? MR_BWD_CONV_FLOATS : MR_MAX_CONV_KERNEL * BLK];
    float gwt[sizeof(wt) / sizeof(float)], b[MR_BWD_CONV_FLOATS], gb[MR_BWD_CONV_FLOATS];
    for (int64_t c0 = lo; c0 < hi; c0 += tile) {
        const int64_t nc = hi - c0 < tile ? hi - c0 : tile;
        for (int64_t j = 0; j < nc; j++) {
            b[j] = bias ? bias[c0 + j] : 0.0f;
            gb[j] = 0.0f;
            for (int64_t k = 0; k < K; k++) {
                wt[k * tile + j] = w[(c0 + j) * K + k];
                gwt[k * tile + j] = 0.0f;
            }
        }
        for (int64_t s = 0; s < S; s++) {
            const int64_t start = offsets[s], end = offsets[s + 1];
            /* pass 1: the pre-activation gradient g, kept in gx's rows, and the weight sums */
            for (int64_t t = start; t < end; t++) {
                if (t + MR_BWD_PREFETCH < end)
                    for (int64_t j = 0; j < nc; j += 16) {
                        __builtin_prefetch(x + (t + MR_BWD_PREFETCH) * ldx + c0 + j);
                        __builtin_prefetch(gout + (t + MR_BWD_PREFETCH) * ldgo + c0 + j);
                    }
                for (int64_t j0 = 0; j0 < nc; j0 += BLK) {
                    const int64_t nb = nc - j0 < BLK ? nc - j0 : BLK;
                    /* over all BLK lanes in locals (a ragged block's extra lanes see zeros), so
                     * the sigmoid's selects vectorise; stores follow */
                    float acc[BLK], g[BLK], gol[BLK];
                    MR_BWD_NAME(load_lanes)(acc, b + j0, nb);
                    MR_BWD_NAME(load_lanes)(gol, gout + t * ldgo + c0 + j0, nb);
                    for (int64_t k = 0; k < K; k++) {
                        const int64_t src = t - (K - 1) + k;
                        if (src < start) continue;
                        const float *xs = x + src * ldx + c0 + j0, *wk = wt + k * tile + j0;
                        for (int64_t j = 0; j < nb; j++) acc[j] += wk[j] * xs[j];
                    }
#pragma omp simd
                    for (int64_t j = 0; j < BLK; j++) {
                        const float sig = MR_BWD_NAME(sigmoid_lane)(acc[j]);
                        g[j] = gol[j] * sig * (1.0f + acc[j] * (1.0f - sig));
                    }
                    for (int64_t j = 0; j < nb; j++) {
                        gx[t * E + c0 + j0 + j] = g[j];
                        gb[j0 + j] += g[j];
                    }
                    for (int64_t k = 0; k < K; k++) {
                        const int64_t src = t - (K - 1) + k;
                        if (src < start) continue;
                        const float *xs = x + src * ldx + c0 + j0;
                        float *gk = gwt + k * tile + j0;
                        for (int64_t j = 0; j < nb; j++) gk[j] += g[j] * xs[j];
                    }
                }
            }
            /* pass 2, in place: gx[t] = sum_k w[k] g[t + K-1 - k]; row t's g is last read here */
            for (int64_t t = start; t < end; t++) {
                for (int64_t j0 = 0; j0 < nc; j0 += BLK) {
                    const int64_t nb = nc - j0 < BLK ? nc - j0 : BLK;
                    float acc[BLK] = {0};
                    for (int64_t k = 0; k < K; k++) {
                        const int64_t dst = t + (K - 1) - k;
                        if (dst >= end) continue;
                        const float *g = gx + dst * E + c0 + j0, *wk = wt + k * tile + j0;
                        for (int64_t j = 0; j < nb; j++) acc[j] += wk[j] * g[j];
                    }
                    for (int64_t j = 0; j < nb; j++) gx[t * E + c0 + j0 + j] = acc[j];
                }
            }
        }
        for (int64_t j = 0; j < nc; j++) {
            if (gbias) gbias[c0 + j] = gb[j];
            for (int64_t k = 0; k < K; k++) gw[(c0 + j) * K + k] = gwt[k * tile + j];
        }
    }
}

/* Chunk-major: for each chunk of a sequence (from its end), every channel block of this thread in
 * turn, so the chunk's rows (and their pages) are reused across blocks while they are in cache,
 * and dB / dC are summed over the thread's channels in a chunk-sized lane buffer before one row
 * per token goes to this thread's partial sums. Each block's carried d h and dA / dD / d bias
 * sums wait in `work` between chunks. */
MR_BWD_TARGET void MR_BWD_NAME(mr_selective_scan_backward_f32)(
    int64_t S, const int64_t *offsets, int64_t chunk, int64_t E, int64_t N, const float *u, int64_t ldu,
    const float *dt, int64_t lddt, const float *dt_bias, const float *A, const float *B, const float *C,
    int64_t ldbc, const float *D, const float *z, int64_t ldz, const float *boundaries, const float *gy,
    int64_t ldgy, float *gu, float *gdt, float *gdt_bias, float *gA, float *gD, float *gz, float *gB_part,
    float *gC_part, float *work, int64_t lo, int64_t hi) {
    const int64_t nblocks = hi > lo ? (hi - lo + BLK - 1) / BLK : 0;
    float *states = work;                           /* [chunk + 1][N][BLK]: states inside a chunk */
    float *deltas = states + (chunk + 1) * N * BLK; /* [chunk][BLK]: softplus(x) */
    float *xs = deltas + chunk * BLK;               /* [chunk][BLK]: x = dt + dt_bias */
    float *b_lanes = xs + chunk * BLK;              /* [chunk][N][BLK]: the chunk's dB, lane by lane */
    float *c_lanes = b_lanes + chunk * N * BLK;     /* [chunk][N][BLK]: its dC */
    float *carried_gh = c_lanes + chunk * N * BLK;  /* [nblocks][N][BLK]: d h into the next row back */
    float *sums_A = carried_gh + nblocks * N * BLK; /* [nblocks][N][BLK]: dA so far */
    float *sums_D = sums_A + nblocks * N * BLK;     /* [nblocks][BLK] */
    float *sums_bias = sums_D + nblocks * BLK;      /* [nblocks][BLK] */
    memset(sums_A, 0, sizeof(float) * (size_t)(nblocks * (N + 2) * BLK));
    const float *boundary = boundaries;
    for (int64_t s = 0; s < S; s++) {
        const int64_t start = offsets[s], end = offsets[s + 1];
        const int64_t nchunks = chunks_of(end - start, chunk);
        memset(carried_gh, 0, sizeof(float) * (size_t)(nblocks * N * BLK));
        for (int64_t c = nchunks - 1; c >= 0; c--) {
            const int64_t t0 = start + c * chunk, len = end - t0 < chunk ? end - t0 : chunk;
            memset(b_lanes, 0, sizeof(float) * (size_t)(2 * chunk * N * BLK));
            for (int64_t blk = 0; blk < nblocks; blk++) {
                const int64_t e0 = lo + blk * BLK, nb = hi - e0 < BLK ? hi - e0 : BLK;
                float a[MR_MAX_STATE_SIZE][BLK], gA_acc[MR_MAX_STATE_SIZE][BLK], gh[MR_MAX_STATE_SIZE][BLK];
                float bias[BLK], skip[BLK], gD_acc[BLK], gbias_acc[BLK];
                for (int64_t j = 0; j < BLK; j++) {
                    bias[j] = (dt_bias && j < nb) ? dt_bias[e0 + j] : 0.0f;
                    skip[j] = (D && j < nb) ? D[e0 + j] : 0.0f;
                    gD_acc[j] = sums_D[blk * BLK + j];
                    gbias_acc[j] = sums_bias[blk * BLK + j];
                    for (int64_t n = 0; n < N; n++) {
                        a[n][j] = j < nb ? A[(e0 + j) * N + n] : 0.0f;
                        gA_acc[n][j] = sums_A[(blk * N + n) * BLK + j];
                        gh[n][j] = carried_gh[(blk * N + n) * BLK + j];
                    }
                }
                /* the states inside this chunk, from the one entering it */
                const float *entering = c == 0 ? NULL : boundary + (c - 1) * E * N;
                for (int64_t n = 0; n < N; n++)
                    for (int64_t j = 0; j < BLK; j++)
                        states[n * BLK + j] = (entering && j < nb) ? entering[(e0 + j) * N + n] : 0.0f;
                for (int64_t i = 0; i < len; i++) {
                    const int64_t t = t0 + i;
                    if (i + MR_BWD_PREFETCH < len) { /* rows are other pages: no hardware prefetch */
                        __builtin_prefetch(dt + (t + MR_BWD_PREFETCH) * lddt + e0);
                        __builtin_prefetch(u + (t + MR_BWD_PREFETCH) * ldu + e0);
                    }
                    float *delta = deltas + i * BLK, *x = xs + i * BLK, ut[BLK];
                    MR_BWD_NAME(load_lanes)(x, dt + t * lddt + e0, nb);
                    MR_BWD_NAME(load_lanes)(ut, u + t * ldu + e0, nb);
                    for (int64_t j = 0; j < BLK; j++) x[j] += bias[j]; /* bias is 0 past nb */
                    for (int64_t j = 0; j < BLK; j++) delta[j] = MR_BWD_NAME(softplus_lane)(x[j]);
                    const float *h_prev = states + i * N * BLK;
                    float *h = states + (i + 1) * N * BLK;
                    for (int64_t n = 0; n < N; n++) {
                        const float bn = B[t * ldbc + n];
                        for (int64_t j = 0; j < BLK; j++)
                            h[n * BLK + j] = MR_BWD_NAME(exp_lane)(delta[j] * a[n][j]) * h_prev[n * BLK + j] + delta[j] * bn * ut[j];
                    }
                }
                /* backwards through the chunk */
                for (int64_t i = len - 1; i >= 0; i--) {
                    const int64_t t = t0 + i;
                    if (i >= MR_BWD_PREFETCH) {
                        __builtin_prefetch(gy + (t - MR_BWD_PREFETCH) * ldgy + e0);
                        if (z) __builtin_prefetch(z + (t - MR_BWD_PREFETCH) * ldz + e0);
                    }
                    const float *delta = deltas + i * BLK;
                    const float *h_prev = states + i * N * BLK, *h = states + (i + 1) * N * BLK;
                    float ut[BLK], g_read[BLK], g_u[BLK], g_delta[BLK], readout[BLK];
                    MR_BWD_NAME(load_lanes)(ut, u + t * ldu + e0, nb);
                    MR_BWD_NAME(load_lanes)(g_read, gy + t * ldgy + e0, nb);
                    for (int64_t j = 0; j < BLK; j++) readout[j] = skip[j] * ut[j];
                    for (int64_t n = 0; n < N; n++) {
                        const float cn = C[t * ldbc + n];
                        for (int64_t j = 0; j < BLK; j++) readout[j] += cn * h[n * BLK + j];
                    }
                    if (z) {
                        for (int64_t j = 0; j < nb; j++) {
                            const float zt = z[t * ldz + e0 + j], sig = MR_BWD_NAME(sigmoid_lane)(zt);
                            gz[t * E + e0 + j] = g_read[j] * readout[j] * sig * (1.0f + zt * (1.0f - sig));
                            g_read[j] *= zt * sig;
                        }
                    }
                    for (int64_t j = 0; j < BLK; j++) {
                        g_u[j] = g_read[j] * skip[j];
                        gD_acc[j] += g_read[j] * ut[j];
                        g_delta[j] = 0.0f;
                    }
                    for (int64_t n = 0; n < N; n++) {
                        const float cn = C[t * ldbc + n], bn = B[t * ldbc + n];
                        float *c_lane = c_lanes + (i * N + n) * BLK, *b_lane = b_lanes + (i * N + n) * BLK;
                        for (int64_t j = 0; j < BLK; j++) {
                            c_lane[j] += g_read[j] * h[n * BLK + j];
                            const float g = gh[n][j] + g_read[j] * cn;
                            const float decay = MR_BWD_NAME(exp_lane)(delta[j] * a[n][j]);
                            const float carried = g * decay * h_prev[n * BLK + j];
                            g_delta[j] += a[n][j] * carried + g * bn * ut[j];
                            gA_acc[n][j] += delta[j] * carried;
                            b_lane[j] += g * delta[j] * ut[j];
                            g_u[j] += g * delta[j] * bn;
                            gh[n][j] = g * decay;
                        }
                    }
                    const float *x = xs + i * BLK;
                    float g_dt[BLK];
                    for (int64_t j = 0; j < BLK; j++) {
                        const float slope = MR_BWD_NAME(sigmoid_lane)(x[j]); /* d softplus / dx */
                        g_dt[j] = g_delta[j] * (x[j] > 20.0f ? 1.0f : slope);
                        gbias_acc[j] += g_dt[j];
                    }
                    for (int64_t j = 0; j < nb; j++) {
                        gu[t * E + e0 + j] = g_u[j];
                        gdt[t * E + e0 + j] = g_dt[j];
                    }
                }
                for (int64_t j = 0; j < BLK; j++) {
                    sums_D[blk * BLK + j] = gD_acc[j];
                    sums_bias[blk * BLK + j] = gbias_acc[j];
                    for (int64_t n = 0; n < N; n++) {
                        sums_A[(blk * N + n) * BLK + j] = gA_acc[n][j];
                        carried_gh[(blk * N + n) * BLK + j] = gh[n][j];
                    }
                }
            }
            /* the chunk's dB and dC over this thread's channels: one row per token */
            for (int64_t i = 0; i < len; i++)
                for (int64_t n = 0; n < N; n++) {
                    const float *bl = b_lanes + (i * N + n) * BLK, *cl = c_lanes + (i * N + n) * BLK;
                    float sb = 0.0f, sc = 0.0f;
                    for (int64_t j = 0; j < BLK; j++) {
                        sb += bl[j];
                        sc += cl[j];
                    }
                    gB_part[(t0 + i) * N + n] = sb;
                    gC_part[(t0 + i) * N + n] = sc;
                }
        }
        boundary += (nchunks > 0 ? nchunks - 1 : 0) * E * N;
    }
    for (int64_t blk = 0; blk < nblocks; blk++) {
        const int64_t e0 = lo + blk * BLK, nb = hi - e0 < BLK ? hi - e0 : BLK;
        for (int64_t j = 0; j < nb; j++) {
            if (gD) gD[e0 + j] = sums_D[blk * BLK + j];
            if (gdt_bias) gdt_bias[e0 + j] = sums_bias[blk * BLK + j];
            for (int64_t n = 0; n < N; n++) gA[(e0 + j) * N + n] = sums_A[(blk * N + n) * BLK + j];
        }
    }
}

#undef MR_BWD_TARGET
#undef MR_BWD_NAME
