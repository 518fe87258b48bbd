/* The C ABI of the optional CUDA module (mambaret._cuda).
 *
 * Pure C, no Python.h. This is the core's interface to a CUDA engine: cuda/ implements it and
 * exports the table `mr_cuda_api` in a capsule named MR_CUDA_CAPSULE_NAME; the binding
 * (csrc/python/cuda.c) imports it on first use. Every call returns an mr_status and fills an
 * mr_error; nothing here prints, exits or aborts.
 *
 * Streams and events are passed as `void *` holding cudaStream_t / cudaEvent_t, so this header
 * needs no CUDA header. Stream values follow DLPack's numbering: NULL (0) is the default
 * stream, 1 cudaStreamLegacy, 2 cudaStreamPerThread, anything else a stream handle. */
#ifndef MR_CUDA_H
#define MR_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include "base/mr_error.h"
#include "models/mr_model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped whenever the table below or a struct it uses changes layout or meaning. */
#define MR_CUDA_ABI_VERSION 8
#define MR_CUDA_CAPSULE_NAME "mambaret._cuda._C_API"

typedef struct mr_cuda_model mr_cuda_model;

typedef struct {
    const void *tokens;      /* [n_tokens] ids, in host memory (int32) or on the model's device */
    int tokens_on_device;    /* tokens is a device pointer: validated on the device before use */
    int tokens_int64;        /* device tokens are int64 (host tokens are always int32) */
    int64_t n_tokens;
    const int64_t *offsets;  /* host, [n_seqs + 1], as in mr_forward_args */
    int64_t n_seqs;
    mr_pooling pooling;
    int64_t max_tokens;      /* tokens per micro-batch (> 0) */
    int normalize;           /* L2-normalise each pooled row ('last' and 'mean') */
    void *stream;            /* the stream every kernel and copy of this call is queued on */
    float *out;              /* [n_seqs, d] or [n_tokens, d] (pooling 'all') float32 */
    int out_on_device;       /* out is device memory: nothing waits for the GPU. Otherwise out is
                                host memory, filled (and the stream synchronised) before return */
    int64_t exit_layer;      /* 1..n_layer: stop after block k, pool through exit k's gain (as
                                mr_forward_args); 0: every layer */
} mr_cuda_forward_args;

/* Tokens per chunk of the training scan: its forward keeps the state entering every chunk of a
 * sequence but the first ([mr_scan_boundary_count(S, offsets, 64), E, N], the layout of
 * mr_ops_backward.h), and its backward recomputes the states inside a chunk from them. */
#define MR_CUDA_TRAIN_SCAN_CHUNK 64

/* The training kernels work on float32 device tensors of a packed batch (mr_ops_backward.h's
 * contracts): T token rows holding S sequences back to back. Inputs are token-major with a row
 * stride (ld*); gradients are dense. The caller's allocator owns every buffer named here; the
 * kernels' own scratch is stream-ordered (allocated and freed on `stream`). */
typedef struct {
    int64_t S, T, E, K;
    const int32_t *pos; /* device [T]: each row's position in its sequence */
    const float *x;     /* [T, E], row stride ldx */
    int64_t ldx;
    const float *w;    /* [E, K] */
    const float *bias; /* [E] or NULL */
    float *out;        /* forward: [T, E] dense */
    const float *gout; /* backward: [T, E], row stride ldgo */
    int64_t ldgo;
    float *gx, *gw, *gbias; /* backward: [T, E], [E, K], [E] (NULL with bias NULL) */
    void *stream;
} mr_cuda_conv_train_args;

typedef struct {
    int64_t S, T, E, N;
    const int64_t *offsets; /* host [S + 1] */
    const int32_t *pos;     /* device [T]: each row's position in its sequence */
    const float *u, *dt;    /* [T, E], row strides ldu, lddt */
    int64_t ldu, lddt;
    const float *dt_bias; /* [E] or NULL */
    const float *A;       /* [E, N]: -exp(A_log) */
    const float *B, *C;   /* [T, N] each, one row stride ldbc */
    int64_t ldbc;
    const float *D; /* [E] or NULL */
    const float *z; /* [T, E], row stride ldz, or NULL */
    int64_t ldz;
    float *boundaries; /* forward writes, backward reads */
    float *y;          /* forward: [T, E] dense */
    const float *gy;   /* backward: [T, E], row stride ldgy */
    int64_t ldgy;
    /* backward: gu, gdt, gz [T, E]; gA [E, N]; gB, gC [T, N]; gdt_bias, gD [E]. gdt_bias, gD and
     * gz are NULL exactly when dt_bias, D and z are. */
    float *gu, *gdt, *gdt_bias, *gA, *gB, *gC, *gD, *gz;
    void *stream;
} mr_cuda_scan_train_args;

/* Mamba-2's SSD scan (mr_ops_backward.h's mr_ssd_scan_packed_f32 / mr_ssd_scan_backward_f32):
 * H heads of P channels, B and C in G groups of N (head h reads group h / (H / G)),
 *   delta = min(max(softplus(dt + dt_bias), dt_min), dt_max); h = exp(delta A) h + delta B x;
 *   y = C.h + D x.
 * The forward keeps the state entering every chunk of a sequence but the first, as the
 * selective scan does ([mr_scan_boundary_count(S, offsets, 64), H, N, P]). */
