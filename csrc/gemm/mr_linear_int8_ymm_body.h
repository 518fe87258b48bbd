/* Internal: the int8 linear on ymm registers, one body for AVX2 (vpmaddubsw + vpmaddwd) and for
 * vpdpbusd on ymm (AVX-VNNI's VEX form, AVX-512 VNNI's EVEX form). The includer defines:
 *   TGT                 the target attribute
 *   FN                  the function's name
 *   MAX_NR              rows per tile, at most 6 (a tile is MAX_NR rows x 16 outputs, two ymm per row)
 *   PREP(a)             a row's four broadcast bytes made ready for DOT (AVX2: |a|)
 *   DOT(acc, a, p, w)   acc += the 4-byte dot products of a (p = PREP(a)) and w, per 32-bit lane
 *   USE_COMP            1 when the activations are offset by 128 (the VNNI forms) */
#include <immintrin.h>
#include <string.h>

#include "gemm/mr_linear_int8.h"

#define INLINE static inline __attribute__((always_inline))
#define ROW_BLOCK 192

INLINE TGT void store_half(__m256i acc, const mr_int8_linear *L, int64_t n0, float sa, const float *bias,
                           int accumulate, float *o) {
    const int64_t valid = L->N - n0 < 8 ? L->N - n0 : 8;
    const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)valid), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    if (USE_COMP) acc = _mm256_sub_epi32(acc, _mm256_load_si256((const __m256i *)(L->comp + n0)));
    __m256 v = _mm256_cvtepi32_ps(acc);
    v = _mm256_mul_ps(v, _mm256_load_ps(L->scales + n0));
    v = _mm256_mul_ps(v, _mm256_set1_ps(sa));
    if (bias) v = _mm256_add_ps(v, _mm256_maskload_ps(bias + n0, mask));
    if (accumulate) v = _mm256_add_ps(_mm256_maskload_ps(o, mask), v);
    _mm256_maskstore_ps(o, mask, v);
}

/* Named accumulators (an array's stayed on the stack), two per row: the group's halves. */
#undef ROWS
#undef DECL_ROW
#undef STEP_ROW
#undef STORE_ROW
#define ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5)
#define DECL_ROW(r) __m256i c##r##0 = _mm256_setzero_si256(), c##r##1 = _mm256_setzero_si256();
#define STEP_ROW(r)                                   \
    if (NR > r) {                                     \
        int32_t four;                                 \
        memcpy(&four, q + r * ldq + 4 * j, 4);        \
        const __m256i a = _mm256_set1_epi32(four);    \
        const __m256i p = PREP(a);                    \
        DOT(c##r##0, a, p, w0);                       \
        DOT(c##r##1, a, p, w1);                       \
    }
#define STORE_ROW(r)                                                                  \
    if (NR > r) {                                                                     \
        float *o = out + r * ldo + n0;                                                \
        store_half(c##r##0, L, n0, sa[r], bias, accumulate, o);                       \
        if (n0 + 8 < L->N) store_half(c##r##1, L, n0 + 8, sa[r], bias, accumulate, o + 8); \
    }

INLINE TGT void tile(const mr_int8_linear *L, const int NR, int64_t g, const uint8_t *q, int64_t ldq,
                     const float *sa, const float *bias, int accumulate, float *out, int64_t ldo) {
    const int64_t Kq = L->Kp / 4, n0 = g * MR_I8_GROUP;
    const int8_t *w = L->packed + g * Kq * 64;
    ROWS(DECL_ROW)
    for (int64_t j = 0; j < Kq; j++) {
        const __m256i w0 = _mm256_load_si256((const __m256i *)(w + j * 64));
        const __m256i w1 = _mm256_load_si256((const __m256i *)(w + j * 64 + 32));
        ROWS(STEP_ROW)
    }
    ROWS(STORE_ROW)
}

TGT void FN(const mr_int8_linear *L, int64_t rows, const uint8_t *q, int64_t ldq, const float *sa, const float *bias,
            int accumulate, float *out, int64_t ldo) {
    const int64_t groups = (L->N + MR_I8_GROUP - 1) / MR_I8_GROUP;
    for (int64_t r0 = 0; r0 < rows; r0 += ROW_BLOCK) {
        const int64_t r1 = r0 + ROW_BLOCK < rows ? r0 + ROW_BLOCK : rows;
        for (int64_t g = 0; g < groups; g++)
            for (int64_t r = r0; r < r1; r += MAX_NR) {
                const int nr = (int)(r1 - r < MAX_NR ? r1 - r : MAX_NR);
                const uint8_t *qr = q + r * ldq;
                float *o = out + r * ldo;
                switch (nr) {
#if MAX_NR >= 6
                case 6: tile(L, 6, g, qr, ldq, sa + r, bias, accumulate, o, ldo); break;
                case 5: tile(L, 5, g, qr, ldq, sa + r, bias, accumulate, o, ldo); break;
#endif
                case 4: tile(L, 4, g, qr, ldq, sa + r, bias, accumulate, o, ldo); break;
                case 3: tile(L, 3, g, qr, ldq, sa + r, bias, accumulate, o, ldo); break;
                case 2: tile(L, 2, g, qr, ldq, sa + r, bias, accumulate, o, ldo); break;
                default: tile(L, 1, g, qr, ldq, sa + r, bias, accumulate, o, ldo); break;
                }
            }
    }
}
