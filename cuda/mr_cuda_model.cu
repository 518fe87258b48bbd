/* A Mamba-1 or Mamba-2 backbone on one CUDA device: weights uploaded once, one workspace reused
 * across calls, and the CPU engine's micro-batch scheduler (csrc/models/mr_sched.c) driving the
 * kernels.
 *
 * Per micro-batch of T rows and per Mamba-1 layer (act = the compute dtype, f32 = float32):
 *   x (f32, residual) += mix; normed (act) = rmsnorm(x)      add_rmsnorm
 *   xz (act, [T, 2E]) = normed @ in_proj^T                   cuBLAS
 *   u (act) = silu(conv(xz[:, :E]))                          conv_silu (+ carried conv state)
 *   xdbl (act, [T, R+2N]) = u @ x_proj^T                     cuBLAS
 *   dt (act) = xdbl[:, :R] @ dt_proj^T                       cuBLAS
 *   y (act) = scan(u, dt, B, C, z = xz[:, E:])               selective_scan (+ carried state)
 *   mix (f32) = y @ out_proj^T                               cuBLAS, float32 output
 * A Mamba-2 layer: zxbcdt (act, [T, 2E + 2GN + H]) = normed @ in_proj^T; xbc = silu(conv(xBC))
 * (+ carried conv state); y = ssd_scan(x, dt, B, C) (+ carried state); y = gated_rmsnorm(y, z);
 * mix = y @ out_proj^T.
 * The final norm is fused into pooling. The host only enqueues: the one wait inside a forward
 * is the final copy when the caller wants host memory (and the range check of token ids that
 * arrive already on the device, which must answer before anything runs). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <mutex>
#include <new>

#include "batch.cuh"
#include "common.cuh"
#include "conv_silu.cuh"
#include "embed.cuh"
#include "gemm.cuh"
#include "mr_cuda_model.cuh"
#include "models/mr_sched.h"
#include "pool_l2.cuh"
#include "rmsnorm.cuh"
#include "selective_scan.cuh"
#include "ssd_scan.cuh"

#define MR_CUBLAS_WORKSPACE ((size_t)32 << 20)       /* what cuBLAS asks for on Hopper */
#define MR_ALIGN 256
#define MR_LOG2_E 1.4426950408889634

typedef struct {
    void *in_w, *x_w, *dt_w, *out_w; /* act */
    float *norm, *in_b, *conv_w, *conv_b, *dt_b, *A2, *D, *out_b;
    float *gnorm; /* Mamba-2's gated norm weight */
} cuda_layer;

struct mr_cuda_model {
    mr_config cfg;
    mr_dtype dtype;
    int device;
    int sm_count;
    std::mutex lock; /* one forward at a time: they share the workspace */

    cublasHandle_t blas;
    void *blas_ws;

    char *arena; /* every weight */
    size_t arena_bytes;
    void *embedding; /* act [vocab, d] */
    float *norm_f;
    cuda_layer *layers;
    unsigned char *set; /* [MR_T_COUNT * n_layer] */
    float *exit_gains;        /* device [n_layer, d], allocated by the first exit head */
    unsigned char *exit_set;  /* [n_layer]: which exits have their own head */
    int finished;

    /* workspace for micro-batches of up to ws_tokens rows */
    char *ws;
    int64_t ws_tokens;
    float *x, *mix, *conv_carry, *ssm_carry;
    void *normed, *xz, *u, *xdbl, *dt, *y;

    /* per-call batch buffers (grow only) */
    char *batch;
    int64_t batch_tokens, batch_seqs, batch_out;
    int32_t *tokens_dev, *pos_dev;
    int64_t *offsets_dev;
    int *bad_dev;
    float *out_dev;

    /* pinned host staging for uploads, reused once the previous upload has landed */
    char *pinned;
    size_t pinned_bytes;
    cudaEvent_t upload_done;
    int upload_pending;

    /* the previous call's end, for the next call to wait on */
    cudaEvent_t last_done;
    int has_last;

    /* host scheduler buffers */
    mr_segment *segs;
    mr_scan_piece *pieces;
    int64_t host_tokens;
};

static size_t align_up(size_t n) { return (n + MR_ALIGN - 1) / MR_ALIGN * MR_ALIGN; }

/* ------------------------------------------------------------------------------------------ */
/* weights                                                                                     */

static size_t tensor_bytes(const mr_cuda_model *m, int kind) {
    return align_up((size_t)mr_tensor_numel(&m->cfg, (mr_tensor_kind)kind) *
                    (mr_tensor_table[kind].is_matrix ? mr_dtype_size(m->dtype) : 4));
}

