/* The SSD scan's portable path: plain C over blocks of a head's channels, which the compiler
 * vectorises; the dispatcher (mr_ssd.c) gives each thread its heads [h_lo, h_hi). */

#include "ops/mr_ops.h"
#include "ops/mr_ssd_isa.h"

void mr_ssd_scan_f32_portable(MR_SSD_ARGS) {
    enum { BLK = 16, TC = MR_SSD_TOKEN_CHUNK };
    const int64_t heads_per_group = H / G;
    for (int64_t h = h_lo; h < h_hi; h++) {
        const int64_t g = h / heads_per_group;
        float *s = state_out + h * N * P;
        mr_ssd_state_start(h, N * P, state_in, state_out);
        for (int64_t t0 = 0; t0 < L; t0 += TC) {
            const int64_t t1 = t0 + TC < L ? t0 + TC : L;
            float delta[TC], decay[TC];
            mr_ssd_discretize(t0, t1, h, dt, lddt, dt_bias, A, dt_min, dt_max, delta, decay);
            for (int64_t t = t0; t < t1; t++) {
                const float *b = B + t * ldbc + g * N, *c = C + t * ldbc + g * N;
                const float a = decay[t - t0], dl = delta[t - t0], skip = D ? D[h] : 0.0f;
                for (int64_t p0 = 0; p0 < P; p0 += BLK) {
                    const int64_t nb = P - p0 < BLK ? P - p0 : BLK;
                    float xr[BLK], dx[BLK], acc[BLK] = {0};
                    for (int64_t j = 0; j < nb; j++) {
                        xr[j] = x[t * ldx + h * P + p0 + j];
                        dx[j] = dl * xr[j];
                    }
                    for (int64_t n = 0; n < N; n++) {
                        float *row = s + n * P + p0;
                        for (int64_t j = 0; j < nb; j++) {
                            row[j] = row[j] * a + b[n] * dx[j];
                            acc[j] += c[n] * row[j];
                        }
                    }
                    for (int64_t j = 0; j < nb; j++) y[t * ldy + h * P + p0 + j] = acc[j] + skip * xr[j];
                }
            }
        }
    }
}
