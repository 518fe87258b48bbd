/* The forward ops' SIMD kernels written once over a vector abstraction; included by one file per
 * instruction set (mr_ops_avx2.c, mr_ops_avx512.c) after its vocabulary, base/mr_vec_<isa>.h:
 *   W lanes; VEC, VECI types; VLOAD, VSTORE, VZERO, VSET1, VFMA, VMUL, VADD, VSUB, VMAX,
 *   VBROADCAST; vexp, vexp2, vabs, vdiv (a / b, as exact as the instruction set makes cheap);
 *   TARGET (the function attribute) and SUFFIX(name).
 * Channels are the vector lanes; a ragged tail of fewer than W channels goes to the portable
 * kernel. */

/* softplus by the MR_LOG1P_* scheme of mr_ops_isa.h: t = exp(-|x|) in (0, 1], so nothing
 * overflows. No branch at 20: there the log1p term is below half an ulp of x. */
static inline __attribute__((always_inline)) TARGET VEC SUFFIX(softplus_vec)(VEC x) {
    const VEC t = vexp(VSUB(VZERO, vabs(x)));
    const VEC s = vdiv(t, VADD(t, VSET1(2.0f)));
    const VEC s2 = VMUL(s, s);
    VEC p = VSET1(MR_LOG1P_P4);
    p = VFMA(p, s2, VSET1(MR_LOG1P_P3));
    p = VFMA(p, s2, VSET1(MR_LOG1P_P2));
    p = VFMA(p, s2, VSET1(MR_LOG1P_P1));
    p = VFMA(p, s2, VSET1(MR_LOG1P_P0));
    return VFMA(s, p, VMAX(x, VZERO));
}

static inline __attribute__((always_inline)) TARGET VEC SUFFIX(silu_vec)(VEC x) {
    return vdiv(x, VADD(VSET1(1.0f), vexp(VSUB(VZERO, x))));
}

#define vsoftplus SUFFIX(softplus_vec)
#define vsilu SUFFIX(silu_vec)

TARGET void SUFFIX(mr_exp_f32)(const float *x, float *out, int64_t n) {
    int64_t i = 0;
    for (; i + W <= n; i += W) VSTORE(out + i, vexp(VLOAD(x + i)));
    if (i < n) {
        float in[W] = {0}, res[W];
        memcpy(in, x + i, (size_t)(n - i) * sizeof(float));
        VSTORE(res, vexp(VLOAD(in)));
        memcpy(out + i, res, (size_t)(n - i) * sizeof(float));
    }
}

TARGET void SUFFIX(mr_softplus_f32)(const float *x, float *out, int64_t n) {
    int64_t i = 0;
    for (; i + W <= n; i += W) VSTORE(out + i, vsoftplus(VLOAD(x + i)));
    for (; i < n; i++) out[i] = mr_softplus_f32(x[i]);
}

#define MR_SCAN_PREFETCH 6 /* tokens ahead */
#define MR_SCAN_CHUNK 32   /* tokens whose softplus and gate are computed ahead of the recurrence */

#define MR_SCAN_GROUP 256 /* channels whose state is kept in a buffer while a chunk of tokens passes */

/* The recurrence of NB * W channels [e0, e0 + NB * W) over tokens [t0, t1) of a segment of L,
 * starting from the state hs[b * N + n] (W lanes each) and leaving the new one there; a2s holds
 * A log2 e in the same layout. Always inlined into callers that pass constants, so that for the
 * usual N = 16 the state loop unrolls and the state lives in registers, and NB = 2 runs two
 * independent recurrences side by side sharing the B and C loads. */
