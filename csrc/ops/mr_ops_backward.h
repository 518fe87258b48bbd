/* CPU kernels for training: the conv + SiLU and the selective scan over packed batches, forward
 * (with what the backward needs kept) and backward.
 *
 * A packed batch is T token rows holding S sequences back to back; offsets[0..S] (offsets[0] = 0,
 * offsets[S] = T) mark where each starts, and the conv window and the scan state restart there.
 * Layouts follow mr_ops.h: activations token-major with a row stride (ld*), conv weights [E, K],
 * A [E, N] (already -exp(A_log)), B and C rows [T, N] with stride ldbc. Gradient outputs are
 * dense: [T, E] rows of stride E, [T, N] rows of stride N, [E, K], [E, N], [E].
 *
 * The scan's forward keeps only the state entering each chunk of `chunk` tokens after a
 * sequence's first (mr_scan_boundary_count of them, [count, E, N]); the backward recomputes
 * the states inside a chunk from them, so what training holds per layer is O(T x E), not
 * O(T x E x N).
 *
 * Threads split the channels (thread ith of nth, the caller owns the team as in mr_ops.h), so
 * every per-channel gradient (conv weights and bias, A, D, dt bias) has one writer. dB and dC sum
 * over channels: each thread writes its channels' share as its own partial sums [T, N] (summed
 * over its channels a chunk at a time, lane by lane in the hot loop), and mr_sum_partials_f32
 * (after a barrier) adds the threads' up, threads splitting the rows; no atomics. Every kernel
 * has a plain single-threaded `_ref` twin. */
#ifndef MR_OPS_BACKWARD_H
#define MR_OPS_BACKWARD_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MR_BACKWARD_BLOCK 16 /* channels a thread's inner loops run over at once */

/* States the scan's forward keeps for a packed batch: sum over sequences of ceil(L / chunk) - 1. */
int64_t mr_scan_boundary_count(int64_t S, const int64_t *offsets, int64_t chunk);

/* out = conv_silu(x) sequence by sequence (mr_conv_silu_f32 with zero state at each start). */
void mr_conv_silu_packed_f32(int64_t S, const int64_t *offsets, int64_t E, int64_t K, const float *x,
                             int64_t ldx, const float *w, const float *bias, float *out, int64_t ldo,
                             int ith, int nth);

/* Gradients of out = conv_silu(x) given gout [T, E]: gx [T, E], gw [E, K] and gbias [E] (bias
 * and gbias may be NULL) are overwritten. The pre-activations are recomputed from x. */
void mr_conv_silu_backward_f32(int64_t S, const int64_t *offsets, int64_t E, int64_t K, const float *x,
                               int64_t ldx, const float *w, const float *bias, const float *gout,
                               int64_t ldgo, float *gx, float *gw, float *gbias, int ith, int nth);

/* y = selective_scan(...) as in mr_selective_scan_f32, sequence by sequence, writing the
 * boundary states ([mr_scan_boundary_count, E, N]) on the way. */
void mr_selective_scan_packed_f32(int64_t S, const int64_t *offsets, int64_t chunk, int64_t E, int64_t N,
                                  const float *u, int64_t ldu, const float *dt, int64_t lddt,
                                  const float *dt_bias, const float *A, const float *B, const float *C,
                                  int64_t ldbc, const float *D, const float *z, int64_t ldz, float *y,
                                  int64_t ldy, float *boundaries, int ith, int nth);

/* Floats of scratch each thread of mr_selective_scan_backward_f32 needs (for any split of E). */
int64_t mr_scan_backward_work_floats(int64_t chunk, int64_t E, int64_t N);

/* Gradients of y = selective_scan(...) given gy [T, E] (stride ldgy) and the forward's
 * boundaries. Overwritten: gu, gdt, gz [T, E]; gA [E, N]; gdt_bias, gD [E] for this thread's
 * channels, and this thread's partial sums gB_part, gC_part [T, N].
 * dt_bias/gdt_bias, D/gD and z/gz may be NULL (together). work: mr_scan_backward_work_floats
 * floats of this thread's own. */
