/* A model's int8 linears: their storage, loading checks, and the one call a layer makes for its
 * in_proj / out_proj product (float32 through the BLAS, or int8). */
#include "models/mr_quant.h"

#include <stdlib.h>
#include <string.h>

#include "base/mr_parallel.h"
#include "gemm/mr_blas.h"
#include "gemm/mr_linear_int8.h"
#include "models/mr_arch.h"
#include "models/mr_model.h"
#include "ops/mr_hadamard.h"

enum { Q_IN = 0, Q_OUT = 1, Q_COUNT };

struct mr_quant {
    mr_int8_linear (*lin)[Q_COUNT]; /* [n_layer] */
    int8_t *signs[Q_COUNT];         /* [n_layer][K]: each linear's input rotation (in_proj K = d, out_proj E) */
    int64_t block[Q_COUNT];         /* 0: no rotation */
    unsigned char *set;             /* [n_layer][Q_COUNT + 1]: in, out, rotation */
};

static int slot_of(mr_tensor_kind kind) {
    switch (kind) {
    case MR_T_IN_PROJ_W:
    case MR_T_M2_IN_PROJ_W: return Q_IN;
    case MR_T_OUT_PROJ_W: return Q_OUT;
    default: return -1;
    }
}

/* The architecture's own kind of a slot (Mamba-2's in_proj has its own row in the table). */
static mr_tensor_kind kind_of(const mr_config *c, int slot) {
    return slot == Q_OUT ? MR_T_OUT_PROJ_W : (mr_tensor_kind)mr_tensor_find(c, "mixer.in_proj.weight");
}

int mr_quant_replaces(const mr_config *c, mr_tensor_kind kind) { return c->int8 && slot_of(kind) >= 0; }

mr_status mr_quant_create(mr_model *m, mr_error *err) {
    const mr_config *c = &m->cfg;
    if (mr_tensor_find(c, "mixer.in_proj.weight") < 0)
        return mr_fail(err, MR_ERR_VALUE, "architecture '%s' has no in_proj to hold in int8",
                       mr_arch_name(c->arch) ? mr_arch_name(c->arch) : "?");
    mr_quant *q = calloc(1, sizeof *q);
    if (q) {
        q->lin = calloc((size_t)c->n_layer, sizeof *q->lin);
        q->signs[Q_IN] = calloc((size_t)(c->n_layer * c->d_model), 1);
        q->signs[Q_OUT] = calloc((size_t)(c->n_layer * c->d_inner), 1);
        q->set = calloc((size_t)(c->n_layer * (Q_COUNT + 1)), 1);
    }
    m->quant = q;
    if (!q || !q->lin || !q->signs[Q_IN] || !q->signs[Q_OUT] || !q->set) {
        mr_quant_free(m);
        return mr_fail(err, MR_ERR_MEMORY, "out of memory creating the int8 weights");
    }
    return MR_OK;
}

void mr_quant_free(mr_model *m) {
    mr_quant *q = m->quant;
    if (!q) return;
    if (q->lin)
        for (int64_t l = 0; l < m->cfg.n_layer; l++)
            for (int s = 0; s < Q_COUNT; s++) mr_int8_linear_free(&q->lin[l][s]);
    free(q->lin);
    free(q->signs[Q_IN]);
    free(q->signs[Q_OUT]);
    free(q->set);
    free(q);
    m->quant = NULL;
}

mr_status mr_quant_check_complete(const mr_model *m, mr_error *err) {
    const mr_quant *q = m->quant;
    if (!q) return MR_OK;
    for (int64_t l = 0; l < m->cfg.n_layer; l++)
        for (int s = 0; s < Q_COUNT; s++)
            if (!q->set[l * (Q_COUNT + 1) + s]) {
                char name[128];
                mr_tensor_name(kind_of(&m->cfg, s), l, name, sizeof name);
                return mr_fail(err, MR_ERR_VALUE, "missing int8 tensor '%s'", name);
            }
    return MR_OK;
}

int64_t mr_quant_scratch_bytes(const mr_model *m, int64_t T) {
    if (!m->quant) return 0;
    const int64_t d = m->cfg.d_model, E = m->cfg.d_inner;
    return mr_int8_scratch_bytes(T, d > E ? d : E);
}

int64_t mr_quant_weight_bytes(const mr_model *m) {
    if (!m->quant) return 0;
    const mr_config *c = &m->cfg;
    int64_t in[3], out[3];
    mr_tensor_shape(c, kind_of(c, Q_IN), in);
    mr_tensor_shape(c, kind_of(c, Q_OUT), out);
    return c->n_layer * (mr_int8_linear_bytes(in[0], in[1]) + mr_int8_linear_bytes(out[0], out[1]) + in[1] + out[1]);
}