static inline __attribute__((always_inline)) TARGET void SUFFIX(scan_span_body)(
    int64_t t0, int64_t t1, int64_t L, const int64_t N, const int NB, int64_t e0, const float *u, int64_t ldu,
    const float *dt, int64_t lddt, const float *dt_bias, const float *B, const float *C, int64_t ldbc,
    const float *D, const float *z, int64_t ldz, VEC *hs, const VEC *a2s, float *y, int64_t ldy) {
    VEC h[2][MR_MAX_STATE_SIZE], bias[2], dskip[2];
    for (int b = 0; b < NB; b++) {
        for (int64_t n = 0; n < N; n++) h[b][n] = hs[b * N + n];
        bias[b] = dt_bias ? VLOAD(dt_bias + e0 + b * W) : VZERO;
        dskip[b] = D ? VLOAD(D + e0 + b * W) : VZERO;
    }
    /* softplus and the gate have long dependency chains but no recurrence: computing them for a
     * chunk of tokens first keeps them off the recurrence's critical path */
    VEC deltas[2][MR_SCAN_CHUNK], gates[2][MR_SCAN_CHUNK], dus[2][MR_SCAN_CHUNK], skips[2][MR_SCAN_CHUNK];
    for (int64_t c0t = t0; c0t < t1; c0t += MR_SCAN_CHUNK) {
        const int64_t tc = t1 - c0t < MR_SCAN_CHUNK ? t1 - c0t : MR_SCAN_CHUNK;
        for (int64_t i = 0; i < tc; i++) {
            const int64_t t = c0t + i;
            for (int b = 0; b < NB; b++) {
                const int64_t c0 = e0 + b * W;
                const VEC ut = VLOAD(u + t * ldu + c0);
                deltas[b][i] = vsoftplus(VADD(VLOAD(dt + t * lddt + c0), bias[b]));
                dus[b][i] = VMUL(deltas[b][i], ut);
                gates[b][i] = z ? vsilu(VLOAD(z + t * ldz + c0)) : VSET1(1.0f);
                skips[b][i] = VMUL(dskip[b], ut);
            }
        }
        for (int64_t i = 0; i < tc; i++) {
            const int64_t t = c0t + i;
            const float *brow = B + t * ldbc, *crow = C + t * ldbc;
            if (t + MR_SCAN_CHUNK < L) /* the next chunk's rows, one stride apart, beyond the
                                          prefetchers' reach; spread over this chunk's steps */
                for (int b = 0; b < NB; b++) {
                    const int64_t c0 = e0 + b * W, tn = t + MR_SCAN_CHUNK;
                    _mm_prefetch((const char *)(dt + tn * lddt + c0), _MM_HINT_T0);
                    _mm_prefetch((const char *)(u + tn * ldu + c0), _MM_HINT_T0);
                    if (z) _mm_prefetch((const char *)(z + tn * ldz + c0), _MM_HINT_T0);
                }
            VEC acc[2][2]; /* two partial sums per block halve the length of the C-dot chain */
            for (int b = 0; b < NB; b++) acc[b][0] = acc[b][1] = VZERO;
#pragma GCC unroll 16
            for (int64_t n = 0; n < N; n++) {
                const VEC bn = VBROADCAST(brow + n), cn = VBROADCAST(crow + n);
                for (int b = 0; b < NB; b++) {
                    h[b][n] = VFMA(vexp2(VMUL(deltas[b][i], a2s[b * N + n])), h[b][n], VMUL(dus[b][i], bn));
                    acc[b][n & 1] = VFMA(h[b][n], cn, acc[b][n & 1]);
                }
            }
            for (int b = 0; b < NB; b++)
                VSTORE(y + t * ldy + e0 + b * W,
                       VMUL(VADD(VADD(acc[b][0], acc[b][1]), skips[b][i]), gates[b][i]));
        }
    }
    for (int b = 0; b < NB; b++)
        for (int64_t n = 0; n < N; n++) hs[b * N + n] = h[b][n];
}

