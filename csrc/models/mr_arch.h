/* Internal: what an architecture gives the shared engine (mr_model.c), and the model both see.
 *
 * The engine owns everything that does not depend on the layer: the weight arena and loading,
 * the residual stream, the micro-batch loop, the state carried between micro-batches, pooling,
 * the workspace and the thread team. An architecture (mr_mamba1.c, ...) owns its config check,
 * its derived weights, the sizes of its buffers and its layer. */
#ifndef MR_ARCH_H
#define MR_ARCH_H

#include <stdint.h>

#include "base/mr_error.h"
#include "gemm/mr_blas.h"
#include "models/mr_config.h"
#include "models/mr_sched.h"
#include "models/mr_tensors.h"

#define MR_MAX_ARCH_BUFFERS 6

typedef struct mr_model mr_model;

/* What one micro-batch needs beside the residual stream, in floats. */
typedef struct {
    int64_t scratch_width;                     /* the shared scratch is [T, max(d, scratch_width)] */
    int n_buffers;                             /* the layer's own buffers, [T, width] each */
    int64_t buffer_widths[MR_MAX_ARCH_BUFFERS];
    int64_t conv_carry;                        /* per layer: the conv window a sequence carries */
    int64_t state_carry;                       /* per layer: the scan state a sequence carries */
} mr_arch_sizes;

/* One layer's view of a micro-batch of T rows made of nseg sequence parts (mr_sched.h). */
typedef struct {
    int64_t T;
    const mr_segment *segs;
    int64_t nseg;
    float *x;                                  /* [T, d] residual stream, updated in place */
    float *scratch;                            /* [T, max(d, scratch_width)], free between layers */
    float *buffers[MR_MAX_ARCH_BUFFERS];
    void *int8_scratch;                        /* for mr_layer_linear's int8 products (mr_quant.h) */
    float *conv_carry, *state_carry;           /* this layer's carry (a part that is not a
                                                  sequence's first reads it, one not its last
                                                  writes it) */
} mr_layer_batch;

typedef struct {
    /* Checks the fields only this architecture reads (the engine checks d, layers, vocab, eps). */
    mr_status (*check_config)(const mr_config *c, mr_error *err);
    void (*sizes)(const mr_config *c, mr_arch_sizes *out);
    /* After every tensor is set: derived weights (A = -exp(A_log), packed copies) into
     * m->arch_data; release() frees them. */
    mr_status (*prepare)(mr_model *m, mr_error *err);
    void (*release)(mr_model *m);
    /* Run by every thread of the team (thread ith of nth) with barriers between phases; leaves
     * the layer's output added onto b->x. */
    mr_status (*layer_forward)(const mr_model *m, int64_t layer, const mr_layer_batch *b, int ith, int nth,
                               mr_error *err);
} mr_arch;

/* Steps every architecture's layer shares, run by every thread of the team (no barrier inside):
 *   mr_layer_in_proj: RMSNorm (the layer's norm.weight) of this thread's rows of the residual
 *     stream into the scratch, then their in_proj (`weight`, float32 or int8 as the model holds
 *     it: models/mr_quant.h): out[T, n] = normed @ W^T + bias;
 *   mr_layer_conv: causal conv + SiLU over each sequence part of the micro-batch in order, `in`
 *     [T, channels] of stride ldi to `out` of stride ldo, carrying the window across parts;
 *   mr_layer_out_proj: x += y @ out_proj^T + bias, y [T, E] of stride ldy, onto the residual
 *     stream (y may be rotated in place for an int8 out_proj). */
mr_status mr_layer_in_proj(const mr_model *m, int64_t layer, const mr_layer_batch *b, mr_tensor_kind weight,
                           int64_t n, float *out, int ith, int nth, mr_error *err);
void mr_layer_conv(const mr_layer_batch *b, const float *in, int64_t ldi, int64_t channels, int64_t K,
                   const float *w, const float *bias, float *out, int64_t ldo, int ith, int nth);
mr_status mr_layer_out_proj(const mr_model *m, int64_t layer, const mr_layer_batch *b, float *y, int64_t ldy,
                            int ith, int nth, mr_error *err);

extern const mr_arch mr_arch_mamba1; /* also FalconMamba's */
extern const mr_arch mr_arch_mamba2;

/* MR_ERR_VALUE "config NAME = V is outside [LO, HI]" unless lo <= value <= hi. */
mr_status mr_config_check_range(const char *name, int64_t value, int64_t lo, int64_t hi, mr_error *err);

struct mr_model {
    mr_config cfg;
    const mr_arch *arch;
    mr_blas blas;
    float *arena;                      /* every checkpoint tensor, f32 */
    float *embedding, *norm_f;
    float *(*weights)[MR_T_COUNT];     /* [n_layer][kind], NULL for tensors this config lacks */
    void *arch_data;                   /* made by arch->prepare */
    struct mr_quant *quant;            /* int8 linears, when cfg.int8 (mr_quant.h) */
    unsigned char *set;                /* [MR_T_COUNT * n_layer]: which tensors were loaded */
    float *exit_gains;                 /* [n_layer, d]: exit heads (row k-1 for exit k) */
    unsigned char *exit_set;           /* [n_layer]: which exits have their own head */
    int finished;
    struct mr_workspace_cache *cache;
};

#endif