mr_status mr_model_set_int8_linear(mr_model *m, mr_tensor_kind kind, int64_t layer, const int8_t *w, int ndim,
                                   const int64_t *shape, const float *scales, int64_t n_scales,
                                   const int8_t *signs, int64_t n_signs, int64_t block, mr_error *err) {
    mr_quant *q = m->quant;
    const int slot = slot_of(kind);
    char name[128];
    mr_tensor_name(kind, layer, name, sizeof name);
    if (!q) return mr_fail(err, MR_ERR_VALUE, "this model holds float32 weights (its config has no int8)");
    if (slot < 0) return mr_fail(err, MR_ERR_VALUE, "tensor '%s' has no int8 form", name);
    if (layer < 0 || layer >= m->cfg.n_layer)
        return mr_fail(err, MR_ERR_VALUE, "layer %lld is outside the model's %lld layers", (long long)layer,
                       (long long)m->cfg.n_layer);
    if (mr_model_is_finished(m))
        return mr_fail(err, MR_ERR_RUNTIME, "the model's weights are frozen once it is finished");
    int64_t want[3];
    const int want_nd = mr_tensor_shape(&m->cfg, kind, want);
    if (ndim != want_nd || shape[0] != want[0] || shape[1] != want[1])
        return mr_fail(err, MR_ERR_VALUE, "int8 tensor '%s' has the wrong shape (expected (%lld, %lld))", name,
                       (long long)want[0], (long long)want[1]);
    if (n_scales != want[0])
        return mr_fail(err, MR_ERR_VALUE, "the scales of '%s' have %lld values, expected %lld", name,
                       (long long)n_scales, (long long)want[0]);
    const int64_t K = want[1];
    if (signs || block) {
        if (!signs || n_signs != K || !mr_hadamard_block_ok(K, block))
            return mr_fail(err, MR_ERR_VALUE, "the rotation of '%s' does not match its %lld inputs "
                           "(%lld signs, block %lld: expected %lld signs and a power-of-two block dividing it)",
                           name, (long long)K, (long long)n_signs, (long long)block, (long long)K);
        for (int64_t i = 0; i < K; i++)
            if (signs[i] != 1 && signs[i] != -1)
                return mr_fail(err, MR_ERR_VALUE, "the rotation signs of '%s' hold %d at %lld (+1 or -1 expected)",
                               name, (int)signs[i], (long long)i);
    }
    /* one block per linear across layers: the first layer set fixes it */
    for (int64_t l = 0; l < m->cfg.n_layer; l++)
        if (l != layer && q->set[l * (Q_COUNT + 1) + slot] && block != q->block[slot])
            return mr_fail(err, MR_ERR_VALUE, "the rotation of '%s' has block %lld, layer %lld's has %lld", name,
                           (long long)block, (long long)l, (long long)q->block[slot]);
    mr_int8_linear *L = &q->lin[layer][slot];
    mr_int8_linear fresh;
    mr_status st = mr_int8_linear_init(&fresh, w, scales, want[0], K, err);
    if (st) {
        char why[sizeof err->message];
        memcpy(why, err->message, sizeof why);
        return mr_fail(err, st, "int8 tensor '%s': %s", name, why);
    }
    mr_int8_linear_free(L);
    *L = fresh;
    q->block[slot] = block;
    if (signs) memcpy(q->signs[slot] + layer * K, signs, (size_t)K);
    q->set[layer * (Q_COUNT + 1) + slot] = 1;
    return MR_OK;
}

static mr_tensor_kind bias_of(mr_tensor_kind weight) {
    switch (weight) {
    case MR_T_IN_PROJ_W: return MR_T_IN_PROJ_B;
    case MR_T_M2_IN_PROJ_W: return MR_T_M2_IN_PROJ_B;
    default: return MR_T_OUT_PROJ_B;
    }
}

mr_status mr_layer_linear(const mr_model *m, int64_t layer, mr_tensor_kind weight, int64_t T, float *a, int64_t lda,
                          float beta, float *out, int64_t ldo, void *scratch, int ith, int nth, mr_error *err) {
    float *const *W = m->weights[layer];
    const float *bias = W[bias_of(weight)]; /* NULL without use_bias */
    const int slot = slot_of(weight);
    if (!m->quant || slot < 0) {
        int64_t shape[3];
        mr_tensor_shape(&m->cfg, weight, shape);
        return mr_gemm_rows_f32(&m->blas, T, shape[0], shape[1], a, lda, W[weight], bias, beta, out, ldo, ith, nth,
                                err);
    }
    const mr_quant *q = m->quant;
    const mr_int8_linear *L = &q->lin[layer][slot];
    if (q->block[slot] > 0) {
        int64_t lo, hi; /* the rows mr_linear_int8_f32 gives this thread */
        mr_split_range(T, 4, ith, nth, &lo, &hi);
        if (hi > lo)
            mr_hadamard_rows_f32(a + lo * lda, lda, hi - lo, L->K, q->block[slot], q->signs[slot] + layer * L->K);
    }
    mr_linear_int8_f32(L, T, a, lda, bias, beta != 0.0f, out, ldo, scratch, ith, nth);
    return MR_OK;
}
