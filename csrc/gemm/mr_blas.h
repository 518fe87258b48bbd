/* The matrix products of the model, through a BLAS loaded at run time or a plain C fallback.
 *
 * The BLAS is opened by path (dlopen) rather than linked, so the extension imports without
 * one and the Python layer decides which to use (the wheel-installed OpenBLAS by default). */
#ifndef MR_BLAS_H
#define MR_BLAS_H

#include <stdint.h>

#include "base/mr_error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* cblas_sgemm's C signature (enums passed as int: 101 row-major, 111 no-trans, 112 trans). */
typedef void (*mr_cblas_sgemm_fn)(int order, int trans_a, int trans_b, int m, int n, int k,
                                  float alpha, const float *a, int lda, const float *b, int ldb,
                                  float beta, float *c, int ldc);
typedef void (*mr_blas_set_threads_fn)(int threads);

typedef struct {
    char name[128];                     /* what show_config() reports */
    void *library;                      /* dlopen handle, NULL for the fallback */
    mr_cblas_sgemm_fn sgemm;            /* NULL: the built-in fallback */
    mr_blas_set_threads_fn set_threads; /* NULL when the BLAS has no thread control */
} mr_blas;

/* The built-in fallback (always available). */
void mr_blas_init_fallback(mr_blas *blas);

/* Opens `path` and looks up the two symbols (threads_symbol may be NULL or ""). */
mr_status mr_blas_open(mr_blas *blas, const char *path, const char *sgemm_symbol,
                       const char *threads_symbol, const char *name, mr_error *err);

void mr_blas_close(mr_blas *blas);

/* Sets the BLAS's own thread count, when it has one. */
void mr_blas_set_threads(const mr_blas *blas, int threads);

/* out[M, N] = beta * out + a[M, K] @ w[N, K]^T (+ bias[N] when non-NULL), row-major.
 * beta is 0 or 1 (1 fuses the residual add). `threads` bounds the fallback's threads. */
mr_status mr_gemm_f32(const mr_blas *blas, int64_t M, int64_t N, int64_t K, const float *a,
                      int64_t lda, const float *w, int64_t ldw, const float *bias, float beta,
                      float *out, int64_t ldo, int threads, mr_error *err);

/* A thread's rows of out[T, N] = a[T, K] @ w[N, K]^T (+ bias, + beta * out): thread ith of nth
 * takes its share of the rows (blocks of 4) and runs it through the BLAS on one thread, so one
 * team of threads runs a whole layer and the BLAS never starts its own. */
mr_status mr_gemm_rows_f32(const mr_blas *blas, int64_t T, int64_t N, int64_t K, const float *a, int64_t lda,
                           const float *w, const float *bias, float beta, float *out, int64_t ldo, int ith, int nth,
                           mr_error *err);

/* The plain C product behind the fallback, exposed for the tests. */
void mr_gemm_f32_fallback(int64_t M, int64_t N, int64_t K, const float *a, int64_t lda,
                          const float *w, int64_t ldw, float beta, float *out, int64_t ldo,
                          int threads);

#ifdef __cplusplus
}
#endif
#endif
