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

/* W channels [e0, e0 + W) of the scan, the whole segment. Always inlined into callers that
 * pass a constant N, so that for the usual N = 16 the state loop unrolls and h stays in
 * registers. exp(delta * A) is computed as 2^(delta * A log2 e) with A pre-scaled. */
static inline __attribute__((always_inline)) TARGET void SUFFIX(scan_block_body)(
    int64_t L, const int64_t N, int64_t e0, const float *u, int64_t ldu, const float *dt, int64_t lddt,
    const float *dt_bias, const float *A, const float *B, const float *C, int64_t ldbc, const float *D,
    const float *z, int64_t ldz, const float *state_in, float *state_out, float *y, int64_t ldy) {
    VEC h[MR_MAX_STATE_SIZE], a2[MR_MAX_STATE_SIZE];
    const VEC log2e = VSET1(1.44269504088896341f);
    for (int64_t n = 0; n < N; n++) {
        float hn[W], an[W];
        for (int j = 0; j < W; j++) {
            hn[j] = state_in ? state_in[(e0 + j) * N + n] : 0.0f;
            an[j] = A[(e0 + j) * N + n];
        }
        h[n] = VLOAD(hn);
        a2[n] = VMUL(VLOAD(an), log2e);
    }
    const VEC bias = dt_bias ? VLOAD(dt_bias + e0) : VZERO;
    const VEC dskip = D ? VLOAD(D + e0) : VZERO;
    /* softplus and the gate have long dependency chains but no recurrence: computing them for a
     * chunk of tokens first keeps them off the recurrence's critical path */
    VEC deltas[MR_SCAN_CHUNK], gates[MR_SCAN_CHUNK];
    for (int64_t t0 = 0; t0 < L; t0 += MR_SCAN_CHUNK) {
        const int64_t tc = L - t0 < MR_SCAN_CHUNK ? L - t0 : MR_SCAN_CHUNK;
        for (int64_t i = 0; i < tc; i++) {
            const int64_t t = t0 + i;
            deltas[i] = vsoftplus(VADD(VLOAD(dt + t * lddt + e0), bias));
            gates[i] = z ? vsilu(VLOAD(z + t * ldz + e0)) : VSET1(1.0f);
        }
        for (int64_t i = 0; i < tc; i++) {
            const int64_t t = t0 + i;
            const VEC ut = VLOAD(u + t * ldu + e0);
            const VEC delta = deltas[i];
            const VEC du = VMUL(delta, ut);
            const float *brow = B + t * ldbc, *crow = C + t * ldbc;
            VEC acc0 = VZERO, acc1 = VZERO;
            int64_t n = 0;
#pragma GCC unroll 16
            for (; n + 2 <= N; n += 2) { /* two independent chains hide the FMA latency */
                h[n] = VFMA(vexp2(VMUL(delta, a2[n])), h[n], VMUL(du, VBROADCAST(brow + n)));
                h[n + 1] = VFMA(vexp2(VMUL(delta, a2[n + 1])), h[n + 1], VMUL(du, VBROADCAST(brow + n + 1)));
                acc0 = VFMA(h[n], VBROADCAST(crow + n), acc0);
                acc1 = VFMA(h[n + 1], VBROADCAST(crow + n + 1), acc1);
            }
            if (n < N) {
                h[n] = VFMA(vexp2(VMUL(delta, a2[n])), h[n], VMUL(du, VBROADCAST(brow + n)));
                acc0 = VFMA(h[n], VBROADCAST(crow + n), acc0);
            }
            VSTORE(y + t * ldy + e0, VMUL(VFMA(dskip, ut, VADD(acc0, acc1)), gates[i]));
        }
    }
    if (state_out)
        for (int64_t n = 0; n < N; n++) {
            float hn[W];
            VSTORE(hn, h[n]);
            for (int j = 0; j < W; j++) state_out[(e0 + j) * N + n] = hn[j];
        }
}

static TARGET void SUFFIX(scan_block)(int64_t L, int64_t N, int64_t e0, const float *u, int64_t ldu,
                                      const float *dt, int64_t lddt, const float *dt_bias, const float *A,
                                      const float *B, const float *C, int64_t ldbc, const float *D,
                                      const float *z, int64_t ldz, const float *state_in, float *state_out,
                                      float *y, int64_t ldy) {
    if (N == 16) /* every released Mamba-1 checkpoint */
        SUFFIX(scan_block_body)(L, 16, e0, u, ldu, dt, lddt, dt_bias, A, B, C, ldbc, D, z, ldz, state_in,
                                state_out, y, ldy);
    else
        SUFFIX(scan_block_body)(L, N, e0, u, ldu, dt, lddt, dt_bias, A, B, C, ldbc, D, z, ldz, state_in,
                                state_out, y, ldy);
}

TARGET void SUFFIX(mr_selective_scan_f32)(int64_t L, int64_t E, int64_t N, const float *u, int64_t ldu,
                                     const float *dt, int64_t lddt, const float *dt_bias, const float *A,
                                     const float *B, const float *C, int64_t ldbc, const float *D,
                                     const float *z, int64_t ldz, const float *state_in, float *state_out,
                                     float *y, int64_t ldy, int64_t lo, int64_t hi) {
    int64_t e0 = lo;
    for (; e0 + W <= hi; e0 += W)
        SUFFIX(scan_block)(L, N, e0, u, ldu, dt, lddt, dt_bias, A, B, C, ldbc, D, z, ldz, state_in, state_out, y, ldy);
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
