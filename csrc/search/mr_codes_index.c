#include "search/mr_codes_index.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "search/mr_code_kernels.h"
#include "base/mr_parallel.h"
#include "search/mr_topk.h"

/* A block of rows is scored against every query of a group while it sits in cache. */
enum { BLOCK_BYTES = 256 * 1024, MIN_BLOCK_ROWS = 64 };
/* The tile kernel's block: its nibble planes (twice the codes' bytes) stay in L2 (dev/cpu's
 * hamming_search harness sets other sizes with -DTILE_BLOCK_BYTES=...). */
#ifndef TILE_BLOCK_BYTES
#define TILE_BLOCK_BYTES (128 * 1024)
#endif
/* Bound on the per-thread heaps of one group of queries; more queries run in several groups. */
#define HEAP_BYTES_BUDGET ((int64_t)64 << 20)
/* int8 widths whose int32 sums cannot overflow: 128 * 128 * width < 2^31 */
#define MAX_INT8_WIDTH ((int64_t)1 << 17)

typedef void (*hamming_rows_fn)(const uint8_t *, const uint8_t *, int64_t, int64_t, float *);
typedef void (*int8_rows_fn)(const int8_t *, const int16_t *, const int8_t *, int64_t, int64_t, float *);
typedef void (*int8_rows2_fn)(const int8_t *, const int16_t *, const int8_t *, const int16_t *, const int8_t *,
                              int64_t, int64_t, float *, float *);

typedef struct {
    const uint8_t *codes;
    int64_t rows;
    int64_t first_id;
} code_block;

int mr_code_kernel_available(mr_isa kernel, int int8) {
    switch (kernel) {
    case MR_ISA_AUTO:
    case MR_ISA_PORTABLE: return 1;
    case MR_ISA_AVX2: return mr_cpu_has(MR_CPU_AVX2) && mr_cpu_has(MR_CPU_POPCNT);
    case MR_ISA_AVX512: /* binary: VPOPCNTDQ; int8: VNNI */
        if (int8) return mr_cpu_has(MR_CPU_AVX512F) && mr_cpu_has(MR_CPU_AVX512BW) && mr_cpu_has(MR_CPU_AVX512VNNI);
        return mr_cpu_has(MR_CPU_AVX512F) && mr_cpu_has(MR_CPU_AVX512VPOPCNTDQ) && mr_cpu_has(MR_CPU_POPCNT);
    default: return 0;
    }
}

/* The kernel to run: the one asked for, or for MR_ISA_AUTO the fastest the CPU runs within the
 * vector path the rest of the engine uses (MAMBARET_SIMD may lower it). Fastest, not widest: for
 * binary codes the AVX2 tile kernel (nibble lookups, 32 rows a shuffle) beats VPOPCNTDQ's row
 * kernel wherever its 16-bit distances hold the width (2.8x on an AVX-512 EPYC,
 * bench/results/int8.md); for int8 the AVX-512 kernel is VNNI's. */
mr_isa mr_code_kernel_auto(int int8, int64_t width) {
    const mr_isa level = mr_isa_best();
    const int tiles_fit = !int8 && width <= MR_TILE_MAX_WIDTH && mr_code_kernel_available(MR_ISA_AVX2, 0);
    if (level >= MR_ISA_AVX512 && mr_code_kernel_available(MR_ISA_AVX512, int8) && !tiles_fit) return MR_ISA_AVX512;
    if (level >= MR_ISA_AVX2 && mr_code_kernel_available(MR_ISA_AVX2, int8)) return MR_ISA_AVX2;
    return MR_ISA_PORTABLE;
}

static mr_status pick_kernel(mr_isa asked, int int8, int64_t width, mr_isa *picked, mr_error *err) {
    if (asked != MR_ISA_AUTO) {
        if (!mr_code_kernel_available(asked, int8))
            return mr_fail(err, MR_ERR_VALUE, "this %s kernel (%d) does not run on this CPU", int8 ? "int8" : "binary",
                           (int)asked);
        *picked = asked;
        return MR_OK;
    }
    *picked = mr_code_kernel_auto(int8, width);
    return MR_OK;
}

