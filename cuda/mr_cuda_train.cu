/* The training entries of the ABI table: argument checks, the device made current for the call,
 * per-call tables uploaded stream-ordered, then the kernels of conv_silu*.cu, selective_scan*.cu
 * and ssd_scan_backward.cu. */
#include <stdlib.h>
#include <string.h>

#include "common.cuh"
#include "conv_silu.cuh"
#include "conv_silu_backward.cuh"
#include "mr_cuda_train.cuh"
#include "selective_scan.cuh"
#include "selective_scan_backward.cuh"
#include "ssd_scan_backward.cuh"

static mr_status check_conv(const mr_cuda_conv_train_args *a, mr_error *err) {
    if (a->S < 0 || a->T < 0 || a->E < 0 || a->K < 1 || a->K > 64)
        return mr_fail(err, MR_ERR_VALUE, "conv: bad shape (S=%lld, T=%lld, E=%lld, K=%lld)", (long long)a->S,
                       (long long)a->T, (long long)a->E, (long long)a->K);
    if (a->ldx < a->E) return mr_fail(err, MR_ERR_VALUE, "conv: row stride %lld below width %lld", (long long)a->ldx, (long long)a->E);
    return MR_OK;
}

mr_status mr_cuda_train_conv_silu(int device, const mr_cuda_conv_train_args *a, mr_error *err) {
    mr_status st = check_conv(a, err);
    if (st || a->T == 0) return st;
    MrDeviceGuard guard(device);
    if ((st = mr_cuda_check(guard.status(), err, "cudaSetDevice"))) return st;
    return mr_cuda_conv_silu(MR_DTYPE_F32, a->T, a->E, a->K, a->x, a->ldx, a->w, a->bias, a->pos, NULL, a->out,
                             a->E, (cudaStream_t)a->stream, err);
}

mr_status mr_cuda_train_conv_silu_backward(int device, const mr_cuda_conv_train_args *a, mr_error *err) {
    mr_status st = check_conv(a, err);
    if (!st && a->ldgo < a->E) st = mr_fail(err, MR_ERR_VALUE, "conv backward: gradient row stride below the width");
    if (st) return st;
    MrDeviceGuard guard(device);
    if ((st = mr_cuda_check(guard.status(), err, "cudaSetDevice"))) return st;
    return mr_cuda_conv_silu_backward(a, (cudaStream_t)a->stream, err);
}

static mr_status check_scan(const mr_cuda_scan_train_args *a, mr_error *err) {
    if (a->S < 1 || a->T < 0 || a->E < 0 || a->N < 1 || a->N > 256 || a->T > INT32_MAX)
        return mr_fail(err, MR_ERR_VALUE, "selective scan: bad shape (S=%lld, T=%lld, E=%lld, N=%lld)", (long long)a->S,
                       (long long)a->T, (long long)a->E, (long long)a->N);
    if (a->offsets[0] != 0 || a->offsets[a->S] != a->T)
        return mr_fail(err, MR_ERR_VALUE, "selective scan: offsets must run from 0 to %lld", (long long)a->T);
    for (int64_t s = 0; s < a->S; s++)
        if (a->offsets[s + 1] < a->offsets[s]) return mr_fail(err, MR_ERR_VALUE, "selective scan: offsets decrease");
    return MR_OK;
}

/* first[s] = the index of sequence s's first kept state (states are kept after every chunk of a
 * sequence but its last), the layout both the forward and the backward use */
static void first_kept_states(const int64_t *offsets, int64_t S, int64_t *first) {
    int64_t kept = 0;
    for (int64_t s = 0; s < S; s++) {
        first[s] = kept;
        const int64_t chunks = (offsets[s + 1] - offsets[s] + MR_CUDA_TRAIN_SCAN_CHUNK - 1) / MR_CUDA_TRAIN_SCAN_CHUNK;
        kept += chunks > 0 ? chunks - 1 : 0;
    }
}

__global__ void scale_kernel(const float *in, int64_t n, float factor, float *out) {
    const int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (i < n) out[i] = in[i] * factor;
}

