/* Internal: the row kernels behind mr_index_quantized.c, one per instruction set. Each scores
 * one query code against n consecutive rows of `width` bytes and writes n floats. */
#ifndef MR_CODE_KERNELS_H
#define MR_CODE_KERNELS_H

#include <stdint.h>

/* out[j] = 8 * width - 2 * popcount(query ^ rows[j]) */
void mr_hamming_rows_portable(const uint8_t *query, const uint8_t *rows, int64_t n, int64_t width, float *out);
void mr_hamming_rows_avx2(const uint8_t *query, const uint8_t *rows, int64_t n, int64_t width, float *out);
void mr_hamming_rows_avx512(const uint8_t *query, const uint8_t *rows, int64_t n, int64_t width, float *out);

/* out[j] = sum_i query[i] * rows[j][i] over signed bytes; query16 is the query widened to
 * int16 (the AVX2 kernel reads it, the portable one reads query) */
void mr_int8_dot_rows_portable(const int8_t *query, const int16_t *query16, const int8_t *rows, int64_t n,
                               int64_t width, float *out);
void mr_int8_dot_rows_avx2(const int8_t *query, const int16_t *query16, const int8_t *rows, int64_t n,
                           int64_t width, float *out);

#endif
