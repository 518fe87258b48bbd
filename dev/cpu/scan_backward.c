/* The selective scan's backward (training) on the Mamba-130M shape (E = 1536, N = 16): each
 * vector path of the chunked kernel is checked against the reference twin on the same random
 * packed batch, then both are timed on one thread, next to the forward that keeps the chunk
 * boundary states. Threads: OMP_NUM_THREADS for the fast kernel's team (default 1: then times
 * are the thread's CPU time, steadier on a busy machine; with more, wall-clock time).
 *
 *   make -C dev/cpu scan_backward && dev/cpu/scan_backward [L] [sequences]
 *
 * MAMBARET_DEV_HUGEPAGES=1 puts the large arrays on transparent huge pages, to see what TLB misses
 * of the row-strided access cost (about 10 % since the kernel went chunk-major; up to 30 % before).
 */
#define _DEFAULT_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "base/mr_cpu.h"
#include "base/mr_parallel.h"
#include "ops/mr_ops.h"
#include "ops/mr_ops_backward.h"
#include "dev_common.h"

enum { CHUNK = 64 };

/* On one thread, the time this thread spent on a CPU: steadier than the clock on a shared machine. */
static double thread_seconds(int threads) {
    if (threads > 1) return seconds();
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* MAMBARET_DEV_HUGEPAGES=1: large arrays on transparent huge pages (madvise), to see how much of
 * the cost is TLB misses from row-strided access */
static float *big_alloc(int64_t n) {
    size_t bytes = sizeof(float) * (size_t)n;
    const char *huge = getenv("MAMBARET_DEV_HUGEPAGES");
    if (huge && huge[0] == '1' && bytes >= (1u << 21)) {
        bytes = (bytes + (1u << 21) - 1) & ~(size_t)((1u << 21) - 1);
        float *p = aligned_alloc(1u << 21, bytes);
        madvise(p, bytes, MADV_HUGEPAGE);
        return p;
    }
    return malloc(bytes);
}

static double rel_err(const float *a, const float *ref, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        num += (double)(a[i] - ref[i]) * (a[i] - ref[i]);
        den += (double)ref[i] * ref[i];
    }
    return sqrt(num / (den > 0 ? den : 1e-30));
}

static float *filled(int64_t n, unsigned *seed, float lo, float hi) {
    float *p = big_alloc(n);
    for (int64_t i = 0; i < n; i++) p[i] = uniform(seed, lo, hi);
    return p;
}

