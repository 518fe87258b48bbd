/* Packing the narrow weights and the dispatch of their products to the widest vector path. */
#include <string.h>

#include "base/mr_cpu.h"
#include "base/mr_parallel.h"
#include "gemm/mr_linear_packed.h"

int64_t mr_packed_weight_floats(int64_t N, int64_t K) {
    return (N + MR_PACK_GROUP - 1) / MR_PACK_GROUP * K * MR_PACK_GROUP;
}

void mr_pack_weight_f32(const float *w, int64_t N, int64_t K, float *packed) {
    memset(packed, 0, (size_t)mr_packed_weight_floats(N, K) * sizeof(float));
    for (int64_t n = 0; n < N; n++)
        for (int64_t k = 0; k < K; k++)
            packed[((n / MR_PACK_GROUP) * K + k) * MR_PACK_GROUP + n % MR_PACK_GROUP] = w[n * K + k];
}

int mr_linear_packed_preferred(void) { return mr_isa_best() >= MR_ISA_AVX2; }

void mr_linear_packed_f32(int64_t T, int64_t N, int64_t K, const float *a, int64_t lda, const float *packed,
                          float *out, int64_t ldo, int ith, int nth) {
    int64_t lo, hi;
    mr_split_range(T, 4, ith, nth, &lo, &hi);
    if (hi <= lo) return;
#if defined(__x86_64__) || defined(__i386__)
    switch (mr_isa_best()) {
    case MR_ISA_AVX512: mr_linear_packed_f32_avx512(N, K, a, lda, packed, out, ldo, lo, hi); return;
    case MR_ISA_AVX2: mr_linear_packed_f32_avx2(N, K, a, lda, packed, out, ldo, lo, hi); return;
    default: break;
    }
#endif
    /* not reached from the model, which runs these products through the BLAS without a vector path */
    mr_linear_packed_f32_ref(hi - lo, N, K, a + lo * lda, lda, packed, out + lo * ldo, ldo);
}
