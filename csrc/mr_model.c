#define _POSIX_C_SOURCE 200809L /* posix_memalign */
#include "mr_model.h"

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mr_ops.h"
#include "mr_parallel.h"
#include "mr_sched.h"

typedef struct {
    float *weights[MR_T_COUNT]; /* NULL for tensors this config does not have */
    float *A;                   /* -exp(A_log), [E, N] */
    float *x_proj_packed;       /* x_proj and dt_proj laid out for mr_linear_packed_f32, or NULL */
    float *dt_proj_packed;      /* where the BLAS runs them (no vector path on this CPU) */
} mr_layer;

struct mr_model {
    mr_config cfg;
    mr_blas blas;
    float *arena; /* every weight, f32 */
    float *packed; /* 64-byte aligned copies for the packed kernels, made by finish() */
    float *embedding, *norm_f;
    mr_layer *layers;
    unsigned char *set; /* [MR_T_COUNT * n_layer]: which tensors were loaded */
    int finished;
    struct mr_workspace_cache *cache;
};

/* The last workspace, kept for the next call: a fresh one per call costs its page faults again
 * (2% of a large call). One call at a time uses it; a concurrent call allocates its own. */
typedef struct mr_workspace_cache {
    atomic_flag in_use;
    void *block;
    size_t bytes;
} mr_workspace_cache;

static mr_status check_config(const mr_config *c, mr_error *err) {
    struct { const char *name; int64_t value, lo, hi; } fields[] = {
        {"hidden_size", c->d_model, 1, 1 << 20},
        {"num_hidden_layers", c->n_layer, 1, 1 << 16},
        {"vocab_size (embedding rows)", c->vocab_size, 1, (int64_t)1 << 31},
        {"intermediate_size", c->d_inner, 1, 1 << 22},
        {"state_size", c->d_state, 1, MR_MAX_STATE_SIZE},
        {"conv_kernel", c->d_conv, 1, MR_MAX_CONV_KERNEL},
        {"time_step_rank", c->dt_rank, 1, 1 << 20},
    };
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        if (fields[i].value < fields[i].lo || fields[i].value > fields[i].hi)
            return mr_fail(err, MR_ERR_VALUE, "config %s = %lld is outside [%lld, %lld]",
                           fields[i].name, (long long)fields[i].value, (long long)fields[i].lo,
                           (long long)fields[i].hi);
    if (!(c->norm_eps >= 0.0f) || !isfinite(c->norm_eps))
        return mr_fail(err, MR_ERR_VALUE, "config layer_norm_epsilon must be finite and >= 0");
    return MR_OK;
}

mr_status mr_model_create(const mr_config *cfg, const mr_blas *blas, mr_model **out,
                          mr_error *err) {
    *out = NULL;
    mr_status st = check_config(cfg, err);
    if (st) return st;
    mr_model *m = calloc(1, sizeof *m);
    if (!m) return mr_fail(err, MR_ERR_MEMORY, "out of memory creating the model");
    m->cfg = *cfg;
    m->blas = *blas;
    int64_t total = mr_tensor_numel(cfg, MR_T_EMBEDDING) + mr_tensor_numel(cfg, MR_T_NORM_F);
    int64_t per_layer = mr_tensor_numel(cfg, MR_T_A_LOG); /* room for A */
    for (int k = MR_N_GLOBAL_TENSORS; k < MR_T_COUNT; k++)
        if (mr_tensor_present(cfg, (mr_tensor_kind)k)) per_layer += mr_tensor_numel(cfg, (mr_tensor_kind)k);
    total += per_layer * cfg->n_layer;
    m->arena = malloc((size_t)total * sizeof(float));
    m->layers = calloc((size_t)cfg->n_layer, sizeof *m->layers);
    m->set = calloc((size_t)(MR_T_COUNT * cfg->n_layer), 1);
    m->cache = calloc(1, sizeof *m->cache);
    if (m->cache) atomic_flag_clear(&m->cache->in_use);
    if (!m->arena || !m->layers || !m->set || !m->cache) {
        mr_model_free(m);
        return mr_fail(err, MR_ERR_MEMORY, "out of memory allocating %.1f MB of weights",
                       (double)total * 4 / 1e6);
    }
    float *p = m->arena;
    m->embedding = p; p += mr_tensor_numel(cfg, MR_T_EMBEDDING);
    m->norm_f = p; p += mr_tensor_numel(cfg, MR_T_NORM_F);
    for (int64_t l = 0; l < cfg->n_layer; l++) {
        for (int k = MR_N_GLOBAL_TENSORS; k < MR_T_COUNT; k++)
            if (mr_tensor_present(cfg, (mr_tensor_kind)k)) {
                m->layers[l].weights[k] = p;
                p += mr_tensor_numel(cfg, (mr_tensor_kind)k);
            }
        m->layers[l].A = p;
        p += mr_tensor_numel(cfg, MR_T_A_LOG);
    }
    *out = m;
    return MR_OK;
}