static void **tensor_slot(mr_cuda_model *m, int kind, int64_t layer) {
    cuda_layer *L = &m->layers[layer];
    switch (kind) {
    case MR_T_EMBEDDING: return &m->embedding;
    case MR_T_NORM_F: return (void **)&m->norm_f;
    case MR_T_NORM: return (void **)&L->norm;
    case MR_T_IN_PROJ_W: return &L->in_w;
    case MR_T_IN_PROJ_B: return (void **)&L->in_b;
    case MR_T_CONV_W: return (void **)&L->conv_w;
    case MR_T_CONV_B: return (void **)&L->conv_b;
    case MR_T_X_PROJ_W: return &L->x_w;
    case MR_T_DT_PROJ_W: return &L->dt_w;
    case MR_T_DT_PROJ_B: return (void **)&L->dt_b;
    case MR_T_A_LOG: return (void **)&L->A2;
    case MR_T_D: return (void **)&L->D;
    case MR_T_OUT_PROJ_W: return &L->out_w;
    case MR_T_OUT_PROJ_B: return (void **)&L->out_b;
    case MR_T_M2_IN_PROJ_W: return &L->in_w;
    case MR_T_M2_IN_PROJ_B: return (void **)&L->in_b;
    case MR_T_M2_CONV_W: return (void **)&L->conv_w;
    case MR_T_M2_CONV_B: return (void **)&L->conv_b;
    case MR_T_M2_DT_BIAS: return (void **)&L->dt_b;
    case MR_T_M2_A_LOG: return (void **)&L->A2;
    case MR_T_M2_D: return (void **)&L->D;
    case MR_T_M2_NORM: return (void **)&L->gnorm;
    default: return NULL;
    }
}

static uint16_t float_to_bf16_bits(float f) {
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((bits >> 16) | 0x40); /* quiet NaN */
    bits += 0x7fffu + ((bits >> 16) & 1u);                                          /* round to nearest even */
    return (uint16_t)(bits >> 16);
}

mr_status mr_cuda_model_create(const mr_config *cfg, mr_dtype dtype, int device, mr_cuda_model **out, mr_error *err) {
    *out = NULL;
    if (dtype != MR_DTYPE_F32 && dtype != MR_DTYPE_F16 && dtype != MR_DTYPE_BF16)
        return mr_fail(err, MR_ERR_VALUE, "unknown compute dtype %d", (int)dtype);
    const int mamba2 = cfg->arch == MR_ARCH_MAMBA2;
    if (cfg->arch != MR_ARCH_MAMBA1 && !mamba2)
        return mr_fail(err, MR_ERR_VALUE, "the CUDA model runs Mamba-1 and Mamba-2, not architecture %d%s",
                       (int)cfg->arch, cfg->arch == MR_ARCH_FALCON_MAMBA ? " (FalconMamba)" : "");
    if (cfg->d_model < 1 || cfg->n_layer < 1 || cfg->d_inner < 1 || cfg->d_state < 1 || cfg->d_state > 256 ||
        cfg->d_conv < 1 || cfg->d_conv > 64 || (!mamba2 && cfg->dt_rank < 1) || cfg->vocab_size < 1 ||
        (mamba2 && (cfg->n_heads < 1 || cfg->n_groups < 1 || cfg->n_heads % cfg->n_groups ||
                    cfg->n_heads * cfg->head_dim != cfg->d_inner)))
        return mr_fail(err, MR_ERR_VALUE, "invalid model dimensions for the CUDA model");
    int count = 0;
    mr_status st = mr_cuda_check(cudaGetDeviceCount(&count), err, "cudaGetDeviceCount");
    if (st) return st;
    if (device < 0 || device >= count)
        return mr_fail(err, MR_ERR_VALUE, "CUDA device %d does not exist (%d visible)", device, count);
    MrDeviceGuard guard(device);
    if ((st = mr_cuda_check(guard.status(), err, "cudaSetDevice"))) return st;

    mr_cuda_model *m = new (std::nothrow) mr_cuda_model();
    if (!m) return mr_fail(err, MR_ERR_MEMORY, "out of host memory creating the CUDA model");
    m->cfg = *cfg;
    m->dtype = dtype;
    m->device = device;
    m->layers = (cuda_layer *)calloc((size_t)cfg->n_layer, sizeof(cuda_layer));
    m->set = (unsigned char *)calloc((size_t)(MR_T_COUNT * cfg->n_layer), 1);
    if (!m->layers || !m->set) {
        mr_cuda_model_free(m);
        return mr_fail(err, MR_ERR_MEMORY, "out of host memory creating the CUDA model");
    }
    cudaDeviceGetAttribute(&m->sm_count, cudaDevAttrMultiProcessorCount, device);
    if (m->sm_count < 1) m->sm_count = 1;

    size_t total = 0;
    for (int k = 0; k < MR_T_COUNT; k++)
        if (mr_tensor_present(cfg, (mr_tensor_kind)k)) total += tensor_bytes(m, k) * (size_t)mr_tensor_instances(cfg, (mr_tensor_kind)k);
    m->arena_bytes = total;
    st = mr_cuda_check(cudaMalloc((void **)&m->arena, total), err, "cudaMalloc (weights)");
    if (!st) st = mr_cuda_check(cudaMalloc(&m->blas_ws, MR_CUBLAS_WORKSPACE), err, "cudaMalloc (cuBLAS workspace)");
    if (!st) st = mr_cuda_check(cudaEventCreateWithFlags(&m->upload_done, cudaEventDisableTiming), err, "cudaEventCreate");
    if (!st) st = mr_cuda_check(cudaEventCreateWithFlags(&m->last_done, cudaEventDisableTiming), err, "cudaEventCreate");
    if (!st) {
        cublasStatus_t bs = cublasCreate(&m->blas);
        if (bs != CUBLAS_STATUS_SUCCESS) {
            m->blas = NULL;
            st = mr_fail(err, bs == CUBLAS_STATUS_ALLOC_FAILED ? MR_ERR_MEMORY : MR_ERR_RUNTIME,
                         "cublasCreate failed: %s", cublasGetStatusString(bs));
        }
    }
    if (st) {
        if (st == MR_ERR_MEMORY)
            mr_fail(err, MR_ERR_MEMORY, "out of GPU memory: the weights need %.1f MB on device %d",
                    (double)total / 1e6, device);
        mr_cuda_model_free(m);
        return st;
    }
    char *p = m->arena;
    for (int k = 0; k < MR_T_COUNT; k++) {
        if (!mr_tensor_present(cfg, (mr_tensor_kind)k)) continue;
        for (int64_t l = 0; l < mr_tensor_instances(cfg, (mr_tensor_kind)k); l++) {
            *tensor_slot(m, k, l) = p;
            p += tensor_bytes(m, k);
        }
    }
    *out = m;
    return MR_OK;
}

