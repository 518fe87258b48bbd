/* Internal: the per-ISA variants behind mr_ssd_scan_f32 (mr_ssd.c dispatches), one file per level:
 * mr_ssd_portable.c, mr_ssd_avx2.c, mr_ssd_avx512.c. Each runs heads [h_lo, h_hi) of a segment. */
#ifndef MR_SSD_ISA_H
#define MR_SSD_ISA_H

#include <stdint.h>

#define MR_SSD_ARGS                                                                                            \
    int64_t L, int64_t H, int64_t P, int64_t G, int64_t N, const float *x, int64_t ldx, const float *dt,         \
        int64_t lddt, const float *dt_bias, const float *A, float dt_min, float dt_max, const float *B,          \
        const float *C, int64_t ldbc, const float *D, const float *state_in, float *state_out, float *y,         \
        int64_t ldy, int64_t h_lo, int64_t h_hi

/* Tokens whose delta and decay are computed together, and whose outputs a p-block accumulates
 * while a block of state rows stays in registers. */
#define MR_SSD_TOKEN_CHUNK 32
/* The largest total log decay of a chunk the vector paths run in scaled form (mr_ssd_body.h):
 * 1 / e^-30 = 1e13 keeps the scaled state far inside float range. */
#ifndef MR_SSD_SCALED_LOG_DECAY /* dev/cpu/ssd_scan builds with 0 too, to time the plain form */
#define MR_SSD_SCALED_LOG_DECAY 30.0f
#endif

void mr_ssd_scan_f32_portable(MR_SSD_ARGS);
void mr_ssd_scan_f32_avx2(MR_SSD_ARGS);
void mr_ssd_scan_f32_avx512(MR_SSD_ARGS);

/* The gated RMSNorm's vector paths, rows [lo, hi), for groups that are a multiple of the lanes. */
#define MR_GATED_NORM_ARGS                                                                                     \
    int64_t lo, int64_t hi, int64_t E, int64_t group, const float *y, int64_t ldy, const float *z, int64_t ldz, \
        const float *w, float eps, float *out, int64_t ldo
void mr_gated_rmsnorm_rows_avx2(MR_GATED_NORM_ARGS);
void mr_gated_rmsnorm_rows_avx512(MR_GATED_NORM_ARGS);

/* delta and exp(delta * A) of head h for tokens [t0, t1) into delta[], decay[] (shared by every
 * path so that they agree on the discretisation). */
void mr_ssd_discretize(int64_t t0, int64_t t1, int64_t h, const float *dt, int64_t lddt, const float *dt_bias,
                       const float *A, float dt_min, float dt_max, float *delta, float *decay);

/* Head h's state [N, P] at a segment's start: state_in's (zeros when NULL) in state_out. */
void mr_ssd_state_start(int64_t h, int64_t NP, const float *state_in, float *state_out);

#endif
