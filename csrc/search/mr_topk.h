/* Per-query top-k selection over (score, id) pairs.
 *
 * Order of results (FAISS's contract, with a fixed tie rule): higher score first, and among equal
 * scores the lower id first. A query keeps its best k candidates in a bounded heap whose root
 * is the worst kept one, so most candidates are rejected by a single comparison with the root.
 * Empty slots hold (-inf, -1) and rank below every real candidate; they are what pads the result
 * when fewer than k candidates were offered. Candidates whose score is NaN are never kept. */
#ifndef MR_TOPK_H
#define MR_TOPK_H

#include <stdint.h>

#include "base/mr_error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Does (score_a, id_a) rank before (score_b, id_b)? Empty slots (id < 0) rank last. */
static inline int mr_topk_ranks_before(float score_a, int64_t id_a, float score_b, int64_t id_b) {
    if (id_b < 0) return id_a >= 0;
    if (id_a < 0) return 0;
    return score_a > score_b || (score_a == score_b && id_a < id_b);
}

/* Fills k slots with empty entries (-inf, -1). */
void mr_topk_heap_clear(float *scores, int64_t *ids, int64_t k);

/* Offers one candidate to a heap of k slots (k > 0). */
void mr_topk_heap_push(float *scores, int64_t *ids, int64_t k, float score, int64_t id);

/* Offers row[0..n) with ids first_id + j. Skips quickly over stretches that cannot enter. */
void mr_topk_heap_push_row(float *scores, int64_t *ids, int64_t k, const float *row, int64_t n,
                           int64_t first_id);

/* Turns a heap into the final order (best first, empty slots last), in place. */
void mr_topk_heap_sort(float *scores, int64_t *ids, int64_t k);

/* Merges the per-thread heaps of query q (thread t's at heap_* + (t * group + q) * keep, nt
 * threads) into out_scores / out_ids, sorted best first. */
void mr_topk_merge_thread_heaps(const float *heap_scores, const int64_t *heap_ids, int nt, int64_t group, int64_t q,
                                int64_t keep, float *out_scores, int64_t *out_ids);

/* Reference: for each of nq rows of all_scores[nq, n], sorts all n candidates (ids 0..n-1)
 * and keeps the first k, padding with (-inf, -1) when k > n. Written for clarity; the tests
 * compare the heap path against it. */
mr_status mr_topk_ref(const float *all_scores, int64_t nq, int64_t n, int64_t k,
                      float *out_scores, int64_t *out_ids, mr_error *err);

#ifdef __cplusplus
}
#endif
#endif
