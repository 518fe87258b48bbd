#include "models/mr_tensors.h"

#include <stdio.h>
#include <string.h>

/* FalconMamba has Mamba-1's tensors: its three extra norms are weightless */
#define MAMBA1 (MR_ARCH_BIT(MR_ARCH_MAMBA1) | MR_ARCH_BIT(MR_ARCH_FALCON_MAMBA))
#define MAMBA2 MR_ARCH_BIT(MR_ARCH_MAMBA2)
#define ALL (MAMBA1 | MAMBA2)

const mr_tensor_info mr_tensor_table[MR_T_COUNT] = {
    [MR_T_EMBEDDING] = {"embeddings.weight", 0, MR_ALWAYS, 2, {MR_DIM_VOCAB, MR_DIM_D}, 1, ALL},
    [MR_T_NORM_F] = {"norm_f.weight", 0, MR_ALWAYS, 1, {MR_DIM_D}, 0, ALL},
    [MR_T_NORM] = {"norm.weight", 1, MR_ALWAYS, 1, {MR_DIM_D}, 0, ALL},
    [MR_T_IN_PROJ_W] = {"mixer.in_proj.weight", 1, MR_ALWAYS, 2, {MR_DIM_2E, MR_DIM_D}, 1, MAMBA1},
    [MR_T_IN_PROJ_B] = {"mixer.in_proj.bias", 1, MR_IF_BIAS, 1, {MR_DIM_2E}, 0, MAMBA1},
    [MR_T_CONV_W] = {"mixer.conv1d.weight", 1, MR_ALWAYS, 3, {MR_DIM_E, MR_DIM_ONE, MR_DIM_K}, 0, MAMBA1},
    [MR_T_CONV_B] = {"mixer.conv1d.bias", 1, MR_IF_CONV_BIAS, 1, {MR_DIM_E}, 0, MAMBA1},
    [MR_T_X_PROJ_W] = {"mixer.x_proj.weight", 1, MR_ALWAYS, 2, {MR_DIM_R_2N, MR_DIM_E}, 1, MAMBA1},
    [MR_T_DT_PROJ_W] = {"mixer.dt_proj.weight", 1, MR_ALWAYS, 2, {MR_DIM_E, MR_DIM_R}, 1, MAMBA1},
    [MR_T_DT_PROJ_B] = {"mixer.dt_proj.bias", 1, MR_ALWAYS, 1, {MR_DIM_E}, 0, MAMBA1},
    [MR_T_A_LOG] = {"mixer.A_log", 1, MR_ALWAYS, 2, {MR_DIM_E, MR_DIM_N}, 0, MAMBA1},
    [MR_T_D] = {"mixer.D", 1, MR_ALWAYS, 1, {MR_DIM_E}, 0, MAMBA1},
    [MR_T_OUT_PROJ_W] = {"mixer.out_proj.weight", 1, MR_ALWAYS, 2, {MR_DIM_D, MR_DIM_E}, 1, ALL},
    [MR_T_OUT_PROJ_B] = {"mixer.out_proj.bias", 1, MR_IF_BIAS, 1, {MR_DIM_D}, 0, ALL},
    [MR_T_M2_IN_PROJ_W] = {"mixer.in_proj.weight", 1, MR_ALWAYS, 2, {MR_DIM_M2_PROJ, MR_DIM_D}, 1, MAMBA2},
    [MR_T_M2_IN_PROJ_B] = {"mixer.in_proj.bias", 1, MR_IF_BIAS, 1, {MR_DIM_M2_PROJ}, 0, MAMBA2},
    [MR_T_M2_CONV_W] = {"mixer.conv1d.weight", 1, MR_ALWAYS, 3, {MR_DIM_M2_CONV, MR_DIM_ONE, MR_DIM_K}, 0, MAMBA2},
    [MR_T_M2_CONV_B] = {"mixer.conv1d.bias", 1, MR_IF_CONV_BIAS, 1, {MR_DIM_M2_CONV}, 0, MAMBA2},
    [MR_T_M2_DT_BIAS] = {"mixer.dt_bias", 1, MR_ALWAYS, 1, {MR_DIM_H}, 0, MAMBA2},
    [MR_T_M2_A_LOG] = {"mixer.A_log", 1, MR_ALWAYS, 1, {MR_DIM_H}, 0, MAMBA2},
    [MR_T_M2_D] = {"mixer.D", 1, MR_ALWAYS, 1, {MR_DIM_H}, 0, MAMBA2},
    [MR_T_M2_NORM] = {"mixer.norm.weight", 1, MR_ALWAYS, 1, {MR_DIM_E}, 0, MAMBA2},
};

