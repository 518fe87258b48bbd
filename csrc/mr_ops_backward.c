/* Fast CPU training kernels (portable C). Like mr_ops_cpu.c, each thread walks its channels in
 * blocks of MR_BACKWARD_BLOCK whose lane loops run over contiguous channels, which the compiler
 * vectorises; exp is a branch-free polynomial so those loops vectorise too. */
#include <math.h>
#include <string.h>

#include "mr_ops.h"
#include "mr_ops_backward.h"

enum { BLK = MR_BACKWARD_BLOCK };

/* exp(x) to ~2 ulp over the float range: 2^n by the exponent bits times a degree-6 polynomial
 * on |r| <= ln2 / 2. Rounding by adding 1.5 * 2^23 keeps it branch-free (vectorisable). */
static inline float exp_lane(float x) {
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

static inline float sigmoid_lane(float x) { return 1.0f / (1.0f + exp_lane(-x)); }

/* softplus with PyTorch's threshold, log1p(exp(x)) written as max(x, 0) + log1p(exp(-|x|)) */
static inline float softplus_lane(float x) { return x > 20.0f ? x : mr_softplus_f32(x); }

static inline int64_t chunks_of(int64_t L, int64_t chunk) { return (L + chunk - 1) / chunk; }

int64_t mr_scan_boundary_count(int64_t S, const int64_t *offsets, int64_t chunk) {
    int64_t count = 0;
    for (int64_t s = 0; s < S; s++) {
        int64_t n = chunks_of(offsets[s + 1] - offsets[s], chunk);
        count += n > 0 ? n - 1 : 0;
    }
    return count;
}

void mr_conv_silu_packed_f32(int64_t S, const int64_t *offsets, int64_t E, int64_t K, const float *x,
                             int64_t ldx, const float *w, const float *bias, float *out, int64_t ldo,
                             int ith, int nth) {
    for (int64_t s = 0; s < S; s++) {
        const int64_t start = offsets[s], L = offsets[s + 1] - offsets[s];
        if (L > 0)
            mr_conv_silu_f32(L, E, K, x + start * ldx, ldx, w, bias, NULL, NULL, out + start * ldo, ldo, ith, nth);
    }
}

void mr_conv_silu_backward_f32(int64_t S, const int64_t *offsets, int64_t E, int64_t K, const float *x,
                               int64_t ldx, const float *w, const float *bias, const float *gout,
                               int64_t ldgo, float *gx, float *gw, float *gbias, int ith, int nth) {
    int64_t lo, hi;
    mr_split_range(E, BLK, ith, nth, &lo, &hi);
    for (int64_t e0 = lo; e0 < hi; e0 += BLK) {
        const int64_t nb = hi - e0 < BLK ? hi - e0 : BLK;
        float wt[MR_MAX_CONV_KERNEL][BLK], gwt[MR_MAX_CONV_KERNEL][BLK], b[BLK], gb[BLK];
        for (int64_t j = 0; j < BLK; j++) {
            b[j] = (bias && j < nb) ? bias[e0 + j] : 0.0f;
            gb[j] = 0.0f;
            for (int64_t k = 0; k < K; k++) {
                wt[k][j] = j < nb ? w[(e0 + j) * K + k] : 0.0f;
                gwt[k][j] = 0.0f;
            }
        }
        for (int64_t s = 0; s < S; s++) {
            const int64_t start = offsets[s], end = offsets[s + 1];
            /* pass 1: the pre-activation gradient g, kept in gx's rows, and the weight sums */
            for (int64_t t = start; t < end; t++) {
                float acc[BLK];
                for (int64_t j = 0; j < BLK; j++) acc[j] = b[j];
                for (int64_t k = 0; k < K; k++) {
                    const int64_t src = t - (K - 1) + k;
                    if (src < start) continue;
                    const float *xs = x + src * ldx + e0;
                    for (int64_t j = 0; j < nb; j++) acc[j] += wt[k][j] * xs[j];
                }
                float *g = gx + t * E + e0;
                const float *go = gout + t * ldgo + e0;
                for (int64_t j = 0; j < nb; j++) {
                    const float sig = sigmoid_lane(acc[j]);
                    g[j] = go[j] * sig * (1.0f + acc[j] * (1.0f - sig));
                    gb[j] += g[j];
                }
                for (int64_t k = 0; k < K; k++) {
                    const int64_t src = t - (K - 1) + k;
                    if (src < start) continue;
                    const float *xs = x + src * ldx + e0;
                    for (int64_t j = 0; j < nb; j++) gwt[k][j] += g[j] * xs[j];
                }
            }
            /* pass 2, in place: gx[t] = sum_k w[k] g[t + K-1 - k]; row t's g is last read here */
            for (int64_t t = start; t < end; t++) {
                float acc[BLK] = {0};
                for (int64_t k = 0; k < K; k++) {
                    const int64_t dst = t + (K - 1) - k;
                    if (dst >= end) continue;
                    const float *g = gx + dst * E + e0;
                    for (int64_t j = 0; j < nb; j++) acc[j] += wt[k][j] * g[j];
                }
                for (int64_t j = 0; j < nb; j++) gx[t * E + e0 + j] = acc[j];
            }
        }
        for (int64_t j = 0; j < nb; j++) {
            if (gbias) gbias[e0 + j] = gb[j];
            for (int64_t k = 0; k < K; k++) gw[(e0 + j) * K + k] = gwt[k][j];
        }
    }
}

void mr_selective_scan_packed_f32(int64_t S, const int64_t *offsets, int64_t chunk, int64_t E, int64_t N,
                                  const float *u, int64_t ldu, const float *dt, int64_t lddt,
                                  const float *dt_bias, const float *A, const float *B, const float *C,
                                  int64_t ldbc, const float *D, const float *z, int64_t ldz, float *y,
                                  int64_t ldy, float *boundaries, int ith, int nth) {
    float *next = boundaries;
    for (int64_t s = 0; s < S; s++) {
        const int64_t start = offsets[s], end = offsets[s + 1];
        const int64_t n = chunks_of(end - start, chunk);
        for (int64_t c = 0; c < n; c++) {
            const int64_t t0 = start + c * chunk, len = end - t0 < chunk ? end - t0 : chunk;
            const float *state_in = c == 0 ? NULL : next - E * N;
            float *state_out = c + 1 < n ? next : NULL;
            mr_selective_scan_f32(len, E, N, u + t0 * ldu, ldu, dt + t0 * lddt, lddt, dt_bias, A, B + t0 * ldbc,
                                  C + t0 * ldbc, ldbc, D, z ? z + t0 * ldz : NULL, ldz, state_in, state_out,
                                  y + t0 * ldy, ldy, ith, nth);
            if (state_out) next += E * N;
        }
    }
}

int64_t mr_scan_backward_work_floats(int64_t chunk, int64_t N) { return (chunk + 1) * N * BLK + chunk * BLK; }

void mr_selective_scan_backward_f32(int64_t S, const int64_t *offsets, int64_t chunk, int64_t E, int64_t N,
                                    const float *u, int64_t ldu, const float *dt, int64_t lddt,
                                    const float *dt_bias, const float *A, const float *B, const float *C,
                                    int64_t ldbc, const float *D, const float *z, int64_t ldz,
                                    const float *boundaries, const float *gy, int64_t ldgy, float *gu,
                                    float *gdt, float *gdt_bias, float *gA, float *gD, float *gz,
                                    float *gB_part, float *gC_part, float *work, int ith, int nth) {
    const int64_t T = offsets[S];
    memset(gB_part, 0, (size_t)(T * N) * sizeof(float));
    memset(gC_part, 0, (size_t)(T * N) * sizeof(float));
    int64_t lo, hi;
    mr_split_range(E, BLK, ith, nth, &lo, &hi);
    float *states = work;                        /* [chunk + 1][N][BLK]: states inside a chunk */
    float *deltas = work + (chunk + 1) * N * BLK; /* [chunk][BLK] */
    for (int64_t e0 = lo; e0 < hi; e0 += BLK) {
        const int64_t nb = hi - e0 < BLK ? hi - e0 : BLK;
        float a[MR_MAX_STATE_SIZE][BLK], gA_acc[MR_MAX_STATE_SIZE][BLK], gh[MR_MAX_STATE_SIZE][BLK];
        float bias[BLK], skip[BLK], gD_acc[BLK], gbias_acc[BLK];
        for (int64_t j = 0; j < BLK; j++) {
            bias[j] = (dt_bias && j < nb) ? dt_bias[e0 + j] : 0.0f;
            skip[j] = (D && j < nb) ? D[e0 + j] : 0.0f;
            gD_acc[j] = gbias_acc[j] = 0.0f;
            for (int64_t n = 0; n < N; n++) {
                a[n][j] = j < nb ? A[(e0 + j) * N + n] : 0.0f;
                gA_acc[n][j] = 0.0f;
            }
        }
        const float *boundary = boundaries;
        for (int64_t s = 0; s < S; s++) {
            const int64_t start = offsets[s], end = offsets[s + 1];
            const int64_t nchunks = chunks_of(end - start, chunk);
            memset(gh, 0, sizeof(float) * (size_t)(N * BLK));
            for (int64_t c = nchunks - 1; c >= 0; c--) {
                const int64_t t0 = start + c * chunk, len = end - t0 < chunk ? end - t0 : chunk;
                /* the states inside this chunk, from the one entering it */
                const float *entering = c == 0 ? NULL : boundary + (c - 1) * E * N;
                for (int64_t n = 0; n < N; n++)
                    for (int64_t j = 0; j < BLK; j++)
                        states[n * BLK + j] = (entering && j < nb) ? entering[(e0 + j) * N + n] : 0.0f;
                for (int64_t i = 0; i < len; i++) {
                    const int64_t t = t0 + i;
                    float *delta = deltas + i * BLK, ut[BLK];
                    for (int64_t j = 0; j < BLK; j++) {
                        delta[j] = j < nb ? softplus_lane(dt[t * lddt + e0 + j] + bias[j]) : 0.0f;
                        ut[j] = j < nb ? u[t * ldu + e0 + j] : 0.0f;
                    }
                    const float *h_prev = states + i * N * BLK;
                    float *h = states + (i + 1) * N * BLK;
                    for (int64_t n = 0; n < N; n++) {
                        const float bn = B[t * ldbc + n];
                        for (int64_t j = 0; j < BLK; j++)
                            h[n * BLK + j] = exp_lane(delta[j] * a[n][j]) * h_prev[n * BLK + j] + delta[j] * bn * ut[j];
                    }
                }
                /* backwards through the chunk */
                for (int64_t i = len - 1; i >= 0; i--) {
                    const int64_t t = t0 + i;
                    const float *delta = deltas + i * BLK;
                    const float *h_prev = states + i * N * BLK, *h = states + (i + 1) * N * BLK;
                    float ut[BLK], g_read[BLK], g_u[BLK], g_delta[BLK], readout[BLK];
                    for (int64_t j = 0; j < BLK; j++) {
                        ut[j] = j < nb ? u[t * ldu + e0 + j] : 0.0f;
                        g_read[j] = j < nb ? gy[t * ldgy + e0 + j] : 0.0f;
                        readout[j] = skip[j] * ut[j];
                    }
                    for (int64_t n = 0; n < N; n++) {
                        const float cn = C[t * ldbc + n];
                        for (int64_t j = 0; j < BLK; j++) readout[j] += cn * h[n * BLK + j];
                    }
                    if (z) {
                        for (int64_t j = 0; j < nb; j++) {
                            const float zt = z[t * ldz + e0 + j], sig = sigmoid_lane(zt);
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
                        float c_lanes[BLK], b_lanes[BLK];
                        for (int64_t j = 0; j < BLK; j++) {
                            c_lanes[j] = g_read[j] * h[n * BLK + j];
                            const float g = gh[n][j] + g_read[j] * cn;
                            const float decay = exp_lane(delta[j] * a[n][j]);
                            const float carried = g * decay * h_prev[n * BLK + j];
                            g_delta[j] += a[n][j] * carried + g * bn * ut[j];
                            gA_acc[n][j] += delta[j] * carried;
                            b_lanes[j] = g * delta[j] * ut[j];
                            g_u[j] += g * delta[j] * bn;
                            gh[n][j] = g * decay;
                        }
                        float c_sum = 0.0f, b_sum = 0.0f;
                        for (int64_t j = 0; j < BLK; j++) {
                            c_sum += c_lanes[j];
                            b_sum += b_lanes[j];
                        }
                        gC_part[t * N + n] += c_sum;
                        gB_part[t * N + n] += b_sum;
                    }
                    for (int64_t j = 0; j < nb; j++) {
                        const float x = dt[t * lddt + e0 + j] + bias[j];
                        const float g_dt = g_delta[j] * (x > 20.0f ? 1.0f : sigmoid_lane(x));
                        gu[t * E + e0 + j] = g_u[j];
                        gdt[t * E + e0 + j] = g_dt;
                        gbias_acc[j] += g_dt;
                    }
                }
            }
            boundary += (nchunks > 0 ? nchunks - 1 : 0) * E * N;
        }
        for (int64_t j = 0; j < nb; j++) {
            if (gD) gD[e0 + j] = gD_acc[j];
            if (gdt_bias) gdt_bias[e0 + j] = gbias_acc[j];
            for (int64_t n = 0; n < N; n++) gA[(e0 + j) * N + n] = gA_acc[n][j];
        }
    }
}

void mr_sum_partials_f32(const float *parts, int64_t nparts, int64_t n, float *out, int ith, int nth) {
    int64_t lo, hi;
    mr_split_range(n, 64, ith, nth, &lo, &hi);
    for (int64_t i = lo; i < hi; i++) out[i] = 0.0f;
    for (int64_t p = 0; p < nparts; p++) {
        const float *part = parts + p * n;
        for (int64_t i = lo; i < hi; i++) out[i] += part[i];
    }
}
