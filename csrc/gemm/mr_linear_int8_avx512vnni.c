/* The int8 linear on AVX-512 VNNI: vpdpbusd on zmm, a tile of 6 rows x MAX_NG groups of 16
 * outputs, each step loading MAX_NG weight vectors and broadcasting 4 bytes of each row. Column
 * blocks outside, rows inside: a block's weights (16 * MAX_NG * K bytes) stay in L1 / L2 while the
 * rows (at most ROW_BLOCK of them) pass over them. */
#include <string.h>

#include "gemm/mr_linear_int8.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#define TGT __attribute__((target("avx512f,avx512bw,avx512vnni")))
#define INLINE static inline __attribute__((always_inline))

/* The tile is written for up to 6 rows x 4 groups; 2 groups measured fastest on an AVX-512 VNNI
 * EPYC (the block's weights stay in L1 for K = 768). */
enum { MAX_NR = 6, MAX_NG = 2, ROW_BLOCK = 192 };

/* One output vector: the exact sum, then the epilogue every path shares (mr_int8_epilogue). */
INLINE TGT void store_out(__m512i acc, const mr_int8_linear *L, int64_t n0, float sa, const float *bias,
                          int accumulate, float *o) {
    const int64_t valid = L->N - n0 < MR_I8_GROUP ? L->N - n0 : MR_I8_GROUP;
    const __mmask16 mask = (__mmask16)((1u << valid) - 1u);
    __m512 v = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc, _mm512_load_si512((const void *)(L->comp + n0))));
    v = _mm512_mul_ps(v, _mm512_load_ps(L->scales + n0));
    v = _mm512_mul_ps(v, _mm512_set1_ps(sa));
    if (bias) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, bias + n0));
    if (accumulate) v = _mm512_add_ps(_mm512_maskz_loadu_ps(mask, o), v);
    _mm512_mask_storeu_ps(o, mask, v);
}

/* The accumulators are named variables, not an array (GCC kept an array's elements on the stack),
 * and vpdpbusd is written in place: with the intrinsic GCC copied every accumulator to another
 * register and back each step, as many moves as products. */
#define DPBUSD(acc, a, w) __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(w))
#define ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5)
#define DECL_ROW(r) __m512i c##r##0 = zero, c##r##1 = zero, c##r##2 = zero, c##r##3 = zero;
#define STEP_ROW(r)                                                                  \
    if (NR > r) {                                                                    \
        int32_t four;                                                                \
        memcpy(&four, q + r * ldq + 4 * j, 4);                                       \
        const __m512i a = _mm512_set1_epi32(four);                                   \
        DPBUSD(c##r##0, a, w0);                               \
        if (NG > 1) DPBUSD(c##r##1, a, w1);                   \
        if (NG > 2) DPBUSD(c##r##2, a, w2);                   \
        if (NG > 3) DPBUSD(c##r##3, a, w3);                   \
    }
#define STORE_ROW(r)                                                                                        \
    if (NR > r) {                                                                                           \
        float *o = out + r * ldo + g0 * MR_I8_GROUP;                                                        \
        store_out(c##r##0, L, g0 * MR_I8_GROUP, sa[r], bias, accumulate, o);                                \
        if (NG > 1) store_out(c##r##1, L, (g0 + 1) * MR_I8_GROUP, sa[r], bias, accumulate, o + MR_I8_GROUP); \
        if (NG > 2) store_out(c##r##2, L, (g0 + 2) * MR_I8_GROUP, sa[r], bias, accumulate, o + 2 * MR_I8_GROUP); \
        if (NG > 3) store_out(c##r##3, L, (g0 + 3) * MR_I8_GROUP, sa[r], bias, accumulate, o + 3 * MR_I8_GROUP); \
    }

INLINE TGT void tile(const mr_int8_linear *L, const int NR, const int NG, int64_t g0, const uint8_t *q, int64_t ldq,
                     const float *sa, const float *bias, int accumulate, float *out, int64_t ldo) {
    const int64_t Kq = L->Kp / 4;
    const int8_t *w = L->packed + g0 * Kq * 64;
    const __m512i zero = _mm512_setzero_si512();
    ROWS(DECL_ROW)
    for (int64_t j = 0; j < Kq; j++) {
        const __m512i w0 = _mm512_load_si512((const void *)(w + j * 64));
        const __m512i w1 = NG > 1 ? _mm512_load_si512((const void *)(w + (Kq + j) * 64)) : zero;
        const __m512i w2 = NG > 2 ? _mm512_load_si512((const void *)(w + (2 * Kq + j) * 64)) : zero;
        const __m512i w3 = NG > 3 ? _mm512_load_si512((const void *)(w + (3 * Kq + j) * 64)) : zero;
        ROWS(STEP_ROW)
    }
    ROWS(STORE_ROW)
}

#define CASE(nr, ng) \
    case (nr) * 8 + (ng): tile(L, nr, ng, g0, q + r * ldq, ldq, sa + r, bias, accumulate, out + r * ldo, ldo); break;

TGT void mr_linear_int8_rows_avx512vnni(const mr_int8_linear *L, int64_t rows, const uint8_t *q, int64_t ldq,
                                        const float *sa, const float *bias, int accumulate, float *out,
                                        int64_t ldo) {
    const int64_t groups = (L->N + MR_I8_GROUP - 1) / MR_I8_GROUP;
    for (int64_t r0 = 0; r0 < rows; r0 += ROW_BLOCK) {
        const int64_t r1 = r0 + ROW_BLOCK < rows ? r0 + ROW_BLOCK : rows;
        for (int64_t g0 = 0; g0 < groups; g0 += MAX_NG) {
            const int ng = (int)(groups - g0 < MAX_NG ? groups - g0 : MAX_NG);
            for (int64_t r = r0; r < r1; r += MAX_NR) {
                const int nr = (int)(r1 - r < MAX_NR ? r1 - r : MAX_NR);
                switch (nr * 8 + ng) {
                    CASE(1, 1) CASE(1, 2) CASE(1, 3) CASE(1, 4)
                    CASE(2, 1) CASE(2, 2) CASE(2, 3) CASE(2, 4)
                    CASE(3, 1) CASE(3, 2) CASE(3, 3) CASE(3, 4)
                    CASE(4, 1) CASE(4, 2) CASE(4, 3) CASE(4, 4)
                    CASE(5, 1) CASE(5, 2) CASE(5, 3) CASE(5, 4)
                    CASE(6, 1) CASE(6, 2) CASE(6, 3) CASE(6, 4)
                default: break;
                }
            }
        }
    }
}
#endif
