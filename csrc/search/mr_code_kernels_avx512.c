/* The code kernels for AVX-512: VPOPCNTDQ counts eight 64-bit words per instruction. */
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
#endif
