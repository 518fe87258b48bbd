/* The SIMD kernels written once over a vector abstraction; included by one file per
 * instruction set (mr_ops_avx2.c, mr_ops_avx512.c), which first defines:
 *   W lanes; VEC, VECI types; VLOAD, VSTORE, VZERO, VSET1, VFMA, VMUL, VADD, VBROADCAST;
 *   vexp, vexp2, vsoftplus, vsilu; TARGET (the function attribute) and SUFFIX(name).
 * Channels are the vector lanes; a ragged tail of fewer than W channels goes to the portable
 * kernel. */

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

/* NB * W channels [e0, e0 + NB * W) of the scan, the whole segment. Always inlined into callers
 * that pass constants, so that for the usual N = 16 the state loop unrolls, and NB = 2 runs two
 * independent recurrences side by side sharing the B and C loads. exp(delta * A) is computed
 * as 2^(delta * A log2 e) with A pre-scaled. */
static inline __attribute__((always_inline)) TARGET void SUFFIX(scan_block_body)(
    int64_t L, const int64_t N, const int NB, int64_t e0, const float *u, int64_t ldu, const float *dt,
    int64_t lddt, const float *dt_bias, const float *A, const float *B, const float *C, int64_t ldbc,
    const float *D, const float *z, int64_t ldz, const float *state_in, float *state_out, float *y, int64_t ldy) {
    VEC h[2][MR_MAX_STATE_SIZE], a2[2][MR_MAX_STATE_SIZE], bias[2], dskip[2];
    const VEC log2e = VSET1(1.44269504088896341f);
    for (int b = 0; b < NB; b++) {
        const int64_t c0 = e0 + b * W;
        for (int64_t n = 0; n < N; n++) {
            float hn[W], an[W];
            for (int j = 0; j < W; j++) {
                hn[j] = state_in ? state_in[(c0 + j) * N + n] : 0.0f;
                an[j] = A[(c0 + j) * N + n];
            }
            h[b][n] = VLOAD(hn);
            a2[b][n] = VMUL(VLOAD(an), log2e);
        }
        bias[b] = dt_bias ? VLOAD(dt_bias + c0) : VZERO;
        dskip[b] = D ? VLOAD(D + c0) : VZERO;
    }
    /* softplus and the gate have long dependency chains but no recurrence: computing them for a
     * chunk of tokens first keeps them off the recurrence's critical path */
    VEC deltas[2][MR_SCAN_CHUNK], gates[2][MR_SCAN_CHUNK];
    for (int64_t t0 = 0; t0 < L; t0 += MR_SCAN_CHUNK) {
        const int64_t tc = L - t0 < MR_SCAN_CHUNK ? L - t0 : MR_SCAN_CHUNK;
        for (int64_t i = 0; i < tc; i++)
            for (int b = 0; b < NB; b++) {
                const int64_t t = t0 + i, c0 = e0 + b * W;
                deltas[b][i] = vsoftplus(VADD(VLOAD(dt + t * lddt + c0), bias[b]));
                gates[b][i] = z ? vsilu(VLOAD(z + t * ldz + c0)) : VSET1(1.0f);
            }
        for (int64_t i = 0; i < tc; i++) {
            const int64_t t = t0 + i;
            const float *brow = B + t * ldbc, *crow = C + t * ldbc;
            VEC ut[2], du[2], acc[2];
            for (int b = 0; b < NB; b++) {
                ut[b] = VLOAD(u + t * ldu + e0 + b * W);
                du[b] = VMUL(deltas[b][i], ut[b]);
                acc[b] = VZERO;
            }
#pragma GCC unroll 16
            for (int64_t n = 0; n < N; n++) {
                const VEC bn = VBROADCAST(brow + n), cn = VBROADCAST(crow + n);
                for (int b = 0; b < NB; b++) {
                    h[b][n] = VFMA(vexp2(VMUL(deltas[b][i], a2[b][n])), h[b][n], VMUL(du[b], bn));
                    acc[b] = VFMA(h[b][n], cn, acc[b]);
                }
            }
            for (int b = 0; b < NB; b++)
                VSTORE(y + t * ldy + e0 + b * W, VMUL(VFMA(dskip[b], ut[b], acc[b]), gates[b][i]));
        }
    }
    if (state_out)
        for (int b = 0; b < NB; b++)
            for (int64_t n = 0; n < N; n++) {
                float hn[W];
                VSTORE(hn, h[b][n]);
                for (int j = 0; j < W; j++) state_out[(e0 + b * W + j) * N + n] = hn[j];
            }
}