void mr_model_free(mr_model *m) {
    if (!m) return;
    free(m->arena);
    free(m->packed);
    free(m->layers);
    free(m->set);
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
                                        : m->layers[layer].weights[kind];
    int64_t n = mr_tensor_numel(&m->cfg, kind);
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
    m->set[kind * m->cfg.n_layer + layer] = 1;
    return MR_OK;
}

mr_status mr_model_finish(mr_model *m, mr_error *err) {
    const mr_config *c = &m->cfg;
    for (int k = 0; k < MR_T_COUNT; k++) {
        if (!mr_tensor_present(c, (mr_tensor_kind)k)) continue;
        int64_t layers = mr_tensor_instances(c, (mr_tensor_kind)k);
        for (int64_t l = 0; l < layers; l++)
            if (!m->set[k * c->n_layer + l]) {
                char name[128];
                mr_tensor_name((mr_tensor_kind)k, l, name, sizeof name);
                return mr_fail(err, MR_ERR_VALUE, "missing tensor '%s'", name);
            }
    }
    int64_t EN = c->d_inner * c->d_state;
    for (int64_t l = 0; l < c->n_layer; l++) {
        const float *a_log = m->layers[l].weights[MR_T_A_LOG];
        for (int64_t i = 0; i < EN; i++) m->layers[l].A[i] = -expf(a_log[i]);
    }
    if (mr_linear_packed_preferred()) {
        const int64_t E = c->d_inner, R = c->dt_rank, ldx = R + 2 * c->d_state;
        /* 16-float (64-byte) multiples keep every piece aligned: no weight load splits a line */
        const int64_t x_floats = (mr_packed_weight_floats(ldx, E) + 15) / 16 * 16,
                      dt_floats = (mr_packed_weight_floats(E, R) + 15) / 16 * 16;
        const size_t bytes = (size_t)((x_floats + dt_floats) * c->n_layer) * sizeof(float);
        free(m->packed);
        m->packed = NULL;
        if (posix_memalign((void **)&m->packed, 64, bytes) != 0 || !m->packed) {
            m->packed = NULL;
            return mr_fail(err, MR_ERR_MEMORY, "out of memory packing %.1f MB of weights", (double)bytes / 1e6);
        }
        for (int64_t l = 0; l < c->n_layer; l++) {
            mr_layer *L = &m->layers[l];
            L->x_proj_packed = m->packed + l * (x_floats + dt_floats);
            L->dt_proj_packed = L->x_proj_packed + x_floats;
            mr_pack_weight_f32(L->weights[MR_T_X_PROJ_W], ldx, E, L->x_proj_packed);
            mr_pack_weight_f32(L->weights[MR_T_DT_PROJ_W], E, R, L->dt_proj_packed);
        }
    }
    m->finished = 1;
    return MR_OK;
}

int mr_model_is_finished(const mr_model *m) { return m->finished; }

const float *mr_model_tensor_data(const mr_model *m, mr_tensor_kind kind, int64_t layer) {
    if ((int)kind < 0 || kind >= MR_T_COUNT || !mr_tensor_present(&m->cfg, kind)) return NULL;
    if (kind == MR_T_EMBEDDING) return m->embedding;
    if (kind == MR_T_NORM_F) return m->norm_f;
    if (layer < 0 || layer >= m->cfg.n_layer) return NULL;
    return m->layers[layer].weights[kind];
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
    return mr_batch_check(a->tokens, a->n_tokens, a->offsets, a->n_seqs, c->vocab_size, a->pooling != MR_POOL_ALL,
                          err);
}

