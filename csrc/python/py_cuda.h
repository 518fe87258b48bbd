/* What cuda.c shares with cuda_model.c: the ABI table, stream arguments and the CudaTensor. */
#ifndef MR_PY_CUDA_H
#define MR_PY_CUDA_H

#include "mr_cuda.h"
#include "py_common.h"

/* The table of mambaret._cuda, imported on first use; NULL with RuntimeError where it cannot be. */
const mr_cuda_api *mr_py_cuda_api(void);
/* None -> NULL (the default stream); ints are DLPack's numbering (1 legacy default, 2 per-thread
 * default, else a cudaStream_t value). */
int mr_py_parse_stream(PyObject *obj, void **stream);

/* A float32 result in device memory; `ready` is recorded on the producing stream after the
 * result was written. */
typedef struct {
    mr_py_tensor base;
    void *ready;
    PyObject *keepalive; /* list of objects the queued work may still read (DLPack inputs) */
    PyObject *view_of;   /* a row view: the tensor owning data and ready, else NULL */
} mr_py_cuda_tensor;

/* A new [rows, cols] CudaTensor (uninitialised) on `device`. */
PyObject *mr_py_cuda_tensor_new(mr_py_state *st, const mr_cuda_api *api, int device, int64_t rows, int64_t cols);

int mr_py_add_cuda_model(PyObject *module);

#endif
