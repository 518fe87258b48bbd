/* Exact inner-product search over float32 vectors (a flat index).
 *
 * The database is a list of segments, each a row-major [rows, dim] matrix at its own address
 * (an in-memory buffer, a memory-mapped file, ...). Ids are global row positions: segment s's
 * row r has id (rows of segments before s) + r. Results follow FAISS's contract: scores and ids
 * [nq, k], best first (ties: lower id first), padded with (-inf, -1) when k exceeds the number
 * of rows. A row whose score is NaN is never returned. */
#ifndef MR_INDEX_H
#define MR_INDEX_H

#include <stdint.h>

#include "gemm/mr_blas.h"
#include "base/mr_error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    const float *vectors; /* [rows, dim], rows contiguous */
    int64_t rows;
} mr_flat_segment;

typedef struct {
    const float *queries; /* [nq, dim], rows contiguous */
    int64_t nq;
    int64_t dim;
    const mr_flat_segment *segments;
    int64_t n_segments;
    int64_t k;            /* > 0 */
    int threads;          /* > 0: our threads and the BLAS's together */
    float *out_scores;    /* [nq, k] */
    int64_t *out_ids;     /* [nq, k] */
} mr_flat_search_args;

/* Blocked search: the scores of a block of queries against a block of rows come from one
 * GEMM (the BLAS single-threaded, inside our threads), and each query's top-k takes them from
 * there while they are in cache. Threads share out the blocks of rows, keep their own top-k,
 * and the per-thread results are merged at the end, so the memory read is the database once
 * per group of queries. */
mr_status mr_flat_search(const mr_blas *blas, const mr_flat_search_args *args, mr_error *err);

/* Reference: every score by a plain dot product, then a full sort (mr_topk_ref). */
mr_status mr_flat_search_ref(const mr_flat_search_args *args, mr_error *err);

#ifdef __cplusplus
}
#endif
#endif
