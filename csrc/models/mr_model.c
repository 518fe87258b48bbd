/* The shared engine: the weight arena and loading, the workspace, the micro-batch loop with the
 * state carried between micro-batches, pooling and the thread team. What a layer computes comes
 * from the model's architecture (mr_arch.h). */
#define _POSIX_C_SOURCE 200809L /* posix_memalign */
#include "models/mr_model.h"

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/mr_parallel.h"
#include "models/mr_arch.h"
#include "models/mr_quant.h"
#include "ops/mr_ops.h"

/* The last workspace, kept for the next call: a fresh one per call costs its page faults again
 * (2% of a large call). One call at a time uses it; a concurrent call allocates its own. */
typedef struct mr_workspace_cache {
    atomic_flag in_use;
    void *block;
    size_t bytes;
} mr_workspace_cache;

mr_status mr_config_check_range(const char *name, int64_t value, int64_t lo, int64_t hi, mr_error *err) {
    if (value < lo || value > hi)
        return mr_fail(err, MR_ERR_VALUE, "config %s = %lld is outside [%lld, %lld]", name, (long long)value,
                       (long long)lo, (long long)hi);
    return MR_OK;
}

static const mr_arch *arch_of(mr_arch_kind kind) {
    switch (kind) {
    case MR_ARCH_MAMBA1:
    case MR_ARCH_FALCON_MAMBA: return &mr_arch_mamba1;
    case MR_ARCH_MAMBA2: return &mr_arch_mamba2;
    default: return NULL;
    }
}

static mr_status check_config(const mr_config *c, const mr_arch *arch, mr_error *err) {
    if (!arch) return mr_fail(err, MR_ERR_VALUE, "config names an unknown architecture (%d)", (int)c->arch);
    mr_status st;
    if ((st = mr_config_check_range("hidden_size", c->d_model, 1, 1 << 20, err)) ||
        (st = mr_config_check_range("num_hidden_layers", c->n_layer, 1, 1 << 16, err)) ||
        (st = mr_config_check_range("vocab_size (embedding rows)", c->vocab_size, 1, (int64_t)1 << 31, err)) ||
        (st = arch->check_config(c, err)))
        return st;
    if (!(c->norm_eps >= 0.0f) || !isfinite(c->norm_eps))
        return mr_fail(err, MR_ERR_VALUE, "config layer_norm_epsilon must be finite and >= 0");
    return MR_OK;
}

mr_status mr_model_create(const mr_config *cfg, const mr_blas *blas, mr_model **out,
                          mr_error *err) {
    *out = NULL;
    const mr_arch *arch = arch_of(cfg->arch);
    mr_status st = check_config(cfg, arch, err);
    if (st) return st;
    mr_model *m = calloc(1, sizeof *m);
    if (!m) return mr_fail(err, MR_ERR_MEMORY, "out of memory creating the model");
    m->cfg = *cfg;
    m->arch = arch;
    m->blas = *blas;
    int64_t total = 0;
    for (int k = 0; k < MR_T_COUNT; k++)
        if (mr_tensor_present(cfg, (mr_tensor_kind)k) && !mr_quant_replaces(cfg, (mr_tensor_kind)k))
            total += mr_tensor_numel(cfg, (mr_tensor_kind)k) * mr_tensor_instances(cfg, (mr_tensor_kind)k);
    m->arena = malloc((size_t)total * sizeof(float));
    m->weights = calloc((size_t)cfg->n_layer, sizeof *m->weights);
    m->set = calloc((size_t)(MR_T_COUNT * cfg->n_layer), 1);
    m->exit_gains = malloc((size_t)(cfg->n_layer * cfg->d_model) * sizeof(float));
    m->exit_set = calloc((size_t)cfg->n_layer, 1);
    m->cache = calloc(1, sizeof *m->cache);
    if (m->cache) atomic_flag_clear(&m->cache->in_use);
    if (!m->arena || !m->weights || !m->set || !m->exit_gains || !m->exit_set || !m->cache) {
        mr_model_free(m);
        return mr_fail(err, MR_ERR_MEMORY, "out of memory allocating %.1f MB of weights",
                       (double)total * 4 / 1e6);
    }
    float *p = m->arena;
    m->embedding = p; p += mr_tensor_numel(cfg, MR_T_EMBEDDING);
    m->norm_f = p; p += mr_tensor_numel(cfg, MR_T_NORM_F);
    for (int64_t l = 0; l < cfg->n_layer; l++)
        for (int k = MR_N_GLOBAL_TENSORS; k < MR_T_COUNT; k++)
            if (mr_tensor_present(cfg, (mr_tensor_kind)k) && !mr_quant_replaces(cfg, (mr_tensor_kind)k)) {
                m->weights[l][k] = p;
                p += mr_tensor_numel(cfg, (mr_tensor_kind)k);
            }
    if (cfg->int8 && (st = mr_quant_create(m, err))) {
        mr_model_free(m);
        return st;
    }
    *out = m;
    return MR_OK;
}

