#include "search/mr_index.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/mr_parallel.h"
#include "search/mr_topk.h"

/* Tile shape: a [TILE_QUERIES, rows] block of scores (at most TILE_FLOATS floats) stays in a
 * core's L2 cache between the GEMM that writes it and the selection that reads it. */
enum { TILE_QUERIES = 512, TILE_FLOATS = 512 * 1024, MIN_BLOCK_ROWS = 256, MAX_BLOCK_ROWS = 16384 };
/* Bound on the per-thread heaps of one group of queries; more queries run in several groups. */
#define HEAP_BYTES_BUDGET ((int64_t)64 << 20)

typedef struct {
    const float *vectors;
    int64_t rows;
    int64_t first_id;
} row_block;

static mr_status check_args(const mr_flat_search_args *a, int64_t *total_rows, mr_error *err) {
    if (a->k <= 0) return mr_fail(err, MR_ERR_VALUE, "k must be positive, got %lld", (long long)a->k);
    if (a->dim <= 0)
        return mr_fail(err, MR_ERR_VALUE, "dimension must be positive, got %lld", (long long)a->dim);
    if (a->nq < 0)
        return mr_fail(err, MR_ERR_VALUE, "number of queries is negative (%lld)", (long long)a->nq);
    if (a->threads <= 0)
        return mr_fail(err, MR_ERR_VALUE, "threads must be positive, got %d", a->threads);
    if (a->nq > 0 && (!a->queries || !a->out_scores || !a->out_ids))
        return mr_fail(err, MR_ERR_VALUE, "search: missing query or output buffer");
    if (a->n_segments < 0 || (a->n_segments > 0 && !a->segments))
        return mr_fail(err, MR_ERR_VALUE, "search: bad segment list");
    int64_t total = 0;
    for (int64_t s = 0; s < a->n_segments; s++) {
        const mr_flat_segment *seg = &a->segments[s];
        if (seg->rows < 0 || (seg->rows > 0 && !seg->vectors))
            return mr_fail(err, MR_ERR_VALUE, "search: segment %lld is invalid", (long long)s);
        if (seg->rows > INT64_MAX - total)
            return mr_fail(err, MR_ERR_VALUE, "search: too many rows");
        total += seg->rows;
    }
    *total_rows = total;
    return MR_OK;
}

static void fill_padding(const mr_flat_search_args *a, int64_t from_slot) {
    for (int64_t q = 0; q < a->nq; q++)
        for (int64_t i = from_slot; i < a->k; i++) {
            a->out_scores[q * a->k + i] = -INFINITY;
            a->out_ids[q * a->k + i] = -1;
        }
}

/* Cuts every segment into blocks of at most block_rows rows. */
static row_block *make_blocks(const mr_flat_search_args *a, int64_t block_rows, int64_t *n_blocks) {
    int64_t count = 0;
    for (int64_t s = 0; s < a->n_segments; s++)
        count += (a->segments[s].rows + block_rows - 1) / block_rows;
    row_block *blocks = malloc((size_t)(count > 0 ? count : 1) * sizeof *blocks);
    if (!blocks) return NULL;
    int64_t b = 0, first_id = 0;
    for (int64_t s = 0; s < a->n_segments; s++) {
        const mr_flat_segment *seg = &a->segments[s];
        for (int64_t r = 0; r < seg->rows; r += block_rows) {
            blocks[b].vectors = seg->vectors + r * a->dim;
            blocks[b].rows = seg->rows - r < block_rows ? seg->rows - r : block_rows;
            blocks[b].first_id = first_id + r;
            b++;
        }
        first_id += seg->rows;
    }
    *n_blocks = count;
    return blocks;
}

