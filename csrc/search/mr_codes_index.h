/* Exact search over compressed vectors: binary codes (Hamming distance by popcount) and int8
 * codes (integer inner product), and rescoring of candidate rows with float32 or int8 vectors.
 *
 * The database is a list of segments of `width`-byte rows, ids are global row positions (as in
 * mr_index.h). Results follow FAISS's contract with a similarity score, best first (ties: lower
 * id first), padded with (-inf, -1):
 *   binary: score = bits - 2 * hamming(query, row), bits = 8 * width (the inner product of the
 *           two +-1 sign vectors), so the best score is the smallest Hamming distance;
 *   int8:   score = sum_i query[i] * row[i] over signed bytes, accumulated in int32 (exact as a
 *           float while |score| < 2^24, e.g. for every width up to 1024). */
#ifndef MR_CODES_INDEX_H
#define MR_CODES_INDEX_H

#include <stdint.h>

#include "base/mr_cpu.h"
#include "base/mr_error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    const uint8_t *codes; /* [rows, width] bytes, rows contiguous */
    int64_t rows;
} mr_code_segment;

typedef struct {
    const uint8_t *queries; /* [nq, width] */
    int64_t nq;
    int64_t width;          /* bytes per code, > 0 */
    const mr_code_segment *segments;
    int64_t n_segments;
    int64_t k;              /* > 0 */
    int threads;            /* > 0 */
    mr_isa kernel;          /* the row kernels' path; MR_ISA_AUTO picks the widest the CPU runs
                               within the limit (base/mr_cpu.h). Asking for one the CPU lacks is
                               a MR_ERR_VALUE. AVX-512 means VPOPCNTDQ for binary codes and
                               VNNI for int8 ones. MR_ISA_AUTO goes by speed, not width: binary
                               codes take the AVX2 tile kernel where their width fits it. */
    float *out_scores;      /* [nq, k] */
    int64_t *out_ids;       /* [nq, k] */
} mr_code_search_args;

mr_status mr_hamming_search(const mr_code_search_args *args, mr_error *err);
mr_status mr_int8_search(const mr_code_search_args *args, mr_error *err);

/* References: a bit-by-bit (or byte-by-byte) loop for every score, then a full sort. */
mr_status mr_hamming_search_ref(const mr_code_search_args *args, mr_error *err);
mr_status mr_int8_search_ref(const mr_code_search_args *args, mr_error *err);

/* Is this path available on this CPU for binary (int8 = 0) or int8 (int8 = 1) codes? */
int mr_code_kernel_available(mr_isa kernel, int int8);
/* The kernel MR_ISA_AUTO runs for codes of this kind and width (in bytes): the fastest measured
 * that the CPU runs within the limit, not the widest. */
mr_isa mr_code_kernel_auto(int int8, int64_t width);

/* Rescoring: for each query q and each candidate position p in candidates[q, :] (-1 = none),
 * score = bias[q] + sum_i weights[q, i] * vectors[p, i], with vectors float32 or int8; the k best
 * (positions as ids) are returned best first. For float32 vectors, weights are the float query
 * and bias is NULL; for int8 codes, weights and bias fold in the dequantisation. */
typedef struct {
    const float *weights;    /* [nq, dim] */
    const float *bias;       /* [nq] or NULL */
    int64_t nq;
    int64_t dim;
    const int64_t *candidates; /* [nq, n_candidates] */
    int64_t n_candidates;
    const void *vectors;     /* [rows, dim] float32 or int8, rows contiguous */
    int64_t rows;
    int vectors_int8;
    int64_t k;
    int threads;
    float *out_scores;       /* [nq, k] */
    int64_t *out_ids;        /* [nq, k] */
} mr_rescore_args;

mr_status mr_rescore(const mr_rescore_args *args, mr_error *err);
mr_status mr_rescore_ref(const mr_rescore_args *args, mr_error *err);

#ifdef __cplusplus
}
#endif
#endif