typedef struct {
    int64_t S, T, H, P, G, N;
    const int64_t *offsets; /* host [S + 1] */
    const float *x;         /* [T, H*P], row stride ldx */
    int64_t ldx;
    const float *dt;        /* [T, H], row stride lddt */
    int64_t lddt;
    const float *dt_bias;   /* [H] or NULL */
    const float *A;         /* [H]: -exp(A_log) */
    float dt_min, dt_max;   /* delta's clamp (dt_max may be +inf) */
    const float *B, *C;     /* [T, G*N] each, one row stride ldbc */
    int64_t ldbc;
    const float *D;         /* [H] or NULL */
    float *boundaries;      /* forward writes, backward reads */
    float *y;               /* forward: [T, H*P] dense */
    const float *gy;        /* backward: [T, H*P], row stride ldgy */
    int64_t ldgy;
    /* backward: gx [T, H*P]; gdt [T, H] (of dt before its bias); gB, gC [T, G*N] (summed over
     * each group's heads); gA, gdt_bias, gD [H]. gdt_bias and gD are NULL exactly when dt_bias
     * and D are. */
    float *gx, *gdt, *gdt_bias, *gA, *gB, *gC, *gD;
    void *stream;
} mr_cuda_ssd_train_args;

typedef struct {
    uint32_t abi_version; /* MR_CUDA_ABI_VERSION */
    uint32_t struct_size; /* sizeof(mr_cuda_api) */

    /* Number of visible devices; 0 with MR_OK when there are none. */
    mr_status (*device_count)(int *count, mr_error *err);
    /* "NVIDIA H100 80GB HBM3, sm_90, 132 SMs, CUDA runtime 13.0, cuBLAS 130002" style text. */
    mr_status (*device_description)(int device, char *buf, int size, mr_error *err);

    /* Model: create for a config and compute dtype (f32, f16 or bf16), set every tensor from
     * float32 host data (numel must match the config's shape), finish, then forward. */
    mr_status (*model_create)(const mr_config *cfg, mr_dtype dtype, int device, mr_cuda_model **out,
                              mr_error *err);
    void (*model_free)(mr_cuda_model *model);
    mr_status (*model_set_tensor)(mr_cuda_model *model, mr_tensor_kind kind, int64_t layer,
                                  const float *host_data, int64_t numel, mr_error *err);
    mr_status (*model_finish)(mr_cuda_model *model, mr_error *err);
    int64_t (*model_weight_bytes)(const mr_cuda_model *model);
    /* Device bytes of the reusable workspace for micro-batches of `tokens` tokens. */
    int64_t (*model_workspace_bytes)(const mr_cuda_model *model, int64_t tokens);
    /* Runs the backbone; one call at a time per model (calls are serialised internally).
     * Kernels are queued on args->stream; every call first waits (on the device) for the
     * previous one, since both use the same workspace: the same stream value may name two
     * streams (2, the per-thread default stream, is one stream per host thread). */
    mr_status (*model_forward)(mr_cuda_model *model, const mr_cuda_forward_args *args, mr_error *err);

    /* Device memory for results handed to Python. free_device waits for the device (the
     * binding calls it without the GIL). */
    mr_status (*malloc_device)(int device, size_t bytes, void **out, mr_error *err);
    void (*free_device)(int device, void *ptr);
    /* Waits for `ready` (when non-NULL), then copies bytes from the device to host memory. */
    mr_status (*copy_to_host)(int device, void *dst, const void *src, size_t bytes, void *ready,
                              mr_error *err);

    /* Events for the DLPack stream handshake: record on the producer's stream, make the
     * consumer's stream wait for it (on the device, the host never blocks). `device` is the
     * event's: it is made current for the call, since stream 0 / 1 / 2 name the current
     * device's default streams. */
    mr_status (*event_create)(int device, void **event, mr_error *err);
    void (*event_destroy)(void *event);
    mr_status (*event_record)(int device, void *event, void *stream, mr_error *err);
    mr_status (*stream_wait_event)(int device, void *stream, void *event, mr_error *err);

    /* Where a pointer lives: *on_device 1 and *device set for device (or managed) memory. */
    mr_status (*pointer_device)(const void *ptr, int *on_device, int *device, mr_error *err);

    /* Training (mr_ops_backward.h's math on the GPU), queued on args->stream of `device`.
     * dB, dC and the per-channel gradients are summed per block and then over blocks, never
     * with atomics, so a backward is deterministic. */
    mr_status (*train_conv_silu)(int device, const mr_cuda_conv_train_args *args, mr_error *err);
    mr_status (*train_conv_silu_backward)(int device, const mr_cuda_conv_train_args *args, mr_error *err);
    mr_status (*train_selective_scan)(int device, const mr_cuda_scan_train_args *args, mr_error *err);
    mr_status (*train_selective_scan_backward)(int device, const mr_cuda_scan_train_args *args, mr_error *err);

    /* Exit `layer`'s own gain (1..n_layer-1, float32 host [numel = d]), set before model_finish;
     * exits without one pool through the final norm's weight (mr_model_set_exit_gain's rule). */
    mr_status (*model_set_exit_gain)(mr_cuda_model *model, int64_t layer, const float *host_data, int64_t numel,
                                     mr_error *err);

    /* Mamba-2's SSD scan for training (float32), queued on args->stream of `device`; like the
     * selective scan's, its backward sums partials in a fixed order, without atomics. */
    mr_status (*train_ssd_scan)(int device, const mr_cuda_ssd_train_args *args, mr_error *err);
    mr_status (*train_ssd_scan_backward)(int device, const mr_cuda_ssd_train_args *args, mr_error *err);
} mr_cuda_api;

/* The table (defined in mr_cuda_model.cu). */
const mr_cuda_api *mr_cuda_get_api(void);

#ifdef __cplusplus
}
#endif
#endif
