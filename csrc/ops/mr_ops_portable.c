/* The forward ops' portable path: plain C that the compiler vectorises. Channels are processed
 * in blocks so the inner loops run over contiguous channels; the dispatcher (mr_ops.c) gives each
 * thread its channel range [lo, hi). */
#include <math.h>
#include <string.h>

#include "ops/mr_ops.h"
#include "ops/mr_ops_isa.h"

static inline float silu(float x) { return x / (1.0f + expf(-x)); }

void mr_conv_silu_f32_portable(int64_t L, int64_t E, int64_t K, const float *in, int64_t ldi,
                               const float *w, const float *bias, const float *state_in,
                               float *state_out, float *out, int64_t ldo, int64_t lo, int64_t hi) {
    enum { BLK = MR_CHANNEL_BLOCK };
    const int64_t H = K - 1;
    for (int64_t e0 = lo; e0 < hi; e0 += BLK) {
        const int64_t nb = hi - e0 < BLK ? hi - e0 : BLK;
        /* window[k]: the input k taps back from the newest, for this block's channels */
        float window[MR_MAX_CONV_KERNEL][BLK];
        float wt[MR_MAX_CONV_KERNEL][BLK], b[BLK];
        for (int64_t j = 0; j < BLK; j++) {
            b[j] = (bias && j < nb) ? bias[e0 + j] : 0.0f;
            for (int64_t k = 0; k < K; k++) wt[k][j] = j < nb ? w[(e0 + j) * K + k] : 0.0f;
            for (int64_t k = 0; k < H; k++)
                window[k][j] = (state_in && j < nb) ? state_in[k * E + e0 + j] : 0.0f;
        }
        for (int64_t t = 0; t < L; t++) {
            const float *x = in + t * ldi + e0;
            float xt[BLK], acc[BLK];
            for (int64_t j = 0; j < BLK; j++) {
                xt[j] = j < nb ? x[j] : 0.0f;
                acc[j] = b[j] + wt[H][j] * xt[j];
            }
            for (int64_t k = 0; k < H; k++)
                for (int64_t j = 0; j < BLK; j++) acc[j] += wt[k][j] * window[k][j];
            for (int64_t k = 0; k + 1 < H; k++)
                for (int64_t j = 0; j < BLK; j++) window[k][j] = window[k + 1][j];
            if (H > 0)
                for (int64_t j = 0; j < BLK; j++) window[H - 1][j] = xt[j];
            float *dst = out + t * ldo + e0;
            for (int64_t j = 0; j < nb; j++) dst[j] = silu(acc[j]);
        }
        if (state_out)
            for (int64_t k = 0; k < H; k++)
                memcpy(state_out + k * E + e0, window[k], (size_t)nb * sizeof(float));
    }
}

void mr_selective_scan_f32_portable(int64_t L, int64_t E, int64_t N, const float *u, int64_t ldu,
                                    const float *dt, int64_t lddt, const float *dt_bias, const float *A,
                                    const float *B, const float *C, int64_t ldbc, const float *D,
                                    const float *z, int64_t ldz, const float *state_in,
                                    float *state_out, float *y, int64_t ldy, int64_t lo, int64_t hi) {
    enum { BLK = MR_CHANNEL_BLOCK };
    for (int64_t e0 = lo; e0 < hi; e0 += BLK) {
        const int64_t nb = hi - e0 < BLK ? hi - e0 : BLK;
        /* state and A transposed to [N][BLK] so the lane loops are contiguous */
        float h[MR_MAX_STATE_SIZE][BLK], a[MR_MAX_STATE_SIZE][BLK];
        for (int64_t n = 0; n < N; n++)
            for (int64_t j = 0; j < BLK; j++) {
                h[n][j] = (state_in && j < nb) ? state_in[(e0 + j) * N + n] : 0.0f;
                a[n][j] = j < nb ? A[(e0 + j) * N + n] : 0.0f;
            }
        float bias[BLK], dskip[BLK];
        for (int64_t j = 0; j < BLK; j++) {
            bias[j] = (dt_bias && j < nb) ? dt_bias[e0 + j] : 0.0f;
            dskip[j] = (D && j < nb) ? D[e0 + j] : 0.0f;
        }
        for (int64_t t = 0; t < L; t++) {
            float ut[BLK], delta[BLK], acc[BLK];
            const float *urow = u + t * ldu + e0, *dtrow = dt + t * lddt + e0;
            for (int64_t j = 0; j < BLK; j++) {
                ut[j] = j < nb ? urow[j] : 0.0f;
                delta[j] = mr_softplus_f32((j < nb ? dtrow[j] : 0.0f) + bias[j]);
                acc[j] = 0.0f;
            }
            const float *brow = B + t * ldbc, *crow = C + t * ldbc;
            for (int64_t n = 0; n < N; n++) {
                const float bn = brow[n], cn = crow[n];
                for (int64_t j = 0; j < BLK; j++) {
                    h[n][j] = expf(delta[j] * a[n][j]) * h[n][j] + (delta[j] * bn) * ut[j];
                    acc[j] += h[n][j] * cn;
                }
            }
            float *yrow = y + t * ldy + e0;
            const float *zrow = z ? z + t * ldz + e0 : NULL;
            for (int64_t j = 0; j < nb; j++) {
                float out = acc[j] + dskip[j] * ut[j];
                yrow[j] = zrow ? out * silu(zrow[j]) : out;
            }
        }
        if (state_out)
            for (int64_t n = 0; n < N; n++)
                for (int64_t j = 0; j < nb; j++) state_out[(e0 + j) * N + n] = h[n][j];
    }
}
