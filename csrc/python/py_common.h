/* What the binding files of mambaret._C share: the module state, the status-to-exception map,
 * argument helpers, the result tensor layout and the forward-argument parser. Only the files in
 * csrc/python/ include this header (and with it Python.h and the NumPy C API). */
#ifndef MR_PY_COMMON_H
#define MR_PY_COMMON_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#define PY_ARRAY_UNIQUE_SYMBOL mambaret_ARRAY_API
#ifndef MR_PY_IMPORTS_NUMPY /* defined by module.c alone, which calls import_array() */
#define NO_IMPORT_ARRAY
#endif
#include <numpy/arrayobject.h>

#include <stdint.h>

#include "gemm/mr_blas.h"
#include "mr_dlpack.h"
#include "base/mr_error.h"
#include "models/mr_model.h"

/* ---- module state -------------------------------------------------------------------------- */

typedef struct {
    mr_blas blas;                  /* the BLAS new models use */
    PyTypeObject *tensor_type;     /* mambaret._C.Tensor */
    PyTypeObject *model_type;      /* mambaret._C.Model */
    PyTypeObject *cuda_tensor_type; /* mambaret._C.CudaTensor */
} mr_py_state;

mr_py_state *mr_py_state_of(PyObject *module);
/* Creates a type from `spec` for `module`, adds it as `name`; *out (when non-NULL) gets a new
 * reference kept in the module state. 0, or -1 with an exception set. */
int mr_py_add_type(PyObject *module, PyType_Spec *spec, const char *name, PyTypeObject **out);

/* Each concern adds its functions and types to the module: 0, or -1 with an exception set. */
int mr_py_add_tensor(PyObject *module);
int mr_py_add_model(PyObject *module);
int mr_py_add_cuda(PyObject *module);
int mr_py_add_ops(PyObject *module);
int mr_py_add_search(PyObject *module);
int mr_py_add_train(PyObject *module);
int mr_py_add_train_cuda(PyObject *module);
int mr_py_add_search_codes(PyObject *module);
int mr_py_add_int8(PyObject *module);

/* ---- errors and arguments ------------------------------------------------------------------ */

/* Sets the Python exception matching a failed status; always returns NULL. */
PyObject *mr_py_raise(const mr_error *err);
/* A C-contiguous, aligned, native-order array of exactly `type` with `ndim` dims (-1: any);
 * no silent conversion: the Python layer converts, this layer checks. New reference or NULL. */
PyArrayObject *mr_py_require_array(PyObject *obj, int type, int ndim, const char *what);
/* None -> 1; else an int in [1, 4096]. */
int mr_py_parse_threads(PyObject *obj, int *threads);
/* A thread count already parsed as an integer: in [1, 4096], else a ValueError. */
int mr_py_check_threads(long threads);
/* A non-negative int (rows, tokens); `what` names it in the ValueError. */
int mr_py_parse_count(PyObject *obj, const char *what, long long *out);
/* One of `count` names (several may share a value): *out = values[i] for names[i] == s; else a
 * ValueError "<what> must be 'a', 'b' or 'c', got 's'". */
int mr_py_parse_choice(const char *s, const char *what, const char *const *names, const int *values, int count,
                       int *out);
/* A DLPack (device_type, device_id) tuple. */
int mr_py_parse_device_pair(PyObject *obj, long *type, long *id);

/* ---- result tensors ------------------------------------------------------------------------ */

/* The layout both result types start with: Tensor (host memory, freed with free()) and
 * CudaTensor (device memory). Shape, dtype, device, repr and DLPack export are written once
 * over it (tensor.c). */
typedef struct {
    PyObject_HEAD
    float *data;
    DLDevice device;    /* {kDLCPU, 0} or {kDLCUDA, n} */
    int ndim;           /* 1 or 2 */
    int64_t shape[2];
    int64_t strides[2]; /* in elements, for DLPack */
} mr_py_tensor;

/* Fills shape and C-contiguous strides. */
void mr_py_tensor_set_shape(mr_py_tensor *t, int ndim, const int64_t *shape);
int64_t mr_py_tensor_numel(const mr_py_tensor *t);
/* A host Tensor owning `data` (malloc'ed; freed here on failure). */
PyObject *mr_py_tensor_new_owned(mr_py_state *st, float *data, int ndim, const int64_t *shape);

/* What every result type shares: __dlpack__, __dlpack_device__, shape, dtype, device, repr. */
PyObject *mr_py_tensor_dlpack(mr_py_tensor *t, PyObject *args, PyObject *kwargs);
PyObject *mr_py_tensor_dlpack_device(mr_py_tensor *t, PyObject *unused);
PyObject *mr_py_tensor_repr(mr_py_tensor *t);
extern PyGetSetDef mr_py_tensor_getset[];
#define MR_PY_TENSOR_DLPACK_METHODS                                                                          \
    {"__dlpack__", (PyCFunction)(void (*)(void))mr_py_tensor_dlpack, METH_VARARGS | METH_KEYWORDS,              \
     "__dlpack__(*, stream=None, max_version=None, dl_device=None, copy=None)\n"                              \
     "Exports the tensor as a DLPack capsule (versioned when max_version >= (1, 0)); for a CUDA tensor the "    \
     "consumer's stream is made to wait for the result."},                                                     \
    {"__dlpack_device__", (PyCFunction)mr_py_tensor_dlpack_device, METH_NOARGS,                                \
     "Returns (device_type, device_id) as DLPack numbers: (1, 0) for the CPU, (2, n) for CUDA device n."}
/* The device-side half of __dlpack__ for a CUDA tensor: makes the consumer's stream wait for the
 * result (cuda.c). 0, or -1 with an exception set. */
int mr_py_cuda_tensor_handshake(mr_py_tensor *t, PyObject *stream);

/* The core model inside a finished mambaret._C.Model; NULL with TypeError / ValueError otherwise. */
const mr_model *mr_py_model_core(PyObject *obj, mr_py_state *st);

/* ---- forward arguments, one parser for Model and CudaModel --------------------------------- */

typedef enum { MR_PY_ON_CPU = 1, MR_PY_ON_CUDA = 2 } mr_py_device_kind;

typedef struct {
    PyObject *tokens;        /* borrowed: each model checks its own token types */
    PyArrayObject *offsets;  /* new reference: int64 [B+1], B >= 0 */
    mr_pooling pooling;
    long long max_tokens;
    int as_tensor;           /* convert_to 'tensor' / 'dlpack' (else 'numpy') */
    int threads;             /* CPU */
    int normalize;           /* L2-normalise pooled rows */
    PyObject *stream;        /* CUDA, borrowed; Py_None when not given */
    PyObject *out;           /* CUDA, borrowed; Py_None when not given */
    long long out_row;       /* CUDA */
    long long exit_layer;    /* 1..n_layer, or 0 for every layer */
} mr_py_forward_request;

/* Parses forward(tokens, offsets, *, ...) for a model on `where`: a keyword the model does not
 * take is a TypeError. 0, or -1 with an exception set (nothing to release then). */
int mr_py_parse_forward(PyObject *args, PyObject *kwargs, mr_py_device_kind where, long long default_max_tokens,
                        mr_py_forward_request *req);
void mr_py_forward_request_release(mr_py_forward_request *req);

#endif
