/* The code kernels for AVX-512: VPOPCNTDQ counts eight 64-bit words per instruction; int8 products
 * with VNNI (vpdpbusd: 64 byte products a instruction, summed in fours into 16 int32 lanes), each
 * function with the target attribute of its own features. */
#include "search/mr_code_kernels_isa.h"

#ifdef MR_X86
#include <immintrin.h>
#define AVX512 __attribute__((target("avx512f,avx512vpopcntdq,popcnt")))

AVX512 void mr_hamming_rows_avx512(const uint8_t *query, const uint8_t *rows, int64_t n, int64_t width,
                                   float *out) {
    const float bits = (float)(8 * width);
    const int64_t vector_bytes = width & ~(int64_t)63;
    for (int64_t j = 0; j < n; j++) {
        const uint8_t *row = rows + j * width;
        __m512i sums = _mm512_setzero_si512();
        for (int64_t i = 0; i < vector_bytes; i += 64) {
            __m512i x = _mm512_xor_si512(_mm512_loadu_si512((const void *)(query + i)),
                                         _mm512_loadu_si512((const void *)(row + i)));
            sums = _mm512_add_epi64(sums, _mm512_popcnt_epi64(x));
        }
        int64_t count = _mm512_reduce_add_epi64(sums);
        for (int64_t i = vector_bytes; i + 8 <= width; i += 8)
            count += _mm_popcnt_u64(load_u64(query + i) ^ load_u64(row + i));
        for (int64_t i = width & ~(int64_t)7; i < width; i++) count += _mm_popcnt_u32((unsigned)(query[i] ^ row[i]));
        out[j] = bits - 2.0f * (float)count;
    }
}

#define VNNI __attribute__((target("avx2,avx512f,avx512bw,avx512vnni")))

/* vpdpbusd multiplies unsigned by signed bytes: a row byte r goes in as r + 128 (r ^ 0x80) against
 * the signed query, and 128 * sum(query) comes off after. The int32 lanes may wrap on the way for
 * very wide codes; the final sum is exact because the true product fits (the driver's width bound)
 * and the arithmetic is modulo 2^32. The sums are added in place (GCC copied intrinsic ones). */
#define DPBUSD(acc, u, s) __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(u), "v"(s))

static inline VNNI int32_t query_offset(const int8_t *query, int64_t width) {
    uint32_t sum = 0;
    for (int64_t i = 0; i < width; i++) sum += (uint32_t)(int32_t)query[i];
    return (int32_t)(sum * 128u);
}

/* Lanes past the width load as zero: in the query that zeroes their products. */
static inline VNNI __mmask64 tail_mask(int64_t width) {
    const int64_t rest = width & 63;
    return rest ? (__mmask64)((1ull << rest) - 1) : 0;
}

static inline VNNI __m512i row_chunk(const int8_t *row, int64_t i, __mmask64 mask, int full) {
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    const __m512i v = full ? _mm512_loadu_si512((const void *)(row + i)) : _mm512_maskz_loadu_epi8(mask, row + i);
    return _mm512_xor_si512(v, flip);
}

/* The four rows' sums (one accumulator each) less the query's offset, as floats into out[0..3]:
 * one fold and two horizontal adds for all four instead of a full reduction each. */
static inline VNNI void finish4(__m512i a, __m512i b, __m512i c, __m512i d, int32_t offset, float *out) {
#define FOLD(x) _mm256_add_epi32(_mm512_castsi512_si256(x), _mm512_extracti64x4_epi64(x, 1))
    const __m256i ab = _mm256_hadd_epi32(FOLD(a), FOLD(b)), cd = _mm256_hadd_epi32(FOLD(c), FOLD(d));
#undef FOLD
    const __m256i abcd = _mm256_hadd_epi32(ab, cd);
    const __m128i sums = _mm_add_epi32(_mm256_castsi256_si128(abcd), _mm256_extracti128_si256(abcd, 1));
    _mm_storeu_ps(out, _mm_cvtepi32_ps(_mm_sub_epi32(sums, _mm_set1_epi32(offset))));
}

static inline VNNI float finish(__m512i acc, int32_t offset) {
    return (float)(int32_t)((uint32_t)_mm512_reduce_add_epi32(acc) - (uint32_t)offset);
}

/* NQ (1, 2 or 4) queries against four rows at a time: each row chunk is loaded and flipped once for
 * all of them; 4 x NQ sums in registers. */
