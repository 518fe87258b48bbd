/* Fast CPU kernels (portable C). Channels are processed in blocks so the inner loops run
 * over contiguous channels, which the compiler vectorises; threads split the channels. */
#include <math.h>
#include <string.h>

#include <stdlib.h>

#include "mr_ops.h"
#include "mr_ops_simd.h"

#define MR_CHANNEL_BLOCK 16

static inline float silu(float x) { return x / (1.0f + expf(-x)); }

void mr_split_range(int64_t n, int64_t align, int ith, int nth, int64_t *lo, int64_t *hi) {
    if (nth <= 1) {
        *lo = 0;
        *hi = n;
        return;
    }
    int64_t blocks = (n + align - 1) / align;
    int64_t per = blocks / nth, extra = blocks % nth;
    int64_t b0 = ith * per + (ith < extra ? ith : extra);
    int64_t b1 = b0 + per + (ith < extra ? 1 : 0);
    *lo = b0 * align < n ? b0 * align : n;
    *hi = b1 * align < n ? b1 * align : n;
}

void mr_embed_gather_f32(const float *table, int64_t d, const int32_t *tokens, int64_t T,
                         float *out, int ith, int nth) {
    int64_t lo, hi;
    mr_split_range(T, 1, ith, nth, &lo, &hi);
    for (int64_t t = lo; t < hi; t++)
        memcpy(out + t * d, table + (int64_t)tokens[t] * d, (size_t)d * sizeof(float));
}

void mr_rmsnorm_f32(const float *x, int64_t ldx, const float *w, int64_t T, int64_t d, float eps,
                    float *out, int64_t ldo, int ith, int nth) {
    int64_t lo, hi;
    mr_split_range(T, 1, ith, nth, &lo, &hi);
    for (int64_t t = lo; t < hi; t++) {
        const float *row = x + t * ldx;
        float *dst = out + t * ldo;
        float partial[8] = {0};
        int64_t i = 0;
        for (; i + 8 <= d; i += 8)
            for (int j = 0; j < 8; j++) partial[j] += row[i + j] * row[i + j];
        float sum = 0.0f;
        for (int j = 0; j < 8; j++) sum += partial[j];
        for (; i < d; i++) sum += row[i] * row[i];
        float scale = 1.0f / sqrtf(sum / (float)d + eps);
        for (i = 0; i < d; i++) dst[i] = w[i] * (row[i] * scale);
    }
}

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