static mr_status check_args(const mr_code_search_args *a, int int8, int64_t *total_rows, mr_error *err) {
    if (a->k <= 0) return mr_fail(err, MR_ERR_VALUE, "k must be positive, got %lld", (long long)a->k);
    if (a->width <= 0)
        return mr_fail(err, MR_ERR_VALUE, "code width must be positive, got %lld", (long long)a->width);
    if (int8 && a->width > MAX_INT8_WIDTH)
        return mr_fail(err, MR_ERR_VALUE, "int8 codes are limited to %lld dimensions, got %lld",
                       (long long)MAX_INT8_WIDTH, (long long)a->width);
    if (a->nq < 0) return mr_fail(err, MR_ERR_VALUE, "number of queries is negative (%lld)", (long long)a->nq);
    if (a->threads <= 0) return mr_fail(err, MR_ERR_VALUE, "threads must be positive, got %d", a->threads);
    if (a->nq > 0 && (!a->queries || !a->out_scores || !a->out_ids))
        return mr_fail(err, MR_ERR_VALUE, "search: missing query or output buffer");
    if (a->n_segments < 0 || (a->n_segments > 0 && !a->segments))
        return mr_fail(err, MR_ERR_VALUE, "search: bad segment list");
    int64_t total = 0;
    for (int64_t s = 0; s < a->n_segments; s++) {
        const mr_code_segment *seg = &a->segments[s];
        if (seg->rows < 0 || (seg->rows > 0 && !seg->codes))
            return mr_fail(err, MR_ERR_VALUE, "search: segment %lld is invalid", (long long)s);
        if (seg->rows > INT64_MAX - total) return mr_fail(err, MR_ERR_VALUE, "search: too many rows");
        total += seg->rows;
    }
    *total_rows = total;
    return MR_OK;
}

static code_block *make_blocks(const mr_code_search_args *a, int64_t block_rows, int64_t *n_blocks) {
    int64_t count = 0;
    for (int64_t s = 0; s < a->n_segments; s++) count += (a->segments[s].rows + block_rows - 1) / block_rows;
    code_block *blocks = malloc((size_t)(count > 0 ? count : 1) * sizeof *blocks);
    if (!blocks) return NULL;
    int64_t b = 0, first_id = 0;
    for (int64_t s = 0; s < a->n_segments; s++) {
        const mr_code_segment *seg = &a->segments[s];
        for (int64_t r = 0; r < seg->rows; r += block_rows, b++) {
            blocks[b].codes = seg->codes + r * a->width;
            blocks[b].rows = seg->rows - r < block_rows ? seg->rows - r : block_rows;
            blocks[b].first_id = first_id + r;
        }
        first_id += seg->rows;
    }
    *n_blocks = count;
    return blocks;
}

/* The largest Hamming distance a row may have and still enter this heap (every row while the
 * heap has empty slots); a row at exactly this distance enters only with a lower id, which the
 * push decides. */
static uint16_t entry_limit(const float *heap_scores, const int64_t *heap_ids, float bits) {
    if (heap_ids[0] < 0) return UINT16_MAX;
    return (uint16_t)((bits - heap_scores[0]) / 2.0f);
}

/* One block of binary rows against a group's queries through the tile kernel: the block is
 * packed into nibble planes once, then scored MR_TILE_QUERIES queries at a time; only the rows
 * whose distance passes the query's heap limit are offered to the heap. */
