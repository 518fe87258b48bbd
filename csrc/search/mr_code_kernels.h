/* Internal: the row kernels behind mr_codes_index.c, one file per instruction set
 * (mr_code_kernels_<isa>.c). Each scores one query code against n consecutive rows of `width`
 * bytes and writes n floats. */
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
/* AVX-512 VNNI (vpdpbusd); query16 is not read */
void mr_int8_dot_rows_avx512vnni(const int8_t *query, const int16_t *query16, const int8_t *rows, int64_t n,
                                 int64_t width, float *out);
/* The same for two queries at once (the AVX2 kernel widens each row once for both) */
void mr_int8_dot_rows2_portable(const int8_t *query_a, const int16_t *query16_a, const int8_t *query_b,
                                const int16_t *query16_b, const int8_t *rows, int64_t n, int64_t width,
                                float *out_a, float *out_b);
void mr_int8_dot_rows2_avx2(const int8_t *query_a, const int16_t *query16_a, const int8_t *query_b,
                            const int16_t *query16_b, const int8_t *rows, int64_t n, int64_t width, float *out_a,
                            float *out_b);
void mr_int8_dot_rows2_avx512vnni(const int8_t *query_a, const int16_t *query16_a, const int8_t *query_b,
                                  const int16_t *query16_b, const int8_t *rows, int64_t n, int64_t width,
                                  float *out_a, float *out_b);
/* Four queries at once (queries[4], outs[4]): each row chunk loaded once for all four */
void mr_int8_dot_rows4_avx512vnni(const int8_t *const *queries, const int8_t *rows, int64_t n, int64_t width,
                                  float *const *outs);

/* Binary codes as nibble planes, for the lookup kernel: a tile of MR_TILE_ROWS rows is stored
 * position by position (2 * width positions: the low, then the high nibble of each byte), 32
 * bytes a position, each byte one row's nibble. A query becomes one 16-entry table a position,
 * table[v] = popcount(query nibble ^ v), so one byte shuffle looks up 32 rows at once; the
 * Hamming distance is the sum of the lookups over the positions. */
enum { MR_TILE_ROWS = 32 };
/* Queries one call of the tile kernels scores at most: each load of a tile's nibbles serves them all. */
enum { MR_TILE_QUERIES = 12 };
/* Largest width (bytes) whose distances fit the kernel's 16-bit lanes. */
#define MR_TILE_MAX_WIDTH ((int64_t)4095)

/* planes[ceil(n / 32) * 2 * width * 32]; rows past n in the last tile are zero nibbles. */
void mr_hamming_pack_tiles(const uint8_t *rows, int64_t n, int64_t width, uint8_t *planes);
void mr_hamming_pack_tiles_avx2(const uint8_t *rows, int64_t n, int64_t width, uint8_t *planes);
/* tables[2 * width * 16] for one query */
void mr_hamming_query_tables(const uint8_t *query, int64_t width, uint8_t *tables);
/* For nq <= MR_TILE_QUERIES queries (tables [nq][2 * width * 16]) against n_tiles tiles: distance[q][row]
 * (rows of all tiles in order) and masks[q][tile], bit r set where row r's distance <= limits[q]. */
void mr_hamming_tiles_portable(const uint8_t *tables, int nq, int64_t width, const uint8_t *planes, int64_t n_tiles,
                               const uint16_t *limits, uint16_t *distance, uint32_t *masks);
void mr_hamming_tiles_avx2(const uint8_t *tables, int nq, int64_t width, const uint8_t *planes, int64_t n_tiles,
                           const uint16_t *limits, uint16_t *distance, uint32_t *masks);

#endif
