#include "search/mr_topk.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void mr_topk_heap_clear(float *scores, int64_t *ids, int64_t k) {
    for (int64_t i = 0; i < k; i++) {
        scores[i] = -INFINITY;
        ids[i] = -1;
    }
}

/* Restores the heap below slot i of a heap of n slots, whose entry i may rank too high:
 * the root is the entry that ranks last. */
static void sift_down(float *scores, int64_t *ids, int64_t n, int64_t i) {
    float s = scores[i];
    int64_t id = ids[i];
    for (;;) {
        int64_t child = 2 * i + 1;
        if (child >= n) break;
        /* follow the child that ranks last */
        if (child + 1 < n &&
            mr_topk_ranks_before(scores[child], ids[child], scores[child + 1], ids[child + 1]))
            child++;
        if (!mr_topk_ranks_before(s, id, scores[child], ids[child])) break;
        scores[i] = scores[child];
        ids[i] = ids[child];
        i = child;
    }
    scores[i] = s;
    ids[i] = id;
}

void mr_topk_heap_push(float *scores, int64_t *ids, int64_t k, float score, int64_t id) {
    if (isnan(score) || !mr_topk_ranks_before(score, id, scores[0], ids[0])) return;
    scores[0] = score;
    ids[0] = id;
    sift_down(scores, ids, k, 0);
}

void mr_topk_heap_push_row(float *scores, int64_t *ids, int64_t k, const float *row, int64_t n,
                           int64_t first_id) {
    enum { STRETCH = 16 };
    int64_t j = 0;
    for (; j + STRETCH <= n; j += STRETCH) {
        /* once the heap is full, a stretch whose best score is below the root's is skipped
         * whole; the max over a fixed-width stretch vectorises (NaN never raises it) */
        float best = row[j];
        for (int t = 1; t < STRETCH; t++) best = row[j + t] > best ? row[j + t] : best;
        if (ids[0] >= 0 && best < scores[0]) continue;
        for (int t = 0; t < STRETCH; t++)
            mr_topk_heap_push(scores, ids, k, row[j + t], first_id + j + t);
    }
    for (; j < n; j++) mr_topk_heap_push(scores, ids, k, row[j], first_id + j);
}

void mr_topk_heap_sort(float *scores, int64_t *ids, int64_t k) {
    /* repeatedly move the entry that ranks last to the end of the shrinking heap */
    for (int64_t n = k; n > 1; n--) {
        float s = scores[0];
        int64_t id = ids[0];
        scores[0] = scores[n - 1];
        ids[0] = ids[n - 1];
        scores[n - 1] = s;
        ids[n - 1] = id;
        sift_down(scores, ids, n - 1, 0);
    }
}

typedef struct {
    float score;
    int64_t id;
} candidate;

static int compare_candidates(const void *pa, const void *pb) {
    const candidate *a = pa, *b = pb;
    if (mr_topk_ranks_before(a->score, a->id, b->score, b->id)) return -1;
    if (mr_topk_ranks_before(b->score, b->id, a->score, a->id)) return 1;
    return 0;
}

mr_status mr_topk_ref(const float *all_scores, int64_t nq, int64_t n, int64_t k,
                      float *out_scores, int64_t *out_ids, mr_error *err) {
    if (nq < 0 || n < 0 || k <= 0)
        return mr_fail(err, MR_ERR_VALUE, "top-k reference: bad sizes nq=%lld n=%lld k=%lld",
                       (long long)nq, (long long)n, (long long)k);
    candidate *all = malloc((size_t)(n > 0 ? n : 1) * sizeof *all);
    if (!all) return mr_fail(err, MR_ERR_MEMORY, "top-k reference: out of memory");
    for (int64_t q = 0; q < nq; q++) {
        int64_t kept = 0;
        for (int64_t j = 0; j < n; j++) {
            float s = all_scores[q * n + j];
            if (isnan(s)) continue;
            all[kept].score = s;
            all[kept].id = j;
            kept++;
        }
        qsort(all, (size_t)kept, sizeof *all, compare_candidates);
        for (int64_t i = 0; i < k; i++) {
            out_scores[q * k + i] = i < kept ? all[i].score : -INFINITY;
            out_ids[q * k + i] = i < kept ? all[i].id : -1;
        }
    }
    free(all);
    return MR_OK;
}

void mr_topk_merge_thread_heaps(const float *heap_scores, const int64_t *heap_ids, int nt, int64_t group, int64_t q,
                                int64_t keep, float *out_scores, int64_t *out_ids) {
    memcpy(out_scores, heap_scores + q * keep, (size_t)keep * sizeof(float));
    memcpy(out_ids, heap_ids + q * keep, (size_t)keep * sizeof(int64_t));
    for (int other = 1; other < nt; other++) {
        const float *os = heap_scores + ((int64_t)other * group + q) * keep;
        const int64_t *oi = heap_ids + ((int64_t)other * group + q) * keep;
        for (int64_t i = 0; i < keep; i++) mr_topk_heap_push(out_scores, out_ids, keep, os[i], oi[i]);
    }
    mr_topk_heap_sort(out_scores, out_ids, keep);
}