static void hamming_block_tiles(const code_block *blk, int64_t width, const uint8_t *tables, int64_t gq,
                                float *heap_scores, int64_t *heap_ids, int64_t keep, uint8_t *planes,
                                uint16_t *distance, uint32_t *masks) {
    const float bits = (float)(8 * width);
    const int64_t n_tiles = (blk->rows + MR_TILE_ROWS - 1) / MR_TILE_ROWS, table_bytes = 2 * width * 16;
    mr_hamming_pack_tiles_avx2(blk->codes, blk->rows, width, planes);
    const int tail = (int)(blk->rows % MR_TILE_ROWS);
    const uint32_t last_tile_rows = tail ? ((uint32_t)1 << tail) - 1 : UINT32_MAX;
    for (int64_t q = 0; q < gq; q += MR_TILE_QUERIES) {
        const int nq = gq - q < MR_TILE_QUERIES ? (int)(gq - q) : MR_TILE_QUERIES;
        uint16_t limits[MR_TILE_QUERIES];
        for (int i = 0; i < nq; i++) limits[i] = entry_limit(heap_scores + (q + i) * keep, heap_ids + (q + i) * keep, bits);
        mr_hamming_tiles_avx2(tables + q * table_bytes, nq, width, planes, n_tiles, limits, distance, masks);
        for (int i = 0; i < nq; i++) {
            float *scores = heap_scores + (q + i) * keep;
            int64_t *ids = heap_ids + (q + i) * keep;
            for (int64_t t = 0; t < n_tiles; t++) {
                uint32_t mask = masks[i * n_tiles + t] & (t == n_tiles - 1 ? last_tile_rows : UINT32_MAX);
                for (; mask; mask &= mask - 1) {
                    const int64_t row = t * MR_TILE_ROWS + __builtin_ctz(mask);
                    mr_topk_heap_push(scores, ids, keep, bits - 2.0f * (float)distance[i * n_tiles * MR_TILE_ROWS + row],
                                      blk->first_id + row);
                }
            }
        }
    }
}

/* The search driver shared by both code kinds: threads share out blocks of rows, keep their
 * own top-k per query, and the per-thread heaps are merged at the end. */