static void free_workspace(mr_cuda_model *m) {
    cudaFree(m->ws);
    m->ws = NULL;
    m->ws_tokens = 0;
}

void mr_cuda_model_free(mr_cuda_model *m) {
    if (!m) return;
    {
        MrDeviceGuard guard(m->device);
        if (m->has_last) cudaEventSynchronize(m->last_done); /* nothing may still use what we free */
        if (m->blas) cublasDestroy(m->blas);
        cudaFree(m->blas_ws);
        cudaFree(m->arena);
        cudaFree(m->exit_gains);
        free_workspace(m);
        cudaFree(m->batch);
        if (m->pinned) cudaFreeHost(m->pinned);
        if (m->upload_done) cudaEventDestroy(m->upload_done);
        if (m->last_done) cudaEventDestroy(m->last_done);
    }
    free(m->layers);
    free(m->set);
    free(m->exit_set);
    free(m->segs);
    free(m->pieces);
    delete m;
}

mr_status mr_cuda_model_set_tensor(mr_cuda_model *m, mr_tensor_kind kind, int64_t layer, const float *host,
                                   int64_t numel, mr_error *err) {
    const mr_config *c = &m->cfg;
    if ((int)kind < 0 || kind >= MR_T_COUNT) return mr_fail(err, MR_ERR_VALUE, "unknown tensor kind %d", (int)kind);
    if (!mr_tensor_table[kind].per_layer) layer = 0;
    else if (layer < 0 || layer >= c->n_layer)
        return mr_fail(err, MR_ERR_VALUE, "layer %lld is outside the model's %lld layers", (long long)layer,
                       (long long)c->n_layer);
    if (m->finished) return mr_fail(err, MR_ERR_RUNTIME, "the CUDA model's weights are frozen once it is finished");
    if (!mr_tensor_present(c, kind))
        return mr_fail(err, MR_ERR_VALUE, "tensor kind %d is not part of this config", (int)kind);
    const int64_t want = mr_tensor_numel(c, kind);
    if (numel != want)
        return mr_fail(err, MR_ERR_VALUE, "tensor kind %d, layer %lld: %lld values, expected %lld", (int)kind,
                       (long long)layer, (long long)numel, (long long)want);
    MrDeviceGuard guard(m->device);
    mr_status st = mr_cuda_check(guard.status(), err, "cudaSetDevice");
    if (st) return st;
    const size_t elem = mr_tensor_table[kind].is_matrix ? mr_dtype_size(m->dtype) : 4;
    void *staged = malloc((size_t)want * elem + 1);
    if (!staged) return mr_fail(err, MR_ERR_MEMORY, "out of host memory staging a tensor for the GPU");
    if (kind == MR_T_A_LOG || kind == MR_T_M2_A_LOG) { /* decay = exp2(delta * A2), A2 = -exp(A_log) * log2(e) */
        for (int64_t i = 0; i < want; i++) ((float *)staged)[i] = (float)(-exp((double)host[i]) * MR_LOG2_E);
    } else if (elem == 4) {
        memcpy(staged, host, (size_t)want * 4);
    } else if (m->dtype == MR_DTYPE_BF16) {
        for (int64_t i = 0; i < want; i++) ((uint16_t *)staged)[i] = float_to_bf16_bits(host[i]);
    } else {
        for (int64_t i = 0; i < want; i++) ((__half *)staged)[i] = __float2half_rn(host[i]);
    }
    st = mr_cuda_check(cudaMemcpy(*tensor_slot(m, kind, layer), staged, (size_t)want * elem, cudaMemcpyHostToDevice),
                       err, "cudaMemcpy (weights)");
    free(staged);
    if (!st) m->set[kind * c->n_layer + layer] = 1;
    return st;
}

mr_status mr_cuda_model_set_exit_gain(mr_cuda_model *m, int64_t layer, const float *host, int64_t numel,
                                      mr_error *err) {
    const mr_config *c = &m->cfg;
    if (layer < 1 || layer >= c->n_layer)
        return mr_fail(err, MR_ERR_VALUE, "tensor 'exits.%lld.weight': an exit head belongs to layers 1..%lld",
                       (long long)layer, (long long)(c->n_layer - 1));
    if (m->finished) return mr_fail(err, MR_ERR_RUNTIME, "the CUDA model's weights are frozen once it is finished");
    if (numel != c->d_model)
        return mr_fail(err, MR_ERR_VALUE, "tensor 'exits.%lld.weight' has %lld values, expected hidden_size %lld",
                       (long long)layer, (long long)numel, (long long)c->d_model);
    MrDeviceGuard guard(m->device);
    mr_status st = mr_cuda_check(guard.status(), err, "cudaSetDevice");
    if (st) return st;
    if (!m->exit_set) {
        m->exit_set = (unsigned char *)calloc((size_t)c->n_layer, 1);
        if (!m->exit_set) return mr_fail(err, MR_ERR_MEMORY, "out of host memory for the exit heads");
    }
    if (!m->exit_gains &&
        (st = mr_cuda_check(cudaMalloc((void **)&m->exit_gains, (size_t)(c->n_layer * c->d_model) * 4), err,
                            "cudaMalloc (exit heads)")))
        return st;
    st = mr_cuda_check(cudaMemcpy(m->exit_gains + (layer - 1) * c->d_model, host, (size_t)numel * 4,
                                  cudaMemcpyHostToDevice), err, "cudaMemcpy (exit head)");
    if (!st) m->exit_set[layer - 1] = 1;
    return st;
}