mr_status mr_cuda_train_selective_scan(int device, const mr_cuda_scan_train_args *a, mr_error *err) {
    mr_status st = check_scan(a, err);
    if (st || a->T == 0 || a->E == 0) return st;
    MrDeviceGuard guard(device);
    if ((st = mr_cuda_check(guard.status(), err, "cudaSetDevice"))) return st;
    cudaStream_t stream = (cudaStream_t)a->stream;
    /* one piece a non-empty sequence: the kernel keeps its chunk-entry states */
    int64_t *first = (int64_t *)malloc((size_t)a->S * sizeof(int64_t));
    mr_scan_piece *pieces = (mr_scan_piece *)malloc((size_t)a->S * sizeof(mr_scan_piece));
    if (!first || !pieces) {
        free(first);
        free(pieces);
        return mr_fail(err, MR_ERR_MEMORY, "selective scan: out of host memory");
    }
    first_kept_states(a->offsets, a->S, first);
    int64_t n_pieces = 0;
    for (int64_t s = 0; s < a->S; s++)
        if (a->offsets[s + 1] > a->offsets[s])
            pieces[n_pieces++] = {(int32_t)a->offsets[s], (int32_t)(a->offsets[s + 1] - a->offsets[s]), 0, 0,
                                  (int32_t)first[s]};
    free(first);
    float *A2 = NULL; /* the forward kernel's decay is exp2(delta * A * log2(e)) */
    st = mr_cuda_check(cudaMallocAsync((void **)&A2, (size_t)(a->E * a->N) * sizeof(float), stream), err,
                       "cudaMallocAsync(A * log2 e)");
    if (!st) {
        scale_kernel<<<mr_blocks(a->E * a->N, 256), 256, 0, stream>>>(a->A, a->E * a->N, 1.4426950408889634f, A2);
        st = mr_cuda_launched(err, "scale");
    }
    if (!st)
        st = mr_cuda_selective_scan(MR_DTYPE_F32, a->E, a->N, a->u, a->ldu, a->dt, a->lddt, a->dt_bias, A2, a->B, a->C,
                                    a->ldbc, a->D, a->z, a->ldz, a->pos, pieces, n_pieces, NULL, NULL, a->boundaries,
                                    a->y, a->E, stream, err);
    if (A2) cudaFreeAsync(A2, stream);
    free(pieces);
    return st;
}

mr_status mr_cuda_train_selective_scan_backward(int device, const mr_cuda_scan_train_args *a, mr_error *err) {
    mr_status st = check_scan(a, err);
    if (st || a->E == 0) return st;
    MrDeviceGuard guard(device);
    if ((st = mr_cuda_check(guard.status(), err, "cudaSetDevice"))) return st;
    cudaStream_t stream = (cudaStream_t)a->stream;
    /* offsets and each sequence's first kept state, side by side, for the kernel */
    const size_t count = (size_t)(2 * a->S + 1);
    int64_t *table = (int64_t *)malloc(count * sizeof(int64_t));
    if (!table) return mr_fail(err, MR_ERR_MEMORY, "selective scan backward: out of host memory");
    memcpy(table, a->offsets, (size_t)(a->S + 1) * sizeof(int64_t));
    first_kept_states(a->offsets, a->S, table + a->S + 1);
    int64_t *device_table = NULL;
    st = mr_cuda_check(cudaMallocAsync((void **)&device_table, count * sizeof(int64_t), stream), err,
                       "cudaMallocAsync(scan offsets)");
    /* from pageable memory the copy returns once the table is staged, so it may be freed at once */
    if (!st)
        st = mr_cuda_check(cudaMemcpyAsync(device_table, table, count * sizeof(int64_t), cudaMemcpyHostToDevice, stream),
                           err, "cudaMemcpyAsync(scan offsets)");
    if (!st) st = mr_cuda_selective_scan_backward(a, device_table, device_table + a->S + 1, stream, err);
    if (device_table) cudaFreeAsync(device_table, stream);
    free(table);
    return st;
}

