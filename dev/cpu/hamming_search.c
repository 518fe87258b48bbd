/* Binary (Hamming) search kernels side by side: the row kernels (one query against rows, then
 * a heap push per score) and the tile kernel (rows as nibble planes, two tiles and six queries
 * a pass, only rows within a heap's limit pushed). Each is checked against the plain reference
 * search, then timed on one thread.
 *
 *     make hamming_search && ./hamming_search [rows] [queries] [width_bytes]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dev_common.h"
#include "search/mr_code_kernels.h"
#include "search/mr_codes_index.h"
#include "base/mr_cpu.h"
#include "search/mr_topk.h"

enum { K = 10 };

typedef void (*rows_fn)(const uint8_t *, const uint8_t *, int64_t, int64_t, float *);

/* the row path: a score per row, every score offered to the heap */
static void search_rows(rows_fn fn, const uint8_t *q, int64_t nq, const uint8_t *rows, int64_t n, int64_t width,
                        float *out_s, int64_t *out_i) {
    enum { BLOCK = 2048 };
    float *scores = malloc(BLOCK * sizeof(float));
    for (int64_t i = 0; i < nq; i++) mr_topk_heap_clear(out_s + i * K, out_i + i * K, K);
    for (int64_t b = 0; b < n; b += BLOCK) {
        const int64_t m = n - b < BLOCK ? n - b : BLOCK;
        for (int64_t i = 0; i < nq; i++) {
            fn(q + i * width, rows + b * width, m, width, scores);
            mr_topk_heap_push_row(out_s + i * K, out_i + i * K, K, scores, m, b);
        }
    }
    for (int64_t i = 0; i < nq; i++) mr_topk_heap_sort(out_s + i * K, out_i + i * K, K);
    free(scores);
}

static int same(const float *a, const int64_t *ai, const float *b, const int64_t *bi, int64_t n) {
    return memcmp(a, b, (size_t)n * sizeof(float)) == 0 && memcmp(ai, bi, (size_t)n * sizeof(int64_t)) == 0;
}

int main(int argc, char **argv) {
    const int64_t n = argc > 1 ? atoll(argv[1]) : 200000, nq = argc > 2 ? atoll(argv[2]) : 100,
                  width = argc > 3 ? atoll(argv[3]) : 96;
    uint8_t *rows = malloc((size_t)(n * width)), *queries = malloc((size_t)(nq * width));
    unsigned state = 1;
    for (int64_t i = 0; i < n * width; i++) rows[i] = (uint8_t)(uniform(&state, 0, 256));
    for (int64_t i = 0; i < nq * width; i++) queries[i] = (uint8_t)(uniform(&state, 0, 256));
    float *ref_s = malloc((size_t)(nq * K) * sizeof(float)), *s = malloc((size_t)(nq * K) * sizeof(float));
    int64_t *ref_i = malloc((size_t)(nq * K) * sizeof(int64_t)), *ids = malloc((size_t)(nq * K) * sizeof(int64_t));
    mr_code_segment seg = {rows, n};
    mr_code_search_args args = {queries, nq, width, &seg, 1, K, 1, MR_ISA_AUTO, ref_s, ref_i};
    mr_error err = {0};
    if (mr_hamming_search_ref(&args, &err)) return fprintf(stderr, "%s\n", err.message), 1;
    printf("%lld rows x %lld queries, %lld bytes, k %d, one thread (ns per query-row pair)\n", (long long)n,
           (long long)nq, (long long)width, K);

    const int avx2 = mr_code_kernel_available(MR_ISA_AVX2, 0);
    struct { const char *name; rows_fn fn; int runs; } row_variants[] = {
        {"rows portable + heap", mr_hamming_rows_portable, 1}, {"rows avx2 + heap", mr_hamming_rows_avx2, avx2}};
    for (size_t v = 0; v < sizeof row_variants / sizeof row_variants[0]; v++) {
        if (!row_variants[v].runs) continue;
        const double t0 = seconds();
        search_rows(row_variants[v].fn, queries, nq, rows, n, width, s, ids);
        const double dt = seconds() - t0;
        printf("  %-28s %7.3f ns  %s\n", row_variants[v].name, dt * 1e9 / (double)(n * nq),
               same(s, ids, ref_s, ref_i, nq * K) ? "ok" : "MISMATCH");
    }
    /* the tile path as the library runs it (pack, tables, kernel, filtered pushes) */
    const mr_isa tiles[] = {MR_ISA_AVX2};
    for (size_t v = 0; v < sizeof tiles / sizeof tiles[0]; v++) {
        if (!mr_code_kernel_available(tiles[v], 0)) continue;
        args.kernel = tiles[v], args.out_scores = s, args.out_ids = ids;
        const double t0 = seconds();
        if (mr_hamming_search(&args, &err)) return fprintf(stderr, "%s\n", err.message), 1;
        const double dt = seconds() - t0;
        printf("  %-28s %7.3f ns  %s\n", "tiles avx2 (library search)", dt * 1e9 / (double)(n * nq),
               same(s, ids, ref_s, ref_i, nq * K) ? "ok" : "MISMATCH");
    }
    /* the tile kernel alone, rows packed once, no heap: the cost the search cannot go below */
    if (avx2) {
        const int64_t tiles_n = (n + MR_TILE_ROWS - 1) / MR_TILE_ROWS, table_bytes = 2 * width * 16;
        uint8_t *planes = malloc((size_t)(tiles_n * 2 * width * MR_TILE_ROWS)), *tables = malloc((size_t)(4 * table_bytes));
        uint16_t *distance = malloc((size_t)(4 * tiles_n * MR_TILE_ROWS) * sizeof(uint16_t)), limits[4] = {0};
        uint32_t *masks = malloc((size_t)(4 * tiles_n) * sizeof(uint32_t));
        /* both packs must give the same planes; the vector one is what the search uses */
        uint8_t *reference_planes = malloc((size_t)(tiles_n * 2 * width * MR_TILE_ROWS));
        /* touched first: a page fault per 4 KB would otherwise outweigh the packing itself */
        memset(reference_planes, 1, (size_t)(tiles_n * 2 * width * MR_TILE_ROWS));
        memset(planes, 1, (size_t)(tiles_n * 2 * width * MR_TILE_ROWS));
        double t0 = seconds();
        mr_hamming_pack_tiles(rows, n, width, reference_planes);
        const double pack_portable = seconds() - t0;
        t0 = seconds();
        mr_hamming_pack_tiles_avx2(rows, n, width, planes);
        const double pack = seconds() - t0;
        printf("  %-28s %7.3f ns a row (portable %.3f ns)  %s\n", "pack avx2", pack * 1e9 / (double)n,
               pack_portable * 1e9 / (double)n,
               memcmp(planes, reference_planes, (size_t)(tiles_n * 2 * width * MR_TILE_ROWS)) ? "MISMATCH" : "ok");
        free(reference_planes);
        t0 = seconds();
        for (int64_t i = 0; i + 4 <= nq; i += 4) {
            for (int j = 0; j < 4; j++) mr_hamming_query_tables(queries + (i + j) * width, width, tables + j * table_bytes);
            mr_hamming_tiles_avx2(tables, 4, width, planes, tiles_n, limits, distance, masks);
        }
        const double dt = seconds() - t0;
        printf("  %-28s %7.3f ns\n", "tiles avx2 kernel alone", dt * 1e9 / (double)(n * (nq / 4 * 4)));
        free(planes), free(tables), free(distance), free(masks);
    }
    free(rows), free(queries), free(ref_s), free(s), free(ref_i), free(ids);
    return 0;
}
