/* Mamba-2's SSD scan, its two forms side by side: the library's recurrent kernels (portable, AVX2,
 * AVX-512) and the chunked matrix form of the Mamba-2 paper written here over a BLAS, each checked
 * against the reference on the same random inputs, then timed on the mamba2-130m shape (24 heads
 * of 64, one group, N = 128), one thread.
 *
 *   make -C dev/cpu && dev/cpu/ssd_scan [L] [BLAS_LIBRARY] [CHUNK]
 *
 * The chunked form, per chunk of Q tokens and head: Y = (L o C B^T) X + diag(e^cs) C S and
 * S' = e^cs_Q S + (B o w)^T X, where cs is the running sum of delta * A over the chunk,
 * L[t, s] = e^(cs_t - cs_s) delta_s for s <= t and w_s = e^(cs_Q - cs_s) delta_s: three small
 * matrix products per chunk and head (C B^T once per group) instead of a pass over the state per
 * token. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/mr_cpu.h"
#include "ops/mr_ops.h"
#include "ops/mr_ssd_isa.h"
#include "dev_common.h"

enum { ROW_MAJOR = 101, NO_TRANS = 111, TRANS = 112 };

/* The chunked form, heads [0, H), state starting at zero; y is [L, H*P]. */
static void ssd_chunked(cblas_sgemm_fn sgemm, int64_t Q, int64_t L, int64_t H, int64_t P, int64_t G, int64_t N,
                        const float *x, const float *dt, const float *dt_bias, const float *A, const float *B,
                        const float *C, const float *D, float *state, float *y, float *work) {
    const int64_t E = H * P, GN = G * N, per_group = H / G;
    float *cb = work, *mask = cb + Q * Q, *cs = mask + Q * Q, *delta = cs + Q, *bw = delta + Q, *cst = bw + Q * N;
    memset(state, 0, sizeof(float) * H * N * P);
    for (int64_t t0 = 0; t0 < L; t0 += Q) {
        const int64_t q = L - t0 < Q ? L - t0 : Q;
        for (int64_t g = 0; g < G; g++) {
            /* C B^T of the group, [q, q] */
            sgemm(ROW_MAJOR, NO_TRANS, TRANS, (int)q, (int)q, (int)N, 1.0f, C + t0 * GN + g * N, (int)GN,
                  B + t0 * GN + g * N, (int)GN, 0.0f, cb, (int)q);
            for (int64_t h = g * per_group; h < (g + 1) * per_group; h++) {
                float *S = state + h * N * P, *yh = y + t0 * E + h * P;
                const float *xh = x + t0 * E + h * P;
                float run = 0.0f;
                mr_ssd_discretize(t0, t0 + q, h, dt, H, dt_bias, A, 0.0f, INFINITY, delta, cst);
                for (int64_t t = 0; t < q; t++) cs[t] = (run += delta[t] * A[h]);
                for (int64_t t = 0; t < q; t++)
                    for (int64_t s = 0; s < q; s++)
                        mask[t * q + s] = s <= t ? cb[t * q + s] * expf(cs[t] - cs[s]) * delta[s] : 0.0f;
                /* y = mask X + D x */
                for (int64_t t = 0; t < q; t++)
                    for (int64_t p = 0; p < P; p++) yh[t * E + p] = D[h] * xh[t * E + p];
                sgemm(ROW_MAJOR, NO_TRANS, NO_TRANS, (int)q, (int)P, (int)q, 1.0f, mask, (int)q, xh, (int)E, 1.0f, yh,
                      (int)E);
                /* y += diag(e^cs) C S: C rows scaled first */
                for (int64_t t = 0; t < q; t++)
                    for (int64_t n = 0; n < N; n++) cst[t * N + n] = C[(t0 + t) * GN + g * N + n] * expf(cs[t]);
                sgemm(ROW_MAJOR, NO_TRANS, NO_TRANS, (int)q, (int)P, (int)N, 1.0f, cst, (int)N, S, (int)P, 1.0f, yh,
                      (int)E);
                /* S = e^cs_q S + (B o w)^T X */
                for (int64_t t = 0; t < q; t++) {
                    const float w = expf(cs[q - 1] - cs[t]) * delta[t];
                    for (int64_t n = 0; n < N; n++) bw[t * N + n] = B[(t0 + t) * GN + g * N + n] * w;
                }
                const float decay = expf(cs[q - 1]);
                for (int64_t i = 0; i < N * P; i++) S[i] *= decay;
                sgemm(ROW_MAJOR, TRANS, NO_TRANS, (int)N, (int)P, (int)q, 1.0f, bw, (int)N, xh, (int)E, 1.0f, S, (int)P);
            }
        }
    }
}

