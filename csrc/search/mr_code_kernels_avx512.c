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

#define VNNI __attribute__((target("avx512f,avx512bw,avx512vnni")))

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

static inline VNNI float finish(__m512i acc, int32_t offset) {
    return (float)(int32_t)((uint32_t)_mm512_reduce_add_epi32(acc) - (uint32_t)offset);
}

VNNI void mr_int8_dot_rows_avx512vnni(const int8_t *query, const int16_t *query16, const int8_t *rows, int64_t n,
                                      int64_t width, float *out) {
    (void)query16;
    const int64_t full = width & ~(int64_t)63;
    const __mmask64 mask = tail_mask(width);
    const int32_t offset = query_offset(query, width);
    const __m512i qt = _mm512_maskz_loadu_epi8(mask, query + full);
    int64_t j = 0;
    for (; j + 4 <= n; j += 4) {
        const int8_t *r0 = rows + j * width, *r1 = r0 + width, *r2 = r1 + width, *r3 = r2 + width;
        __m512i s0 = _mm512_setzero_si512(), s1 = s0, s2 = s0, s3 = s0;
        for (int64_t i = 0; i < full; i += 64) {
            const __m512i q = _mm512_loadu_si512((const void *)(query + i));
            DPBUSD(s0, row_chunk(r0, i, 0, 1), q);
            DPBUSD(s1, row_chunk(r1, i, 0, 1), q);
            DPBUSD(s2, row_chunk(r2, i, 0, 1), q);
            DPBUSD(s3, row_chunk(r3, i, 0, 1), q);
        }
        if (mask) {
            DPBUSD(s0, row_chunk(r0, full, mask, 0), qt);
            DPBUSD(s1, row_chunk(r1, full, mask, 0), qt);
            DPBUSD(s2, row_chunk(r2, full, mask, 0), qt);
            DPBUSD(s3, row_chunk(r3, full, mask, 0), qt);
        }
        out[j] = finish(s0, offset);
        out[j + 1] = finish(s1, offset);
        out[j + 2] = finish(s2, offset);
        out[j + 3] = finish(s3, offset);
    }
    for (; j < n; j++) {
        const int8_t *r0 = rows + j * width;
        __m512i s0 = _mm512_setzero_si512();
        for (int64_t i = 0; i < full; i += 64) DPBUSD(s0, row_chunk(r0, i, 0, 1), _mm512_loadu_si512((const void *)(query + i)));
        if (mask) DPBUSD(s0, row_chunk(r0, full, mask, 0), qt);
        out[j] = finish(s0, offset);
    }
}

/* Two queries against four rows at a time: each row chunk is loaded and flipped once for both. */
VNNI void mr_int8_dot_rows2_avx512vnni(const int8_t *query_a, const int16_t *query16_a, const int8_t *query_b,
                                       const int16_t *query16_b, const int8_t *rows, int64_t n, int64_t width,
                                       float *out_a, float *out_b) {
    const int64_t full = width & ~(int64_t)63;
    const __mmask64 mask = tail_mask(width);
    const int32_t offset_a = query_offset(query_a, width), offset_b = query_offset(query_b, width);
    const __m512i qta = _mm512_maskz_loadu_epi8(mask, query_a + full), qtb = _mm512_maskz_loadu_epi8(mask, query_b + full);
    int64_t j = 0;
    for (; j + 4 <= n; j += 4) {
        const int8_t *r0 = rows + j * width, *r1 = r0 + width, *r2 = r1 + width, *r3 = r2 + width;
        __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
#define BOTH(i, m, f, qa, qb)                     \
    do {                                          \
        __m512i v = row_chunk(r0, i, m, f);       \
        DPBUSD(a0, v, qa);                        \
        DPBUSD(b0, v, qb);                        \
        v = row_chunk(r1, i, m, f);               \
        DPBUSD(a1, v, qa);                        \
        DPBUSD(b1, v, qb);                        \
        v = row_chunk(r2, i, m, f);               \
        DPBUSD(a2, v, qa);                        \
        DPBUSD(b2, v, qb);                        \
        v = row_chunk(r3, i, m, f);               \
        DPBUSD(a3, v, qa);                        \
        DPBUSD(b3, v, qb);                        \
    } while (0)
        for (int64_t i = 0; i < full; i += 64) {
            const __m512i qa = _mm512_loadu_si512((const void *)(query_a + i));
            const __m512i qb = _mm512_loadu_si512((const void *)(query_b + i));
            BOTH(i, 0, 1, qa, qb);
        }
        if (mask) BOTH(full, mask, 0, qta, qtb);
#undef BOTH
        out_a[j] = finish(a0, offset_a);
        out_a[j + 1] = finish(a1, offset_a);
        out_a[j + 2] = finish(a2, offset_a);
        out_a[j + 3] = finish(a3, offset_a);
        out_b[j] = finish(b0, offset_b);
        out_b[j + 1] = finish(b1, offset_b);
        out_b[j + 2] = finish(b2, offset_b);
        out_b[j + 3] = finish(b3, offset_b);
    }
    if (j < n) {
        mr_int8_dot_rows_avx512vnni(query_a, query16_a, rows + j * width, n - j, width, out_a + j);
        mr_int8_dot_rows_avx512vnni(query_b, query16_b, rows + j * width, n - j, width, out_b + j);
    }
}
#endif