void mr_selective_scan_backward_f32(int64_t S, const int64_t *offsets, int64_t chunk, int64_t E, int64_t N,
                                    const float *u, int64_t ldu, const float *dt, int64_t lddt,
                                    const float *dt_bias, const float *A, const float *B, const float *C,
                                    int64_t ldbc, const float *D, const float *z, int64_t ldz,
                                    const float *boundaries, const float *gy, int64_t ldgy, float *gu,
                                    float *gdt, float *gdt_bias, float *gA, float *gD, float *gz,
                                    float *gB_part, float *gC_part, float *work, int ith, int nth);

/* Mamba-2's SSD scan over a packed batch (mr_ssd_scan_f32 sequence by sequence, zero state at
 * each start). x [T, H*P], dt [T, H], B and C [T, G*N], y [T, H*P], all dense. state: H*N*P
 * floats of scratch shared by the team (threads own heads). */
void mr_ssd_scan_packed_f32(int64_t S, const int64_t *offsets, int64_t H, int64_t P, int64_t G, int64_t N,
                            const float *x, const float *dt, const float *dt_bias, const float *A, float dt_min,
                            float dt_max, const float *B, const float *C, const float *D, float *y, float *state,
                            int ith, int nth);

/* Floats of scratch each thread of mr_ssd_scan_backward_f32 needs for sequences of up to
 * `longest` tokens. */
int64_t mr_ssd_backward_work_floats(int64_t longest, int64_t P, int64_t N);

/* Gradients of y = mr_ssd_scan_packed_f32(...) given gy [T, H*P]: gx [T, H*P], gdt [T, H] (of
 * dt before its bias), gB_heads and gC_heads [T, H, N] (each head's share: the caller sums the
 * heads of a group), gA (of A = -exp(A_log)), gD and gdt_bias [H], all overwritten for this
 * thread's heads. The backward recomputes the states from checkpoints every MR_SSD_TOKEN_CHUNK
 * tokens; work: mr_ssd_backward_work_floats floats of this thread's own. D and gD may be NULL
 * (together), dt_bias and gdt_bias too. */
void mr_ssd_scan_backward_f32(int64_t S, const int64_t *offsets, int64_t H, int64_t P, int64_t G, int64_t N,
                              const float *x, const float *dt, const float *dt_bias, const float *A, float dt_min,
                              float dt_max, const float *B, const float *C, const float *D, const float *gy,
                              float *gx, float *gdt, float *gdt_bias, float *gA, float *gD, float *gB_heads,
                              float *gC_heads, float *work, int ith, int nth);

/* out[i] = sum over p < nparts of parts[p * n + i], threads splitting i. */
void mr_sum_partials_f32(const float *parts, int64_t nparts, int64_t n, float *out, int ith, int nth);

/* Reference twins: same contracts, single-threaded, plain loops. The scan's twin stores every
 * state of a sequence instead of using boundaries: work holds (longest sequence + 1) * N floats,
 * and it writes the summed gB and gC [T, N] directly. */
void mr_conv_silu_backward_f32_ref(int64_t S, const int64_t *offsets, int64_t E, int64_t K, const float *x,
                                   int64_t ldx, const float *w, const float *bias, const float *gout,
                                   int64_t ldgo, float *gx, float *gw, float *gbias);
void mr_selective_scan_backward_f32_ref(int64_t S, const int64_t *offsets, int64_t E, int64_t N,
                                        const float *u, int64_t ldu, const float *dt, int64_t lddt,
                                        const float *dt_bias, const float *A, const float *B,
                                        const float *C, int64_t ldbc, const float *D, const float *z,
                                        int64_t ldz, const float *gy, int64_t ldgy, float *gu, float *gdt,
                                        float *gdt_bias, float *gA, float *gD, float *gz, float *gB,
                                        float *gC, float *work);

#ifdef __cplusplus
}
#endif
#endif