static mr_status check_ssd(const mr_cuda_ssd_train_args *a, mr_error *err) {
    if (a->S < 1 || a->T < 0 || a->H < 1 || a->P < 1 || a->G < 1 || a->H % a->G || a->N < 1 || a->N > 256)
        return mr_fail(err, MR_ERR_VALUE, "ssd scan: bad shape (S=%lld, T=%lld, H=%lld, P=%lld, G=%lld, N=%lld)",
                       (long long)a->S, (long long)a->T, (long long)a->H, (long long)a->P, (long long)a->G,
                       (long long)a->N);
    if (a->ldx < a->H * a->P || a->lddt < a->H || a->ldbc < a->G * a->N)
        return mr_fail(err, MR_ERR_VALUE, "ssd scan: a row stride is below its width");
    if (a->offsets[0] != 0 || a->offsets[a->S] != a->T)
        return mr_fail(err, MR_ERR_VALUE, "ssd scan: offsets must run from 0 to %lld", (long long)a->T);
    for (int64_t s = 0; s < a->S; s++)
        if (a->offsets[s + 1] < a->offsets[s]) return mr_fail(err, MR_ERR_VALUE, "ssd scan: offsets decrease");
    return MR_OK;
}

/* offsets and each sequence's first kept state side by side on the device ([2 S + 1]), freed by
 * the caller with cudaFreeAsync on `stream` */
static mr_status upload_sequence_table(const int64_t *offsets, int64_t S, cudaStream_t stream, int64_t **out,
                                       mr_error *err) {
    *out = NULL;
    const size_t count = (size_t)(2 * S + 1);
    int64_t *table = (int64_t *)malloc(count * sizeof(int64_t));
    if (!table) return mr_fail(err, MR_ERR_MEMORY, "ssd scan: out of host memory");
    memcpy(table, offsets, (size_t)(S + 1) * sizeof(int64_t));
    first_kept_states(offsets, S, table + S + 1);
    mr_status st = mr_cuda_check(cudaMallocAsync((void **)out, count * sizeof(int64_t), stream), err,
                                 "cudaMallocAsync(ssd scan offsets)");
    if (st) *out = NULL;
    /* from pageable memory the copy returns once the table is staged, so it may be freed at once */
    if (!st)
        st = mr_cuda_check(cudaMemcpyAsync(*out, table, count * sizeof(int64_t), cudaMemcpyHostToDevice, stream), err,
                           "cudaMemcpyAsync(ssd scan offsets)");
    free(table);
    return st;
}

mr_status mr_cuda_train_ssd_scan(int device, const mr_cuda_ssd_train_args *a, mr_error *err) {
    mr_status st = check_ssd(a, err);
    if (st || a->T == 0) return st;
    MrDeviceGuard guard(device);
    if ((st = mr_cuda_check(guard.status(), err, "cudaSetDevice"))) return st;
    cudaStream_t stream = (cudaStream_t)a->stream;
    int64_t *table = NULL;
    st = upload_sequence_table(a->offsets, a->S, stream, &table, err);
    if (!st) st = mr_cuda_ssd_scan_train(a, table, table + a->S + 1, stream, err);
    if (table) cudaFreeAsync(table, stream);
    return st;
}

mr_status mr_cuda_train_ssd_scan_backward(int device, const mr_cuda_ssd_train_args *a, mr_error *err) {
    mr_status st = check_ssd(a, err);
    if (!st && a->ldgy < a->H * a->P) st = mr_fail(err, MR_ERR_VALUE, "ssd scan backward: gradient row stride below the width");
    if (!st && ((a->D == NULL) != (a->gD == NULL) || (a->dt_bias == NULL) != (a->gdt_bias == NULL)))
        st = mr_fail(err, MR_ERR_VALUE, "ssd scan backward: D and gD, dt_bias and gdt_bias must be given together");
    if (st) return st;
    MrDeviceGuard guard(device);
    if ((st = mr_cuda_check(guard.status(), err, "cudaSetDevice"))) return st;
    cudaStream_t stream = (cudaStream_t)a->stream;
    int64_t *table = NULL;
    st = upload_sequence_table(a->offsets, a->S, stream, &table, err);
    if (!st) st = mr_cuda_ssd_scan_backward(a, table, table + a->S + 1, stream, err);
    if (table) cudaFreeAsync(table, stream);
    return st;
}
