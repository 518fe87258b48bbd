/* Mamba-2's ops: the SSD scan's and the gated RMSNorm's dispatch (vector bodies in
 * mr_ssd_<isa>.c, the gated norm's portable path here).
 *
 * The scan runs in its recurrent form, vectorised over a head's channels with the state laid out
 * [N, P]: per token and head it costs N*P multiply-adds for the update and as many for the
 * output, against the chunked (SSD matrix) form's larger count of smaller products; on the CPU
 * the recurrent form measured faster (bench/results/mamba2.md). */
#include <math.h>
#include <string.h>

#include "base/mr_cpu.h"
#include "base/mr_parallel.h"
#include "ops/mr_ops.h"
#include "ops/mr_ssd_isa.h"

void mr_ssd_discretize(int64_t t0, int64_t t1, int64_t h, const float *dt, int64_t lddt, const float *dt_bias,
                       const float *A, float dt_min, float dt_max, float *delta, float *decay) {
    const float bias = dt_bias ? dt_bias[h] : 0.0f;
    for (int64_t t = t0; t < t1; t++) {
        float d = mr_softplus_f32(dt[t * lddt + h] + bias);
        d = d < dt_min ? dt_min : d;
        d = d > dt_max ? dt_max : d;
        delta[t - t0] = d;
        decay[t - t0] = expf(d * A[h]);
    }
}

void mr_ssd_state_start(int64_t h, int64_t NP, const float *state_in, float *state_out) {
    float *s = state_out + h * NP;
    if (!state_in) memset(s, 0, (size_t)NP * sizeof *s);
    else if (state_in != state_out) memcpy(s, state_in + h * NP, (size_t)NP * sizeof *s);
}

void mr_ssd_scan_f32(int64_t L, int64_t H, int64_t P, int64_t G, int64_t N, const float *x, int64_t ldx,
                     const float *dt, int64_t lddt, const float *dt_bias, const float *A, float dt_min,
                     float dt_max, const float *B, const float *C, int64_t ldbc, const float *D,
                     const float *state_in, float *state_out, float *y, int64_t ldy, int ith, int nth) {
    int64_t lo, hi;
    mr_split_range(H, 1, ith, nth, &lo, &hi);
    if (hi <= lo) return;
#if defined(__x86_64__) || defined(__i386__)
    const mr_isa isa = mr_isa_best();
    if (isa >= MR_ISA_AVX512 && P % 16 == 0) {
        mr_ssd_scan_f32_avx512(L, H, P, G, N, x, ldx, dt, lddt, dt_bias, A, dt_min, dt_max, B, C, ldbc, D, state_in,
                               state_out, y, ldy, lo, hi);
        return;
    }
    if (isa >= MR_ISA_AVX2 && P % 8 == 0) {
        mr_ssd_scan_f32_avx2(L, H, P, G, N, x, ldx, dt, lddt, dt_bias, A, dt_min, dt_max, B, C, ldbc, D, state_in,
                             state_out, y, ldy, lo, hi);
        return;
    }
#endif
    mr_ssd_scan_f32_portable(L, H, P, G, N, x, ldx, dt, lddt, dt_bias, A, dt_min, dt_max, B, C, ldbc, D, state_in,
                             state_out, y, ldy, lo, hi);
}

void mr_gated_rmsnorm_f32(int64_t T, int64_t E, int64_t group, const float *y, int64_t ldy, const float *z,
                          int64_t ldz, const float *w, float eps, float *out, int64_t ldo, int ith, int nth) {
    int64_t lo, hi;
    mr_split_range(T, 1, ith, nth, &lo, &hi);
#if defined(__x86_64__) || defined(__i386__)
    const mr_isa isa = mr_isa_best();
    if (isa >= MR_ISA_AVX512 && group % 16 == 0) {
        mr_gated_rmsnorm_rows_avx512(lo, hi, E, group, y, ldy, z, ldz, w, eps, out, ldo);
        return;
    }
    if (isa >= MR_ISA_AVX2 && group % 8 == 0) {
        mr_gated_rmsnorm_rows_avx2(lo, hi, E, group, y, ldy, z, ldz, w, eps, out, ldo);
        return;
    }
#endif
    for (int64_t t = lo; t < hi; t++) {
        const float *yr = y + t * ldy, *zr = z + t * ldz;
        float *dst = out + t * ldo;
        for (int64_t g0 = 0; g0 < E; g0 += group) {
            float sum = 0.0f;
            for (int64_t i = g0; i < g0 + group; i++) {
                const float v = yr[i] * (zr[i] / (1.0f + expf(-zr[i])));
                dst[i] = v;
                sum += v * v;
            }
            const float scale = 1.0f / sqrtf(sum / (float)group + eps);
            for (int64_t i = g0; i < g0 + group; i++) dst[i] = w[i] * (dst[i] * scale);
        }
    }
}