int main(int argc, char **argv) {
    const int64_t L = argc > 1 ? atol(argv[1]) : 512, S = argc > 2 ? atol(argv[2]) : 1, E = 1536, N = 16;
    const int64_t T = L * S;
    int threads = 1;
#ifdef _OPENMP
    if (getenv("OMP_NUM_THREADS")) threads = mr_max_threads();
#endif
    unsigned seed = 1;
    int64_t *offsets = malloc(sizeof(int64_t) * (size_t)(S + 1));
    for (int64_t s = 0; s <= S; s++) offsets[s] = s * L;
    float *u = filled(T * E, &seed, -2, 2), *dt = filled(T * E, &seed, -6, 2), *z = filled(T * E, &seed, -3, 3);
    float *gy = filled(T * E, &seed, -1, 1), *B = filled(T * N, &seed, -1, 1), *C = filled(T * N, &seed, -1, 1);
    float *A = filled(E * N, &seed, -1, 3), *bias = filled(E, &seed, -4, 0), *D = filled(E, &seed, 0, 2);
    for (int64_t i = 0; i < E * N; i++) A[i] = -expf(A[i]);
    const int64_t count = mr_scan_boundary_count(S, offsets, CHUNK);
    float *boundaries = malloc(sizeof(float) * (size_t)(count * E * N + 1)), *y = malloc(sizeof(float) * (size_t)(T * E));

    /* gradients: [gu, gdt, gz] [T, E], gA [E, N], [gdt_bias, gD] [E], [gB, gC] [T, N]; _ref and fast */
    float *g[2][8];
    const int64_t sizes[8] = {T * E, T * E, T * E, E * N, E, E, T * N, T * N};
    for (int v = 0; v < 2; v++)
        for (int i = 0; i < 8; i++) {
            g[v][i] = big_alloc(sizes[i]);
            memset(g[v][i], 0, sizeof(float) * (size_t)sizes[i]);
        }
    const int64_t work_floats = mr_scan_backward_work_floats(CHUNK, E, N);
    const int64_t part = T * N; /* one thread's dB or dC partial sums */
    float *parts = big_alloc(threads * (2 * part + work_floats));
    float *ref_work = malloc(sizeof(float) * (size_t)((L + 1) * N));

    double t0 = thread_seconds(threads);
    mr_selective_scan_backward_f32_ref(S, offsets, E, N, u, E, dt, E, bias, A, B, C, N, D, z, E, gy, E, g[0][0], g[0][1],
                                       g[0][4], g[0][3], g[0][5], g[0][2], g[0][6], g[0][7], ref_work);
    const double ref_time = thread_seconds(threads) - t0;
    printf("scan backward, %lld x L=%lld, E=%lld N=%lld, chunk %d, %d thread(s)\n", (long long)S, (long long)L,
           (long long)E, (long long)N, CHUNK, threads);
    printf("%-9s  %8.1f ms  %6.2f ns per token-channel\n", "reference", ref_time * 1e3, ref_time * 1e9 / (double)(T * E));

    const char *paths[] = {"portable", "avx2", "avx512"};
    const mr_isa needs[] = {MR_ISA_PORTABLE, MR_ISA_AVX2, MR_ISA_AVX512};
    for (int p = 0; p < 3; p++) {
        mr_cpu_set_isa_limit(needs[p]); /* every path in one process: the dispatch follows the limit */
        if (mr_isa_best() < needs[p]) {
            printf("%-9s  not supported by this CPU\n", paths[p]);
            continue;
        }
        double best_fwd = 1e30, best_bwd = 1e30;
        for (int rep = 0; rep < 5; rep++) {
            t0 = thread_seconds(threads);
#pragma omp parallel num_threads(threads)
            mr_selective_scan_packed_f32(S, offsets, CHUNK, E, N, u, E, dt, E, bias, A, B, C, N, D, z, E, y, E,
                                         boundaries, mr_thread_index(), mr_thread_count());
            double t1 = thread_seconds(threads);
#pragma omp parallel num_threads(threads)
            {
                const int ith = mr_thread_index(), nth = mr_thread_count();
                mr_selective_scan_backward_f32(S, offsets, CHUNK, E, N, u, E, dt, E, bias, A, B, C, N, D, z, E,
                                               boundaries, gy, E, g[1][0], g[1][1], g[1][4], g[1][3], g[1][5],
                                               g[1][2], parts + ith * part, parts + (threads + ith) * part,
                                               parts + 2 * threads * part + ith * work_floats, ith, nth);
#pragma omp barrier
                mr_sum_partials_f32(parts, nth, T * N, g[1][6], ith, nth);
                mr_sum_partials_f32(parts + threads * part, nth, T * N, g[1][7], ith, nth);
            }
            double t2 = thread_seconds(threads);
            if (t1 - t0 < best_fwd) best_fwd = t1 - t0;
            if (t2 - t1 < best_bwd) best_bwd = t2 - t1;
        }
        double worst = 0;
        for (int i = 0; i < 8; i++) {
            double err = rel_err(g[1][i], g[0][i], sizes[i]);
            if (err > worst) worst = err;
        }
        printf("%-9s  %8.1f ms  %6.2f ns per token-channel  (%.1fx the reference; forward %.1f ms)  "
               "worst rel err %.2e %s\n", paths[p], best_bwd * 1e3, best_bwd * 1e9 / (double)(T * E),
               ref_time / best_bwd, best_fwd * 1e3, worst, worst < 2e-5 ? "ok" : "FAIL");
    }
    for (int v = 0; v < 2; v++)
        for (int i = 0; i < 8; i++) free(g[v][i]);
    free(offsets); free(u); free(dt); free(z); free(gy); free(B); free(C); free(A); free(bias); free(D);
    free(boundaries); free(y); free(parts); free(ref_work);
    return 0;
}
