/* A backbone's configuration, the fields every engine (CPU, CUDA) and the tensor table read. */
#ifndef MR_CONFIG_H
#define MR_CONFIG_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The architectures the engine runs; a zeroed config is Mamba-1. */
typedef enum {
    MR_ARCH_MAMBA1 = 0,   /* transformers' MambaModel, mamba_ssm's Mamba */
    MR_ARCH_MAMBA2,       /* transformers' Mamba2Model, mamba_ssm's Mamba2 */
    MR_ARCH_FALCON_MAMBA, /* transformers' FalconMambaModel: Mamba-1 with weightless RMS norms on
                             dt, B and C (mixer_eps) */
    MR_ARCH_COUNT
} mr_arch_kind;

#define MR_ARCH_BIT(kind) (1u << (kind))

/* transformers' model_type of each architecture ("mamba", "mamba2", "falcon_mamba"), NULL outside
 * the enum. */
const char *mr_arch_name(mr_arch_kind kind);
/* The kind of a model_type, -1 for one the engine does not run. */
int mr_arch_parse(const char *name);

typedef struct {
    mr_arch_kind arch;  /* which layer the backbone stacks */
    int64_t d_model;    /* hidden_size */
    int64_t n_layer;    /* num_hidden_layers */
    int64_t vocab_size; /* rows of the embedding tensor */
    int64_t d_inner;    /* intermediate_size = expand * d_model */
    int64_t d_state;    /* state_size N */
    int64_t d_conv;     /* conv_kernel K */
    int64_t dt_rank;    /* time_step_rank R (Mamba-1, FalconMamba) */
    float norm_eps;     /* layer_norm_epsilon */
    int use_bias;       /* in_proj / out_proj biases */
    int use_conv_bias;
    /* Mamba-2: d_inner = n_heads * head_dim; B and C are shared by the n_heads / n_groups heads
     * of a group; dt is clamped to [dt_min, dt_max] (time_step_limit) after the softplus. */
    int64_t n_heads;
    int64_t head_dim;
    int64_t n_groups;
    float dt_min, dt_max;
    float mixer_eps; /* FalconMamba's mixer_rms_eps */
    int int8;           /* in_proj / out_proj held in int8 (models/mr_quant.h) */
} mr_config;

#ifdef __cplusplus
}
#endif
#endif