/* Working buffers of one forward call, sized for one micro-batch. */
typedef struct {
    float *x;          /* [T, d] residual stream */
    float *scratch;    /* [T, max(d, E)]: normed input, then dt */
    float *xz;         /* [T, 2E]: in_proj output, u then z */
    float *u;          /* [T, E]: conv output, then scan output (in place) */
    float *xdbl;       /* [T, R + 2N]: x_proj output, dt | B | C */
    float *conv_carry; /* [n_layer, K-1, E]: state of the sequence crossing a step boundary */
    float *ssm_carry;  /* [n_layer, E, N] */
    mr_segment *segs;  /* [T] */
    void *block;
    int cached;        /* block is the model's cache, to be handed back rather than freed */
} mr_workspace;

static int64_t workspace_floats(const mr_config *c, int64_t T, int64_t offs[7]) {
    const int64_t d = c->d_model, E = c->d_inner, N = c->d_state;
    int64_t sizes[7] = {T * d, T * (E > d ? E : d), T * 2 * E, T * E, T * (c->dt_rank + 2 * N),
                        c->n_layer * (c->d_conv - 1) * E, c->n_layer * E * N};
    int64_t total = 0;
    for (int i = 0; i < 7; i++) {
        offs[i] = total;
        total += (sizes[i] + 15) / 16 * 16; /* 64-byte aligned pieces */
    }
    return total;
}

int64_t mr_model_workspace_bytes(const mr_model *m, int64_t tokens) {
    int64_t offs[7];
    return workspace_floats(&m->cfg, tokens, offs) * (int64_t)sizeof(float) +
           tokens * (int64_t)sizeof(mr_segment);
}

static mr_status workspace_alloc(const mr_model *m, int64_t T, mr_workspace *w, mr_error *err) {
    int64_t offs[7];
    int64_t floats = workspace_floats(&m->cfg, T, offs);
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
    w->x = p + offs[0];
    w->scratch = p + offs[1];
    w->xz = p + offs[2];
    w->u = p + offs[3];
    w->xdbl = p + offs[4];
    w->conv_carry = p + offs[5];
    w->ssm_carry = p + offs[6];
    w->segs = (mr_segment *)(p + floats);
    return MR_OK;
}

static void workspace_release(const mr_model *m, mr_workspace *w) {
    if (w->cached) atomic_flag_clear(&m->cache->in_use);
    else free(w->block);
}

/* A thread's rows of out[T, N] = a[T, K] @ w[N, K]^T: GEMMs split by token rows so that one
 * team of threads runs everything and the BLAS itself stays single-threaded. */
static mr_status gemm_rows(const mr_blas *blas, int64_t T, int64_t N, int64_t K, const float *a, int64_t lda,
                           const float *w, const float *bias, float beta, float *out, int64_t ldo, int ith,
                           int nth, mr_error *err) {
    int64_t lo, hi;
    mr_split_range(T, 4, ith, nth, &lo, &hi);
    if (hi <= lo) return MR_OK;
    return mr_gemm_f32(blas, hi - lo, N, K, a + lo * lda, lda, w, K, bias, beta, out + lo * ldo, ldo, 1, err);
}

/* One layer over one micro-batch of T rows made of nseg sequence parts, run by every thread
 * of the team (thread ith of nth); phases are separated by barriers. */
