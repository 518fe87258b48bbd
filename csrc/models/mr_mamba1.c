/* Mamba-1 (transformers' MambaModel) and FalconMamba (its FalconMambaModel: the same layer with
 * weightless RMS norms on dt, B and C): their config fields, derived weights, buffers and layer.
 *
 *   [u | z] = in_proj(RMSNorm(x));  u = SiLU(conv(u) + conv_bias);  [dt | B | C] = x_proj(u);
 *   delta = softplus(dt_proj(dt) + dt_bias);  y = scan(u, delta, A, B, C, D) * SiLU(z);
 *   x += out_proj(y) */
#define _POSIX_C_SOURCE 200809L /* posix_memalign */
#include <math.h>
#include <stdlib.h>

#include "base/mr_parallel.h"
#include "gemm/mr_linear_packed.h"
#include "models/mr_arch.h"
#include "models/mr_quant.h"
#include "ops/mr_ops.h"

/* The layer's buffers, after the shared scratch (normed input, then dt). */
enum { BUF_XZ = 0, BUF_U, BUF_XDBL, N_BUFFERS };

typedef struct {
    float *A;              /* -exp(A_log), [E, N] */
    float *x_proj_packed;  /* x_proj and dt_proj laid out for mr_linear_packed_f32, or NULL */
    float *dt_proj_packed; /* where the BLAS runs them (no vector path on this CPU) */
} mamba1_layer;

typedef struct {
    float *block;          /* every layer's A, then (64-byte aligned) the packed weights */
    mamba1_layer *layers;
} mamba1_data;

static mr_status check_config(const mr_config *c, mr_error *err) {
    mr_status st;
    if ((st = mr_config_check_range("intermediate_size", c->d_inner, 1, 1 << 22, err)) ||
        (st = mr_config_check_range("state_size", c->d_state, 1, MR_MAX_STATE_SIZE, err)) ||
        (st = mr_config_check_range("conv_kernel", c->d_conv, 1, MR_MAX_CONV_KERNEL, err)) ||
        (st = mr_config_check_range("time_step_rank", c->dt_rank, 1, 1 << 20, err)))
        return st;
    if (c->arch == MR_ARCH_FALCON_MAMBA && !(c->mixer_eps >= 0.0f && isfinite(c->mixer_eps)))
        return mr_fail(err, MR_ERR_VALUE, "config mixer_rms_eps must be finite and >= 0");
    return MR_OK;
}

static void sizes(const mr_config *c, mr_arch_sizes *out) {
    const int64_t E = c->d_inner;
    *out = (mr_arch_sizes){
        .scratch_width = E,
        .n_buffers = N_BUFFERS,
        .buffer_widths = {[BUF_XZ] = 2 * E, [BUF_U] = E, [BUF_XDBL] = c->dt_rank + 2 * c->d_state},
        .conv_carry = (c->d_conv - 1) * E,
        .state_carry = E * c->d_state,
    };
}

static void release(mr_model *m) {
    mamba1_data *d = m->arch_data;
    if (!d) return;
    free(d->block);
    free(d->layers);
    free(d);
    m->arch_data = NULL;
}

static mr_status prepare(mr_model *m, mr_error *err) {
    const mr_config *c = &m->cfg;
    const int64_t E = c->d_inner, N = c->d_state, R = c->dt_rank, ldx = R + 2 * N;
    const int packed = mr_linear_packed_preferred();
    /* 16-float (64-byte) multiples keep every piece aligned: no weight load splits a line */
    const int64_t a_floats = (E * N + 15) / 16 * 16;
    const int64_t x_floats = packed ? (mr_packed_weight_floats(ldx, E) + 15) / 16 * 16 : 0,
                  dt_floats = packed ? (mr_packed_weight_floats(E, R) + 15) / 16 * 16 : 0;
    const int64_t per_layer = a_floats + x_floats + dt_floats;
    const size_t bytes = (size_t)(per_layer * c->n_layer) * sizeof(float);
    release(m);
    mamba1_data *d = calloc(1, sizeof *d);
    if (d) d->layers = calloc((size_t)c->n_layer, sizeof *d->layers);
    if (d && (posix_memalign((void **)&d->block, 64, bytes) != 0)) d->block = NULL;
    m->arch_data = d;
    if (!d || !d->layers || !d->block) {
        release(m);
        return mr_fail(err, MR_ERR_MEMORY, "out of memory preparing %.1f MB of derived weights", (double)bytes / 1e6);
    }
    for (int64_t l = 0; l < c->n_layer; l++) {
        mamba1_layer *L = &d->layers[l];
        L->A = d->block + l * per_layer;
        const float *a_log = m->weights[l][MR_T_A_LOG];
        for (int64_t i = 0; i < E * N; i++) L->A[i] = -expf(a_log[i]);
        if (packed) {
            L->x_proj_packed = L->A + a_floats;
            L->dt_proj_packed = L->x_proj_packed + x_floats;
            mr_pack_weight_f32(m->weights[l][MR_T_X_PROJ_W], ldx, E, L->x_proj_packed);
            mr_pack_weight_f32(m->weights[l][MR_T_DT_PROJ_W], E, R, L->dt_proj_packed);
        }
    }
    return MR_OK;
}

