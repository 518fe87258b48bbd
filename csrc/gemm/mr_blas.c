#include "gemm/mr_blas.h"

#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "base/mr_parallel.h"

enum { CBLAS_ROW_MAJOR = 101, CBLAS_NO_TRANS = 111, CBLAS_TRANS = 112 };

void mr_blas_init_fallback(mr_blas *blas) {
    memset(blas, 0, sizeof *blas);
    snprintf(blas->name, sizeof blas->name, "builtin (plain C)");
}

mr_status mr_blas_open(mr_blas *blas, const char *path, const char *sgemm_symbol,
                       const char *threads_symbol, const char *name, mr_error *err) {
    mr_blas_init_fallback(blas);
    void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!lib) return mr_fail(err, MR_ERR_RUNTIME, "cannot load BLAS '%s': %s", path, dlerror());
    void *sgemm = dlsym(lib, sgemm_symbol);
    if (!sgemm) {
        dlclose(lib);
        return mr_fail(err, MR_ERR_RUNTIME, "BLAS '%s' has no symbol '%s'", path, sgemm_symbol);
    }
    void *threads = (threads_symbol && threads_symbol[0]) ? dlsym(lib, threads_symbol) : NULL;
    blas->library = lib;
    /* POSIX guarantees that data and function pointers convert through dlsym's result */
    memcpy(&blas->sgemm, &sgemm, sizeof sgemm);
    if (threads) memcpy(&blas->set_threads, &threads, sizeof threads);
    snprintf(blas->name, sizeof blas->name, "%s", name && name[0] ? name : path);
    return MR_OK;
}

void mr_blas_close(mr_blas *blas) {
    if (blas->library) dlclose(blas->library);
    mr_blas_init_fallback(blas);
}

void mr_blas_set_threads(const mr_blas *blas, int threads) {
    if (blas->set_threads && threads > 0) blas->set_threads(threads);
}

/* Blocked over rows of `a` and of `w` so a tile of both stays in cache; rows of the output
 * are split across threads. Correct for any shape; fast only compared to nothing. */
void mr_gemm_f32_fallback(int64_t M, int64_t N, int64_t K, const float *a, int64_t lda,
                          const float *w, int64_t ldw, float beta, float *out, int64_t ldo,
                          int threads) {
    enum { TILE_M = 16, TILE_N = 64 };
    int64_t tiles_m = (M + TILE_M - 1) / TILE_M;
    (void)threads;
#pragma omp parallel for num_threads(threads > 0 ? threads : 1) schedule(static)
    for (int64_t tm = 0; tm < tiles_m; tm++) {
        int64_t m0 = tm * TILE_M, m1 = m0 + TILE_M < M ? m0 + TILE_M : M;
        for (int64_t n0 = 0; n0 < N; n0 += TILE_N) {
            int64_t n1 = n0 + TILE_N < N ? n0 + TILE_N : N;
            for (int64_t m = m0; m < m1; m++) {
                const float *arow = a + m * lda;
                for (int64_t n = n0; n < n1; n++) {
                    const float *wrow = w + n * ldw;
                    float acc = 0.0f;
                    for (int64_t k = 0; k < K; k++) acc += arow[k] * wrow[k];
                    float *dst = out + m * ldo + n;
                    *dst = beta == 0.0f ? acc : beta * *dst + acc;
                }
            }
        }
    }
}

mr_status mr_gemm_f32(const mr_blas *blas, int64_t M, int64_t N, int64_t K, const float *a,
                      int64_t lda, const float *w, int64_t ldw, const float *bias, float beta,
                      float *out, int64_t ldo, int threads, mr_error *err) {
    if (M == 0 || N == 0) return MR_OK;
    if (blas->sgemm) {
        if (M > INT_MAX || N > INT_MAX || K > INT_MAX || lda > INT_MAX || ldw > INT_MAX ||
            ldo > INT_MAX)
            return mr_fail(err, MR_ERR_VALUE, "matrix product too large for a 32-bit BLAS");
        if (K == 0) {
            /* some BLAS reject k = 0; the product is then just beta * out */
            for (int64_t m = 0; m < M; m++)
                for (int64_t n = 0; n < N; n++) out[m * ldo + n] = beta == 0.0f ? 0.0f : out[m * ldo + n];
        } else {
            blas->sgemm(CBLAS_ROW_MAJOR, CBLAS_NO_TRANS, CBLAS_TRANS, (int)M, (int)N, (int)K, 1.0f,
                        a, (int)lda, w, (int)ldw, beta, out, (int)ldo);
        }
    } else {
        mr_gemm_f32_fallback(M, N, K, a, lda, w, ldw, beta, out, ldo, threads);
    }
    if (bias)
        for (int64_t m = 0; m < M; m++)
            for (int64_t n = 0; n < N; n++) out[m * ldo + n] += bias[n];
    return MR_OK;
}

mr_status mr_gemm_rows_f32(const mr_blas *blas, int64_t T, int64_t N, int64_t K, const float *a, int64_t lda,
                           const float *w, const float *bias, float beta, float *out, int64_t ldo, int ith, int nth,
                           mr_error *err) {
    int64_t lo, hi;
    mr_split_range(T, 4, ith, nth, &lo, &hi);
    if (hi <= lo) return MR_OK;
    return mr_gemm_f32(blas, hi - lo, N, K, a + lo * lda, lda, w, K, bias, beta, out + lo * ldo, ldo, 1, err);
}
