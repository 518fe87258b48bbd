/* The int8 linear's kernels side by side (and a BLAS's sgemm on the same shape): each is checked
 * against the reference twin (bit for bit: the integer sums are exact and the epilogue is one
 * sequence of roundings), then timed without the packing on the Mamba-130M products it replaces
 * (in_proj: N = 3072, K = 768; out_proj: N = 768, K = 1536) and a ragged shape, one thread.
 * The time of a kernel includes quantizing its activations; the Hadamard rotation is checked against
 * its explicit-matrix twin and timed apart.
 *
 *   make -C dev/cpu linear_int8 && dev/cpu/linear_int8 [ROWS] [BLAS_LIBRARY]
 *
 * BLAS_LIBRARY as for linear_packed (a library exporting cblas_sgemm or scipy_cblas_sgemm). */
#define _POSIX_C_SOURCE 200809L
#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/mr_cpu.h"
#include "gemm/mr_linear_int8.h"
#include "ops/mr_hadamard.h"
#include "dev_common.h"

int main(int argc, char **argv) {
    const int64_t T = argc > 1 ? atol(argv[1]) : 512;
    const char *blas_name = "";
    cblas_sgemm_fn sgemm = argc > 2 ? open_blas(argv[2], &blas_name) : NULL;
    const struct { const char *name; int64_t N, K; } shapes[] = {
        {"in_proj", 3072, 768}, {"out_proj", 768, 1536}, {"ragged", 75, 37}};
    unsigned seed = 1;
    int failures = 0;
    printf("int8 linear, %lld rows, one thread; best of 7\n", (long long)T);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int64_t N = shapes[s].N, K = shapes[s].K;
        float *a = malloc(sizeof(float) * T * K), *wf = malloc(sizeof(float) * N * K);
        float *scales = malloc(sizeof(float) * N), *bias = malloc(sizeof(float) * N);
        int8_t *w = malloc((size_t)(N * K));
        float *out = malloc(sizeof(float) * T * N), *ref = malloc(sizeof(float) * T * N);
        void *scratch = malloc((size_t)mr_int8_scratch_bytes(T, K));
        for (int64_t i = 0; i < T * K; i++) a[i] = uniform(&seed, -1, 1);
        for (int64_t i = 0; i < N * K; i++) {
            w[i] = (int8_t)lrintf(uniform(&seed, -127, 127));
            wf[i] = w[i];
        }
        for (int64_t n = 0; n < N; n++) {
            scales[n] = uniform(&seed, 0, 0.01f);
            bias[n] = uniform(&seed, -1, 1);
        }
        mr_int8_linear L;
        mr_error err = {0};
        if (mr_int8_linear_init(&L, w, scales, N, K, &err)) {
            fprintf(stderr, "%s\n", err.message);
            return 1;
        }
        mr_linear_int8_f32_ref(w, scales, N, K, T, a, K, bias, 0, ref, N);
        const double ops = 2.0 * (double)T * (double)N * (double)K;
        for (int k = 0; k <= MR_I8_COUNT; k++) {
            const int is_blas = k == MR_I8_COUNT;
            if (is_blas ? !sgemm : !mr_int8_kernel_available((mr_int8_kernel)k)) continue;
            double best = 1e30;
            int same = 1;
            for (int rep = 0; rep < 7; rep++) {
                memset(out, 0xff, sizeof(float) * T * N);
                const double t0 = seconds();
                if (is_blas)
                    sgemm(101, 111, 112, (int)T, (int)N, (int)K, 1.0f, a, (int)K, wf, (int)K, 0.0f, out, (int)N);
                else
                    mr_linear_int8_f32_with((mr_int8_kernel)k, &L, T, a, K, bias, 0, out, N, scratch, &err);
                const double t = seconds() - t0;
                if (t < best) best = t;
                if (rep == 0 && !is_blas) same = memcmp(out, ref, sizeof(float) * T * N) == 0;
            }
            failures += !same;
            printf("%-9s N=%-5lld K=%-5lld %-11s %s  %8.3f ms  %6.1f G%s/s\n", shapes[s].name, (long long)N,
                   (long long)K, is_blas ? "sgemm" : mr_int8_kernel_name((mr_int8_kernel)k),
                   is_blas ? "    " : same ? "same" : "DIFF", best * 1e3, ops / best * 1e-9, is_blas ? "FLOP" : "OP");
        }
        if (K % 2 == 0) { /* out_proj's rotation: the block the quantizer picks */
            const int64_t block = mr_hadamard_default_block(K, 1 << 20);
            /* checked against the explicit matrix on a few rows first */
            const int64_t rows = T < 4 ? T : 4;
            float *fast = malloc(sizeof(float) * rows * K), *slow = malloc(sizeof(float) * rows * K);
            memcpy(fast, a, sizeof(float) * rows * K);
            mr_hadamard_rows_f32(fast, K, rows, K, block, NULL);
            mr_hadamard_rows_f32_ref(a, K, rows, K, block, NULL, slow, K);
            float worst = 0;
            for (int64_t i = 0; i < rows * K; i++) worst = fmaxf(worst, fabsf(fast[i] - slow[i]));
            failures += !(worst < 1e-4f);
            free(fast), free(slow);
            double best = 1e30;
            for (int rep = 0; rep < 7; rep++) {
                const double t0 = seconds();
                mr_hadamard_rows_f32(a, K, T, K, block, NULL);
                const double t = seconds() - t0;
                if (t < best) best = t;
            }
            printf("%-9s hadamard block %-5lld %s  %8.3f ms  (max |fast - matrix| %.1e)\n", shapes[s].name,
                   (long long)block, worst < 1e-4f ? "ok  " : "DIFF", best * 1e3, (double)worst);
        }
        mr_int8_linear_free(&L);
        free(a); free(wf); free(scales); free(bias); free(w); free(out); free(ref); free(scratch);
    }
    return failures != 0;
}
