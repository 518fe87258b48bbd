/* The forward ops: the row-wise ones (gather, norms, the residual add) in plain C, and the
 * dispatch of the channel-parallel ones (conv, scan) to the widest path the CPU runs: each thread
 * takes its channel range, then the per-ISA kernel (mr_ops_<isa>.c) walks it. */
#include <math.h>
#include <string.h>

#include "base/mr_parallel.h"
#include "ops/mr_ops.h"
#include "ops/mr_ops_isa.h"

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
        if (w)
            for (i = 0; i < d; i++) dst[i] = w[i] * (row[i] * scale);
        else
            for (i = 0; i < d; i++) dst[i] = row[i] * scale;
    }
}

void mr_conv_silu_f32(int64_t L, int64_t E, int64_t K, const float *in, int64_t ldi,
                      const float *w, const float *bias, const float *state_in,
                      float *state_out, float *out, int64_t ldo, int ith, int nth) {
    int64_t lo, hi;
    mr_split_range(E, MR_CHANNEL_BLOCK, ith, nth, &lo, &hi);
#if defined(__x86_64__) || defined(__i386__)
    switch (mr_isa_best()) {
    case MR_ISA_AVX512:
        mr_conv_silu_f32_avx512(L, E, K, in, ldi, w, bias, state_in, state_out, out, ldo, lo, hi);
        return;
    case MR_ISA_AVX2:
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
    switch (mr_isa_best()) {
    case MR_ISA_AVX512:
        mr_selective_scan_f32_avx512(L, E, N, u, ldu, dt, lddt, dt_bias, A, B, C, ldbc, D, z, ldz, state_in,
                                     state_out, y, ldy, lo, hi);
        return;
    case MR_ISA_AVX2:
        mr_selective_scan_f32_avx2(L, E, N, u, ldu, dt, lddt, dt_bias, A, B, C, ldbc, D, z, ldz, state_in,
                                   state_out, y, ldy, lo, hi);
        return;
    default: break;
    }
#endif
    mr_selective_scan_f32_portable(L, E, N, u, ldu, dt, lddt, dt_bias, A, B, C, ldbc, D, z, ldz, state_in,
                                   state_out, y, ldy, lo, hi);
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