void mr_model_free(mr_model *m) {
    if (!m) return;
    if (m->arch) m->arch->release(m);
    mr_quant_free(m);
    free(m->arena);
    free(m->weights);
    free(m->set);
    free(m->exit_gains);
    free(m->exit_set);
    if (m->cache) free(m->cache->block);
    free(m->cache);
    free(m);
}

void mr_model_release_workspace(const mr_model *m) {
    mr_workspace_cache *c = m->cache;
    if (atomic_flag_test_and_set(&c->in_use)) return; /* a call is using it */
    free(c->block);
    c->block = NULL;
    c->bytes = 0;
    atomic_flag_clear(&c->in_use);
}

const mr_config *mr_model_config(const mr_model *m) { return &m->cfg; }

mr_status mr_model_tensor_shape(const mr_model *m, mr_tensor_kind kind, int64_t shape[3],
                                int *ndim, mr_error *err) {
    if ((int)kind < 0 || kind >= MR_T_COUNT)
        return mr_fail(err, MR_ERR_VALUE, "unknown tensor kind %d", (int)kind);
    if (!mr_tensor_present(&m->cfg, kind)) {
        char name[128];
        mr_tensor_name(kind, 0, name, sizeof name);
        return mr_fail(err, MR_ERR_VALUE, "this config has no tensor '%s'", name);
    }
    *ndim = mr_tensor_shape(&m->cfg, kind, shape);
    return MR_OK;
}

