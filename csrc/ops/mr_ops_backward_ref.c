/* Reference training kernels: the gradients of the conv + SiLU and of the selective scan written
 * as plainly as possible, one channel and one sequence at a time. They define what
 * mr_ops_backward.c must compute and are compared against it in the tests. */
#include <math.h>
#include <string.h>

#include "ops/mr_ops.h"
#include "ops/mr_ops_backward.h"

static double sigmoid_ref(double x) { return 1.0 / (1.0 + exp(-x)); }

/* d silu(x) / dx */
static float silu_grad_ref(float x) {
    double s = sigmoid_ref(x);
    return (float)(s * (1.0 + x * (1.0 - s)));
}

/* d softplus(x) / dx with PyTorch's threshold (identity above 20) */
static float softplus_grad_ref(float x) { return x > 20.0f ? 1.0f : (float)sigmoid_ref(x); }

void mr_conv_silu_backward_f32_ref(int64_t S, const int64_t *offsets, int64_t E, int64_t K, const float *x,
                                   int64_t ldx, const float *w, const float *bias, const float *gout,
                                   int64_t ldgo, float *gx, float *gw, float *gbias) {
    const int64_t T = offsets[S];
    memset(gx, 0, (size_t)(T * E) * sizeof(float));
    memset(gw, 0, (size_t)(E * K) * sizeof(float));
    if (gbias) memset(gbias, 0, (size_t)E * sizeof(float));
    for (int64_t s = 0; s < S; s++)
        for (int64_t e = 0; e < E; e++)
            for (int64_t t = offsets[s]; t < offsets[s + 1]; t++) {
                float acc = bias ? bias[e] : 0.0f;
                for (int64_t k = 0; k < K; k++) {
                    int64_t src = t - (K - 1) + k;
                    if (src >= offsets[s]) acc += w[e * K + k] * x[src * ldx + e];
                }
                float g = gout[t * ldgo + e] * silu_grad_ref(acc);
                if (gbias) gbias[e] += g;
                for (int64_t k = 0; k < K; k++) {
                    int64_t src = t - (K - 1) + k;
                    if (src < offsets[s]) continue;
                    gw[e * K + k] += g * x[src * ldx + e];
                    gx[src * E + e] += g * w[e * K + k];
                }
            }
}

void mr_selective_scan_backward_f32_ref(int64_t S, const int64_t *offsets, int64_t E, int64_t N,
                                        const float *u, int64_t ldu, const float *dt, int64_t lddt,
                                        const float *dt_bias, const float *A, const float *B,
                                        const float *C, int64_t ldbc, const float *D, const float *z,
                                        int64_t ldz, const float *gy, int64_t ldgy, float *gu, float *gdt,
                                        float *gdt_bias, float *gA, float *gD, float *gz, float *gB,
                                        float *gC, float *work) {
    const int64_t T = offsets[S];
    memset(gA, 0, (size_t)(E * N) * sizeof(float));
    memset(gB, 0, (size_t)(T * N) * sizeof(float));
    memset(gC, 0, (size_t)(T * N) * sizeof(float));
    if (gdt_bias) memset(gdt_bias, 0, (size_t)E * sizeof(float));
    if (gD) memset(gD, 0, (size_t)E * sizeof(float));
    for (int64_t s = 0; s < S; s++) {
        const int64_t start = offsets[s], L = offsets[s + 1] - offsets[s];
        for (int64_t e = 0; e < E; e++) {
            /* work[i * N + n]: the state after the sequence's first i tokens */
            for (int64_t n = 0; n < N; n++) work[n] = 0.0f;
            for (int64_t i = 0; i < L; i++) {
                const int64_t t = start + i;
                float delta = mr_softplus_f32(dt[t * lddt + e] + (dt_bias ? dt_bias[e] : 0.0f));
                for (int64_t n = 0; n < N; n++)
                    work[(i + 1) * N + n] = expf(delta * A[e * N + n]) * work[i * N + n] +
                                            delta * B[t * ldbc + n] * u[t * ldu + e];
            }
            float gh[MR_MAX_STATE_SIZE] = {0}; /* d loss / d state, flowing backwards */
            for (int64_t i = L - 1; i >= 0; i--) {
                const int64_t t = start + i;
                const float *h = work + (i + 1) * N, *h_prev = work + i * N;
                const float ut = u[t * ldu + e];
                const float x = dt[t * lddt + e] + (dt_bias ? dt_bias[e] : 0.0f);
                const float delta = mr_softplus_f32(x);
                float readout = D ? D[e] * ut : 0.0f;
                for (int64_t n = 0; n < N; n++) readout += C[t * ldbc + n] * h[n];
                float g_readout = gy[t * ldgy + e];
                if (z) {
                    float zt = z[t * ldz + e];
                    gz[t * E + e] = g_readout * readout * silu_grad_ref(zt);
                    g_readout *= zt * (float)sigmoid_ref(zt);
                }
                float g_u = D ? g_readout * D[e] : 0.0f, g_delta = 0.0f;
                if (gD) gD[e] += g_readout * ut;
                for (int64_t n = 0; n < N; n++) {
                    gC[t * N + n] += g_readout * h[n];
                    gh[n] += g_readout * C[t * ldbc + n];
                    float decay = expf(delta * A[e * N + n]);
                    g_delta += gh[n] * (A[e * N + n] * decay * h_prev[n] + B[t * ldbc + n] * ut);
                    gA[e * N + n] += gh[n] * delta * decay * h_prev[n];
                    gB[t * N + n] += gh[n] * delta * ut;
                    g_u += gh[n] * delta * B[t * ldbc + n];
                    gh[n] *= decay;
                }
                gu[t * E + e] = g_u;
                float g_dt = g_delta * softplus_grad_ref(x);
                gdt[t * E + e] = g_dt;
                if (gdt_bias) gdt_bias[e] += g_dt;
            }
        }
    }
}
