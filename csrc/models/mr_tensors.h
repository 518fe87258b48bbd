/* The one table of a checkpoint's tensors: name, shape in terms of the config, the architectures
 * that have it, whether it exists for a config, and whether it is a matrix. The CPU model, the CUDA model, the
 * checkpoint reader and the sentence-transformers export all read it (Python through
 * mambaret._C.tensor_table()), so adding a tensor kind is one edit here. */
#ifndef MR_TENSORS_H
#define MR_TENSORS_H

#include <stdint.h>

#include "models/mr_config.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The tensors of a checkpoint, model-wide kinds first (MR_T_NORM is the first per-layer one). */
typedef enum {
    MR_T_EMBEDDING = 0,
    MR_T_NORM_F,
    MR_T_NORM,
    MR_T_IN_PROJ_W,
    MR_T_IN_PROJ_B,
    MR_T_CONV_W,
    MR_T_CONV_B,
    MR_T_X_PROJ_W,
    MR_T_DT_PROJ_W,
    MR_T_DT_PROJ_B,
    MR_T_A_LOG,
    MR_T_D,
    MR_T_OUT_PROJ_W,
    MR_T_OUT_PROJ_B,
    /* Mamba-2's own: same names as Mamba-1's where transformers shares them, other shapes */
    MR_T_M2_IN_PROJ_W,
    MR_T_M2_IN_PROJ_B,
    MR_T_M2_CONV_W,
    MR_T_M2_CONV_B,
    MR_T_M2_DT_BIAS,
    MR_T_M2_A_LOG,
    MR_T_M2_D,
    MR_T_M2_NORM,
    MR_T_COUNT
} mr_tensor_kind;

#define MR_N_GLOBAL_TENSORS 2 /* kinds before MR_T_NORM are model-wide */

/* A dimension of a tensor, in config terms. */
typedef enum {
    MR_DIM_ONE = 0,  /* 1 (conv1d.weight's channel axis) */
    MR_DIM_VOCAB,    /* vocab_size */
    MR_DIM_D,        /* hidden_size */
    MR_DIM_E,        /* intermediate_size */
    MR_DIM_2E,       /* 2 * intermediate_size */
    MR_DIM_N,        /* state_size */
    MR_DIM_K,        /* conv_kernel */
    MR_DIM_R,        /* time_step_rank */
    MR_DIM_R_2N,     /* time_step_rank + 2 * state_size */
    MR_DIM_H,        /* num_heads (Mamba-2) */
    MR_DIM_M2_CONV,  /* intermediate_size + 2 * n_groups * state_size: Mamba-2's x | B | C */
    MR_DIM_M2_PROJ,  /* 2 * intermediate_size + 2 * n_groups * state_size + num_heads: z | xBC | dt */
    MR_DIM_COUNT
} mr_dim;

typedef enum { MR_ALWAYS = 0, MR_IF_BIAS, MR_IF_CONV_BIAS } mr_tensor_condition;

/* A name may appear in several rows, one per shape (Mamba-1's and Mamba-2's "mixer.A_log"): the
 * rows of one name have disjoint architectures, so (name, architecture) finds one row. */
typedef struct {
    const char *name;              /* HF name; per-layer ones follow "layers.{i}." */
    int per_layer;
    mr_tensor_condition condition; /* present always, or only with use_bias / use_conv_bias */
    int ndim;
    mr_dim dims[3];
    int is_matrix;                 /* read by a matrix product or the gather: kept in the compute
                                      dtype by reduced-precision engines */
    unsigned archs;                /* MR_ARCH_BIT of each architecture that has it */
} mr_tensor_info;

extern const mr_tensor_info mr_tensor_table[MR_T_COUNT];

/* The name of a dimension as Python sees it ("hidden_size", "2*intermediate_size", ...). */
const char *mr_dim_name(mr_dim dim);
int64_t mr_dim_size(const mr_config *c, mr_dim dim);

/* Whether `kind` exists for this config: its architecture has it and its condition holds (0 for
 * an unknown kind). */
int mr_tensor_present(const mr_config *c, mr_tensor_kind kind);
/* Its shape (returns ndim, 0 for an unknown kind) and element count. */
int mr_tensor_shape(const mr_config *c, mr_tensor_kind kind, int64_t shape[3]);
int64_t mr_tensor_numel(const mr_config *c, mr_tensor_kind kind);
/* 1 for model-wide kinds, else the config's layer count. */
int64_t mr_tensor_instances(const mr_config *c, mr_tensor_kind kind);
/* The kind named `name` in this config's architecture, -1 when it has none. */
int mr_tensor_find(const mr_config *c, const char *name);
/* Human-readable HF name, for messages ("layers.3.mixer.in_proj.weight"). */
void mr_tensor_name(mr_tensor_kind kind, int64_t layer, char *buf, int size);

#ifdef __cplusplus
}
#endif
#endif
