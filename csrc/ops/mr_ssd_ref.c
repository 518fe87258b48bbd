/* Reference twins of Mamba-2's ops (mr_ops.h): the formulas as loops, for the tests. */
#include <math.h>
#include <stdlib.h>

#include "ops/mr_ops.h"

void mr_ssd_scan_f32_ref(int64_t L, int64_t H, int64_t P, int64_t G, int64_t N, const float *x, int64_t ldx,
                         const float *dt, int64_t lddt, const float *dt_bias, const float *A, float dt_min,
                         float dt_max, const float *B, const float *C, int64_t ldbc, const float *D,
                         const float *state_in, float *state_out, float *y, int64_t ldy) {
    const int64_t heads_per_group = H / G;
    for (int64_t h = 0; h < H; h++) {
        const int64_t g = h / heads_per_group;
        float *s = state_out + h * N * P;
        for (int64_t i = 0; i < N * P; i++) s[i] = state_in ? state_in[h * N * P + i] : 0.0f;
        for (int64_t t = 0; t < L; t++) {
            float delta = mr_softplus_f32(dt[t * lddt + h] + (dt_bias ? dt_bias[h] : 0.0f));
            delta = fminf(fmaxf(delta, dt_min), dt_max);
            const float decay = expf(delta * A[h]);
            const float *b = B + t * ldbc + g * N, *c = C + t * ldbc + g * N;
            for (int64_t p = 0; p < P; p++) {
                const float xv = x[t * ldx + h * P + p];
                float acc = 0.0f;
                for (int64_t n = 0; n < N; n++) {
                    s[n * P + p] = s[n * P + p] * decay + b[n] * (delta * xv);
                    acc += c[n] * s[n * P + p];
                }
                y[t * ldy + h * P + p] = acc + (D ? D[h] * xv : 0.0f);
            }
        }
    }
}

void mr_gated_rmsnorm_f32_ref(int64_t T, int64_t E, int64_t group, const float *y, int64_t ldy, const float *z,
                              int64_t ldz, const float *w, float eps, float *out, int64_t ldo) {
    float *v = malloc((size_t)group * sizeof *v);
    if (!v) return;
    for (int64_t t = 0; t < T; t++)
        for (int64_t g0 = 0; g0 < E; g0 += group) {
            float sum = 0.0f;
            for (int64_t i = 0; i < group; i++) {
                const float zi = z[t * ldz + g0 + i];
                v[i] = y[t * ldy + g0 + i] * zi / (1.0f + expf(-zi));
                sum += v[i] * v[i];
            }
            const float scale = 1.0f / sqrtf(sum / (float)group + eps);
            for (int64_t i = 0; i < group; i++) out[t * ldo + g0 + i] = w[g0 + i] * (v[i] * scale);
        }
    free(v);
}
