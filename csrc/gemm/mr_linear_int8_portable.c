/* The int8 linear in plain C over the packed layout: one group of 16 outputs at a time, its
 * sixteen int32 sums in an array the compiler can keep in vector registers. */
#include "gemm/mr_linear_int8.h"

void mr_linear_int8_rows_portable(const mr_int8_linear *L, int64_t rows, const uint8_t *q, int64_t ldq,
                                  const float *sa, const float *bias, int accumulate, float *out, int64_t ldo) {
    const int64_t Kq = L->Kp / 4, groups = (L->N + MR_I8_GROUP - 1) / MR_I8_GROUP;
    for (int64_t t = 0; t < rows; t++) {
        const int8_t *x = (const int8_t *)(q + t * ldq);
        for (int64_t g = 0; g < groups; g++) {
            const int8_t *wg = L->packed + g * Kq * MR_I8_GROUP * 4;
            int32_t acc[MR_I8_GROUP] = {0};
            for (int64_t j = 0; j < Kq; j++) {
                const int8_t *wq = wg + j * MR_I8_GROUP * 4, *xq = x + 4 * j;
                for (int lane = 0; lane < MR_I8_GROUP; lane++)
                    acc[lane] += xq[0] * wq[4 * lane] + xq[1] * wq[4 * lane + 1] + xq[2] * wq[4 * lane + 2] +
                                 xq[3] * wq[4 * lane + 3];
            }
            const int64_t n0 = g * MR_I8_GROUP;
            for (int lane = 0; lane < MR_I8_GROUP && n0 + lane < L->N; lane++) {
                const int64_t n = n0 + lane;
                float *o = &out[t * ldo + n];
                *o = mr_int8_epilogue(acc[lane], L->scales[n], sa[t], bias, n, accumulate, o);
            }
        }
    }
}
