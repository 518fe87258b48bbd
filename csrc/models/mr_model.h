/* A backbone (transformers' semantics; the architecture comes from its config, models/mr_config.h)
 * and its batched forward pass: the engine's public interface. */
#ifndef MR_MODEL_H
#define MR_MODEL_H

#include <stdint.h>

#include "gemm/mr_blas.h"
#include "base/mr_error.h"
#include "models/mr_config.h"
#include "models/mr_tensors.h" /* mr_tensor_kind */

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { MR_DTYPE_F32 = 0, MR_DTYPE_F16 = 1, MR_DTYPE_BF16 = 2 } mr_dtype;

typedef enum { MR_POOL_LAST = 0, MR_POOL_MEAN = 1, MR_POOL_ALL = 2 } mr_pooling;

typedef struct mr_model mr_model;

/* Validates the config and allocates the weight arena. `blas` is copied. */
mr_status mr_model_create(const mr_config *cfg, const mr_blas *blas, mr_model **out,
                          mr_error *err);
void mr_model_free(mr_model *model);
const mr_config *mr_model_config(const mr_model *model);

/* Expected shape of a tensor (ndim written to *ndim, at most 3 dims); MR_ERR_VALUE when the
 * kind does not exist in this config (e.g. a bias with use_bias false). */
mr_status mr_model_tensor_shape(const mr_model *model, mr_tensor_kind kind, int64_t shape[3],
                                int *ndim, mr_error *err);

/* Copies one tensor in, widening f16/bf16 to f32. Shape must match exactly. */
mr_status mr_model_set_tensor(mr_model *model, mr_tensor_kind kind, int64_t layer, mr_dtype dtype,
                              const void *data, int ndim, const int64_t *shape, mr_error *err);

/* Checks that every tensor was set and lets the architecture prepare its derived weights
 * (Mamba-1: A = -exp(A_log), packed x_proj / dt_proj). */
mr_status mr_model_finish(mr_model *model, mr_error *err);

/* Whether mr_model_finish succeeded. */
int mr_model_is_finished(const mr_model *model);

/* The float32 values of a loaded tensor as set (A_LOG holds A_log), NULL for a kind this config
 * lacks or a bad layer. For handing the weights to another engine, e.g. the CUDA model. */
const float *mr_model_tensor_data(const mr_model *model, mr_tensor_kind kind, int64_t layer);

/* Layer exits. Exit k (1-based, 1..n_layer) is block k's output, pooled through a gain vector of
 * length d: the exit's own head (checkpoint tensor exits.{k}.weight) when one was set, else the
 * final norm's weight. Exit n_layer is the model's output and always uses the final norm, so it
 * takes no head. Heads are set before mr_model_finish, like the weights. */
mr_status mr_model_set_exit_gain(mr_model *model, int64_t layer, mr_dtype dtype, const void *data, int64_t n,
                                 mr_error *err);
/* Exit k's own head (float32 [d]), or NULL when it has none. */
const float *mr_model_exit_gain(const mr_model *model, int64_t layer);

typedef struct {
    const int32_t *tokens;  /* [n_tokens] */
    int64_t n_tokens;
    const int64_t *offsets; /* [n_seqs + 1]: sequence i is tokens[offsets[i] : offsets[i+1]] */
    int64_t n_seqs;
    mr_pooling pooling;
    int64_t max_tokens;     /* tokens per micro-batch (> 0) */
    int threads;            /* our threads and the BLAS's (> 0) */
    int normalize;          /* L2-normalise pooled rows (last, mean; not 'all') */
    float *out;             /* [n_seqs, d] (last, mean) or [n_tokens, d] (all) */
    int64_t exit_layer;     /* 1..n_layer: stop after block k and pool it through exit k's gain;
                               0: every layer (the same as n_layer) */
} mr_forward_args;

/* Runs the backbone and writes the final-norm states, pooled as asked. Validates tokens and
 * offsets first. Thread-safe: the weights are read-only here; the workspace of the last call is
 * kept for the next one, and a call that finds it in use allocates its own. */
mr_status mr_model_forward(const mr_model *model, const mr_forward_args *args, mr_error *err);

/* Frees the kept workspace (unless a call is using it right now). */
void mr_model_release_workspace(const mr_model *model);

/* Bytes of workspace mr_model_forward allocates for a micro-batch of `tokens` tokens. */
int64_t mr_model_workspace_bytes(const mr_model *model, int64_t tokens);

#ifdef __cplusplus
}
#endif
#endif