static mr_status layer_forward(const mr_model *m, int64_t l, const mr_workspace *w, int64_t T,
                               const mr_segment *segs, int64_t nseg, int ith, int nth, mr_error *err) {
    const mr_config *c = &m->cfg;
    const mr_layer *L = &m->layers[l];
    const int64_t d = c->d_model, E = c->d_inner, N = c->d_state, K = c->d_conv, R = c->dt_rank;
    const int64_t ldx = R + 2 * N;
    float *conv_carry = w->conv_carry + l * (K - 1) * E;
    float *ssm_carry = w->ssm_carry + l * E * N;
    mr_status st;

    /* token-parallel: norm and in_proj of this thread's rows */
    int64_t lo, hi;
    mr_split_range(T, 4, ith, nth, &lo, &hi);
    if (hi > lo)
        mr_rmsnorm_f32(w->x + lo * d, d, L->weights[MR_T_NORM], hi - lo, d, c->norm_eps, w->scratch + lo * d, d, 0, 1);
    st = gemm_rows(&m->blas, T, 2 * E, d, w->scratch, d, L->weights[MR_T_IN_PROJ_W], L->weights[MR_T_IN_PROJ_B],
                   0.0f, w->xz, 2 * E, ith, nth, err);
#pragma omp barrier
    /* channel-parallel: conv over each sequence part in order */
    for (int64_t s = 0; s < nseg; s++) {
        const mr_segment *g = &segs[s];
        mr_conv_silu_f32(g->len, E, K, w->xz + g->row * 2 * E, 2 * E, L->weights[MR_T_CONV_W],
                         L->weights[MR_T_CONV_B], g->first ? NULL : conv_carry, g->last ? NULL : conv_carry,
                         w->u + g->row * E, E, ith, nth);
    }
#pragma omp barrier
    /* each thread's dt rows need only its own x_proj rows (both split rows alike): no barrier */
    if (L->x_proj_packed) {
        mr_linear_packed_f32(T, ldx, E, w->u, E, L->x_proj_packed, w->xdbl, ldx, ith, nth);
        mr_linear_packed_f32(T, E, R, w->xdbl, ldx, L->dt_proj_packed, w->scratch, E, ith, nth);
    } else {
        if (st == MR_OK)
            st = gemm_rows(&m->blas, T, ldx, E, w->u, E, L->weights[MR_T_X_PROJ_W], NULL, 0.0f, w->xdbl, ldx, ith,
                           nth, err);
        if (st == MR_OK)
            st = gemm_rows(&m->blas, T, E, R, w->xdbl, ldx, L->weights[MR_T_DT_PROJ_W], NULL, 0.0f, w->scratch, E,
                           ith, nth, err);
    }
#pragma omp barrier
    for (int64_t s = 0; s < nseg; s++) {
        const mr_segment *g = &segs[s];
        const float *bc = w->xdbl + g->row * ldx;
        mr_selective_scan_f32(g->len, E, N, w->u + g->row * E, E, w->scratch + g->row * E, E,
                              L->weights[MR_T_DT_PROJ_B], L->A, bc + R, bc + R + N, ldx, L->weights[MR_T_D],
                              w->xz + g->row * 2 * E + E, 2 * E, g->first ? NULL : ssm_carry,
                              g->last ? NULL : ssm_carry, w->u + g->row * E, E, ith, nth);
    }
#pragma omp barrier
    /* beta = 1 adds the mixer output onto the residual stream in place */
    if (st == MR_OK)
        st = gemm_rows(&m->blas, T, d, E, w->u, E, L->weights[MR_T_OUT_PROJ_W], L->weights[MR_T_OUT_PROJ_B], 1.0f,
                       w->x, d, ith, nth, err);
#pragma omp barrier
    return st;
}

static void pool_step(const mr_model *m, const mr_forward_args *a, const mr_workspace *w,
                      int64_t T, const mr_segment *segs, int64_t nseg, int64_t first_token, int nt) {
    const mr_config *c = &m->cfg;
    const int64_t d = c->d_model;
    if (a->pooling == MR_POOL_LAST) {
#pragma omp parallel for num_threads(nt) schedule(static)
        for (int64_t s = 0; s < nseg; s++) {
            const mr_segment *g = &segs[s];
            if (g->last)
                mr_rmsnorm_f32_ref(w->x + (g->row + g->len - 1) * d, d, m->norm_f, 1, d,
                                   c->norm_eps, a->out + g->seq * d, d);
        }
        return;
    }
    float *normed = a->pooling == MR_POOL_ALL ? a->out + first_token * d : w->scratch;
#pragma omp parallel num_threads(nt)
    mr_rmsnorm_f32(w->x, d, m->norm_f, T, d, c->norm_eps, normed, d, mr_thread_index(),
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
            for (int64_t l = 0; l < c->n_layer; l++) {
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
        if (st == MR_OK) pool_step(m, a, &w, step_tokens, w.segs, nseg, first_token, nt);
    }
    if (st == MR_OK && a->normalize && a->pooling != MR_POOL_ALL) {
#pragma omp parallel num_threads(nt)
        mr_l2_normalize_f32(a->out, a->n_seqs, c->d_model, mr_thread_index(), mr_thread_count());
    }
    workspace_release(m, &w);
    return st;
}