static const char *const dim_names[MR_DIM_COUNT] = {
    [MR_DIM_ONE] = "1",
    [MR_DIM_VOCAB] = "vocab_size",
    [MR_DIM_D] = "hidden_size",
    [MR_DIM_E] = "intermediate_size",
    [MR_DIM_2E] = "2*intermediate_size",
    [MR_DIM_N] = "state_size",
    [MR_DIM_K] = "conv_kernel",
    [MR_DIM_R] = "time_step_rank",
    [MR_DIM_R_2N] = "time_step_rank+2*state_size",
    [MR_DIM_H] = "num_heads",
    [MR_DIM_M2_CONV] = "intermediate_size+2*n_groups*state_size",
    [MR_DIM_M2_PROJ] = "2*intermediate_size+2*n_groups*state_size+num_heads",
};

const char *mr_dim_name(mr_dim dim) { return (int)dim >= 0 && dim < MR_DIM_COUNT ? dim_names[dim] : "?"; }

int64_t mr_dim_size(const mr_config *c, mr_dim dim) {
    switch (dim) {
    case MR_DIM_ONE: return 1;
    case MR_DIM_VOCAB: return c->vocab_size;
    case MR_DIM_D: return c->d_model;
    case MR_DIM_E: return c->d_inner;
    case MR_DIM_2E: return 2 * c->d_inner;
    case MR_DIM_N: return c->d_state;
    case MR_DIM_K: return c->d_conv;
    case MR_DIM_R: return c->dt_rank;
    case MR_DIM_R_2N: return c->dt_rank + 2 * c->d_state;
    case MR_DIM_H: return c->n_heads;
    case MR_DIM_M2_CONV: return c->d_inner + 2 * c->n_groups * c->d_state;
    case MR_DIM_M2_PROJ: return 2 * c->d_inner + 2 * c->n_groups * c->d_state + c->n_heads;
    default: return 0;
    }
}

static int known(mr_tensor_kind kind) { return (int)kind >= 0 && kind < MR_T_COUNT; }

int mr_tensor_present(const mr_config *c, mr_tensor_kind kind) {
    if (!known(kind) || (int)c->arch < 0 || c->arch >= MR_ARCH_COUNT) return 0;
    if (!(mr_tensor_table[kind].archs & MR_ARCH_BIT(c->arch))) return 0;
    switch (mr_tensor_table[kind].condition) {
    case MR_IF_BIAS: return c->use_bias != 0;
    case MR_IF_CONV_BIAS: return c->use_conv_bias != 0;
    default: return 1;
    }
}

int mr_tensor_shape(const mr_config *c, mr_tensor_kind kind, int64_t shape[3]) {
    if (!known(kind)) return 0;
    const mr_tensor_info *t = &mr_tensor_table[kind];
    for (int i = 0; i < t->ndim; i++) shape[i] = mr_dim_size(c, t->dims[i]);
    return t->ndim;
}

int64_t mr_tensor_numel(const mr_config *c, mr_tensor_kind kind) {
    int64_t shape[3];
    const int nd = mr_tensor_shape(c, kind, shape);
    int64_t n = nd > 0;
    for (int i = 0; i < nd; i++) n *= shape[i];
    return n;
}

int64_t mr_tensor_instances(const mr_config *c, mr_tensor_kind kind) {
    return known(kind) && mr_tensor_table[kind].per_layer ? c->n_layer : 1;
}

int mr_tensor_find(const mr_config *c, const char *name) {
    for (int k = 0; name && k < MR_T_COUNT; k++)
        if (strcmp(name, mr_tensor_table[k].name) == 0 && (int)c->arch >= 0 && c->arch < MR_ARCH_COUNT &&
            (mr_tensor_table[k].archs & MR_ARCH_BIT(c->arch)))
            return k;
    return -1;
}

void mr_tensor_name(mr_tensor_kind kind, int64_t layer, char *buf, int size) {
    if (!known(kind))
        snprintf(buf, (size_t)size, "<unknown tensor %d>", (int)kind);
    else if (!mr_tensor_table[kind].per_layer)
        snprintf(buf, (size_t)size, "%s", mr_tensor_table[kind].name);
    else
        snprintf(buf, (size_t)size, "layers.%lld.%s", (long long)layer, mr_tensor_table[kind].name);
}
