/* Internal: the per-ISA variants behind the dispatching forward ops of mr_ops.h, one file per
 * level (mr_ops_portable.c, mr_ops_avx2.c, mr_ops_avx512.c; base/mr_cpu.h picks the level).
 * Each processes channels [lo, hi) of a segment; the dispatcher splits channels by thread. */
#ifndef MR_OPS_ISA_H
#define MR_OPS_ISA_H

#include <stdint.h>

#include "base/mr_cpu.h"

/* Channels a thread's share is aligned to, and the portable kernels' lane block. */
#define MR_CHANNEL_BLOCK 16

/* softplus(x) = max(x, 0) + log1p(t), t = exp(-|x|), in every vector path: log1p(t) = s P(s^2)
 * with s = t / (2 + t) in (0, 1/3], P the degree-4 minimax fit of 2 atanh(s) / s on s^2 in
 * [0, 1/9] (relative error 4e-9 before float rounding). */
#define MR_LOG1P_P4 0.28180235624313354f
#define MR_LOG1P_P3 0.27961716055870056f
#define MR_LOG1P_P2 0.40024682879447937f
#define MR_LOG1P_P1 0.6666632294654846f
#define MR_LOG1P_P0 2.0f

void mr_selective_scan_f32_portable(int64_t L, int64_t E, int64_t N, const float *u, int64_t ldu,
                                    const float *dt, int64_t lddt, const float *dt_bias, const float *A,
                                    const float *B, const float *C, int64_t ldbc, const float *D,
                                    const float *z, int64_t ldz, const float *state_in, float *state_out,
                                    float *y, int64_t ldy, int64_t lo, int64_t hi);
void mr_selective_scan_f32_avx2(int64_t L, int64_t E, int64_t N, const float *u, int64_t ldu,
                                const float *dt, int64_t lddt, const float *dt_bias, const float *A,
                                const float *B, const float *C, int64_t ldbc, const float *D, const float *z,
                                int64_t ldz, const float *state_in, float *state_out, float *y, int64_t ldy,
                                int64_t lo, int64_t hi);

void mr_conv_silu_f32_portable(int64_t L, int64_t E, int64_t K, const float *in, int64_t ldi, const float *w,
                               const float *bias, const float *state_in, float *state_out, float *out,
                               int64_t ldo, int64_t lo, int64_t hi);
void mr_conv_silu_f32_avx2(int64_t L, int64_t E, int64_t K, const float *in, int64_t ldi, const float *w,
                           const float *bias, const float *state_in, float *state_out, float *out,
                           int64_t ldo, int64_t lo, int64_t hi);

void mr_selective_scan_f32_avx512(int64_t L, int64_t E, int64_t N, const float *u, int64_t ldu,
                                  const float *dt, int64_t lddt, const float *dt_bias, const float *A,
                                  const float *B, const float *C, int64_t ldbc, const float *D, const float *z,
                                  int64_t ldz, const float *state_in, float *state_out, float *y, int64_t ldy,
                                  int64_t lo, int64_t hi);
void mr_conv_silu_f32_avx512(int64_t L, int64_t E, int64_t K, const float *in, int64_t ldi, const float *w,
                             const float *bias, const float *state_in, float *state_out, float *out,
                             int64_t ldo, int64_t lo, int64_t hi);

/* Vector math, exposed for the accuracy tests. */
void mr_exp_f32_avx2(const float *x, float *out, int64_t n);
void mr_softplus_f32_avx2(const float *x, float *out, int64_t n);
void mr_exp_f32_avx512(const float *x, float *out, int64_t n);
void mr_softplus_f32_avx512(const float *x, float *out, int64_t n);

#endif
