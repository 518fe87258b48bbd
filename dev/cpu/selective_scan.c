/* The CPU selective-scan variants side by side: each is checked against the reference kernel
 * on the same random inputs, then timed on the Mamba-130M shape (E = 1536, N = 16).
 *
 *   make -C dev/cpu && dev/cpu/selective_scan [L]
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "ops/mr_ops.h"
#include "ops/mr_ops_isa.h"
#include "dev_common.h"

typedef void (*scan_fn)(int64_t L, int64_t E, int64_t N, const float *u, int64_t ldu, const float *dt,
                        int64_t lddt, const float *dt_bias, const float *A, const float *B, const float *C,
                        int64_t ldbc, const float *D, const float *z, int64_t ldz, const float *state_in,
                        float *state_out, float *y, int64_t ldy, int64_t lo, int64_t hi);

int main(int argc, char **argv) {
    const int64_t L = argc > 1 ? atol(argv[1]) : 512, E = 1536, N = 16;
    unsigned seed = 1;
    float *u = malloc(sizeof(float) * L * E), *dt = malloc(sizeof(float) * L * E), *z = malloc(sizeof(float) * L * E);
    float *y = malloc(sizeof(float) * L * E), *y_ref = malloc(sizeof(float) * L * E);
    float *A = malloc(sizeof(float) * E * N), *B = malloc(sizeof(float) * L * N), *C = malloc(sizeof(float) * L * N);
    float *bias = malloc(sizeof(float) * E), *D = malloc(sizeof(float) * E);
    float *s_in = malloc(sizeof(float) * E * N), *s_out = malloc(sizeof(float) * E * N),
          *s_ref = malloc(sizeof(float) * E * N);
    for (int64_t i = 0; i < L * E; i++) {
        u[i] = uniform(&seed, -2, 2);
        dt[i] = uniform(&seed, -6, 2);
        z[i] = uniform(&seed, -3, 3);
    }
    for (int64_t i = 0; i < E * N; i++) {
        A[i] = -expf(uniform(&seed, -1, 3));
        s_in[i] = uniform(&seed, -1, 1);
    }
    for (int64_t i = 0; i < L * N; i++) {
        B[i] = uniform(&seed, -1, 1);
        C[i] = uniform(&seed, -1, 1);
    }
    for (int64_t i = 0; i < E; i++) {
        bias[i] = uniform(&seed, -4, 0);
        D[i] = uniform(&seed, 0, 2);
    }
    mr_selective_scan_f32_ref(L, E, N, u, E, dt, E, bias, A, B, C, N, D, z, E, s_in, s_ref, y_ref, E);

    struct { const char *name; scan_fn fn; mr_isa needs; } variants[] = {
        {"portable", mr_selective_scan_f32_portable, MR_ISA_PORTABLE},
        {"avx2", mr_selective_scan_f32_avx2, MR_ISA_AVX2},
        {"avx512", mr_selective_scan_f32_avx512, MR_ISA_AVX512},
    };
    printf("selective scan, L=%lld E=%lld N=%lld, one thread\n", (long long)L, (long long)E, (long long)N);
    for (size_t v = 0; v < sizeof variants / sizeof variants[0]; v++) {
        if (mr_isa_best() < variants[v].needs) {
            printf("%-9s  not supported by this CPU\n", variants[v].name);
            continue;
        }
        variants[v].fn(L, E, N, u, E, dt, E, bias, A, B, C, N, D, z, E, s_in, s_out, y, E, 0, E);
        double num = 0, den = 0;
        for (int64_t i = 0; i < L * E; i++) {
            num += (double)(y[i] - y_ref[i]) * (y[i] - y_ref[i]);
            den += (double)y_ref[i] * y_ref[i];
        }
        double err = sqrt(num / den);
        double best = 1e30;
        for (int rep = 0; rep < 10; rep++) {
            double t0 = seconds();
            variants[v].fn(L, E, N, u, E, dt, E, bias, A, B, C, N, D, z, E, s_in, s_out, y, E, 0, E);
            double t = seconds() - t0;
            if (t < best) best = t;
        }
        printf("%-9s  rel err %.2e  %s  %8.3f ms  %6.2f ns per token-channel\n", variants[v].name, err,
               err < 1e-5 ? "ok  " : "FAIL", best * 1e3, best * 1e9 / (double)(L * E));
    }
    free(u); free(dt); free(z); free(y); free(y_ref); free(A); free(B); free(C); free(bias); free(D);
    free(s_in); free(s_out); free(s_ref);
    return 0;
}
