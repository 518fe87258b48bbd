/* Internal: a model's int8 linears (W8A8). A config with `int8` set holds in_proj and out_proj
 * of every layer as packed int8 weights with per-output-channel scales (gemm/mr_linear_int8.h)
 * instead of float32, and each linear's input rotation (ops/mr_hadamard.h: one sign vector per
 * layer and linear, one block size per linear). A layer asks for "this layer's in_proj / out_proj" through
 * mr_layer_linear, which runs the float32 product or the int8 one, so every architecture's layer
 * gets the int8 path by calling it. */
#ifndef MR_QUANT_H
#define MR_QUANT_H

#include <stdint.h>

#include "base/mr_error.h"
#include "models/mr_config.h"
#include "models/mr_tensors.h"

typedef struct mr_model mr_model;
typedef struct mr_quant mr_quant;

/* Whether the float32 tensor `kind` is replaced by an int8 form in this config (then the arena
 * holds no float32 copy and mr_model_set_tensor refuses it). */
int mr_quant_replaces(const mr_config *c, mr_tensor_kind kind);

/* Made by mr_model_create for a config with int8 set: MR_ERR_VALUE for an architecture without an
 * int8 path. */
mr_status mr_quant_create(mr_model *m, mr_error *err);
void mr_quant_free(mr_model *m);
/* MR_ERR_VALUE naming the first int8 weight or rotation not set. */
mr_status mr_quant_check_complete(const mr_model *m, mr_error *err);
/* Bytes of per-call scratch the int8 products of a micro-batch of T tokens need (0 without int8). */
int64_t mr_quant_scratch_bytes(const mr_model *m, int64_t T);
/* Bytes the int8 weights hold (packed, with scales and rotations). */
int64_t mr_quant_weight_bytes(const mr_model *m);

/* Sets one int8 linear: weight [N, K] int8 in [-127, 127] (kind's own shape), scales [N] finite
 * and >= 0, and the rotation of its input: signs [K] of +-1 with a power-of-two block dividing K
 * (block 0 and signs NULL: none), the same block for the linear in every layer. MR_ERR_VALUE naming the tensor otherwise. */
mr_status mr_model_set_int8_linear(mr_model *m, mr_tensor_kind kind, int64_t layer, const int8_t *w, int ndim,
                                   const int64_t *shape, const float *scales, int64_t n_scales,
                                   const int8_t *signs, int64_t n_signs, int64_t block, mr_error *err);

/* out[T, N] = a[T, K] @ W^T (+ bias) (+ out when beta = 1) for this layer's `weight` (in_proj or
 * out_proj), float32 or int8 as the model holds it; thread ith of nth does its share of the rows.
 * With a rotation the thread's rows of `a` are rotated in place (the caller reads them no more).
 * `scratch`: mr_quant_scratch_bytes(m, T) bytes, shared by the team (each thread its rows). */
mr_status mr_layer_linear(const mr_model *m, int64_t layer, mr_tensor_kind weight, int64_t T, float *a, int64_t lda,
                          float beta, float *out, int64_t ldo, void *scratch, int ith, int nth, mr_error *err);

#endif
