/* Mamba-2 (transformers' Mamba2Model, mamba_ssm's Mamba2): its config fields, derived weights,
 * buffers and layer.
 *
 *   [z | xBC | dt] = in_proj(RMSNorm(x));  xBC = SiLU(conv(xBC) + conv_bias);  [u | B | C] = xBC;
 *   y = ssd_scan(u, dt, A, B, C, D);  x += out_proj(gated_rmsnorm(y, z)) */
#include <math.h>
#include <stdlib.h>

#include "base/mr_parallel.h"
#include "models/mr_arch.h"
#include "ops/mr_ops.h"

/* The layer's buffers; the shared scratch holds the normed input, then the gated norm's output. */
enum { BUF_ZXBCDT = 0, BUF_XBC, N_BUFFERS };

typedef struct {
    float *A; /* [n_layer, H]: -exp(A_log) */
} mamba2_data;

static int64_t conv_width(const mr_config *c) { return c->d_inner + 2 * c->n_groups * c->d_state; }
static int64_t proj_width(const mr_config *c) { return c->d_inner + conv_width(c) + c->n_heads; }

static mr_status check_config(const mr_config *c, mr_error *err) {
    mr_status st;
    if ((st = mr_config_check_range("intermediate_size", c->d_inner, 1, 1 << 22, err)) ||
        (st = mr_config_check_range("state_size", c->d_state, 1, MR_MAX_STATE_SIZE, err)) ||
        (st = mr_config_check_range("conv_kernel", c->d_conv, 1, MR_MAX_CONV_KERNEL, err)) ||
        (st = mr_config_check_range("num_heads", c->n_heads, 1, 1 << 20, err)) ||
        (st = mr_config_check_range("head_dim", c->head_dim, 1, 1 << 20, err)) ||
        (st = mr_config_check_range("n_groups", c->n_groups, 1, c->n_heads, err)))
        return st;
    if (c->n_heads * c->head_dim != c->d_inner)
        return mr_fail(err, MR_ERR_VALUE, "config num_heads * head_dim = %lld * %lld must equal intermediate_size %lld",
                       (long long)c->n_heads, (long long)c->head_dim, (long long)c->d_inner);
    if (c->n_heads % c->n_groups)
        return mr_fail(err, MR_ERR_VALUE, "config n_groups = %lld must divide num_heads = %lld",
                       (long long)c->n_groups, (long long)c->n_heads);
    if (!(c->dt_min >= 0.0f) || isnan(c->dt_max) || !(c->dt_max >= c->dt_min) || isinf(c->dt_min))
        return mr_fail(err, MR_ERR_VALUE, "config time_step_limit = (%g, %g) must be 0 <= min <= max",
                       (double)c->dt_min, (double)c->dt_max);
    return MR_OK;
}

static void sizes(const mr_config *c, mr_arch_sizes *out) {
    *out = (mr_arch_sizes){
        .scratch_width = c->d_inner,
        .n_buffers = N_BUFFERS,
        .buffer_widths = {[BUF_ZXBCDT] = proj_width(c), [BUF_XBC] = conv_width(c)},
        .conv_carry = (c->d_conv - 1) * conv_width(c),
        .state_carry = c->d_inner * c->d_state,
    };
}

static void release(mr_model *m) {
    mamba2_data *d = m->arch_data;
    if (!d) return;
    free(d->A);
    free(d);
    m->arch_data = NULL;
}

static mr_status prepare(mr_model *m, mr_error *err) {
    const mr_config *c = &m->cfg;
    release(m);
    mamba2_data *d = calloc(1, sizeof *d);
    if (d) d->A = malloc((size_t)(c->n_layer * c->n_heads) * sizeof *d->A);
    m->arch_data = d;
    if (!d || !d->A) {
        release(m);
        return mr_fail(err, MR_ERR_MEMORY, "out of memory preparing the derived weights");
    }
    for (int64_t l = 0; l < c->n_layer; l++)
        for (int64_t h = 0; h < c->n_heads; h++)
            d->A[l * c->n_heads + h] = -expf(m->weights[l][MR_T_M2_A_LOG][h]);
    return MR_OK;
}

static mr_status layer_forward(const mr_model *m, int64_t l, const mr_layer_batch *b, int ith, int nth,
                               mr_error *err) {
    const mr_config *c = &m->cfg;
    float *const *W = m->weights[l];
    const float *A = ((const mamba2_data *)m->arch_data)->A + l * c->n_heads;
    const int64_t E = c->d_inner, N = c->d_state, K = c->d_conv, H = c->n_heads;
    const int64_t G = c->n_groups, P = c->head_dim, T = b->T;
    const int64_t ldp = proj_width(c), ldc = conv_width(c);
    float *zxbcdt = b->buffers[BUF_ZXBCDT], *xbc = b->buffers[BUF_XBC];
    mr_status st;

    /* token-parallel: norm and in_proj of this thread's rows */
    st = mr_layer_in_proj(m, l, b, MR_T_M2_IN_PROJ_W, ldp, zxbcdt, ith, nth, err);
#pragma omp barrier
    /* channel-parallel: conv of x | B | C over each sequence part in order */
    mr_layer_conv(b, zxbcdt + E, ldp, ldc, K, W[MR_T_M2_CONV_W], W[MR_T_M2_CONV_B], xbc, ldc, ith, nth);
#pragma omp barrier
    /* head-parallel: the scan writes y over u. A thread keeps the same heads for every part, so
     * the carry can hold a finished sequence's state once the part that read it is done. */
    for (int64_t s = 0; s < b->nseg; s++) {
        const mr_segment *g = &b->segs[s];
        float *u = xbc + g->row * ldc;
        mr_ssd_scan_f32(g->len, H, P, G, N, u, ldc, zxbcdt + g->row * ldp + E + ldc, ldp, W[MR_T_M2_DT_BIAS], A,
                        c->dt_min, c->dt_max, u + E, u + E + G * N, ldc, W[MR_T_M2_D],
                        g->first ? NULL : b->state_carry, b->state_carry, u, ldc, ith, nth);
    }
#pragma omp barrier
    /* token-parallel: gate and norm into the scratch, then out_proj onto the residual stream */
    mr_gated_rmsnorm_f32(T, E, E / G, xbc, ldc, zxbcdt, ldp, W[MR_T_M2_NORM], c->norm_eps, b->scratch, E, ith, nth);
#pragma omp barrier
    if (st == MR_OK) st = mr_layer_out_proj(m, l, b, b->scratch, E, ith, nth, err);
#pragma omp barrier
    return st;
}

const mr_arch mr_arch_mamba2 = {
    .check_config = check_config,
    .sizes = sizes,
    .prepare = prepare,
    .release = release,
    .layer_forward = layer_forward,
};
