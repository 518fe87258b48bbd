/* Reference CPU kernels: the model math written as plainly as possible. They define what the
 * fast kernels (mr_ops.c and its per-ISA files) must compute and are compared against them in the tests. */
#include <math.h>
#include <string.h>

#include "ops/mr_ops.h"

static float silu_ref(float x) { return x / (1.0f + expf(-x)); }

float mr_softplus_f32(float x) { return x > 20.0f ? x : log1pf(expf(x)); }

void mr_embed_gather_f32_ref(const float *table, int64_t d, const int32_t *tokens, int64_t T,
                             float *out) {
    for (int64_t t = 0; t < T; t++)
        memcpy(out + t * d, table + (int64_t)tokens[t] * d, (size_t)d * sizeof(float));
}

void mr_rmsnorm_f32_ref(const float *x, int64_t ldx, const float *w, int64_t T, int64_t d,
                        float eps, float *out, int64_t ldo) {
    for (int64_t t = 0; t < T; t++) {
        const float *row = x + t * ldx;
        float sum = 0.0f;
        for (int64_t i = 0; i < d; i++) sum += row[i] * row[i];
        float scale = 1.0f / sqrtf(sum / (float)d + eps);
        for (int64_t i = 0; i < d; i++) out[t * ldo + i] = w ? w[i] * (row[i] * scale) : row[i] * scale;
    }
}

void mr_conv_silu_f32_ref(int64_t L, int64_t E, int64_t K, const float *in, int64_t ldi,
                          const float *w, const float *bias, const float *state_in,
                          float *state_out, float *out, int64_t ldo) {
    const int64_t H = K - 1;
    for (int64_t e = 0; e < E; e++) {
        /* the inputs this segment can see, older ones first: H from the state, then L new */
        float window[MR_MAX_CONV_KERNEL];
        for (int64_t j = 0; j < H; j++) window[j] = state_in ? state_in[j * E + e] : 0.0f;
        for (int64_t t = 0; t < L; t++) {
            float x_t = in[t * ldi + e];
            float acc = bias ? bias[e] : 0.0f;
            for (int64_t k = 0; k < H; k++) acc += w[e * K + k] * window[k];
            acc += w[e * K + H] * x_t;
            out[t * ldo + e] = silu_ref(acc);
            for (int64_t k = 0; k + 1 < H; k++) window[k] = window[k + 1];
            if (H > 0) window[H - 1] = x_t;
        }
        if (state_out)
            for (int64_t j = 0; j < H; j++) state_out[j * E + e] = window[j];
    }
}

void mr_selective_scan_f32_ref(int64_t L, int64_t E, int64_t N, const float *u, int64_t ldu,
                               const float *dt, int64_t lddt, const float *dt_bias,
                               const float *A, const float *B, const float *C, int64_t ldbc,
                               const float *D, const float *z, int64_t ldz,
                               const float *state_in, float *state_out, float *y, int64_t ldy) {
    for (int64_t e = 0; e < E; e++) {
        float h[MR_MAX_STATE_SIZE];
        for (int64_t n = 0; n < N; n++) h[n] = state_in ? state_in[e * N + n] : 0.0f;
        for (int64_t t = 0; t < L; t++) {
            float ut = u[t * ldu + e];
            float delta = mr_softplus_f32(dt[t * lddt + e] + (dt_bias ? dt_bias[e] : 0.0f));
            float acc = 0.0f;
            for (int64_t n = 0; n < N; n++) {
                h[n] = expf(delta * A[e * N + n]) * h[n] + (delta * B[t * ldbc + n]) * ut;
                acc += h[n] * C[t * ldbc + n];
            }
            if (D) acc += ut * D[e];
            if (z) acc *= silu_ref(z[t * ldz + e]);
            y[t * ldy + e] = acc;
        }
        if (state_out)
            for (int64_t n = 0; n < N; n++) state_out[e * N + n] = h[n];
    }
}

void mr_l2_normalize_f32_ref(float *x, int64_t n, int64_t d) {
    for (int64_t r = 0; r < n; r++) {
        double sq = 0.0;
        for (int64_t i = 0; i < d; i++) sq += (double)x[r * d + i] * x[r * d + i];
        const double norm = sqrt(sq);
        const float inv = (float)(1.0 / (norm > 1e-12 ? norm : 1e-12));
        for (int64_t i = 0; i < d; i++) x[r * d + i] *= inv;
    }
}