static mr_status code_search(const mr_code_search_args *a, int int8, mr_error *err) {
    int64_t total = 0;
    mr_status st = check_args(a, int8, &total, err);
    if (st || a->nq == 0) return st;
    mr_isa kernel = MR_ISA_PORTABLE;
    if ((st = pick_kernel(a->kernel, int8, a->width, &kernel, err))) return st;
    hamming_rows_fn hamming = mr_hamming_rows_portable;
    int8_rows_fn dot = mr_int8_dot_rows_portable;
    int8_rows2_fn dot2 = mr_int8_dot_rows2_portable;
    void (*dot4)(const int8_t *const *, const int8_t *, int64_t, int64_t, float *const *) = NULL;
#if defined(__x86_64__) || defined(__i386__)
    if (kernel == MR_ISA_AVX512 && !int8) hamming = mr_hamming_rows_avx512;
    if (kernel == MR_ISA_AVX512 && int8) {
        dot = mr_int8_dot_rows_avx512vnni;
        dot2 = mr_int8_dot_rows2_avx512vnni;
        dot4 = mr_int8_dot_rows4_avx512vnni;
    }
    if (kernel == MR_ISA_AVX2) {
        hamming = mr_hamming_rows_avx2;
        dot = mr_int8_dot_rows_avx2;
        dot2 = mr_int8_dot_rows2_avx2;
    }
#endif

    const int64_t k = a->k, width = a->width, keep = k < total ? k : total;
    for (int64_t q = 0; q < a->nq; q++)
        for (int64_t i = keep; i < k; i++) {
            a->out_scores[q * k + i] = -INFINITY;
            a->out_ids[q * k + i] = -1;
        }
    if (keep == 0) return MR_OK;

    const int nt = a->threads;
    /* binary codes on AVX2 go through the tile kernel (its 16-bit distances bound the width) */
    const int tiles = !int8 && kernel == MR_ISA_AVX2 && width <= MR_TILE_MAX_WIDTH;
    const int64_t table_bytes = 2 * width * 16;
    int64_t group = HEAP_BYTES_BUDGET / ((int64_t)nt * keep * (int64_t)(sizeof(float) + sizeof(int64_t)));
    if (tiles && group > HEAP_BYTES_BUDGET / table_bytes) group = HEAP_BYTES_BUDGET / table_bytes;
    if (group < 1) group = 1;
    if (group > a->nq) group = a->nq;
    int64_t block_rows = BLOCK_BYTES / width;
    if (tiles) { /* an even count of tiles: the kernel takes them two at a time */
        const int64_t fit = TILE_BLOCK_BYTES / (2 * width * MR_TILE_ROWS);
        block_rows = (fit > 1 ? fit & ~(int64_t)1 : 1) * MR_TILE_ROWS;
    }
    if (block_rows < MIN_BLOCK_ROWS) block_rows = MIN_BLOCK_ROWS;
    const int64_t block_tiles = block_rows / MR_TILE_ROWS;

    int64_t n_blocks = 0;
    code_block *blocks = make_blocks(a, block_rows, &n_blocks);
    float *row_scores = tiles ? NULL : malloc((size_t)(4 * nt * block_rows) * sizeof(float)); /* int8: 4 queries */
    int16_t *widened = int8 ? malloc((size_t)(a->nq * width) * sizeof(int16_t)) : NULL;
    float *heap_scores = malloc((size_t)(nt * group * keep) * sizeof(float));
    int64_t *heap_ids = malloc((size_t)(nt * group * keep) * sizeof(int64_t));
    uint8_t *tables = tiles ? malloc((size_t)(group * table_bytes)) : NULL;
    uint8_t *planes = tiles ? malloc((size_t)(nt * block_tiles * 2 * width * MR_TILE_ROWS)) : NULL;
    uint16_t *distance = tiles ? malloc((size_t)(nt * MR_TILE_QUERIES * block_rows) * sizeof(uint16_t)) : NULL;
    uint32_t *masks = tiles ? malloc((size_t)(nt * MR_TILE_QUERIES * block_tiles) * sizeof(uint32_t)) : NULL;
    if (!blocks || (!tiles && !row_scores) || (int8 && !widened) || !heap_scores || !heap_ids ||
        (tiles && (!tables || !planes || !distance || !masks))) {
        free(blocks), free(row_scores), free(widened), free(heap_scores), free(heap_ids);
        free(tables), free(planes), free(distance), free(masks);
        return mr_fail(err, MR_ERR_MEMORY, "search: out of memory for %d thread buffers", nt);
    }
    if (int8) /* the queries widened once, for the kernels that multiply int16 pairs */
        for (int64_t i = 0; i < a->nq * width; i++) widened[i] = (int16_t)(int8_t)a->queries[i];

    for (int64_t q0 = 0; q0 < a->nq; q0 += group) {
        const int64_t gq = a->nq - q0 < group ? a->nq - q0 : group;
#pragma omp parallel num_threads(nt)
        {
            const int t = mr_thread_index();
            float *scores = row_scores ? row_scores + (int64_t)t * 4 * block_rows : NULL;
            float *my_scores = heap_scores + (int64_t)t * group * keep;
            int64_t *my_ids = heap_ids + (int64_t)t * group * keep;
            for (int64_t q = 0; q < gq; q++) mr_topk_heap_clear(my_scores + q * keep, my_ids + q * keep, keep);
            if (tiles) {
#pragma omp for schedule(static)
                for (int64_t q = 0; q < gq; q++)
                    mr_hamming_query_tables(a->queries + (q0 + q) * width, width, tables + q * table_bytes);
            }
#pragma omp for schedule(dynamic, 1)
            for (int64_t b = 0; b < n_blocks; b++) {
                const code_block *blk = &blocks[b];
                if (tiles) {
                    hamming_block_tiles(blk, width, tables, gq, my_scores, my_ids, keep,
                                        planes + (int64_t)t * block_tiles * 2 * width * MR_TILE_ROWS,
                                        distance + (int64_t)t * MR_TILE_QUERIES * block_rows,
                                        masks + (int64_t)t * MR_TILE_QUERIES * block_tiles);
                    continue;
                }
                int64_t q = 0;
                if (int8 && dot4) /* four queries a pass: each row chunk loaded once for all four */
                    for (; q + 4 <= gq; q += 4) {
                        const int8_t *qs[4];
                        float *outs[4];
                        for (int i = 0; i < 4; i++) {
                            qs[i] = (const int8_t *)a->queries + (q0 + q + i) * width;
                            outs[i] = scores + i * block_rows;
                        }
                        dot4(qs, (const int8_t *)blk->codes, blk->rows, width, outs);
                        for (int i = 0; i < 4; i++)
                            mr_topk_heap_push_row(my_scores + (q + i) * keep, my_ids + (q + i) * keep, keep, outs[i],
                                                  blk->rows, blk->first_id);
                    }
                if (int8) /* two queries a pass: each row widened once for both */
                    for (; q + 2 <= gq; q += 2) {
                        const int8_t *qa = (const int8_t *)a->queries + (q0 + q) * width;
                        const int16_t *wa = widened + (q0 + q) * width;
                        dot2(qa, wa, qa + width, wa + width, (const int8_t *)blk->codes, blk->rows, width, scores,
                             scores + block_rows);
                        for (int i = 0; i < 2; i++)
                            mr_topk_heap_push_row(my_scores + (q + i) * keep, my_ids + (q + i) * keep, keep,
                                                  scores + i * block_rows, blk->rows, blk->first_id);
                    }
                for (; q < gq; q++) {
                    const uint8_t *query = a->queries + (q0 + q) * width;
                    if (int8)
                        dot((const int8_t *)query, widened + (q0 + q) * width, (const int8_t *)blk->codes, blk->rows,
                            width, scores);
                    else
                        hamming(query, blk->codes, blk->rows, width, scores);
                    mr_topk_heap_push_row(my_scores + q * keep, my_ids + q * keep, keep, scores, blk->rows,
                                          blk->first_id);
                }
            }
#pragma omp for schedule(static)
            for (int64_t q = 0; q < gq; q++)
                mr_topk_merge_thread_heaps(heap_scores, heap_ids, nt, group, q, keep, a->out_scores + (q0 + q) * k,
                                           a->out_ids + (q0 + q) * k);
        }
    }
    free(blocks), free(row_scores), free(widened), free(heap_scores), free(heap_ids);
    free(tables), free(planes), free(distance), free(masks);
    return MR_OK;
}

