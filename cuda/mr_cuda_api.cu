/* The table of C entry points that mambaret._cuda exports: the model plus the few runtime
 * services the binding needs for DLPack (device memory, copies, events, pointer queries). */
#include <stdio.h>

#include "common.cuh"
#include "gemm.cuh"
#include "mr_cuda.h"
#include "mr_cuda_model.cuh"
#include "mr_cuda_train.cuh"

static mr_status api_device_count(int *count, mr_error *err) {
    *count = 0;
    cudaError_t e = cudaGetDeviceCount(count);
    if (e == cudaErrorNoDevice) { /* a driver without a device: not an error, just none */
        cudaGetLastError();
        *count = 0;
        return MR_OK;
    }
    return mr_cuda_check(e, err, "cudaGetDeviceCount");
}

static mr_status api_device_description(int device, char *buf, int size, mr_error *err) {
    cudaDeviceProp prop;
    mr_status st = mr_cuda_check(cudaGetDeviceProperties(&prop, device), err, "cudaGetDeviceProperties");
    if (st) return st;
    int runtime = 0;
    cudaRuntimeGetVersion(&runtime);
    snprintf(buf, (size_t)size, "%s, sm_%d%d, %d SMs, %.1f GiB, CUDA runtime %d.%d, cuBLAS %d", prop.name, prop.major,
             prop.minor, prop.multiProcessorCount, (double)prop.totalGlobalMem / (1 << 30), runtime / 1000,
             (runtime % 1000) / 10, (int)CUBLAS_VERSION);
    return MR_OK;
}

static mr_status api_malloc_device(int device, size_t bytes, void **out, mr_error *err) {
    MrDeviceGuard guard(device);
    mr_status st = mr_cuda_check(guard.status(), err, "cudaSetDevice");
    if (st) return st;
    *out = NULL;
    cudaError_t e = cudaMalloc(out, bytes ? bytes : 1);
    if (e != cudaSuccess) {
        *out = NULL;
        cudaGetLastError(); /* clear it: an allocation failure is not sticky */
        return mr_fail(err, e == cudaErrorMemoryAllocation ? MR_ERR_MEMORY : MR_ERR_RUNTIME,
                       "cannot allocate %.1f MB on CUDA device %d: %s", (double)bytes / 1e6, device, cudaGetErrorString(e));
    }
    return MR_OK;
}

static void api_free_device(int device, void *ptr) {
    if (!ptr) return;
    MrDeviceGuard guard(device);
    cudaFree(ptr); /* waits for the device: a consumer's queued work may still read the memory */
}

static mr_status api_copy_to_host(int device, void *dst, const void *src, size_t bytes, void *ready, mr_error *err) {
    MrDeviceGuard guard(device);
    mr_status st = mr_cuda_check(guard.status(), err, "cudaSetDevice");
    if (!st && ready) st = mr_cuda_check(cudaEventSynchronize((cudaEvent_t)ready), err, "cudaEventSynchronize");
    if (!st && bytes) st = mr_cuda_check(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost), err, "cudaMemcpy");
    return st;
}

static mr_status api_event_create(int device, void **event, mr_error *err) {
    MrDeviceGuard guard(device);
    mr_status st = mr_cuda_check(guard.status(), err, "cudaSetDevice");
    if (st) return st;
    cudaEvent_t e = NULL;
    st = mr_cuda_check(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), err, "cudaEventCreate");
    *event = st ? NULL : (void *)e;
    return st;
}

static void api_event_destroy(void *event) {
    if (event) cudaEventDestroy((cudaEvent_t)event);
}

/* The default streams (0, 1, 2) are the current device's: the event's device must be current. */
static mr_status api_event_record(int device, void *event, void *stream, mr_error *err) {
    MrDeviceGuard guard(device);
    mr_status st = mr_cuda_check(guard.status(), err, "cudaSetDevice");
    if (st) return st;
    return mr_cuda_check(cudaEventRecord((cudaEvent_t)event, (cudaStream_t)stream), err, "cudaEventRecord");
}

static mr_status api_stream_wait_event(int device, void *stream, void *event, mr_error *err) {
    MrDeviceGuard guard(device);
    mr_status st = mr_cuda_check(guard.status(), err, "cudaSetDevice");
    if (st) return st;
    return mr_cuda_check(cudaStreamWaitEvent((cudaStream_t)stream, (cudaEvent_t)event, 0), err, "cudaStreamWaitEvent");
}

static mr_status api_pointer_device(const void *ptr, int *on_device, int *device, mr_error *err) {
    cudaPointerAttributes attr;
    *on_device = 0;
    *device = -1;
    cudaError_t e = cudaPointerGetAttributes(&attr, ptr);
    if (e != cudaSuccess) return mr_cuda_check(e, err, "cudaPointerGetAttributes");
    if (attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged) {
        *on_device = 1;
        *device = attr.device;
    }
    return MR_OK;
}

static const mr_cuda_api api_table = {
    MR_CUDA_ABI_VERSION,
    (uint32_t)sizeof(mr_cuda_api),
    api_device_count,
    api_device_description,
    mr_cuda_model_create,
    mr_cuda_model_free,
    mr_cuda_model_set_tensor,
    mr_cuda_model_finish,
    mr_cuda_model_weight_bytes,
    mr_cuda_model_workspace_bytes,
    mr_cuda_model_forward,
    api_malloc_device,
    api_free_device,
    api_copy_to_host,
    api_event_create,
    api_event_destroy,
    api_event_record,
    api_stream_wait_event,
    api_pointer_device,
    mr_cuda_train_conv_silu,
    mr_cuda_train_conv_silu_backward,
    mr_cuda_train_selective_scan,
    mr_cuda_train_selective_scan_backward,
    mr_cuda_model_set_exit_gain,
    mr_cuda_train_ssd_scan,
    mr_cuda_train_ssd_scan_backward,
};

extern "C" const mr_cuda_api *mr_cuda_get_api(void) { return &api_table; }
