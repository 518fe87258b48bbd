/* The SSD scan's SIMD kernel written once over the vector vocabulary of base/mr_vec_<isa>.h;
 * included by mr_ssd_avx2.c and mr_ssd_avx512.c. A head's channels are the lanes (P % W == 0,
 * the dispatcher checks). For a chunk of tokens and one vector of channels, NB state rows stay
 * in registers while the chunk's tokens pass through them, so the state is read and written once
 * per chunk rather than once per token.
 *
 * Within a chunk the decays factor out: with L_t the product of the chunk's decays up to t,
 * s_t = L_t (s_0 + sum_{u<=t} (dx_u / L_u) B_u), so a state element costs one multiply-add for
 * its update and one for the output, instead of a multiply and two multiply-adds. 1 / L_t grows
 * as the chunk decays, so that form is used only while the chunk's total log decay stays above
 * -MR_SSD_SCALED_LOG_DECAY (the scaled values then stay far inside float range); a chunk that
 * decays more runs the plain recurrence. */

/* s = decay * s + dx * B; out += C * s, for NB state rows. */
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

/* The scaled form: s' += (dx / L) * B; out += C * s'; the state leaves as L_end * s'. */
static inline __attribute__((always_inline)) TARGET void SUFFIX(ssd_rows_scaled)(int NB, int64_t n0, int64_t nt,
                                                                                float last, const VEC *dxs,
                                                                                VEC *acc, const float *b,
                                                                                const float *c, int64_t ldbc,
                                                                                float *s, int64_t P) {
    VEC st[8];
    for (int k = 0; k < NB; k++) st[k] = VLOAD(s + (n0 + k) * P);
    for (int64_t t = 0; t < nt; t++) {
        const float *bt = b + t * ldbc + n0, *ct = c + t * ldbc + n0;
        VEC out = acc[t];
        for (int k = 0; k < NB; k++) {
            st[k] = VFMA(VBROADCAST(bt + k), dxs[t], st[k]);
            out = VFMA(VBROADCAST(ct + k), st[k], out);
        }
        acc[t] = out;
    }
    const VEC scale = VSET1(last);
    for (int k = 0; k < NB; k++) VSTORE(s + (n0 + k) * P, VMUL(st[k], scale));
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
            float delta[TC], decay[TC], scale[TC];
            mr_ssd_discretize(t0, t1, h, dt, lddt, dt_bias, A, dt_min, dt_max, delta, decay);
            float log_decay = 0.0f;
            for (int64_t t = 0; t < nt; t++) {
                log_decay += delta[t] * A[h];
                scale[t] = expf(log_decay); /* L_t */
            }
            const int scaled = log_decay > -MR_SSD_SCALED_LOG_DECAY;
            const float *b = B + t0 * ldbc + g * N, *c = C + t0 * ldbc + g * N;
            for (int64_t p0 = 0; p0 < P; p0 += W) {
                VEC xr[TC], dx[TC], acc[TC];
                for (int64_t t = 0; t < nt; t++) {
                    xr[t] = VLOAD(x + (t0 + t) * ldx + h * P + p0);
                    dx[t] = VMUL(VSET1(scaled ? delta[t] / scale[t] : delta[t]), xr[t]);
                    acc[t] = scaled ? VZERO : VMUL(skip, xr[t]);
                }
                int64_t n0 = 0;
                if (scaled) {
                    for (; n0 + 8 <= N; n0 += 8)
                        SUFFIX(ssd_rows_scaled)(8, n0, nt, scale[nt - 1], dx, acc, b, c, ldbc, s + p0, P);
                    for (; n0 < N; n0++)
                        SUFFIX(ssd_rows_scaled)(1, n0, nt, scale[nt - 1], dx, acc, b, c, ldbc, s + p0, P);
                    for (int64_t t = 0; t < nt; t++) acc[t] = VFMA(VSET1(scale[t]), acc[t], VMUL(skip, xr[t]));
                } else {
                    for (; n0 + 8 <= N; n0 += 8) SUFFIX(ssd_rows)(8, n0, nt, decay, dx, acc, b, c, ldbc, s + p0, P);
                    for (; n0 < N; n0++) SUFFIX(ssd_rows)(1, n0, nt, decay, dx, acc, b, c, ldbc, s + p0, P);
                }
                for (int64_t t = 0; t < nt; t++) VSTORE(y + (t0 + t) * ldy + h * P + p0, acc[t]);
            }
        }
    }
}

/* Mamba-2's gated RMSNorm for rows [lo, hi) (group % W == 0, the dispatcher checks): the gated
 * values go to out, then are scaled there. */
TARGET void SUFFIX(mr_gated_rmsnorm_rows)(int64_t lo, int64_t hi, int64_t E, int64_t group, const float *y,
                                          int64_t ldy, const float *z, int64_t ldz, const float *w, float eps,
                                          float *out, int64_t ldo) {
    const VEC one = VSET1(1.0f);
    for (int64_t t = lo; t < hi; t++) {
        const float *yr = y + t * ldy, *zr = z + t * ldz;
        float *dst = out + t * ldo;
        for (int64_t g0 = 0; g0 < E; g0 += group) {
            VEC squares = VZERO;
            for (int64_t i = g0; i < g0 + group; i += W) {
                const VEC zi = VLOAD(zr + i);
                const VEC v = VMUL(VLOAD(yr + i), vdiv(zi, VADD(one, vexp(VSUB(VZERO, zi))))); /* y * silu(z) */
                VSTORE(dst + i, v);
                squares = VFMA(v, v, squares);
            }
            float lanes[W], sum = 0.0f;
            VSTORE(lanes, squares);
            for (int j = 0; j < W; j++) sum += lanes[j];
            const VEC scale = VSET1(1.0f / sqrtf(sum / (float)group + eps));
            for (int64_t i = g0; i < g0 + group; i += W) VSTORE(dst + i, VMUL(VLOAD(w + i), VMUL(VLOAD(dst + i), scale)));
        }
    }
}