static TARGET void SUFFIX(scan_span)(int64_t t0, int64_t t1, int64_t L, int64_t N, int NB, int64_t e0, const float *u,
                                     int64_t ldu, const float *dt, int64_t lddt, const float *dt_bias, const float *B,
                                     const float *C, int64_t ldbc, const float *D, const float *z, int64_t ldz,
                                     VEC *hs, const VEC *a2s, float *y, int64_t ldy) {
    if (N == 16 && NB == 2) /* every released Mamba-1 checkpoint */
        SUFFIX(scan_span_body)(t0, t1, L, 16, 2, e0, u, ldu, dt, lddt, dt_bias, B, C, ldbc, D, z, ldz, hs, a2s, y, ldy);
    else if (N == 16)
        SUFFIX(scan_span_body)(t0, t1, L, 16, 1, e0, u, ldu, dt, lddt, dt_bias, B, C, ldbc, D, z, ldz, hs, a2s, y, ldy);
    else if (NB == 2)
        SUFFIX(scan_span_body)(t0, t1, L, N, 2, e0, u, ldu, dt, lddt, dt_bias, B, C, ldbc, D, z, ldz, hs, a2s, y, ldy);
    else
        SUFFIX(scan_span_body)(t0, t1, L, N, 1, e0, u, ldu, dt, lddt, dt_bias, B, C, ldbc, D, z, ldz, hs, a2s, y, ldy);
}

/* Channels go in groups of MR_SCAN_GROUP and, within a group, a chunk of tokens passes through
 * every block of channels before the next chunk starts: each token row of the group is then read
 * as one contiguous run while it is in cache (walking one block of channels through the whole
 * segment instead reads one line per row, a new page each time). The state of the group waits in
 * a buffer between chunks. A large state (N > 16) keeps the old order: one block, all tokens. */
TARGET void SUFFIX(mr_selective_scan_f32)(int64_t L, int64_t E, int64_t N, const float *u, int64_t ldu,
                                     const float *dt, int64_t lddt, const float *dt_bias, const float *A,
                                     const float *B, const float *C, int64_t ldbc, const float *D,
                                     const float *z, int64_t ldz, const float *state_in, float *state_out,
                                     float *y, int64_t ldy, int64_t lo, int64_t hi) {
    enum { BUF = MR_SCAN_GROUP / W * 16 > 2 * MR_MAX_STATE_SIZE ? MR_SCAN_GROUP / W * 16 : 2 * MR_MAX_STATE_SIZE };
    VEC hs[BUF], a2s[BUF];
    const int64_t vec_hi = lo + (hi - lo) / W * W;
    const int64_t group = N <= 16 ? MR_SCAN_GROUP : 2 * W, span = N <= 16 ? MR_SCAN_CHUNK : L;
    const VEC log2e = VSET1(1.44269504088896341f);
    for (int64_t g0 = lo; g0 < vec_hi; g0 += group) {
        const int64_t gw = vec_hi - g0 < group ? vec_hi - g0 : group, nblk = gw / W;
        for (int64_t k = 0; k < nblk; k++) /* channel block k's state and A, n-major, W lanes */
            for (int64_t n = 0; n < N; n++) {
                float hn[W], an[W];
                for (int j = 0; j < W; j++) {
                    const int64_t e = g0 + k * W + j;
                    hn[j] = state_in ? state_in[e * N + n] : 0.0f;
                    an[j] = A[e * N + n];
                }
                hs[k * N + n] = VLOAD(hn);
                a2s[k * N + n] = VMUL(VLOAD(an), log2e);
            }
        for (int64_t t0 = 0; t0 < L; t0 += span) {
            const int64_t t1 = L - t0 < span ? L : t0 + span;
            int64_t k = 0;
            for (; k + 2 <= nblk; k += 2)
                SUFFIX(scan_span)(t0, t1, L, N, 2, g0 + k * W, u, ldu, dt, lddt, dt_bias, B, C, ldbc, D, z, ldz,
                                  hs + k * N, a2s + k * N, y, ldy);
            if (k < nblk)
                SUFFIX(scan_span)(t0, t1, L, N, 1, g0 + k * W, u, ldu, dt, lddt, dt_bias, B, C, ldbc, D, z, ldz,
                                  hs + k * N, a2s + k * N, y, ldy);
        }
        if (state_out) /* after every read of state_in for these channels: the two may alias */
            for (int64_t k = 0; k < nblk; k++)
                for (int64_t n = 0; n < N; n++) {
                    float hn[W];
                    VSTORE(hn, hs[k * N + n]);
                    for (int j = 0; j < W; j++) state_out[(g0 + k * W + j) * N + n] = hn[j];
                }
    }
    if (vec_hi < hi) /* a ragged tail: the portable loop over the channels left */
        mr_selective_scan_f32_portable(L, E, N, u, ldu, dt, lddt, dt_bias, A, B, C, ldbc, D, z, ldz, state_in,
                                       state_out, y, ldy, vec_hi, hi);
}

