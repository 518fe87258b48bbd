/* Training kernels of Mamba-2's SSD scan over packed batches: the forward sequence by sequence,
 * and the backward, which runs each head's recurrence again keeping a checkpoint every chunk,
 * then walks the chunks in reverse recomputing their states from the checkpoints. Threads own
 * heads; B and C are shared by the heads of a group, so their gradients are written per head
 * ([T, H, N]) and summed by the caller: one writer per element, no atomics. Plain C whose inner
 * loops run over a head's channels (the compiler vectorises them). */
#include <math.h>
#include <string.h>

#include "base/mr_parallel.h"
#include "ops/mr_ops.h"
#include "ops/mr_ops_backward.h"
#include "ops/mr_ssd_isa.h"

void mr_ssd_scan_packed_f32(int64_t S, const int64_t *offsets, int64_t H, int64_t P, int64_t G, int64_t N,
                            const float *x, const float *dt, const float *dt_bias, const float *A, float dt_min,
                            float dt_max, const float *B, const float *C, const float *D, float *y, float *state,
                            int ith, int nth) {
    const int64_t E = H * P;
    for (int64_t s = 0; s < S; s++) {
        const int64_t t0 = offsets[s], L = offsets[s + 1] - t0;
        if (L > 0)
            mr_ssd_scan_f32(L, H, P, G, N, x + t0 * E, E, dt + t0 * H, H, dt_bias, A, dt_min, dt_max, B + t0 * G * N,
                            C + t0 * G * N, G * N, D, NULL, state, y + t0 * E, E, ith, nth);
    }
}

int64_t mr_ssd_backward_work_floats(int64_t longest, int64_t P, int64_t N) {
    const int64_t Q = MR_SSD_TOKEN_CHUNK, chunks = (longest + Q - 1) / Q;
    /* delta, decay, d delta / d dt per token; a checkpoint per chunk; a chunk's states; dh; dx */
    return 3 * longest + (chunks + Q + 1) * N * P + P;
}

static float sigmoid(float v) { return 1.0f / (1.0f + expf(-v)); }