mr_status mr_flat_search(const mr_blas *blas, const mr_flat_search_args *a, mr_error *err) {
    int64_t total = 0;
    mr_status st = check_args(a, &total, err);
    if (st || a->nq == 0) return st;
    const int64_t keep = a->k < total ? a->k : total; /* slots that real rows can fill */
    fill_padding(a, keep);
    if (keep == 0) return MR_OK;

    const int nt = a->threads;
    const int64_t dim = a->dim, k = a->k;
    int64_t group = HEAP_BYTES_BUDGET / ((int64_t)nt * keep * (int64_t)(sizeof(float) + sizeof(int64_t)));
    if (group < 1) group = 1;
    if (group > a->nq) group = a->nq;
    const int64_t tile_queries = group < TILE_QUERIES ? group : TILE_QUERIES;
    int64_t block_rows = TILE_FLOATS / tile_queries;
    if (block_rows < MIN_BLOCK_ROWS) block_rows = MIN_BLOCK_ROWS;
    if (block_rows > MAX_BLOCK_ROWS) block_rows = MAX_BLOCK_ROWS;

    int64_t n_blocks = 0;
    row_block *blocks = make_blocks(a, block_rows, &n_blocks);
    float *tiles = malloc((size_t)(nt * tile_queries * block_rows) * sizeof(float));
    float *heap_scores = malloc((size_t)(nt * group * keep) * sizeof(float));
    int64_t *heap_ids = malloc((size_t)(nt * group * keep) * sizeof(int64_t));
    if (!blocks || !tiles || !heap_scores || !heap_ids) {
        free(blocks), free(tiles), free(heap_scores), free(heap_ids);
        return mr_fail(err, MR_ERR_MEMORY, "search: out of memory for %d thread buffers", nt);
    }
    /* our threads split the rows, so each GEMM runs on one thread */
    mr_blas_set_threads(blas, 1);

    for (int64_t q0 = 0; q0 < a->nq && st == MR_OK; q0 += group) {
        const int64_t gq = a->nq - q0 < group ? a->nq - q0 : group;
#pragma omp parallel num_threads(nt)
        {
            const int t = mr_thread_index();
            float *tile = tiles + (int64_t)t * tile_queries * block_rows;
            float *my_scores = heap_scores + (int64_t)t * group * keep;
            int64_t *my_ids = heap_ids + (int64_t)t * group * keep;
            for (int64_t q = 0; q < gq; q++) mr_topk_heap_clear(my_scores + q * keep, my_ids + q * keep, keep);
            mr_error local_err;
#pragma omp for schedule(dynamic, 1)
            for (int64_t b = 0; b < n_blocks; b++) {
                const row_block *blk = &blocks[b];
                for (int64_t tq = 0; tq < gq; tq += tile_queries) {
                    const int64_t m = gq - tq < tile_queries ? gq - tq : tile_queries;
                    const float *queries = a->queries + (q0 + tq) * dim;
                    if (mr_gemm_f32(blas, m, blk->rows, dim, queries, dim, blk->vectors, dim, NULL,
                                    0.0f, tile, blk->rows, 1, &local_err) != MR_OK) {
#pragma omp critical(mr_flat_search_error)
                        if (st == MR_OK) {
                            st = local_err.status;
                            if (err) *err = local_err;
                        }
                        break;
                    }
                    for (int64_t i = 0; i < m; i++)
                        mr_topk_heap_push_row(my_scores + (tq + i) * keep, my_ids + (tq + i) * keep,
                                              keep, tile + i * blk->rows, blk->rows, blk->first_id);
                }
            }
            /* merge every thread's heap of a query into the output row, then order it */
#pragma omp for schedule(static)
            for (int64_t q = 0; q < gq; q++)
                mr_topk_merge_thread_heaps(heap_scores, heap_ids, nt, group, q, keep, a->out_scores + (q0 + q) * k,
                                           a->out_ids + (q0 + q) * k);
        }
    }
    free(blocks), free(tiles), free(heap_scores), free(heap_ids);
    return st;
}

mr_status mr_flat_search_ref(const mr_flat_search_args *a, mr_error *err) {
    int64_t total = 0;
    mr_status st = check_args(a, &total, err);
    if (st || a->nq == 0) return st;
    float *all = malloc((size_t)(a->nq * (total > 0 ? total : 1)) * sizeof(float));
    if (!all) return mr_fail(err, MR_ERR_MEMORY, "reference search: out of memory");
    int64_t column = 0;
    for (int64_t s = 0; s < a->n_segments; s++) {
        const mr_flat_segment *seg = &a->segments[s];
        for (int64_t r = 0; r < seg->rows; r++, column++)
            for (int64_t q = 0; q < a->nq; q++) {
                const float *x = a->queries + q * a->dim, *y = seg->vectors + r * a->dim;
                float dot = 0.0f;
                for (int64_t i = 0; i < a->dim; i++) dot += x[i] * y[i];
                all[q * total + column] = dot;
            }
    }
    st = mr_topk_ref(all, a->nq, total, a->k, a->out_scores, a->out_ids, err);
    free(all);
    return st;
}