static float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (mant << 13); /* inf / nan */
    } else if (exp != 0) {
        bits = sign | ((exp + 112) << 23) | (mant << 13);
    } else if (mant == 0) {
        bits = sign;
    } else { /* subnormal: normalise */
        int shift = 0;
        while (!(mant & 0x400)) { mant <<= 1; shift++; }
        bits = sign | ((uint32_t)(113 - shift) << 23) | ((mant & 0x3ff) << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static mr_status widen_to_f32(float *dst, mr_dtype dtype, const void *data, int64_t n, const char *name,
                              mr_error *err) {
    switch (dtype) {
    case MR_DTYPE_F32: memcpy(dst, data, (size_t)n * sizeof(float)); break;
    case MR_DTYPE_F16:
        for (int64_t i = 0; i < n; i++) dst[i] = half_to_float(((const uint16_t *)data)[i]);
        break;
    case MR_DTYPE_BF16:
        for (int64_t i = 0; i < n; i++) {
            uint32_t bits = (uint32_t)((const uint16_t *)data)[i] << 16;
            memcpy(&dst[i], &bits, sizeof bits);
        }
        break;
    default: return mr_fail(err, MR_ERR_VALUE, "tensor '%s': unsupported dtype %d", name, (int)dtype);
    }
    return MR_OK;
}

mr_status mr_model_set_tensor(mr_model *m, mr_tensor_kind kind, int64_t layer, mr_dtype dtype,
                              const void *data, int ndim, const int64_t *shape, mr_error *err) {
    char name[128];
    if ((int)kind < 0 || kind >= MR_T_COUNT)
        return mr_fail(err, MR_ERR_VALUE, "unknown tensor kind %d", (int)kind);
    if (kind >= MR_N_GLOBAL_TENSORS && (layer < 0 || layer >= m->cfg.n_layer))
        return mr_fail(err, MR_ERR_VALUE, "layer %lld is outside the model's %lld layers",
                       (long long)layer, (long long)m->cfg.n_layer);
    if (kind < MR_N_GLOBAL_TENSORS) layer = 0;
    if (m->finished)
        return mr_fail(err, MR_ERR_RUNTIME, "the model's weights are frozen once it is finished");
    mr_tensor_name(kind, layer, name, sizeof name);
    if (!mr_tensor_present(&m->cfg, kind))
        return mr_fail(err, MR_ERR_VALUE, "unexpected tensor '%s' (not in this config)", name);
    if (mr_quant_replaces(&m->cfg, kind))
        return mr_fail(err, MR_ERR_VALUE, "tensor '%s' is held in int8 by this model (set_int8_linear)", name);
    int64_t want[3];
    int want_nd = mr_tensor_shape(&m->cfg, kind, want);
    int same = ndim == want_nd;
    for (int i = 0; same && i < ndim; i++) same = shape[i] == want[i];
    if (!same) {
        char got_s[96] = "", want_s[96] = "";
        for (int i = 0; i < ndim && i < 4; i++)
            snprintf(got_s + strlen(got_s), sizeof got_s - strlen(got_s), "%s%lld", i ? ", " : "",
                     (long long)shape[i]);
        for (int i = 0; i < want_nd; i++)
            snprintf(want_s + strlen(want_s), sizeof want_s - strlen(want_s), "%s%lld",
                     i ? ", " : "", (long long)want[i]);
        return mr_fail(err, MR_ERR_VALUE, "tensor '%s' has shape (%s), expected (%s)", name,
                       got_s, want_s);
    }
    float *dst = kind == MR_T_EMBEDDING ? m->embedding
                 : kind == MR_T_NORM_F  ? m->norm_f
                                        : m->weights[layer][kind];
    mr_status st = widen_to_f32(dst, dtype, data, mr_tensor_numel(&m->cfg, kind), name, err);
    if (st) return st;
    m->set[kind * m->cfg.n_layer + layer] = 1;
    return MR_OK;
}

mr_status mr_model_set_exit_gain(mr_model *m, int64_t layer, mr_dtype dtype, const void *data, int64_t n,
                                 mr_error *err) {
    const mr_config *c = &m->cfg;
    char name[64];
    snprintf(name, sizeof name, "exits.%lld.weight", (long long)layer);
    if (layer < 1 || layer >= c->n_layer)
        return mr_fail(err, MR_ERR_VALUE, "tensor '%s': an exit head belongs to layers 1..%lld (exit %lld is the "
                       "final norm, norm_f.weight)", name, (long long)(c->n_layer - 1), (long long)c->n_layer);
    if (m->finished)
        return mr_fail(err, MR_ERR_RUNTIME, "the model's weights are frozen once it is finished");
    if (n != c->d_model)
        return mr_fail(err, MR_ERR_VALUE, "tensor '%s' has %lld values, expected hidden_size %lld", name,
                       (long long)n, (long long)c->d_model);
    mr_status st = widen_to_f32(m->exit_gains + (layer - 1) * c->d_model, dtype, data, n, name, err);
    if (st) return st;
    m->exit_set[layer - 1] = 1;
    return MR_OK;
}

const float *mr_model_exit_gain(const mr_model *m, int64_t layer) {
    if (layer < 1 || layer > m->cfg.n_layer || !m->exit_set[layer - 1]) return NULL;
    return m->exit_gains + (layer - 1) * m->cfg.d_model;
}

mr_status mr_model_finish(mr_model *m, mr_error *err) {
    const mr_config *c = &m->cfg;
    for (int k = 0; k < MR_T_COUNT; k++) {
        if (!mr_tensor_present(c, (mr_tensor_kind)k) || mr_quant_replaces(c, (mr_tensor_kind)k)) continue;
        int64_t layers = mr_tensor_instances(c, (mr_tensor_kind)k);
        for (int64_t l = 0; l < layers; l++)
            if (!m->set[k * c->n_layer + l]) {
                char name[128];
                mr_tensor_name((mr_tensor_kind)k, l, name, sizeof name);
                return mr_fail(err, MR_ERR_VALUE, "missing tensor '%s'", name);
            }
    }
    mr_status st = mr_quant_check_complete(m, err);
    if (st || (st = m->arch->prepare(m, err))) return st;
    m->finished = 1;
    return MR_OK;
}

int mr_model_is_finished(const mr_model *m) { return m->finished; }

const float *mr_model_tensor_data(const mr_model *m, mr_tensor_kind kind, int64_t layer) {
    if ((int)kind < 0 || kind >= MR_T_COUNT || !mr_tensor_present(&m->cfg, kind)) return NULL;
    if (kind == MR_T_EMBEDDING) return m->embedding;
    if (kind == MR_T_NORM_F) return m->norm_f;
    if (layer < 0 || layer >= m->cfg.n_layer) return NULL;
    return m->weights[layer][kind]; /* NULL for an int8 one */
}

static mr_status check_batch(const mr_model *m, const mr_forward_args *a, mr_error *err) {
    const mr_config *c = &m->cfg;
    if (!m->finished) return mr_fail(err, MR_ERR_RUNTIME, "model weights are not complete");
    if (a->max_tokens <= 0)
        return mr_fail(err, MR_ERR_VALUE, "max_tokens must be positive, got %lld", (long long)a->max_tokens);
    if (a->threads <= 0)
        return mr_fail(err, MR_ERR_VALUE, "threads must be positive, got %d", a->threads);
    if (a->pooling != MR_POOL_LAST && a->pooling != MR_POOL_MEAN && a->pooling != MR_POOL_ALL)
        return mr_fail(err, MR_ERR_VALUE, "unknown pooling %d", (int)a->pooling);
    if (a->exit_layer < 0 || a->exit_layer > c->n_layer)
        return mr_fail(err, MR_ERR_VALUE, "exit_layer must be in 1..%lld (the model's layers), got %lld",
                       (long long)c->n_layer, (long long)a->exit_layer);
    return mr_batch_check(a->tokens, a->n_tokens, a->offsets, a->n_seqs, c->vocab_size, a->pooling != MR_POOL_ALL,
                          err);
}

/* Working buffers of one forward call, sized for one micro-batch: the residual stream, the shared
 * scratch, the architecture's buffers, and every layer's carry (the state of the sequence that
 * crosses a micro-batch boundary), in one 64-byte aligned block. */
enum { PIECE_X = 0, PIECE_SCRATCH, PIECE_BUFFERS };
#define MAX_PIECES (PIECE_BUFFERS + MR_MAX_ARCH_BUFFERS + 3)

typedef struct {
    float *x;           /* [T, d] residual stream */
    float *scratch;     /* [T, max(d, scratch_width)]: the layer's, and the pooled norms */
    float *buffers[MR_MAX_ARCH_BUFFERS];
    float *conv_carry;  /* [n_layer, conv_carry] */
    float *state_carry; /* [n_layer, state_carry] */
    void *int8_scratch; /* mr_quant_scratch_bytes, for int8 models */
    int64_t conv_carry_floats, state_carry_floats; /* per layer */
    mr_segment *segs;   /* [T] */
    void *block;
    int cached;         /* block is the model's cache, to be handed back rather than freed */
} mr_workspace;

/* The pieces' offsets in floats (x, scratch, buffers, conv carry, state carry) and their total. */
static int64_t workspace_floats(const mr_model *m, int64_t T, mr_arch_sizes *sz, int64_t offs[MAX_PIECES],
                                int *n_pieces) {
    const mr_config *c = &m->cfg;
    const int64_t d = c->d_model;
    m->arch->sizes(c, sz);
    int64_t sizes[MAX_PIECES];
    int n = 0;
    sizes[n++] = T * d;
    sizes[n++] = T * (sz->scratch_width > d ? sz->scratch_width : d);
    for (int i = 0; i < sz->n_buffers; i++) sizes[n++] = T * sz->buffer_widths[i];
    sizes[n++] = c->n_layer * sz->conv_carry;
    sizes[n++] = c->n_layer * sz->state_carry;
    sizes[n++] = (mr_quant_scratch_bytes(m, T) + 3) / 4;
    int64_t total = 0;
    for (int i = 0; i < n; i++) {
        offs[i] = total;
        total += (sizes[i] + 15) / 16 * 16; /* 64-byte aligned pieces */
    }
    *n_pieces = n;
    return total;
}

int64_t mr_model_workspace_bytes(const mr_model *m, int64_t tokens) {
    int64_t offs[MAX_PIECES];
    mr_arch_sizes sz;
    int n;
    return workspace_floats(m, tokens, &sz, offs, &n) * (int64_t)sizeof(float) +
           tokens * (int64_t)sizeof(mr_segment);
}

static mr_status workspace_alloc(const mr_model *m, int64_t T, mr_workspace *w, mr_error *err) {
    int64_t offs[MAX_PIECES];
    mr_arch_sizes sz;
    int n;
    int64_t floats = workspace_floats(m, T, &sz, offs, &n);
    size_t bytes = (size_t)floats * sizeof(float) + (size_t)T * sizeof(mr_segment);
    mr_workspace_cache *cache = m->cache;
    float *p = NULL;
    w->cached = !atomic_flag_test_and_set(&cache->in_use);
    if (w->cached && cache->bytes >= bytes) {
        p = cache->block;
    } else {
        if (w->cached) { /* too small: replace it */
            free(cache->block);
            cache->block = NULL;
            cache->bytes = 0;
        }
        if (posix_memalign((void **)&p, 64, bytes) != 0 || !p) {
            if (w->cached) atomic_flag_clear(&cache->in_use);
            return mr_fail(err, MR_ERR_MEMORY, "out of memory: the forward pass needs %.1f MB of workspace "
                           "for %lld tokens per micro-batch (lower max_tokens)", (double)bytes / 1e6, (long long)T);
        }
        if (w->cached) {
            cache->block = p;
            cache->bytes = bytes;
        }
    }
    w->block = p;
    w->x = p + offs[PIECE_X];
    w->scratch = p + offs[PIECE_SCRATCH];
    for (int i = 0; i < MR_MAX_ARCH_BUFFERS; i++) w->buffers[i] = i < sz.n_buffers ? p + offs[PIECE_BUFFERS + i] : NULL;
    w->conv_carry = p + offs[n - 3];
    w->state_carry = p + offs[n - 2];
    w->int8_scratch = p + offs[n - 1];
    w->conv_carry_floats = sz.conv_carry;
    w->state_carry_floats = sz.state_carry;
    w->segs = (mr_segment *)(p + floats);
    return MR_OK;
}

static void workspace_release(const mr_model *m, mr_workspace *w) {
    if (w->cached) atomic_flag_clear(&m->cache->in_use);
    else free(w->block);
}

mr_status mr_layer_in_proj(const mr_model *m, int64_t layer, const mr_layer_batch *b, mr_tensor_kind weight,
                           int64_t n, float *out, int ith, int nth, mr_error *err) {
    const int64_t d = m->cfg.d_model;
    int64_t lo, hi;
    mr_split_range(b->T, 4, ith, nth, &lo, &hi); /* the products' split: each thread reads its own rows */
    if (hi > lo)
        mr_rmsnorm_f32(b->x + lo * d, d, m->weights[layer][MR_T_NORM], hi - lo, d, m->cfg.norm_eps, b->scratch + lo * d,
                       d, 0, 1);
    return mr_layer_linear(m, layer, weight, b->T, b->scratch, d, 0.0f, out, n, b->int8_scratch, ith, nth, err);
}

void mr_layer_conv(const mr_layer_batch *b, const float *in, int64_t ldi, int64_t channels, int64_t K,
                   const float *w, const float *bias, float *out, int64_t ldo, int ith, int nth) {
    for (int64_t s = 0; s < b->nseg; s++) {
        const mr_segment *g = &b->segs[s];
        mr_conv_silu_f32(g->len, channels, K, in + g->row * ldi, ldi, w, bias, g->first ? NULL : b->conv_carry,
                         g->last ? NULL : b->conv_carry, out + g->row * ldo, ldo, ith, nth);
    }
}

mr_status mr_layer_out_proj(const mr_model *m, int64_t layer, const mr_layer_batch *b, float *y, int64_t ldy,
                            int ith, int nth, mr_error *err) {
    /* beta = 1 adds the mixer output onto the residual stream in place */
    return mr_layer_linear(m, layer, MR_T_OUT_PROJ_W, b->T, y, ldy, 1.0f, b->x, m->cfg.d_model, b->int8_scratch, ith,
                           nth, err);
}

/* Layer l over one micro-batch, run by every thread of the team. */
static mr_status layer_forward(const mr_model *m, int64_t l, const mr_workspace *w, int64_t T,
                               const mr_segment *segs, int64_t nseg, int ith, int nth, mr_error *err) {
    mr_layer_batch b = {
        .T = T,
        .segs = segs,
        .nseg = nseg,
        .x = w->x,
        .scratch = w->scratch,
        .int8_scratch = w->int8_scratch,
        .conv_carry = w->conv_carry + l * w->conv_carry_floats,
        .state_carry = w->state_carry + l * w->state_carry_floats,
    };
    for (int i = 0; i < MR_MAX_ARCH_BUFFERS; i++) b.buffers[i] = w->buffers[i];
    return m->arch->layer_forward(m, l, &b, ith, nth, err);
}

/* Pools a micro-batch's residual stream through `gain` (the final norm's, or an exit's). */
static void pool_step(const mr_model *m, const mr_forward_args *a, const mr_workspace *w, const float *gain,
                      int64_t T, const mr_segment *segs, int64_t nseg, int64_t first_token, int nt) {
    const mr_config *c = &m->cfg;
    const int64_t d = c->d_model;
    if (a->pooling == MR_POOL_LAST) {
#pragma omp parallel for num_threads(nt) schedule(static)
        for (int64_t s = 0; s < nseg; s++) {
            const mr_segment *g = &segs[s];
            if (g->last)
                mr_rmsnorm_f32_ref(w->x + (g->row + g->len - 1) * d, d, gain, 1, d,
                                   c->norm_eps, a->out + g->seq * d, d);
        }
        return;
    }
    float *normed = a->pooling == MR_POOL_ALL ? a->out + first_token * d : w->scratch;
#pragma omp parallel num_threads(nt)
    mr_rmsnorm_f32(w->x, d, gain, T, d, c->norm_eps, normed, d, mr_thread_index(),
                   mr_thread_count());
    if (a->pooling == MR_POOL_MEAN) {
#pragma omp parallel for num_threads(nt) schedule(static)
        for (int64_t s = 0; s < nseg; s++) {
            const mr_segment *g = &segs[s];
            float *dst = a->out + g->seq * d;
            for (int64_t t = 0; t < g->len; t++)
                for (int64_t i = 0; i < d; i++) dst[i] += normed[(g->row + t) * d + i];
            if (g->last) {
                float inv = 1.0f / (float)(a->offsets[g->seq + 1] - a->offsets[g->seq]);
                for (int64_t i = 0; i < d; i++) dst[i] *= inv;
            }
        }
    }
}

mr_status mr_model_forward(const mr_model *m, const mr_forward_args *a, mr_error *err) {
    mr_status st = check_batch(m, a, err);
    if (st) return st;
    const mr_config *c = &m->cfg;
    if (a->n_tokens == 0) return MR_OK;
    const int64_t T = a->max_tokens < a->n_tokens ? a->max_tokens : a->n_tokens;
    const int nt = a->threads;
    /* an exit runs only the blocks before it: the rest would be wasted work */
    const int64_t n_run = a->exit_layer ? a->exit_layer : c->n_layer;
    const float *own = mr_model_exit_gain(m, n_run);
    const float *gain = own ? own : m->norm_f;
    mr_workspace w;
    st = workspace_alloc(m, T, &w, err);
    if (st) return st;
    if (a->pooling == MR_POOL_MEAN) memset(a->out, 0, (size_t)(a->n_seqs * c->d_model) * sizeof(float));
    /* our team does all the parallel work, the BLAS runs inside it on one thread each */
    mr_blas_set_threads(&m->blas, 1);

    mr_scheduler sched;
    mr_sched_init(&sched, a->offsets, a->n_seqs, T);
    int64_t step_tokens, nseg;
    while (st == MR_OK && (nseg = mr_sched_next(&sched, w.segs, &step_tokens)) > 0) {
        /* parts are taken in order, so a step's tokens are contiguous in the batch */
        const int64_t first_token = a->offsets[w.segs[0].seq] + w.segs[0].start;
        mr_status team_status = MR_OK;
#pragma omp parallel num_threads(nt)
        {
            const int ith = mr_thread_index(), nth = mr_thread_count();
            mr_error local = {0};
            mr_status mine = MR_OK;
            mr_embed_gather_f32(m->embedding, c->d_model, a->tokens + first_token, step_tokens, w.x, ith, nth);
#pragma omp barrier
            for (int64_t l = 0; l < n_run; l++) {
                mr_status s = layer_forward(m, l, &w, step_tokens, w.segs, nseg, ith, nth, &local);
                if (s != MR_OK && mine == MR_OK) mine = s;
            }
            if (mine != MR_OK) {
#pragma omp critical(mr_forward_error)
                if (team_status == MR_OK) {
                    team_status = mine;
                    *err = local;
                }
            }
        }
        st = team_status;
        if (st == MR_OK) pool_step(m, a, &w, gain, step_tokens, w.segs, nseg, first_token, nt);
    }
    if (st == MR_OK && a->normalize && a->pooling != MR_POOL_ALL) {
#pragma omp parallel num_threads(nt)
        mr_l2_normalize_f32(a->out, a->n_seqs, c->d_model, mr_thread_index(), mr_thread_count());
    }
    workspace_release(m, &w);
    return st;
}
