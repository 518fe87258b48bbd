/* Row kernels for compressed vectors: Hamming scores by popcount and int8 inner products.
 *
 * The vector variants are compiled with function-level target attributes, so the rest of the
 * build stays portable; mr_index_quantized.c calls them only when the CPU reports the features.
 *   portable: 64-bit words and the compiler's popcount (a table or the instruction, as built);
 *   AVX2:     the nibble-lookup popcount (vpshufb, then vpsadbw sums the bytes), with the
 *             POPCNT instruction for the tail;
 *   AVX-512:  VPOPCNTDQ counts eight 64-bit words per instruction. */
#include "mr_code_kernels.h"

#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define MR_X86 1
#endif

static inline uint64_t load_u64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, sizeof v); /* unaligned rows: memcpy compiles to one load */
    return v;
}

/* ------------------------------------------------------------------ portable */

static inline int64_t hamming_portable(const uint8_t *a, const uint8_t *b, int64_t width) {
    int64_t count = 0, i = 0;
    for (; i + 8 <= width; i += 8) count += __builtin_popcountll(load_u64(a + i) ^ load_u64(b + i));
    for (; i < width; i++) count += __builtin_popcount((unsigned)(a[i] ^ b[i]));
    return count;
}

void mr_hamming_rows_portable(const uint8_t *query, const uint8_t *rows, int64_t n, int64_t width, float *out) {
    const float bits = (float)(8 * width);
    for (int64_t j = 0; j < n; j++) out[j] = bits - 2.0f * (float)hamming_portable(query, rows + j * width, width);
}

void mr_int8_dot_rows_portable(const int8_t *query, const int16_t *query16, const int8_t *rows, int64_t n,
                               int64_t width, float *out) {
    (void)query16;
    for (int64_t j = 0; j < n; j++) {
        const int8_t *row = rows + j * width;
        int32_t dot = 0; /* |dot| <= 16384 * width: the caller bounds width */
        for (int64_t i = 0; i < width; i++) dot += (int32_t)query[i] * (int32_t)row[i];
        out[j] = (float)dot;
    }
}

/* ------------------------------------------------------------------ AVX2 */

#ifdef MR_X86
#define AVX2 __attribute__((target("avx2,popcnt")))

static inline AVX2 int64_t popcount_tail_avx2(const uint8_t *a, const uint8_t *b, int64_t i, int64_t width) {
    int64_t count = 0;
    for (; i + 8 <= width; i += 8) count += _mm_popcnt_u64(load_u64(a + i) ^ load_u64(b + i));
    for (; i < width; i++) count += _mm_popcnt_u32((unsigned)(a[i] ^ b[i]));
    return count;
}

AVX2 void mr_hamming_rows_avx2(const uint8_t *query, const uint8_t *rows, int64_t n, int64_t width, float *out) {
    const __m256i lookup = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                            0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i low_nibbles = _mm256_set1_epi8(0x0f);
    const float bits = (float)(8 * width);
    const int64_t vector_bytes = width & ~(int64_t)31;
    for (int64_t j = 0; j < n; j++) {
        const uint8_t *row = rows + j * width;
        __m256i sums = _mm256_setzero_si256();
        for (int64_t i = 0; i < vector_bytes; i += 32) {
            __m256i x = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(query + i)),
                                         _mm256_loadu_si256((const __m256i *)(row + i)));
            __m256i counts = _mm256_add_epi8(
                _mm256_shuffle_epi8(lookup, _mm256_and_si256(x, low_nibbles)),
                _mm256_shuffle_epi8(lookup, _mm256_and_si256(_mm256_srli_epi16(x, 4), low_nibbles)));
            sums = _mm256_add_epi64(sums, _mm256_sad_epu8(counts, _mm256_setzero_si256()));
        }
        __m128i half = _mm_add_epi64(_mm256_castsi256_si128(sums), _mm256_extracti128_si256(sums, 1));
        int64_t count = _mm_cvtsi128_si64(half) + _mm_extract_epi64(half, 1);
        count += popcount_tail_avx2(query, row, vector_bytes, width);
        out[j] = bits - 2.0f * (float)count;
    }
}

AVX2 void mr_int8_dot_rows_avx2(const int8_t *query, const int16_t *query16, const int8_t *rows, int64_t n,
                                int64_t width, float *out) {
    const int64_t vector_bytes = width & ~(int64_t)15;
    for (int64_t j = 0; j < n; j++) {
        const int8_t *row = rows + j * width;
        __m256i sums = _mm256_setzero_si256();
        for (int64_t i = 0; i < vector_bytes; i += 16) {
            /* 16 signed bytes widened to int16; madd multiplies and adds pairs into int32 */
            __m256i r = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(row + i)));
            __m256i q = _mm256_loadu_si256((const __m256i *)(query16 + i));
            sums = _mm256_add_epi32(sums, _mm256_madd_epi16(q, r));
        }
        __m128i half = _mm_add_epi32(_mm256_castsi256_si128(sums), _mm256_extracti128_si256(sums, 1));
        half = _mm_add_epi32(half, _mm_shuffle_epi32(half, _MM_SHUFFLE(1, 0, 3, 2)));
        half = _mm_add_epi32(half, _mm_shuffle_epi32(half, _MM_SHUFFLE(2, 3, 0, 1)));
        int32_t dot = _mm_cvtsi128_si32(half);
        for (int64_t i = vector_bytes; i < width; i++) dot += (int32_t)query[i] * (int32_t)row[i];
        out[j] = (float)dot;
    }
}

/* ------------------------------------------------------------------ AVX-512 VPOPCNTDQ */

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
#else
/* no x86: the dispatcher never selects these */
void mr_hamming_rows_avx2(const uint8_t *query, const uint8_t *rows, int64_t n, int64_t width, float *out) {
    mr_hamming_rows_portable(query, rows, n, width, out);
}
void mr_hamming_rows_avx512(const uint8_t *query, const uint8_t *rows, int64_t n, int64_t width, float *out) {
    mr_hamming_rows_portable(query, rows, n, width, out);
}
void mr_int8_dot_rows_avx2(const int8_t *query, const int16_t *query16, const int8_t *rows, int64_t n,
                           int64_t width, float *out) {
    mr_int8_dot_rows_portable(query, query16, rows, n, width, out);
}
#endif
