/* CPU kernels of the forward pass (Mamba-1, Mamba-2), one declaration per op (matrix products are in gemm/).
 *
 * Layout conventions (frozen: the CUDA path and the tests rely on them):
 *   activations are token-major, row t of a [T, n] matrix starts at p + t*ld;
 *   conv weights are [E, K] (HF's conv1d.weight [E, 1, K] squeezed), conv state is
 *   [K-1, E]: the previous K-1 inputs of the sequence, oldest first;
 *   A is [E, N] and already holds -exp(A_log); scan state is [E, N].
 * Recurrent state travels through (state_in, state_out): state_in NULL means a sequence start
 * (zeros), state_out NULL means the state is not needed afterwards; both may be the same buffer.
 *
 * Ops that split work across threads take (ith, nth): thread ith of nth does its share, so
 * the caller owns the threads (ggml's convention). Every op has a `_ref` twin in
 * mr_ops_ref.c written for clarity, not speed; tests compare the two on random data. */
#ifndef MR_OPS_H
#define MR_OPS_H

#include <stdint.h>

#define MR_MAX_CONV_KERNEL 64 /* largest conv_kernel the kernels accept */
#define MR_MAX_STATE_SIZE 256 /* largest state_size the kernels accept */

#ifdef __cplusplus
extern "C" {
#endif

/* out[t, :] = table[tokens[t], :]; ids must already be validated against vocab. */
void mr_embed_gather_f32(const float *table, int64_t d, const int32_t *tokens, int64_t T,
                         float *out, int ith, int nth);

/* out[t, :] = x[t, :] / sqrt(mean(x[t, :]^2) + eps) * w; out may equal x; w NULL is a
 * weightless norm (FalconMamba's). */
void mr_rmsnorm_f32(const float *x, int64_t ldx, const float *w, int64_t T, int64_t d, float eps,
                    float *out, int64_t ldo, int ith, int nth);

/* Causal depthwise conv over one sequence segment of L tokens, + bias, then SiLU:
 *   out[t, e] = silu(bias[e] + sum_k w[e, k] * in[t - (K-1) + k, e]),
 * where inputs before the segment come from state_in. state_out receives the segment's last
 * K-1 inputs (reaching back into state_in when L < K-1). Threads split the channels.
 * `in` and `out` must not overlap. bias may be NULL. */
void mr_conv_silu_f32(int64_t L, int64_t E, int64_t K, const float *in, int64_t ldi,
                      const float *w, const float *bias, const float *state_in,
                      float *state_out, float *out, int64_t ldo, int ith, int nth);

/* Selective scan over one sequence segment of L tokens with softplus, D skip and gate fused:
 *   delta = softplus(dt[t, e] + dt_bias[e])              (identity above 20, no overflow)
 *   h[e, n] = exp(delta * A[e, n]) * h[e, n] + delta * B[t, n] * u[t, e]
 *   y[t, e] = (sum_n C[t, n] * h[e, n] + D[e] * u[t, e]) * silu(z[t, e])
 * h starts from state_in and ends in state_out (both [E, N]). B and C rows have stride ldbc
 * (they are columns of x_proj's output). dt_bias, D and z may be NULL (no bias, no skip, no
 * gate). Threads split the channels. y may alias u. */
void mr_selective_scan_f32(int64_t L, int64_t E, int64_t N, const float *u, int64_t ldu,
                           const float *dt, int64_t lddt, const float *dt_bias, const float *A,
                           const float *B, const float *C, int64_t ldbc, const float *D,
                           const float *z, int64_t ldz, const float *state_in,
                           float *state_out, float *y, int64_t ldy, int ith, int nth);

/* Mamba-2's selective scan (SSD, recurrent form) over one sequence segment of L tokens, heads
 * split by thread. H heads of P channels (x is [L, H*P]); head h reads group g = h / (H / G) of
 * B and C ([L, G*N] each, rows of stride ldbc):
 *   delta = min(max(softplus(dt[t, h] + dt_bias[h]), dt_min), dt_max)
 *   h[n, p] = exp(delta * A[h]) * h[n, p] + delta * B[t, g, n] * x[t, h, p]
 *   y[t, h, p] = sum_n C[t, g, n] * h[n, p] + D[h] * x[t, h, p]
 * A[h] already holds -exp(A_log[h]). State is [H, N, P]: it starts from state_in (zeros when
 * NULL) and ends in state_out, which is required (the scan runs in it) and may equal state_in;
 * a thread touches only its heads' part. y may alias x. */
void mr_ssd_scan_f32(int64_t L, int64_t H, int64_t P, int64_t G, int64_t N, const float *x, int64_t ldx,
                     const float *dt, int64_t lddt, const float *dt_bias, const float *A, float dt_min,
                     float dt_max, const float *B, const float *C, int64_t ldbc, const float *D,
                     const float *state_in, float *state_out, float *y, int64_t ldy, int ith, int nth);
/* Mamba-2's gated RMSNorm over groups of `group` channels (norm_before_gate=False):
 *   v = y[t, :] * silu(z[t, :]);  out[t, i] = w[i] * v[i] / sqrt(mean over i's group of v^2 + eps)
 * Threads split the rows; out may alias y. */
void mr_gated_rmsnorm_f32(int64_t T, int64_t E, int64_t group, const float *y, int64_t ldy, const float *z,
                          int64_t ldz, const float *w, float eps, float *out, int64_t ldo, int ith, int nth);
/* x[r, :] /= max(||x[r, :]||, 1e-12) for n rows of d (torch.nn.functional.normalize's rule, so
 * a zero row stays zero); threads split the rows. */
void mr_l2_normalize_f32(float *x, int64_t n, int64_t d, int ith, int nth);

/* out[i] += x[i] over n floats (the residual add). */
void mr_add_f32(float *out, const float *x, int64_t n, int ith, int nth);

/* Overflow-safe softplus with PyTorch's threshold: x above 20 is returned as is. */
float mr_softplus_f32(float x);

/* Reference twins: same contracts, straightforward loops, single-threaded. */
void mr_embed_gather_f32_ref(const float *table, int64_t d, const int32_t *tokens, int64_t T,
                             float *out);
void mr_rmsnorm_f32_ref(const float *x, int64_t ldx, const float *w, int64_t T, int64_t d,
                        float eps, float *out, int64_t ldo);
void mr_conv_silu_f32_ref(int64_t L, int64_t E, int64_t K, const float *in, int64_t ldi,
                          const float *w, const float *bias, const float *state_in,
                          float *state_out, float *out, int64_t ldo);
void mr_selective_scan_f32_ref(int64_t L, int64_t E, int64_t N, const float *u, int64_t ldu,
                               const float *dt, int64_t lddt, const float *dt_bias,
                               const float *A, const float *B, const float *C, int64_t ldbc,
                               const float *D, const float *z, int64_t ldz,
                               const float *state_in, float *state_out, float *y, int64_t ldy);
void mr_l2_normalize_f32_ref(float *x, int64_t n, int64_t d);
void mr_ssd_scan_f32_ref(int64_t L, int64_t H, int64_t P, int64_t G, int64_t N, const float *x, int64_t ldx,
                         const float *dt, int64_t lddt, const float *dt_bias, const float *A, float dt_min,
                         float dt_max, const float *B, const float *C, int64_t ldbc, const float *D,
                         const float *state_in, float *state_out, float *y, int64_t ldy);
void mr_gated_rmsnorm_f32_ref(int64_t T, int64_t E, int64_t group, const float *y, int64_t ldy, const float *z,
                              int64_t ldz, const float *w, float eps, float *out, int64_t ldo);

#ifdef __cplusplus
}
#endif
#endif
