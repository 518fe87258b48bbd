/* Internal: what the training kernels' per-ISA files (mr_ops_backward_<isa>.c) share with their
 * dispatcher (mr_ops_backward.c). Each of those files includes this header first. */
#ifndef MR_OPS_BACKWARD_ISA_H
#define MR_OPS_BACKWARD_ISA_H

/* exp's clamp is a select the vectoriser may only if-convert when it need not keep FP traps; and
 * -std=c11 turns off contracting a * b + c into one FMA, which the bodies' polynomials and
 * gradient sums are written for (it halves their arithmetic on AVX2 + FMA and AVX-512) */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math", "fp-contract=fast")
#elif defined(__clang__)
#pragma clang fp contract(fast)
#endif
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "base/mr_cpu.h"
#include "ops/mr_ops.h"
#include "ops/mr_ops_backward.h"
#include "ops/mr_ops_isa.h"

enum { BLK = MR_BACKWARD_BLOCK };
#define MR_BWD_PREFETCH 8       /* rows ahead that the row-strided loops ask for */
#define MR_BWD_CONV_FLOATS 2048 /* conv weights (K per channel) of a tile of channels, on the stack */

static inline int64_t chunks_of(int64_t L, int64_t chunk) { return (L + chunk - 1) / chunk; }

/* Channels [lo, hi) of mr_conv_silu_backward_f32 and mr_selective_scan_backward_f32, per path. */
#define MR_BWD_DECLARE(isa)                                                                                        \
    void mr_conv_silu_backward_f32_##isa(int64_t S, const int64_t *offsets, int64_t E, int64_t K, const float *x,  \
                                         int64_t ldx, const float *w, const float *bias, const float *gout,        \
                                         int64_t ldgo, float *gx, float *gw, float *gbias, int64_t lo, int64_t hi); \
    void mr_selective_scan_backward_f32_##isa(                                                                     \
        int64_t S, const int64_t *offsets, int64_t chunk, int64_t E, int64_t N, const float *u, int64_t ldu,        \
        const float *dt, int64_t lddt, const float *dt_bias, const float *A, const float *B, const float *C,        \
        int64_t ldbc, const float *D, const float *z, int64_t ldz, const float *boundaries, const float *gy,        \
        int64_t ldgy, float *gu, float *gdt, float *gdt_bias, float *gA, float *gD, float *gz, float *gB_part,      \
        float *gC_part, float *work, int64_t lo, int64_t hi);
MR_BWD_DECLARE(portable)
MR_BWD_DECLARE(avx2)
MR_BWD_DECLARE(avx512)
#undef MR_BWD_DECLARE

#endif