static mr_status layer_forward(const mr_model *m, int64_t l, const mr_layer_batch *b, int ith, int nth,
                               mr_error *err) {
    const mr_config *c = &m->cfg;
    float *const *W = m->weights[l];
    const mamba1_layer *L = &((const mamba1_data *)m->arch_data)->layers[l];
    const int64_t E = c->d_inner, N = c->d_state, K = c->d_conv, R = c->dt_rank;
    const int64_t ldx = R + 2 * N, T = b->T;
    float *xz = b->buffers[BUF_XZ], *u = b->buffers[BUF_U], *xdbl = b->buffers[BUF_XDBL];
    float *dt = b->scratch; /* after in_proj has read the normed input from it */
    mr_status st;

    /* token-parallel: norm and in_proj of this thread's rows */
    st = mr_layer_in_proj(m, l, b, MR_T_IN_PROJ_W, 2 * E, xz, ith, nth, err);
#pragma omp barrier
    /* channel-parallel: conv over each sequence part in order */
    mr_layer_conv(b, xz, 2 * E, E, K, W[MR_T_CONV_W], W[MR_T_CONV_B], u, E, ith, nth);
#pragma omp barrier
    /* each thread's dt rows need only its own x_proj rows (both split rows alike): no barrier */
    if (L->x_proj_packed)
        mr_linear_packed_f32(T, ldx, E, u, E, L->x_proj_packed, xdbl, ldx, ith, nth);
    else if (st == MR_OK)
        st = mr_gemm_rows_f32(&m->blas, T, ldx, E, u, E, W[MR_T_X_PROJ_W], NULL, 0.0f, xdbl, ldx, ith, nth, err);
    if (c->arch == MR_ARCH_FALCON_MAMBA) {
        /* FalconMamba: weightless RMS norms over dt's rank, B and C, before dt_proj */
#pragma omp barrier
        mr_rmsnorm_f32(xdbl, ldx, NULL, T, R, c->mixer_eps, xdbl, ldx, ith, nth);
        mr_rmsnorm_f32(xdbl + R, ldx, NULL, T, N, c->mixer_eps, xdbl + R, ldx, ith, nth);
        mr_rmsnorm_f32(xdbl + R + N, ldx, NULL, T, N, c->mixer_eps, xdbl + R + N, ldx, ith, nth);
#pragma omp barrier
    }
    if (L->dt_proj_packed)
        mr_linear_packed_f32(T, E, R, xdbl, ldx, L->dt_proj_packed, dt, E, ith, nth);
    else if (st == MR_OK)
        st = mr_gemm_rows_f32(&m->blas, T, E, R, xdbl, ldx, W[MR_T_DT_PROJ_W], NULL, 0.0f, dt, E, ith, nth, err);
#pragma omp barrier
    for (int64_t s = 0; s < b->nseg; s++) {
        const mr_segment *g = &b->segs[s];
        const float *bc = xdbl + g->row * ldx;
        mr_selective_scan_f32(g->len, E, N, u + g->row * E, E, dt + g->row * E, E, W[MR_T_DT_PROJ_B], L->A, bc + R,
                              bc + R + N, ldx, W[MR_T_D], xz + g->row * 2 * E + E, 2 * E,
                              g->first ? NULL : b->state_carry, g->last ? NULL : b->state_carry, u + g->row * E, E,
                              ith, nth);
    }
#pragma omp barrier
    if (st == MR_OK) st = mr_layer_out_proj(m, l, b, u, E, ith, nth, err);
#pragma omp barrier
    return st;
}

const mr_arch mr_arch_mamba1 = {
    .check_config = check_config,
    .sizes = sizes,
    .prepare = prepare,
    .release = release,
    .layer_forward = layer_forward,
};