static double rel_err(const float *x, const float *ref, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        num += ((double)x[i] - ref[i]) * ((double)x[i] - ref[i]);
        den += (double)ref[i] * ref[i];
    }
    return sqrt(num / den);
}

typedef void (*scan_fn)(MR_SSD_ARGS);

int main(int argc, char **argv) {
    const int64_t L = argc > 1 ? atol(argv[1]) : 512, H = 24, P = 64, G = 1, N = 128, E = H * P;
    const char *blas_name = "";
    cblas_sgemm_fn sgemm = argc > 2 ? open_blas(argv[2], &blas_name) : NULL;
    const int64_t Q = argc > 3 ? atol(argv[3]) : 64;
    unsigned seed = 1;
    float *x = malloc(sizeof(float) * L * E), *dt = malloc(sizeof(float) * L * H);
    float *B = malloc(sizeof(float) * L * G * N), *C = malloc(sizeof(float) * L * G * N);
    float *A = malloc(sizeof(float) * H), *bias = malloc(sizeof(float) * H), *D = malloc(sizeof(float) * H);
    float *y = malloc(sizeof(float) * L * E), *y_ref = malloc(sizeof(float) * L * E);
    float *s = malloc(sizeof(float) * H * N * P), *s_ref = malloc(sizeof(float) * H * N * P);
    float *work = malloc(sizeof(float) * (2 * Q * Q + 2 * Q + 2 * Q * N));
    for (int64_t i = 0; i < L * E; i++) x[i] = uniform(&seed, -2, 2);
    for (int64_t i = 0; i < L * H; i++) dt[i] = uniform(&seed, -6, 2);
    for (int64_t i = 0; i < L * G * N; i++) {
        B[i] = uniform(&seed, -1, 1);
        C[i] = uniform(&seed, -1, 1);
    }
    for (int64_t h = 0; h < H; h++) {
        A[h] = -expf(uniform(&seed, -1, 2));
        bias[h] = uniform(&seed, -4, 0);
        D[h] = uniform(&seed, 0, 2);
    }
    mr_ssd_scan_f32_ref(L, H, P, G, N, x, E, dt, H, bias, A, 0.0f, INFINITY, B, C, G * N, D, NULL, s_ref, y_ref, E);

    struct { const char *name; scan_fn fn; mr_isa needs; } variants[] = {
        {"recurrent portable", mr_ssd_scan_f32_portable, MR_ISA_PORTABLE},
        {"recurrent avx2", mr_ssd_scan_f32_avx2, MR_ISA_AVX2},
        {"recurrent avx512", mr_ssd_scan_f32_avx512, MR_ISA_AVX512},
    };
    const double tokens_heads = (double)(L * H);
    printf("SSD scan, L=%lld H=%lld P=%lld G=%lld N=%lld, one thread\n", (long long)L, (long long)H, (long long)P,
           (long long)G, (long long)N);
    for (size_t v = 0; v < sizeof variants / sizeof variants[0]; v++) {
        if (mr_isa_best() < variants[v].needs) {
            printf("%-26s  not supported by this CPU\n", variants[v].name);
            continue;
        }
        double best = 1e30, err = 0;
        for (int rep = 0; rep < 7; rep++) {
            double t0 = seconds();
            variants[v].fn(L, H, P, G, N, x, E, dt, H, bias, A, 0.0f, INFINITY, B, C, G * N, D, NULL, s, y, E, 0, H);
            double t = seconds() - t0;
            if (t < best) best = t;
            err = rel_err(y, y_ref, L * E);
        }
        printf("%-26s  rel err %.2e  %s  %8.3f ms  %6.1f ns per token-head\n", variants[v].name, err,
               err < 1e-5 ? "ok  " : "FAIL", best * 1e3, best * 1e9 / tokens_heads);
    }
    if (sgemm) {
        double best = 1e30, err = 0;
        for (int rep = 0; rep < 7; rep++) {
            double t0 = seconds();
            ssd_chunked(sgemm, Q, L, H, P, G, N, x, dt, bias, A, B, C, D, s, y, work);
            double t = seconds() - t0;
            if (t < best) best = t;
            err = rel_err(y, y_ref, L * E);
        }
        char name[64];
        snprintf(name, sizeof name, "chunked Q=%lld (%s)", (long long)Q, blas_name);
        printf("%-26s  rel err %.2e  %s  %8.3f ms  %6.1f ns per token-head\n", name, err,
               err < 1e-4 ? "ok  " : "FAIL", best * 1e3, best * 1e9 / tokens_heads);
    } else {
        printf("chunked form: pass a BLAS library as the second argument\n");
    }
    free(x); free(dt); free(B); free(C); free(A); free(bias); free(D); free(y); free(y_ref); free(s); free(s_ref);
    free(work);
    return 0;
}
