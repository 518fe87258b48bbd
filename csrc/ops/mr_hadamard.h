/* The Hadamard rotation of a row, as int8 models apply it to out_proj's input: x <- R x with
 * R = blockdiag(H_b, ..., H_b) / sqrt(b) . diag(signs), H_b the Sylvester Hadamard matrix of a
 * power-of-two order b that divides the row's length (block-diagonal where the length is not a
 * power of two), signs +-1 (or none). R is orthogonal, so out_proj's weight holds W R^T, folded
 * in offline, and the product is unchanged while an outlier channel is spread over b channels
 * before per-token quantization. Fast Walsh-Hadamard transform: n log2(b) additions a row. */
#ifndef MR_HADAMARD_H
#define MR_HADAMARD_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Whether block is a power of two (>= 1) dividing n. */
int mr_hadamard_block_ok(int64_t n, int64_t block);
/* The largest power of two dividing n (the block the quantizer uses), capped at max_block. */
int64_t mr_hadamard_default_block(int64_t n, int64_t max_block);

/* Rows [0, rows) of x (stride ldx), each of n values, rotated in place. */
void mr_hadamard_rows_f32(float *x, int64_t ldx, int64_t rows, int64_t n, int64_t block, const int8_t *signs);

/* Reference twin: out = R x by the explicit matrix (n * b multiply-adds a row). */
void mr_hadamard_rows_f32_ref(const float *x, int64_t ldx, int64_t rows, int64_t n, int64_t block,
                              const int8_t *signs, float *out, int64_t ldo);

#ifdef __cplusplus
}
#endif
#endif