mr_status mr_cuda_model_finish(mr_cuda_model *m, mr_error *err) {
    const mr_config *c = &m->cfg;
    for (int k = 0; k < MR_T_COUNT; k++) {
        if (!mr_tensor_present(c, (mr_tensor_kind)k)) continue;
        for (int64_t l = 0; l < mr_tensor_instances(c, (mr_tensor_kind)k); l++)
            if (!m->set[k * c->n_layer + l])
                return mr_fail(err, MR_ERR_VALUE, "the CUDA model is missing tensor kind %d of layer %lld", k,
                               (long long)l);
    }
    m->finished = 1;
    return MR_OK;
}

int64_t mr_cuda_model_weight_bytes(const mr_cuda_model *m) { return (int64_t)m->arena_bytes; }

/* ------------------------------------------------------------------------------------------ */
/* workspace                                                                                   */

/* Mamba-2's widths: the conv's channels (x | B | C) and in_proj's rows (z | xBC | dt); Mamba-1's
 * are E and 2E. */
static int64_t conv_channels(const mr_config *c) {
    return c->arch == MR_ARCH_MAMBA2 ? c->d_inner + 2 * c->n_groups * c->d_state : c->d_inner;
}
static int64_t in_proj_rows(const mr_config *c) {
    return c->arch == MR_ARCH_MAMBA2 ? c->d_inner + conv_channels(c) + c->n_heads : 2 * c->d_inner;
}

/* Byte offsets of the workspace buffers for micro-batches of T rows; returns the total. */
static size_t workspace_layout(const mr_cuda_model *m, int64_t T, size_t off[10]) {
    const mr_config *c = &m->cfg;
    const size_t a = mr_dtype_size(m->dtype), t = (size_t)T;
    const size_t d = (size_t)c->d_model, E = (size_t)c->d_inner, N = (size_t)c->d_state;
    const size_t CH = (size_t)conv_channels(c);
    const int mamba1 = c->arch != MR_ARCH_MAMBA2;
    const size_t sizes[10] = {
        t * d * 4,                                   /* x */
        t * d * 4,                                   /* mix */
        2 * (size_t)c->n_layer * (size_t)(c->d_conv - 1) * CH * 4, /* conv carry, two generations */
        2 * (size_t)c->n_layer * E * N * 4,          /* ssm carry, two generations (Mamba-2: H * N * P) */
        t * d * a,                                   /* normed */
        t * (size_t)in_proj_rows(c) * a,             /* xz (Mamba-2: zxbcdt) */
        t * CH * a,                                  /* u (Mamba-2: xbc) */
        mamba1 ? t * (size_t)(c->dt_rank + 2 * c->d_state) * a : 0, /* xdbl */
        mamba1 ? t * E * a : 0,                      /* dt */
        t * E * a,                                   /* y */
    };
    size_t total = 0;
    for (int i = 0; i < 10; i++) {
        off[i] = total;
        total += align_up(sizes[i] ? sizes[i] : 1);
    }
    return total;
}

int64_t mr_cuda_model_workspace_bytes(const mr_cuda_model *m, int64_t tokens) {
    size_t off[10];
    return (int64_t)(workspace_layout(m, tokens, off) + MR_CUBLAS_WORKSPACE);
}

static mr_status ensure_workspace(mr_cuda_model *m, int64_t T, mr_error *err) {
    if (m->ws && m->ws_tokens >= T) return MR_OK;
    size_t off[10];
    const size_t total = workspace_layout(m, T, off);
    free_workspace(m); /* cudaFree waits for the device, so nothing still uses the old one */
    cudaError_t e = cudaMalloc((void **)&m->ws, total);
    if (e != cudaSuccess) {
        m->ws = NULL;
        cudaGetLastError(); /* an allocation failure must not poison later calls */
        return mr_fail(err, e == cudaErrorMemoryAllocation ? MR_ERR_MEMORY : MR_ERR_RUNTIME,
                       "out of GPU memory: the forward pass needs %.1f MB of workspace for %lld tokens per "
                       "micro-batch (lower max_tokens): %s", (double)total / 1e6, (long long)T, cudaGetErrorString(e));
    }
    m->ws_tokens = T;
    m->x = (float *)(m->ws + off[0]);
    m->mix = (float *)(m->ws + off[1]);
    m->conv_carry = (float *)(m->ws + off[2]);
    m->ssm_carry = (float *)(m->ws + off[3]);
    m->normed = m->ws + off[4];
    m->xz = m->ws + off[5];
    m->u = m->ws + off[6];
    m->xdbl = m->ws + off[7];
    m->dt = m->ws + off[8];
    m->y = m->ws + off[9];
    return MR_OK;
}

/* Device buffers sized by the whole batch: ids, positions, offsets, and the result when it is
 * to be copied to the host. */