#define ROWS4(NQ)                                                                                      \
    for (; j + 4 <= n; j += 4) {                                                                       \
        const int8_t *r0 = rows + j * width, *r1 = r0 + width, *r2 = r1 + width, *r3 = r2 + width;     \
        const __m512i z = _mm512_setzero_si512();                                                      \
        __m512i a0 = z, a1 = z, a2 = z, a3 = z, b0 = z, b1 = z, b2 = z, b3 = z;                        \
        __m512i c0 = z, c1 = z, c2 = z, c3 = z, d0 = z, d1 = z, d2 = z, d3 = z;                        \
        for (int64_t i = 0; i < full + (mask ? 64 : 0); i += 64) {                                     \
            const int whole = i < full;                                                                \
            const __m512i qa = whole ? _mm512_loadu_si512((const void *)(qs[0] + i)) : tails[0];       \
            const __m512i qb = NQ > 1 ? (whole ? _mm512_loadu_si512((const void *)(qs[1] + i)) : tails[1]) : z; \
            const __m512i qc = NQ > 2 ? (whole ? _mm512_loadu_si512((const void *)(qs[2] + i)) : tails[2]) : z; \
            const __m512i qd = NQ > 2 ? (whole ? _mm512_loadu_si512((const void *)(qs[3] + i)) : tails[3]) : z; \
            __m512i v;                                                                                 \
            ONE_ROW(r0, a0, b0, c0, d0);                                                               \
            ONE_ROW(r1, a1, b1, c1, d1);                                                               \
            ONE_ROW(r2, a2, b2, c2, d2);                                                               \
            ONE_ROW(r3, a3, b3, c3, d3);                                                               \
        }                                                                                              \
        finish4(a0, a1, a2, a3, offsets[0], outs[0] + j);                                              \
        if (NQ > 1) finish4(b0, b1, b2, b3, offsets[1], outs[1] + j);                                  \
        if (NQ > 2) finish4(c0, c1, c2, c3, offsets[2], outs[2] + j);                                  \
        if (NQ > 2) finish4(d0, d1, d2, d3, offsets[3], outs[3] + j);                                  \
    }
#define ONE_ROW(r, a, b, c, d)                                   \
    do {                                                         \
        v = whole ? row_chunk(r, i, 0, 1) : row_chunk(r, i, mask, 0); \
        DPBUSD(a, v, qa);                                        \
        if (NQ > 1) DPBUSD(b, v, qb);                            \
        if (NQ > 2) DPBUSD(c, v, qc);                            \
        if (NQ > 2) DPBUSD(d, v, qd);                            \
    } while (0)

static inline __attribute__((always_inline)) VNNI void dot_rows_vnni(const int NQ, const int8_t *const *qs,
                                                                     const int8_t *rows, int64_t n, int64_t width,
                                                                     float *const *outs) {
    const int64_t full = width & ~(int64_t)63;
    const __mmask64 mask = tail_mask(width);
    int32_t offsets[4] = {0};
    __m512i tails[4];
    for (int q = 0; q < NQ; q++) {
        offsets[q] = query_offset(qs[q], width);
        tails[q] = _mm512_maskz_loadu_epi8(mask, qs[q] + full);
    }
    int64_t j = 0;
    ROWS4(NQ)
    for (; j < n; j++) { /* the last rows, one at a time */
        const int8_t *r0 = rows + j * width;
        for (int q = 0; q < NQ; q++) {
            __m512i s0 = _mm512_setzero_si512();
            for (int64_t i = 0; i < full; i += 64)
                DPBUSD(s0, row_chunk(r0, i, 0, 1), _mm512_loadu_si512((const void *)(qs[q] + i)));
            if (mask) DPBUSD(s0, row_chunk(r0, full, mask, 0), tails[q]);
            outs[q][j] = finish(s0, offsets[q]);
        }
    }
}
#undef ROWS4
#undef ONE_ROW

VNNI void mr_int8_dot_rows_avx512vnni(const int8_t *query, const int16_t *query16, const int8_t *rows, int64_t n,
                                      int64_t width, float *out) {
    (void)query16;
    const int8_t *qs[1] = {query};
    float *outs[1] = {out};
    dot_rows_vnni(1, qs, rows, n, width, outs);
}

VNNI void mr_int8_dot_rows2_avx512vnni(const int8_t *query_a, const int16_t *query16_a, const int8_t *query_b,
                                       const int16_t *query16_b, const int8_t *rows, int64_t n, int64_t width,
                                       float *out_a, float *out_b) {
    (void)query16_a;
    (void)query16_b;
    const int8_t *qs[2] = {query_a, query_b};
    float *outs[2] = {out_a, out_b};
    dot_rows_vnni(2, qs, rows, n, width, outs);
}

VNNI void mr_int8_dot_rows4_avx512vnni(const int8_t *const *queries, const int8_t *rows, int64_t n, int64_t width,
                                       float *const *outs) {
    dot_rows_vnni(4, queries, rows, n, width, outs);
}
#endif