#define MR_CONV_WEIGHT_FLOATS 4096 /* a tile's K x channels weights (16 KB, in L1 beside its rows) */
#define MR_CONV_MAX_TILE 1024      /* channels per tile at most */

/* Token-major: each token's row of a channel tile is read once, contiguously, and the K - 1
 * rows before it are still in L1; walking one channel column through all tokens instead makes
 * every access a new page and leaves the prefetchers nothing to follow. Tiles are as wide as the
 * weight budget allows (768 channels, a thread's whole share, for the usual K = 4 on 2 threads):
 * a narrow tile re-walks every row of the segment once per tile. */
TARGET void SUFFIX(mr_conv_silu_f32)(int64_t L, int64_t E, int64_t K, const float *in, int64_t ldi, const float *w,
                                const float *bias, const float *state_in, float *state_out, float *out,
                                int64_t ldo, int64_t lo, int64_t hi) {
    const int64_t H = K - 1;
    const int64_t vec_hi = lo + (hi - lo) / W * W;
    const int64_t budget = MR_CONV_WEIGHT_FLOATS / K / W * W, tile = budget < MR_CONV_MAX_TILE ? budget : MR_CONV_MAX_TILE;
    float wt[MR_CONV_WEIGHT_FLOATS], b[MR_CONV_MAX_TILE], zeros[MR_CONV_MAX_TILE] = {0};
    for (int64_t c0 = lo; c0 < vec_hi; c0 += tile) {
        const int64_t nc = vec_hi - c0 < tile ? vec_hi - c0 : tile;
        for (int64_t j = 0; j < nc; j++) {
            for (int64_t k = 0; k < K; k++) wt[k * tile + j] = w[(c0 + j) * K + k];
            b[j] = bias ? bias[c0 + j] : 0.0f;
        }
        for (int64_t t = 0; t < L; t++) {
            /* rows[k]: the input k - H tokens back, from the carried state (or zeros) before the
             * segment */
            const float *rows[MR_MAX_CONV_KERNEL];
            for (int64_t k = 0; k < K; k++) {
                const int64_t tt = t - H + k;
                rows[k] = tt >= 0 ? in + tt * ldi + c0 : state_in ? state_in + (H + tt) * E + c0 : zeros;
            }
            if (t + MR_SCAN_PREFETCH < L)
                for (int64_t j = 0; j < nc; j += 64 / (int64_t)sizeof(float))
                    _mm_prefetch((const char *)(in + (t + MR_SCAN_PREFETCH) * ldi + c0 + j), _MM_HINT_T0);
            float *dst = out + t * ldo + c0;
            for (int64_t j = 0; j < nc; j += W) {
                VEC acc = VLOAD(b + j);
                for (int64_t k = 0; k < K; k++) acc = VFMA(VLOAD(wt + k * tile + j), VLOAD(rows[k] + j), acc);
                VSTORE(dst + j, vsilu(acc));
            }
        }
    }
    if (state_out) /* the last H inputs; k ascending reads state_in[k + L] before it is overwritten */
        for (int64_t k = 0; k < H; k++) {
            const int64_t tt = L - H + k;
            for (int64_t e = lo; e < vec_hi; e++)
                state_out[k * E + e] = tt >= 0 ? in[tt * ldi + e] : state_in ? state_in[(k + L) * E + e] : 0.0f;
        }
    if (vec_hi < hi)
        mr_conv_silu_f32_portable(L, E, K, in, ldi, w, bias, state_in, state_out, out, ldo, vec_hi, hi);
}