static mr_status ensure_batch(mr_cuda_model *m, int64_t n_tokens, int64_t n_seqs, int64_t out_floats, mr_error *err) {
    if (m->batch && m->batch_tokens >= n_tokens && m->batch_seqs >= n_seqs && m->batch_out >= out_floats) return MR_OK;
    const int64_t tokens = n_tokens > m->batch_tokens ? n_tokens : m->batch_tokens;
    const int64_t seqs = n_seqs > m->batch_seqs ? n_seqs : m->batch_seqs;
    const int64_t outf = out_floats > m->batch_out ? out_floats : m->batch_out;
    const size_t sz[5] = {align_up((size_t)tokens * 4), align_up((size_t)tokens * 4), align_up((size_t)(seqs + 1) * 8),
                          align_up(sizeof(int)), align_up((size_t)outf * 4 + 4)};
    const size_t total = sz[0] + sz[1] + sz[2] + sz[3] + sz[4];
    cudaFree(m->batch);
    m->batch = NULL;
    cudaError_t e = cudaMalloc((void **)&m->batch, total);
    if (e != cudaSuccess) {
        m->batch = NULL;
        m->batch_tokens = m->batch_seqs = m->batch_out = 0;
        cudaGetLastError();
        return mr_fail(err, e == cudaErrorMemoryAllocation ? MR_ERR_MEMORY : MR_ERR_RUNTIME,
                       "out of GPU memory: %.1f MB for the batch's ids and results: %s", (double)total / 1e6,
                       cudaGetErrorString(e));
    }
    m->batch_tokens = tokens;
    m->batch_seqs = seqs;
    m->batch_out = outf;
    char *p = m->batch;
    m->tokens_dev = (int32_t *)p; p += sz[0];
    m->pos_dev = (int32_t *)p; p += sz[1];
    m->offsets_dev = (int64_t *)p; p += sz[2];
    m->bad_dev = (int *)p; p += sz[3];
    m->out_dev = (float *)p;
    return MR_OK;
}

/* Pinned host staging, written only after the previous upload from it has landed. */
static mr_status stage_upload(mr_cuda_model *m, size_t bytes, char **host, mr_error *err) {
    mr_status st;
    if (m->upload_pending) {
        if ((st = mr_cuda_check(cudaEventSynchronize(m->upload_done), err, "cudaEventSynchronize (staging)"))) return st;
        m->upload_pending = 0;
    }
    if (bytes > m->pinned_bytes) {
        if (m->pinned) cudaFreeHost(m->pinned);
        m->pinned = NULL;
        m->pinned_bytes = 0;
        cudaError_t e = cudaMallocHost((void **)&m->pinned, bytes);
        if (e != cudaSuccess) {
            m->pinned = NULL;
            cudaGetLastError();
            return mr_fail(err, MR_ERR_MEMORY, "out of pinned host memory (%.1f MB): %s", (double)bytes / 1e6,
                           cudaGetErrorString(e));
        }
        m->pinned_bytes = bytes;
    }
    *host = m->pinned;
    return MR_OK;
}