mr_simd_level mr_cpu_simd_level(void) {
#if defined(__x86_64__) || defined(__i386__)
    const char *limit = getenv("MAMBARET_SIMD");
    mr_simd_level most = MR_SIMD_AVX512;
    if (limit && strcmp(limit, "portable") == 0) most = MR_SIMD_PORTABLE;
    else if (limit && strcmp(limit, "avx2") == 0) most = MR_SIMD_AVX2;
    if (most >= MR_SIMD_AVX512 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq")) return MR_SIMD_AVX512;
    if (most >= MR_SIMD_AVX2 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return MR_SIMD_AVX2;
#endif
    return MR_SIMD_PORTABLE;
}

void mr_conv_silu_f32(int64_t L, int64_t E, int64_t K, const float *in, int64_t ldi,
                      const float *w, const float *bias, const float *state_in,
                      float *state_out, float *out, int64_t ldo, int ith, int nth) {
    int64_t lo, hi;
    mr_split_range(E, MR_CHANNEL_BLOCK, ith, nth, &lo, &hi);
#if defined(__x86_64__) || defined(__i386__)
    switch (mr_cpu_simd_level()) {
    case MR_SIMD_AVX512:
        mr_conv_silu_f32_avx512(L, E, K, in, ldi, w, bias, state_in, state_out, out, ldo, lo, hi);
        return;
    case MR_SIMD_AVX2:
        mr_conv_silu_f32_avx2(L, E, K, in, ldi, w, bias, state_in, state_out, out, ldo, lo, hi);
        return;
    default: break;
    }
#endif
    mr_conv_silu_f32_portable(L, E, K, in, ldi, w, bias, state_in, state_out, out, ldo, lo, hi);
}

void mr_selective_scan_f32(int64_t L, int64_t E, int64_t N, const float *u, int64_t ldu,
                           const float *dt, int64_t lddt, const float *dt_bias, const float *A,
                           const float *B, const float *C, int64_t ldbc, const float *D,
                           const float *z, int64_t ldz, const float *state_in,
                           float *state_out, float *y, int64_t ldy, int ith, int nth) {
    int64_t lo, hi;
    mr_split_range(E, MR_CHANNEL_BLOCK, ith, nth, &lo, &hi);
#if defined(__x86_64__) || defined(__i386__)
    switch (mr_cpu_simd_level()) {
    case MR_SIMD_AVX512:
        mr_selective_scan_f32_avx512(L, E, N, u, ldu, dt, lddt, dt_bias, A, B, C, ldbc, D, z, ldz, state_in,
                                     state_out, y, ldy, lo, hi);
        return;
    case MR_SIMD_AVX2:
        mr_selective_scan_f32_avx2(L, E, N, u, ldu, dt, lddt, dt_bias, A, B, C, ldbc, D, z, ldz, state_in,
                                   state_out, y, ldy, lo, hi);
        return;
    default: break;
    }
#endif
    mr_selective_scan_f32_portable(L, E, N, u, ldu, dt, lddt, dt_bias, A, B, C, ldbc, D, z, ldz, state_in,
                                   state_out, y, ldy, lo, hi);
}

int64_t mr_packed_weight_floats(int64_t N, int64_t K) {
    return (N + MR_PACK_GROUP - 1) / MR_PACK_GROUP * K * MR_PACK_GROUP;
}

void mr_pack_weight_f32(const float *w, int64_t N, int64_t K, float *packed) {
    memset(packed, 0, (size_t)mr_packed_weight_floats(N, K) * sizeof(float));
    for (int64_t n = 0; n < N; n++)
        for (int64_t k = 0; k < K; k++)
            packed[((n / MR_PACK_GROUP) * K + k) * MR_PACK_GROUP + n % MR_PACK_GROUP] = w[n * K + k];
}

int mr_linear_packed_preferred(void) { return mr_cpu_simd_level() >= MR_SIMD_AVX2; }

void mr_linear_packed_f32(int64_t T, int64_t N, int64_t K, const float *a, int64_t lda, const float *packed,
                          float *out, int64_t ldo, int ith, int nth) {
    int64_t lo, hi;
    mr_split_range(T, 4, ith, nth, &lo, &hi);
    if (hi <= lo) return;
#if defined(__x86_64__) || defined(__i386__)
    switch (mr_cpu_simd_level()) {
    case MR_SIMD_AVX512: mr_linear_packed_f32_avx512(N, K, a, lda, packed, out, ldo, lo, hi); return;
    case MR_SIMD_AVX2: mr_linear_packed_f32_avx2(N, K, a, lda, packed, out, ldo, lo, hi); return;
    default: break;
    }
#endif
    /* not reached from the model, which runs these products through the BLAS without a vector path */
    mr_linear_packed_f32_ref(hi - lo, N, K, a + lo * lda, lda, packed, out + lo * ldo, ldo);
}

void mr_l2_normalize_f32(float *x, int64_t n, int64_t d, int ith, int nth) {
    int64_t lo, hi;
    mr_split_range(n, 1, ith, nth, &lo, &hi);
    for (int64_t r = lo; r < hi; r++) {
        float *row = x + r * d;
        float part[8] = {0}; /* eight running sums: vectorised, and closer to the exact norm */
        int64_t i = 0;
        for (; i + 8 <= d; i += 8)
            for (int j = 0; j < 8; j++) part[j] += row[i + j] * row[i + j];
        for (; i < d; i++) part[0] += row[i] * row[i];
        const float norm = sqrtf(((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7])));
        const float inv = 1.0f / (norm > 1e-12f ? norm : 1e-12f);
        for (i = 0; i < d; i++) row[i] *= inv;
    }
}

void mr_add_f32(float *out, const float *x, int64_t n, int ith, int nth) {
    int64_t lo, hi;
    mr_split_range(n, 64, ith, nth, &lo, &hi);
    for (int64_t i = lo; i < hi; i++) out[i] += x[i];
}
