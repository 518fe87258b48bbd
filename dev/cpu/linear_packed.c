/* The packed narrow-linear variants side by side with a BLAS: each is checked against the
 * reference kernel, then timed on the Mamba-130M products it replaces (x_proj: N = 80, K = 1536;
 * dt_proj: N = 1536, K = 48, reading 48 columns of an 80-wide row), one thread.
 *
 *   make -C dev/cpu && dev/cpu/linear_packed [ROWS] [BLAS_LIBRARY]
 *
 * BLAS_LIBRARY is a shared library exporting cblas_sgemm (or scipy-openblas32's
 * scipy_cblas_sgemm), e.g. $(python -c "import scipy_openblas32 as s; print(s.get_lib_dir())")/libscipy_openblas.so */
#define _POSIX_C_SOURCE 200809L
#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/mr_cpu.h"
#include "gemm/mr_linear_packed.h"
#include "dev_common.h"

typedef void (*linear_fn)(int64_t N, int64_t K, const float *a, int64_t lda, const float *packed, float *out,
                          int64_t ldo, int64_t lo, int64_t hi);
static double rel_err(const float *x, const float *ref, int64_t rows, int64_t cols, int64_t ld) {
    double num = 0, den = 0;
    for (int64_t t = 0; t < rows; t++)
        for (int64_t n = 0; n < cols; n++) {
            double d = (double)x[t * ld + n] - ref[t * ld + n];
            num += d * d;
            den += (double)ref[t * ld + n] * ref[t * ld + n];
        }
    return sqrt(num / den);
}

int main(int argc, char **argv) {
    const int64_t T = argc > 1 ? atol(argv[1]) : 4096;
    const char *blas_name = NULL;
    cblas_sgemm_fn sgemm = argc > 2 ? open_blas(argv[2], &blas_name) : NULL;
    const struct { const char *name; int64_t N, K, lda; } shapes[] = {
        {"x_proj", 80, 1536, 1536}, {"dt_proj", 1536, 48, 80}, {"ragged", 75, 33, 40}};
    const struct { const char *name; linear_fn fn; mr_isa needs; } variants[] = {
        {"avx2", mr_linear_packed_f32_avx2, MR_ISA_AVX2},
        {"avx512", mr_linear_packed_f32_avx512, MR_ISA_AVX512},
    };
    unsigned seed = 1;
    printf("packed linear, %lld rows, one thread\n", (long long)T);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int64_t N = shapes[s].N, K = shapes[s].K, lda = shapes[s].lda;
        float *a = malloc(sizeof(float) * T * lda), *w = malloc(sizeof(float) * N * K);
        float *packed = NULL; /* 64-byte aligned, as the model allocates it: no load splits a cache line */
        if (posix_memalign((void **)&packed, 64, sizeof(float) * mr_packed_weight_floats(N, K))) return 1;
        float *out = malloc(sizeof(float) * T * N), *ref = malloc(sizeof(float) * T * N);
        for (int64_t i = 0; i < T * lda; i++) a[i] = uniform(&seed, -1, 1);
        for (int64_t i = 0; i < N * K; i++) w[i] = uniform(&seed, -1, 1);
        mr_pack_weight_f32(w, N, K, packed);
        mr_linear_packed_f32_ref(T, N, K, a, lda, packed, ref, N);
        const double flop = 2.0 * (double)T * (double)N * (double)K;
        for (size_t v = 0; v <= sizeof variants / sizeof variants[0]; v++) {
            const int is_blas = v == sizeof variants / sizeof variants[0];
            if (is_blas ? !sgemm : mr_isa_best() < variants[v].needs) continue;
            double best = 1e30, err = 0;
            for (int rep = 0; rep < 11; rep++) {
                memset(out, 0xff, sizeof(float) * T * N); /* NaN: a missed element shows */
                double t0 = seconds();
                if (is_blas)
                    sgemm(101, 111, 112, (int)T, (int)N, (int)K, 1.0f, a, (int)lda, w, (int)K, 0.0f, out, (int)N);
                else
                    variants[v].fn(N, K, a, lda, packed, out, N, 0, T);
                double t = seconds() - t0;
                if (t < best) best = t;
                if (rep == 0) err = rel_err(out, ref, T, N, N);
            }
            printf("%-8s N=%-5lld K=%-5lld %-18s rel err %.2e  %s  %7.3f ms  %6.1f GFLOP/s\n", shapes[s].name,
                   (long long)N, (long long)K, is_blas ? blas_name : variants[v].name, err,
                   err < 1e-5 ? "ok  " : "FAIL", best * 1e3, flop / best * 1e-9);
        }
        free(a); free(w); free(packed); free(out); free(ref);
    }
    return 0;
}