static mr_status ensure_host(mr_cuda_model *m, int64_t T, mr_error *err) {
    if (m->segs && m->host_tokens >= T) return MR_OK;
    free(m->segs);
    free(m->pieces);
    m->segs = (mr_segment *)malloc((size_t)T * sizeof(mr_segment));
    m->pieces = (mr_scan_piece *)malloc((size_t)T * sizeof(mr_scan_piece));
    if (!m->segs || !m->pieces) {
        free(m->segs);
        free(m->pieces);
        m->segs = NULL;
        m->pieces = NULL;
        m->host_tokens = 0;
        return mr_fail(err, MR_ERR_MEMORY, "out of host memory for the scheduler");
    }
    m->host_tokens = T;
    return MR_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* forward                                                                                     */

static mr_status check_args(const mr_cuda_model *m, const mr_cuda_forward_args *a, mr_error *err) {
    if (!m->finished) return mr_fail(err, MR_ERR_RUNTIME, "the CUDA model's weights are not complete");
    if (a->max_tokens <= 0) return mr_fail(err, MR_ERR_VALUE, "max_tokens must be positive, got %lld", (long long)a->max_tokens);
    if (a->max_tokens > INT32_MAX / 2) return mr_fail(err, MR_ERR_VALUE, "max_tokens %lld is too large", (long long)a->max_tokens);
    if (a->pooling != MR_POOL_LAST && a->pooling != MR_POOL_MEAN && a->pooling != MR_POOL_ALL)
        return mr_fail(err, MR_ERR_VALUE, "unknown pooling %d", (int)a->pooling);
    if (a->exit_layer < 0 || a->exit_layer > m->cfg.n_layer)
        return mr_fail(err, MR_ERR_VALUE, "exit_layer must be in 1..%lld (the model's layers), got %lld",
                       (long long)m->cfg.n_layer, (long long)a->exit_layer);
    /* ids already on the GPU are range-checked there, before the forward pass */
    return mr_batch_check(a->tokens_on_device ? NULL : (const int32_t *)a->tokens, a->n_tokens, a->offsets,
                          a->n_seqs, m->cfg.vocab_size, a->pooling != MR_POOL_ALL, err);
}

/* Groups a micro-batch's sequence parts into scan pieces of about `target` rows. Pieces end at
 * part boundaries, so only the first piece continues a carried state and only the last one
 * leaves a state behind. */
static int64_t plan_pieces(const mr_segment *segs, int64_t nseg, int64_t target, mr_scan_piece *pieces) {
    int64_t n = 0;
    for (int64_t s = 0; s < nseg; s++) {
        if (n == 0 || pieces[n - 1].rows >= target) {
            pieces[n].row0 = (int32_t)segs[s].row;
            pieces[n].rows = 0;
            pieces[n].read_state = 0;
            pieces[n].write_state = 0;
            pieces[n].first_boundary = 0;
            n++;
        }
        pieces[n - 1].rows += (int32_t)segs[s].len;
    }
    pieces[0].read_state = !segs[0].first;
    pieces[n - 1].write_state = !segs[nseg - 1].last;
    return n;
}

/* Layer l's carried states: this step's inputs (generation) and the next step's (1 - generation). */
static void layer_carries(const mr_cuda_model *m, int64_t l, int generation, float **conv_in, float **conv_out,
                          float **ssm_in, float **ssm_out) {
    const mr_config *c = &m->cfg;
    const size_t conv = (size_t)(c->d_conv - 1) * (size_t)conv_channels(c), ssm = (size_t)c->d_inner * c->d_state;
    *conv_in = m->conv_carry + ((size_t)generation * c->n_layer + l) * conv;
    *conv_out = m->conv_carry + ((size_t)(1 - generation) * c->n_layer + l) * conv;
    *ssm_in = m->ssm_carry + ((size_t)generation * c->n_layer + l) * ssm;
    *ssm_out = m->ssm_carry + ((size_t)(1 - generation) * c->n_layer + l) * ssm;
}

static mr_status layer_forward(mr_cuda_model *m, int64_t l, int64_t T, const int32_t *pos, int carry_in, int carry_out,
                               int generation, const mr_scan_piece *pieces, int64_t n_pieces, cudaStream_t s,
                               mr_error *err) {
    const mr_config *c = &m->cfg;
    const cuda_layer *L = &m->layers[l];
    const int64_t d = c->d_model, E = c->d_inner, N = c->d_state, K = c->d_conv, R = c->dt_rank, ldx = R + 2 * N;
    const size_t a = mr_dtype_size(m->dtype);
    const mr_dtype dt = m->dtype;
    float *conv_in, *conv_out, *ssm_in, *ssm_out;
    layer_carries(m, l, generation, &conv_in, &conv_out, &ssm_in, &ssm_out);
    char *xz = (char *)m->xz, *xdbl = (char *)m->xdbl;
    mr_status st;

    /* the previous layer's mixer output joins the residual stream here (layer 0: the embedding) */
    if ((st = mr_cuda_add_rmsnorm(m->x, l == 0 ? NULL : m->mix, 1, L->norm, T, d, c->norm_eps, m->normed, dt, d, s, err)))
        return st;
    if ((st = mr_cuda_gemm(m->blas, dt, T, 2 * E, d, m->normed, d, L->in_w, d, xz, 2 * E, 0, 0.0f, err))) return st;
    if (L->in_b && (st = mr_cuda_add_bias(dt, xz, T, 2 * E, 2 * E, L->in_b, s, err))) return st;
    if ((st = mr_cuda_conv_silu(dt, T, E, K, xz, 2 * E, L->conv_w, L->conv_b, pos, carry_in ? conv_in : NULL, m->u, E,
                                s, err)))
        return st;
    if (carry_out &&
        (st = mr_cuda_conv_save_state(dt, T, E, K, xz, 2 * E, pos, carry_in ? conv_in : NULL, conv_out, s, err)))
        return st;
    if ((st = mr_cuda_gemm(m->blas, dt, T, ldx, E, m->u, E, L->x_w, E, xdbl, ldx, 0, 0.0f, err))) return st;
    if ((st = mr_cuda_gemm(m->blas, dt, T, E, R, xdbl, ldx, L->dt_w, R, m->dt, E, 0, 0.0f, err))) return st;
    if ((st = mr_cuda_selective_scan(dt, E, N, m->u, E, m->dt, E, L->dt_b, L->A2, xdbl + (size_t)R * a,
                                     xdbl + (size_t)(R + N) * a, ldx, L->D, xz + (size_t)E * a, 2 * E, pos, pieces,
                                     n_pieces, ssm_in, ssm_out, NULL, m->y, E, s, err)))
        return st;
    if ((st = mr_cuda_gemm(m->blas, dt, T, d, E, m->y, E, L->out_w, E, m->mix, d, 1, 0.0f, err))) return st;
    if (L->out_b && (st = mr_cuda_add_bias(MR_DTYPE_F32, m->mix, T, d, d, L->out_b, s, err))) return st;
    return MR_OK;
}

static mr_status layer_forward_mamba2(mr_cuda_model *m, int64_t l, int64_t T, const int32_t *pos, int carry_in,
                                      int carry_out, int generation, cudaStream_t s, mr_error *err) {
    const mr_config *c = &m->cfg;
    const cuda_layer *L = &m->layers[l];
    const int64_t d = c->d_model, E = c->d_inner, N = c->d_state, K = c->d_conv, H = c->n_heads, G = c->n_groups;
    const int64_t CH = conv_channels(c), ldp = in_proj_rows(c);
    const size_t a = mr_dtype_size(m->dtype);
    const mr_dtype dt = m->dtype;
    float *conv_in, *conv_out, *ssm_in, *ssm_out;
    layer_carries(m, l, generation, &conv_in, &conv_out, &ssm_in, &ssm_out);
    char *zxbcdt = (char *)m->xz, *xbc = (char *)m->u;
    mr_status st;

    if ((st = mr_cuda_add_rmsnorm(m->x, l == 0 ? NULL : m->mix, 1, L->norm, T, d, c->norm_eps, m->normed, dt, d, s, err)))
        return st;
    if ((st = mr_cuda_gemm(m->blas, dt, T, ldp, d, m->normed, d, L->in_w, d, zxbcdt, ldp, 0, 0.0f, err))) return st;
    if (L->in_b && (st = mr_cuda_add_bias(dt, zxbcdt, T, ldp, ldp, L->in_b, s, err))) return st;
    if ((st = mr_cuda_conv_silu(dt, T, CH, K, zxbcdt + (size_t)E * a, ldp, L->conv_w, L->conv_b, pos,
                                carry_in ? conv_in : NULL, xbc, CH, s, err)))
        return st;
    if (carry_out && (st = mr_cuda_conv_save_state(dt, T, CH, K, zxbcdt + (size_t)E * a, ldp, pos,
                                                   carry_in ? conv_in : NULL, conv_out, s, err)))
        return st;
    if ((st = mr_cuda_ssd_scan(dt, T, H, c->head_dim, G, N, xbc, CH, zxbcdt + (size_t)(E + CH) * a, ldp, L->dt_b,
                               L->A2, c->dt_min, c->dt_max, xbc + (size_t)E * a, xbc + (size_t)(E + G * N) * a, CH,
                               L->D, pos, carry_in ? ssm_in : NULL, carry_out ? ssm_out : NULL, m->y, E, s, err)))
        return st;
    if ((st = mr_cuda_gated_rmsnorm(dt, T, E, E / G, m->y, E, zxbcdt, ldp, L->gnorm, c->norm_eps, m->y, E, s, err)))
        return st;
    if ((st = mr_cuda_gemm(m->blas, dt, T, d, E, m->y, E, L->out_w, E, m->mix, d, 1, 0.0f, err))) return st;
    if (L->out_b && (st = mr_cuda_add_bias(MR_DTYPE_F32, m->mix, T, d, d, L->out_b, s, err))) return st;
    return MR_OK;
}

static mr_status forward_locked(mr_cuda_model *m, const mr_cuda_forward_args *a, mr_error *err) {
    const mr_config *c = &m->cfg;
    const int64_t d = c->d_model;
    cudaStream_t s = (cudaStream_t)a->stream;
    mr_status st = check_args(m, a, err);
    if (st) return st;
    /* always, even for the same stream value: 2 (cudaStreamPerThread) is another stream in each
     * host thread, and waiting on an event already passed on this stream costs nothing */
    if (m->has_last && (st = mr_cuda_check(cudaStreamWaitEvent(s, m->last_done, 0), err, "cudaStreamWaitEvent")))
        return st;

    /* an exit runs only the blocks before it; its pooling adds the last block's output and norms
     * through the exit's own gain, else the final norm's */
    const int64_t n_run = a->exit_layer ? a->exit_layer : c->n_layer;
    const float *gain = m->exit_set && n_run < c->n_layer && m->exit_set[n_run - 1]
                            ? m->exit_gains + (n_run - 1) * d
                            : m->norm_f;
    const int64_t out_rows = a->pooling == MR_POOL_ALL ? a->n_tokens : a->n_seqs;
    const int64_t T = a->max_tokens < a->n_tokens ? a->max_tokens : a->n_tokens;
    if ((st = ensure_batch(m, a->n_tokens, a->n_seqs, a->out_on_device ? 0 : out_rows * d, err))) return st;
    float *out = a->out_on_device ? a->out : m->out_dev;
    if (a->pooling == MR_POOL_MEAN && out_rows > 0 &&
        (st = mr_cuda_check(cudaMemsetAsync(out, 0, (size_t)out_rows * d * 4, s), err, "cudaMemsetAsync")))
        return st;

    if (a->n_tokens > 0) {
        if ((st = ensure_workspace(m, T, err)) || (st = ensure_host(m, T, err))) return st;
        /* ids and offsets travel together through the pinned staging buffer */
        const size_t off_bytes = (size_t)(a->n_seqs + 1) * 8, tok_bytes = a->tokens_on_device ? 0 : (size_t)a->n_tokens * 4;
        char *host;
        if ((st = stage_upload(m, off_bytes + tok_bytes + 8, &host, err))) return st;
        memcpy(host, a->offsets, off_bytes);
        if (tok_bytes) memcpy(host + off_bytes, a->tokens, tok_bytes);
        st = mr_cuda_check(cudaMemcpyAsync(m->offsets_dev, host, off_bytes, cudaMemcpyHostToDevice, s), err, "upload");
        if (!st && tok_bytes)
            st = mr_cuda_check(cudaMemcpyAsync(m->tokens_dev, host + off_bytes, tok_bytes, cudaMemcpyHostToDevice, s),
                               err, "upload");
        if (!st) st = mr_cuda_check(cudaEventRecord(m->upload_done, s), err, "cudaEventRecord");
        if (st) return st;
        m->upload_pending = 1;

        if (a->tokens_on_device) {
            /* ids already on the device are checked there; the answer is needed before running */
            int *bad_host = (int *)(m->pinned + m->pinned_bytes - sizeof(int)); /* the staging's tail */
            if ((st = mr_cuda_check(cudaMemsetAsync(m->bad_dev, 0, sizeof(int), s), err, "cudaMemsetAsync")) ||
                (st = mr_cuda_check_tokens(a->tokens, a->tokens_int64, a->n_tokens, c->vocab_size, m->tokens_dev,
                                           m->bad_dev, s, err)) ||
                (st = mr_cuda_check(cudaMemcpyAsync(bad_host, m->bad_dev, sizeof(int), cudaMemcpyDeviceToHost, s), err,
                                    "copy")) ||
                (st = mr_cuda_check(cudaStreamSynchronize(s), err, "cudaStreamSynchronize (token check)")))
                return st;
            m->upload_pending = 0;
            if (*bad_host)
                return mr_fail(err, MR_ERR_VALUE, "%d token id(s) are outside the vocabulary [0, %lld)", *bad_host,
                               (long long)c->vocab_size);
        }
        if ((st = mr_cuda_positions(m->offsets_dev, a->n_seqs, a->n_tokens, m->pos_dev, s, err))) return st;

        cublasStatus_t bs = cublasSetStream(m->blas, s);
        if (bs == CUBLAS_STATUS_SUCCESS) bs = cublasSetWorkspace(m->blas, m->blas_ws, MR_CUBLAS_WORKSPACE);
        if (bs != CUBLAS_STATUS_SUCCESS)
            return mr_fail(err, MR_ERR_RUNTIME, "cuBLAS stream setup failed: %s", cublasGetStatusString(bs));

        /* enough pieces for about eight blocks per SM; pieces never split a sequence part */
        const int64_t channel_groups = (c->d_inner + 31) / 32;
        int64_t want_pieces = (8 * (int64_t)m->sm_count + channel_groups - 1) / channel_groups;
        if (want_pieces < 1) want_pieces = 1;
        int64_t target = (T + want_pieces - 1) / want_pieces;
        if (target < 64) target = 64;

        mr_scheduler sched;
        mr_sched_init(&sched, a->offsets, a->n_seqs, T);
        int64_t step_tokens, nseg;
        int generation = 0;
        while ((nseg = mr_sched_next(&sched, m->segs, &step_tokens)) > 0) {
            const mr_segment *first = &m->segs[0], *last = &m->segs[nseg - 1];
            const int64_t first_token = a->offsets[first->seq] + first->start;
            const int carry_in = !first->first, carry_out = !last->last;
            const int32_t *pos = m->pos_dev + first_token;
            const int64_t n_pieces = plan_pieces(m->segs, nseg, target, m->pieces);
            if ((st = mr_cuda_embed(m->dtype, m->embedding, d, m->tokens_dev + first_token, step_tokens, m->x, s, err)))
                return st;
            for (int64_t l = 0; l < n_run; l++)
                if ((st = c->arch == MR_ARCH_MAMBA2
                              ? layer_forward_mamba2(m, l, step_tokens, pos, carry_in, carry_out, generation, s, err)
                              : layer_forward(m, l, step_tokens, pos, carry_in, carry_out, generation, m->pieces,
                                              n_pieces, s, err)))
                    return st;
            if (a->pooling == MR_POOL_LAST) {
                st = mr_cuda_pool_last(m->x, m->mix, gain, d, c->norm_eps, m->offsets_dev, first->seq,
                                       last->seq + (last->last ? 1 : 0), first_token, a->normalize, out, s, err);
            } else if (a->pooling == MR_POOL_ALL) {
                st = mr_cuda_add_rmsnorm(m->x, m->mix, 0, gain, step_tokens, d, c->norm_eps, out + first_token * d,
                                         MR_DTYPE_F32, d, s, err);
            } else { /* mean: normed rows overwrite mix (each is read before it is written) */
                st = mr_cuda_add_rmsnorm(m->x, m->mix, 1, gain, step_tokens, d, c->norm_eps, m->mix, MR_DTYPE_F32,
                                         d, s, err);
                if (!st)
                    st = mr_cuda_pool_mean_add(m->mix, step_tokens, d, m->offsets_dev, first->seq, last->seq + 1,
                                               first_token, out, s, err);
            }
            if (st) return st;
            generation ^= 1; /* this step's saved states are the next step's inputs */
        }
        if (a->pooling == MR_POOL_MEAN && a->normalize && (st = mr_cuda_l2_normalize(out, a->n_seqs, d, s, err)))
            return st;
    }

    if (!a->out_on_device && out_rows > 0) {
        st = mr_cuda_check(cudaMemcpyAsync(a->out, out, (size_t)out_rows * d * 4, cudaMemcpyDeviceToHost, s), err,
                           "copy of the result");
        if (!st) st = mr_cuda_check(cudaStreamSynchronize(s), err, "the forward pass");
    }
    return st;
}

mr_status mr_cuda_model_forward(mr_cuda_model *m, const mr_cuda_forward_args *a, mr_error *err) {
    std::lock_guard<std::mutex> hold(m->lock);
    MrDeviceGuard guard(m->device);
    mr_status st = mr_cuda_check(guard.status(), err, "cudaSetDevice");
    if (st) return st;
    cudaGetLastError(); /* an earlier, unrelated failure must not be blamed on this call's kernels */
    st = forward_locked(m, a, err);
    /* even after a failure part of the call may be queued: the next call must not touch the
     * workspace before it is done */
    if (cudaEventRecord(m->last_done, (cudaStream_t)a->stream) == cudaSuccess) m->has_last = 1;
    else cudaGetLastError(); /* not this call's error to report, nor the next one's */
    return st;
}