mr_status mr_hamming_search(const mr_code_search_args *a, mr_error *err) { return code_search(a, 0, err); }
mr_status mr_int8_search(const mr_code_search_args *a, mr_error *err) { return code_search(a, 1, err); }

/* ------------------------------------------------------------------ references */

static mr_status code_search_ref(const mr_code_search_args *a, int int8, mr_error *err) {
    int64_t total = 0;
    mr_status st = check_args(a, int8, &total, err);
    if (st || a->nq == 0) return st;
    float *all = malloc((size_t)(a->nq * (total > 0 ? total : 1)) * sizeof(float));
    if (!all) return mr_fail(err, MR_ERR_MEMORY, "reference search: out of memory");
    int64_t column = 0;
    for (int64_t s = 0; s < a->n_segments; s++) {
        const mr_code_segment *seg = &a->segments[s];
        for (int64_t r = 0; r < seg->rows; r++, column++)
            for (int64_t q = 0; q < a->nq; q++) {
                const uint8_t *x = a->queries + q * a->width, *y = seg->codes + r * a->width;
                int64_t score = 0;
                for (int64_t i = 0; i < a->width; i++) {
                    if (int8) {
                        score += (int64_t)(int8_t)x[i] * (int64_t)(int8_t)y[i];
                    } else {
                        for (int bit = 0; bit < 8; bit++) /* +1 where the signs agree, -1 where not */
                            score += (((x[i] ^ y[i]) >> bit) & 1) ? -1 : 1;
                    }
                }
                all[q * total + column] = (float)score;
            }
    }
    st = mr_topk_ref(all, a->nq, total, a->k, a->out_scores, a->out_ids, err);
    free(all);
    return st;
}

mr_status mr_hamming_search_ref(const mr_code_search_args *a, mr_error *err) { return code_search_ref(a, 0, err); }
mr_status mr_int8_search_ref(const mr_code_search_args *a, mr_error *err) { return code_search_ref(a, 1, err); }

/* ------------------------------------------------------------------ rescoring */

static mr_status check_rescore(const mr_rescore_args *a, mr_error *err) {
    if (a->k <= 0) return mr_fail(err, MR_ERR_VALUE, "k must be positive, got %lld", (long long)a->k);
    if (a->dim <= 0 || a->nq < 0 || a->n_candidates < 0 || a->rows < 0)
        return mr_fail(err, MR_ERR_VALUE, "rescore: bad shapes");
    if (a->threads <= 0) return mr_fail(err, MR_ERR_VALUE, "threads must be positive, got %d", a->threads);
    if (a->nq > 0 && (!a->weights || !a->out_scores || !a->out_ids || (a->n_candidates > 0 && !a->candidates)))
        return mr_fail(err, MR_ERR_VALUE, "rescore: missing buffer");
    if (a->rows > 0 && !a->vectors) return mr_fail(err, MR_ERR_VALUE, "rescore: missing vectors");
    for (int64_t i = 0; i < a->nq * a->n_candidates; i++)
        if (a->candidates[i] < -1 || a->candidates[i] >= a->rows)
            return mr_fail(err, MR_ERR_INDEX, "rescore: candidate %lld is outside the %lld vectors",
                           (long long)a->candidates[i], (long long)a->rows);
    return MR_OK;
}