static TARGET void SUFFIX(scan_block)(int64_t L, int64_t N, int NB, int64_t e0, const float *u, int64_t ldu,
                                      const float *dt, int64_t lddt, const float *dt_bias, const float *A,
                                      const float *B, const float *C, int64_t ldbc, const float *D,
                                      const float *z, int64_t ldz, const float *state_in, float *state_out,
                                      float *y, int64_t ldy) {
    if (N == 16 && NB == 2) /* every released Mamba-1 checkpoint */
        SUFFIX(scan_block_body)(L, 16, 2, e0, u, ldu, dt, lddt, dt_bias, A, B, C, ldbc, D, z, ldz, state_in,
                                state_out, y, ldy);
    else if (N == 16)
        SUFFIX(scan_block_body)(L, 16, 1, e0, u, ldu, dt, lddt, dt_bias, A, B, C, ldbc, D, z, ldz, state_in,
                                state_out, y, ldy);
    else if (NB == 2)
        SUFFIX(scan_block_body)(L, N, 2, e0, u, ldu, dt, lddt, dt_bias, A, B, C, ldbc, D, z, ldz, state_in,
                                state_out, y, ldy);
    else
        SUFFIX(scan_block_body)(L, N, 1, e0, u, ldu, dt, lddt, dt_bias, A, B, C, ldbc, D, z, ldz, state_in,
                                state_out, y, ldy);
}

TARGET void SUFFIX(mr_selective_scan_f32)(int64_t L, int64_t E, int64_t N, const float *u, int64_t ldu,
                                     const float *dt, int64_t lddt, const float *dt_bias, const float *A,
                                     const float *B, const float *C, int64_t ldbc, const float *D,
                                     const float *z, int64_t ldz, const float *state_in, float *state_out,
                                     float *y, int64_t ldy, int64_t lo, int64_t hi) {
    int64_t e0 = lo;
    for (; e0 + 2 * W <= hi; e0 += 2 * W)
        SUFFIX(scan_block)(L, N, 2, e0, u, ldu, dt, lddt, dt_bias, A, B, C, ldbc, D, z, ldz, state_in, state_out, y,
                           ldy);
    for (; e0 + W <= hi; e0 += W)
        SUFFIX(scan_block)(L, N, 1, e0, u, ldu, dt, lddt, dt_bias, A, B, C, ldbc, D, z, ldz, state_in, state_out, y,
                           ldy);
    if (e0 < hi) /* a ragged tail: the portable loop over the channels left */
        mr_selective_scan_f32_portable(L, E, N, u, ldu, dt, lddt, dt_bias, A, B, C, ldbc, D, z, ldz, state_in,
                                       state_out, y, ldy, e0, hi);
}

TARGET void SUFFIX(mr_conv_silu_f32)(int64_t L, int64_t E, int64_t K, const float *in, int64_t ldi, const float *w,
                                const float *bias, const float *state_in, float *state_out, float *out,
                                int64_t ldo, int64_t lo, int64_t hi) {
    const int64_t H = K - 1;
    int64_t e0 = lo;
    for (; e0 + W <= hi; e0 += W) {
        VEC wt[MR_MAX_CONV_KERNEL], window[MR_MAX_CONV_KERNEL];
        for (int64_t k = 0; k < K; k++) {
            float col[W];
            for (int j = 0; j < W; j++) col[j] = w[(e0 + j) * K + k];
            wt[k] = VLOAD(col);
        }
        for (int64_t k = 0; k < H; k++)
            window[k] = state_in ? VLOAD(state_in + k * E + e0) : VZERO;
        const VEC b = bias ? VLOAD(bias + e0) : VZERO;
        for (int64_t t = 0; t < L; t++) {
            if (t + MR_SCAN_PREFETCH < L) {
                _mm_prefetch((const char *)(in + (t + MR_SCAN_PREFETCH) * ldi + e0), _MM_HINT_T0);
                _mm_prefetch((const char *)(out + (t + MR_SCAN_PREFETCH) * ldo + e0), _MM_HINT_T0);
            }
            const VEC xt = VLOAD(in + t * ldi + e0);
            VEC acc = VFMA(wt[H], xt, b);
            for (int64_t k = 0; k < H; k++) acc = VFMA(wt[k], window[k], acc);
            for (int64_t k = 0; k + 1 < H; k++) window[k] = window[k + 1];
            if (H > 0) window[H - 1] = xt;
            VSTORE(out + t * ldo + e0, vsilu(acc));
        }
        if (state_out)
            for (int64_t k = 0; k < H; k++) VSTORE(state_out + k * E + e0, window[k]);
    }
    if (e0 < hi)
        mr_conv_silu_f32_portable(L, E, K, in, ldi, w, bias, state_in, state_out, out, ldo, e0, hi);
}
