/* The SSD scan's SIMD kernel written once over the vector vocabulary of base/mr_vec_<isa>.h;
 * included by mr_ssd_avx2.c and mr_ssd_avx512.c. A head's channels are the lanes (P % W == 0,
 * the dispatcher checks). For a chunk of tokens and one vector of channels, NB state rows stay
 * in registers while the chunk's tokens pass through them, so the state is read and written once
 * per chunk rather than once per token. */

static inline __attribute__((always_inline)) TARGET void SUFFIX(ssd_rows)(int NB, int64_t n0, int64_t nt,
                                                                         const float *decay, const VEC *dx,
                                                                         VEC *acc, const float *b, const float *c,
                                                                         int64_t ldbc, float *s, int64_t P) {
    VEC st[8];
    for (int k = 0; k < NB; k++) st[k] = VLOAD(s + (n0 + k) * P);
    for (int64_t t = 0; t < nt; t++) {
        const VEC a = VSET1(decay[t]);
        const float *bt = b + t * ldbc + n0, *ct = c + t * ldbc + n0;
        VEC out = acc[t];
        for (int k = 0; k < NB; k++) {
            st[k] = VFMA(st[k], a, VMUL(VBROADCAST(bt + k), dx[t]));
            out = VFMA(VBROADCAST(ct + k), st[k], out);
        }
        acc[t] = out;
    }
    for (int k = 0; k < NB; k++) VSTORE(s + (n0 + k) * P, st[k]);
}

TARGET void SUFFIX(mr_ssd_scan_f32)(MR_SSD_ARGS) {
    enum { TC = MR_SSD_TOKEN_CHUNK };
    const int64_t heads_per_group = H / G;
    for (int64_t h = h_lo; h < h_hi; h++) {
        const int64_t g = h / heads_per_group;
        float *s = state_out + h * N * P;
        mr_ssd_state_start(h, N * P, state_in, state_out);
        const VEC skip = VSET1(D ? D[h] : 0.0f);
        for (int64_t t0 = 0; t0 < L; t0 += TC) {
            const int64_t t1 = t0 + TC < L ? t0 + TC : L, nt = t1 - t0;
            float delta[TC], decay[TC];
            mr_ssd_discretize(t0, t1, h, dt, lddt, dt_bias, A, dt_min, dt_max, delta, decay);
            const float *b = B + t0 * ldbc + g * N, *c = C + t0 * ldbc + g * N;
            for (int64_t p0 = 0; p0 < P; p0 += W) {
                VEC xr[TC], dx[TC], acc[TC];
                for (int64_t t = 0; t < nt; t++) {
                    xr[t] = VLOAD(x + (t0 + t) * ldx + h * P + p0);
                    dx[t] = VMUL(VSET1(delta[t]), xr[t]);
                    acc[t] = VMUL(skip, xr[t]);
                }
                int64_t n0 = 0;
                for (; n0 + 8 <= N; n0 += 8) SUFFIX(ssd_rows)(8, n0, nt, decay, dx, acc, b, c, ldbc, s + p0, P);
                for (; n0 < N; n0++) SUFFIX(ssd_rows)(1, n0, nt, decay, dx, acc, b, c, ldbc, s + p0, P);
                for (int64_t t = 0; t < nt; t++) VSTORE(y + (t0 + t) * ldy + h * P + p0, acc[t]);
            }
        }
    }
}