/* One head over one sequence of L tokens (rows t0..t0+L-1). */
static void head_backward(int64_t t0, int64_t L, int64_t h, int64_t H, int64_t P, int64_t G, int64_t N,
                          const float *x, const float *dt, const float *dt_bias, const float *A, float dt_min,
                          float dt_max, const float *B, const float *C, const float *D, const float *gy, float *gx,
                          float *gdt, float *gdt_bias, float *gA, float *gD, float *gB_heads, float *gC_heads,
                          float *work) {
    const int64_t Q = MR_SSD_TOKEN_CHUNK, NP = N * P, E = H * P, GN = G * N, chunks = (L + Q - 1) / Q;
    const int64_t g = h / (H / G);
    float *delta = work, *decay = delta + L, *ddt = decay + L;
    float *ckpt = ddt + L, *states = ckpt + chunks * NP, *dh = states + Q * NP, *dx = dh + NP;
    const float bias = dt_bias ? dt_bias[h] : 0.0f;
    for (int64_t t = 0; t < L; t++) {
        const float raw = dt[(t0 + t) * H + h] + bias, sp = mr_softplus_f32(raw);
        delta[t] = fminf(fmaxf(sp, dt_min), dt_max);
        decay[t] = expf(delta[t] * A[h]);
        ddt[t] = (sp >= dt_min && sp <= dt_max) ? sigmoid(raw) : 0.0f; /* clamped: no gradient */
    }
    /* forward: the state entering each chunk */
    memset(dh, 0, (size_t)NP * sizeof *dh); /* dh is the running state here, the gradient below */
    for (int64_t c = 0; c < chunks; c++) {
        memcpy(ckpt + c * NP, dh, (size_t)NP * sizeof *dh);
        for (int64_t t = c * Q; t < L && t < (c + 1) * Q; t++) {
            const float *xt = x + (t0 + t) * E + h * P, *bt = B + (t0 + t) * GN + g * N;
            for (int64_t n = 0; n < N; n++) {
                float *row = dh + n * P;
                const float bd = bt[n] * delta[t];
                for (int64_t p = 0; p < P; p++) row[p] = row[p] * decay[t] + bd * xt[p];
            }
        }
    }
    float grad_A = 0.0f, grad_D = 0.0f, grad_bias = 0.0f;
    memset(dh, 0, (size_t)NP * sizeof *dh);
    for (int64_t c = chunks - 1; c >= 0; c--) {
        const int64_t c0 = c * Q, c1 = (c + 1) * Q < L ? (c + 1) * Q : L;
        for (int64_t t = c0; t < c1; t++) { /* the chunk's states again */
            const float *prev = t == c0 ? ckpt + c * NP : states + (t - c0 - 1) * NP;
            float *cur = states + (t - c0) * NP;
            const float *xt = x + (t0 + t) * E + h * P, *bt = B + (t0 + t) * GN + g * N;
            for (int64_t n = 0; n < N; n++) {
                const float bd = bt[n] * delta[t];
                for (int64_t p = 0; p < P; p++) cur[n * P + p] = prev[n * P + p] * decay[t] + bd * xt[p];
            }
        }
        for (int64_t t = c1 - 1; t >= c0; t--) {
            const int64_t row = t0 + t;
            const float *cur = states + (t - c0) * NP, *prev = t == c0 ? ckpt + c * NP : cur - NP;
            const float *xt = x + row * E + h * P, *dy = gy + row * E + h * P;
            const float *bt = B + row * GN + g * N, *ct = C + row * GN + g * N;
            float *gb = gB_heads + (row * H + h) * N, *gc = gC_heads + (row * H + h) * N;
            float da = 0.0f, dxdot = 0.0f;
            for (int64_t p = 0; p < P; p++) {
                dx[p] = 0.0f;
                grad_D += dy[p] * xt[p];
            }
            for (int64_t n = 0; n < N; n++) {
                float *dhn = dh + n * P;
                const float *hn = cur + n * P, *hp = prev + n * P;
                float sc = 0.0f, sb = 0.0f, sa = 0.0f;
                for (int64_t p = 0; p < P; p++) {
                    sc += dy[p] * hn[p];
                    dhn[p] += ct[n] * dy[p];
                    dx[p] += dhn[p] * bt[n];
                    sb += dhn[p] * xt[p];
                    sa += dhn[p] * hp[p];
                    dhn[p] *= decay[t]; /* on to token t - 1 */
                }
                gc[n] = sc;
                gb[n] = sb * delta[t];
                da += sa;
            }
            float *gxt = gx + row * E + h * P;
            const float skip = D ? D[h] : 0.0f;
            for (int64_t p = 0; p < P; p++) {
                dxdot += dx[p] * xt[p];
                gxt[p] = delta[t] * dx[p] + skip * dy[p];
            }
            /* h_t = exp(delta A) h_{t-1} + delta B x: both terms depend on delta */
            const float ddelta = dxdot + da * decay[t] * A[h];
            grad_A += da * decay[t] * delta[t];
            const float graw = ddelta * ddt[t];
            gdt[row * H + h] = graw;
            grad_bias += graw;
        }
    }
    gA[h] += grad_A;
    if (gD) gD[h] += grad_D;
    if (gdt_bias) gdt_bias[h] += grad_bias;
}

void mr_ssd_scan_backward_f32(int64_t S, const int64_t *offsets, int64_t H, int64_t P, int64_t G, int64_t N,
                              const float *x, const float *dt, const float *dt_bias, const float *A, float dt_min,
                              float dt_max, const float *B, const float *C, const float *D, const float *gy,
                              float *gx, float *gdt, float *gdt_bias, float *gA, float *gD, float *gB_heads,
                              float *gC_heads, float *work, int ith, int nth) {
    int64_t lo, hi;
    mr_split_range(H, 1, ith, nth, &lo, &hi);
    for (int64_t h = lo; h < hi; h++) {
        gA[h] = 0.0f;
        if (gD) gD[h] = 0.0f;
        if (gdt_bias) gdt_bias[h] = 0.0f;
        for (int64_t s = 0; s < S; s++) {
            const int64_t t0 = offsets[s], L = offsets[s + 1] - t0;
            if (L > 0)
                head_backward(t0, L, h, H, P, G, N, x, dt, dt_bias, A, dt_min, dt_max, B, C, D, gy, gx, gdt, gdt_bias,
                              gA, gD, gB_heads, gC_heads, work);
        }
    }
}
