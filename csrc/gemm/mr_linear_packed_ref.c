/* The packed linear's reference: what mr_linear_packed_<isa>.c must compute. */
#include "gemm/mr_linear_packed.h"

void mr_linear_packed_f32_ref(int64_t T, int64_t N, int64_t K, const float *a, int64_t lda,
                              const float *packed, float *out, int64_t ldo) {
    for (int64_t t = 0; t < T; t++)
        for (int64_t n = 0; n < N; n++) {
            const float *column = packed + (n / MR_PACK_GROUP) * K * MR_PACK_GROUP + n % MR_PACK_GROUP;
            float acc = 0.0f;
            for (int64_t k = 0; k < K; k++) acc += a[t * lda + k] * column[k * MR_PACK_GROUP];
            out[t * ldo + n] = acc;
        }
}
