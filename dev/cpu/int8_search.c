/* Int8 code search per kernel (portable, AVX2 widening to int16, AVX-512 VNNI four queries a
 * pass): each checked against the plain reference search (scores and ids equal), then timed with
 * the driver's blocks and heaps, one thread.
 *
 *     make -C dev/cpu int8_search && dev/cpu/int8_search [rows] [queries] [width]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/mr_cpu.h"
#include "dev_common.h"
#include "search/mr_codes_index.h"

enum { K = 10 };

int main(int argc, char **argv) {
    const int64_t n = argc > 1 ? atol(argv[1]) : 100000, nq = argc > 2 ? atol(argv[2]) : 100,
                  width = argc > 3 ? atol(argv[3]) : 768;
    unsigned state = 7;
    int8_t *rows = malloc((size_t)(n * width)), *queries = malloc((size_t)(nq * width));
    for (int64_t i = 0; i < n * width; i++) rows[i] = (int8_t)(uniform(&state, -128, 128));
    for (int64_t i = 0; i < nq * width; i++) queries[i] = (int8_t)(uniform(&state, -128, 128));
    float *ref_s = malloc(sizeof(float) * nq * K), *got_s = malloc(sizeof(float) * nq * K);
    int64_t *ref_i = malloc(sizeof(int64_t) * nq * K), *got_i = malloc(sizeof(int64_t) * nq * K);
    const mr_code_segment seg = {(const uint8_t *)rows, n};
    mr_code_search_args a = {(const uint8_t *)queries, nq, width, &seg, 1, K, 1, MR_ISA_AUTO, ref_s, ref_i};
    mr_error err = {0};
    if (mr_int8_search_ref(&a, &err)) {
        fprintf(stderr, "%s\n", err.message);
        return 1;
    }
    printf("int8 search, %lld rows x %lld bytes, %lld queries, k %d, one thread; best of 3\n", (long long)n,
           (long long)width, (long long)nq, K);
    int failures = 0;
    const mr_isa kernels[] = {MR_ISA_PORTABLE, MR_ISA_AVX2, MR_ISA_AVX512};
    const char *names[] = {"portable", "avx2", "avx512 (VNNI)"};
    for (int v = 0; v < 3; v++) {
        if (!mr_code_kernel_available(kernels[v], 1)) continue;
        a.kernel = kernels[v];
        a.out_scores = got_s;
        a.out_ids = got_i;
        double best = 1e30;
        for (int rep = 0; rep < 3; rep++) {
            const double t0 = seconds();
            mr_int8_search(&a, &err);
            const double t = seconds() - t0;
            if (t < best) best = t;
        }
        const int same = !memcmp(got_s, ref_s, sizeof(float) * nq * K) && !memcmp(got_i, ref_i, sizeof(int64_t) * nq * K);
        failures += !same;
        printf("%-14s %s  %8.3f s  %6.1f G products/s\n", names[v], same ? "same" : "DIFF", best,
               (double)n * (double)nq * (double)width / best * 1e-9);
    }
    free(rows), free(queries), free(ref_s), free(got_s), free(ref_i), free(got_i);
    return failures != 0;
}