/* Eight partial sums, so the compiler can keep them in one vector register. */
static float dot_f32(const float *w, const float *x, int64_t n) {
    float part[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int t = 0; t < 8; t++) part[t] += w[i + t] * x[i + t];
    float sum = ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
    for (; i < n; i++) sum += w[i] * x[i];
    return sum;
}

static float dot_f32_i8(const float *w, const int8_t *x, int64_t n) {
    float part[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int t = 0; t < 8; t++) part[t] += w[i + t] * (float)x[i + t];
    float sum = ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
    for (; i < n; i++) sum += w[i] * (float)x[i];
    return sum;
}

mr_status mr_rescore(const mr_rescore_args *a, mr_error *err) {
    mr_status st = check_rescore(a, err);
    if (st) return st;
    const int64_t k = a->k, c = a->n_candidates, dim = a->dim;
#pragma omp parallel for num_threads(a->threads) schedule(dynamic, 4)
    for (int64_t q = 0; q < a->nq; q++) {
        float *out_s = a->out_scores + q * k;
        int64_t *out_i = a->out_ids + q * k;
        const float *w = a->weights + q * dim;
        const float bias = a->bias ? a->bias[q] : 0.0f;
        mr_topk_heap_clear(out_s, out_i, k);
        for (int64_t j = 0; j < c; j++) {
            const int64_t p = a->candidates[q * c + j];
            if (p < 0) continue;
            const float dot = a->vectors_int8 ? dot_f32_i8(w, (const int8_t *)a->vectors + p * dim, dim)
                                              : dot_f32(w, (const float *)a->vectors + p * dim, dim);
            mr_topk_heap_push(out_s, out_i, k, bias + dot, p);
        }
        mr_topk_heap_sort(out_s, out_i, k);
    }
    return MR_OK;
}

mr_status mr_rescore_ref(const mr_rescore_args *a, mr_error *err) {
    mr_status st = check_rescore(a, err);
    if (st || a->nq == 0) return st;
    const int64_t c = a->n_candidates, dim = a->dim;
    /* every row scored (-inf where not a candidate), then the reference full sort */
    float *all = malloc((size_t)(a->nq * (a->rows > 0 ? a->rows : 1)) * sizeof(float));
    float *scores = malloc((size_t)(a->nq * a->k) * sizeof(float));
    int64_t *ids = malloc((size_t)(a->nq * a->k) * sizeof(int64_t));
    if (!all || !scores || !ids) {
        free(all), free(scores), free(ids);
        return mr_fail(err, MR_ERR_MEMORY, "reference rescore: out of memory");
    }
    for (int64_t i = 0; i < a->nq * a->rows; i++) all[i] = -INFINITY;
    for (int64_t q = 0; q < a->nq; q++)
        for (int64_t j = 0; j < c; j++) {
            const int64_t p = a->candidates[q * c + j];
            if (p < 0) continue;
            double dot = a->bias ? a->bias[q] : 0.0;
            for (int64_t i = 0; i < dim; i++)
                dot += (double)a->weights[q * dim + i] *
                       (a->vectors_int8 ? (double)((const int8_t *)a->vectors)[p * dim + i]
                                        : (double)((const float *)a->vectors)[p * dim + i]);
            all[q * a->rows + p] = (float)dot;
        }
    st = mr_topk_ref(all, a->nq, a->rows, a->k, scores, ids, err);
    /* rows that were not candidates score -inf: they become padding */
    for (int64_t i = 0; st == MR_OK && i < a->nq * a->k; i++) {
        const int keep = ids[i] >= 0 && scores[i] != -INFINITY;
        a->out_scores[i] = keep ? scores[i] : -INFINITY;
        a->out_ids[i] = keep ? ids[i] : -1;
    }
    free(all), free(scores), free(ids);
    return st;
}
