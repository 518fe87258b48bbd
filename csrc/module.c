/* mambaret._C: the one file that speaks Python. It parses and validates arguments, releases the
 * GIL around the C core, turns mr_status codes into Python exceptions and wraps results as
 * NumPy arrays or as a Tensor that leaves through DLPack. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#include <numpy/arrayobject.h>

#include <stdlib.h>
#include <string.h>

#include "mr_blas.h"
#include "mr_cuda.h"
#include "mr_dlpack.h"
#include "mr_error.h"
#include "mr_index.h"
#include "mr_model.h"
#include "mr_ops.h"
#include "mr_ops_simd.h"
#include "mr_parallel.h"
#include "mr_simd.h"

/* ------------------------------------------------------------------------------------------ */
/* module state and errors                                                                     */

typedef struct {
    mr_blas blas;          /* the BLAS new models use */
    PyTypeObject *tensor_type;
    PyTypeObject *model_type;
    PyTypeObject *cuda_tensor_type;
} module_state;

static module_state *get_state(PyObject *module) { return (module_state *)PyModule_GetState(module); }

/* Sets the Python exception matching a failed status; always returns NULL. */
static PyObject *raise_error(const mr_error *err) {
    PyObject *type;
    switch (err->status) {
    case MR_ERR_VALUE: type = PyExc_ValueError; break;
    case MR_ERR_MEMORY: type = PyExc_MemoryError; break;
    case MR_ERR_INDEX: type = PyExc_IndexError; break;
    case MR_ERR_IO: type = PyExc_OSError; break;
    default: type = PyExc_RuntimeError; break;
    }
    PyErr_SetString(type, err->message[0] ? err->message : "unknown error in the mambaret core");
    return NULL;
}

/* A C-contiguous, aligned, native-order array of exactly `type` with `ndim` dims (-1: any);
 * no silent conversion: the Python layer converts, this layer checks. New reference or NULL. */
static PyArrayObject *require_array(PyObject *obj, int type, int ndim, const char *what) {
    if (!PyArray_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be a numpy.ndarray, got %s", what, Py_TYPE(obj)->tp_name);
        return NULL;
    }
    PyArrayObject *arr = (PyArrayObject *)obj;
    if (PyArray_TYPE(arr) != type) {
        PyArray_Descr *want = PyArray_DescrFromType(type);
        PyErr_Format(PyExc_TypeError, "%s must have dtype %S, got %S", what, (PyObject *)want,
                     (PyObject *)PyArray_DESCR(arr));
        Py_XDECREF(want);
        return NULL;
    }
    if (ndim >= 0 && PyArray_NDIM(arr) != ndim) {
        PyErr_Format(PyExc_ValueError, "%s must have %d dimension(s), got %d", what, ndim, PyArray_NDIM(arr));
        return NULL;
    }
    if (!PyArray_IS_C_CONTIGUOUS(arr) || !PyArray_ISALIGNED(arr) || !PyArray_ISNOTSWAPPED(arr)) {
        PyErr_Format(PyExc_ValueError, "%s must be C-contiguous, aligned and in native byte order", what);
        return NULL;
    }
    Py_INCREF(arr);
    return arr;
}

static int parse_threads(PyObject *obj, int *threads) {
    if (obj == NULL || obj == Py_None) {
        *threads = 1;
        return 0;
    }
    long v = PyLong_AsLong(obj);
    if (v == -1 && PyErr_Occurred()) return -1;
    if (v <= 0 || v > 4096) {
        PyErr_Format(PyExc_ValueError, "threads must be between 1 and 4096, got %ld", v);
        return -1;
    }
    *threads = (int)v;
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Tensor: a float32 result owned by C, readable through the buffer protocol and DLPack        */

typedef struct {
    PyObject_HEAD
    float *data;
    int ndim;
    int64_t shape[2];
    int64_t strides[2]; /* in elements, for DLPack */
    Py_ssize_t buf_shape[2], buf_strides[2];
    Py_ssize_t exports;
} TensorObject;

static PyObject *tensor_new_owned(module_state *st, float *data, int ndim, const int64_t *shape) {
    TensorObject *t = PyObject_New(TensorObject, st->tensor_type);
    if (!t) {
        free(data);
        return NULL;
    }
    t->data = data;
    t->ndim = ndim;
    t->exports = 0;
    int64_t stride = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        t->shape[i] = shape[i];
        t->strides[i] = stride;
        t->buf_shape[i] = (Py_ssize_t)shape[i];
        t->buf_strides[i] = (Py_ssize_t)(stride * (int64_t)sizeof(float));
        stride *= shape[i];
    }
    return (PyObject *)t;
}

static void tensor_dealloc(TensorObject *t) {
    free(t->data);
    PyTypeObject *tp = Py_TYPE(t);
    PyObject_Free(t);
    Py_DECREF(tp);
}

static int64_t tensor_numel(const TensorObject *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

static int tensor_getbuffer(TensorObject *t, Py_buffer *view, int flags) {
    (void)flags;
    view->buf = t->data;
    view->obj = (PyObject *)t;
    Py_INCREF(t);
    view->len = (Py_ssize_t)(tensor_numel(t) * (int64_t)sizeof(float));
    view->readonly = 0;
    view->itemsize = sizeof(float);
    view->format = "f";
    view->ndim = t->ndim;
    view->shape = t->buf_shape;
    view->strides = t->buf_strides;
    view->suboffsets = NULL;
    view->internal = NULL;
    t->exports++;
    return 0;
}

static void tensor_releasebuffer(TensorObject *t, Py_buffer *view) {
    (void)view;
    t->exports--;
}

/* The producer side of DLPack. The managed tensor keeps the Tensor alive; its deleter runs
 * exactly once: by the consumer after it renamed the capsule, or by the capsule's destructor
 * when nobody consumed it. */
typedef struct {
    DLManagedTensor legacy;
    DLManagedTensorVersioned versioned;
    int is_versioned;
    PyObject *owner;
    float *copy; /* non-NULL when copy=True asked for a buffer of the consumer's own */
} dlpack_export;

static void dlpack_export_free(dlpack_export *ex) {
    PyGILState_STATE g = PyGILState_Ensure();
    Py_XDECREF(ex->owner);
    PyGILState_Release(g);
    free(ex->copy);
    free(ex);
}

static void dlpack_legacy_deleter(DLManagedTensor *self) { dlpack_export_free((dlpack_export *)self->manager_ctx); }
static void dlpack_versioned_deleter(DLManagedTensorVersioned *self) {
    dlpack_export_free((dlpack_export *)self->manager_ctx);
}

static void dlpack_capsule_destructor(PyObject *capsule) {
    /* a consumed capsule was renamed "used_dltensor[_versioned]": its consumer owns it now */
    if (PyCapsule_IsValid(capsule, "dltensor")) {
        DLManagedTensor *m = PyCapsule_GetPointer(capsule, "dltensor");
        if (m && m->deleter) m->deleter(m);
    } else if (PyCapsule_IsValid(capsule, "dltensor_versioned")) {
        DLManagedTensorVersioned *m = PyCapsule_GetPointer(capsule, "dltensor_versioned");
        if (m && m->deleter) m->deleter(m);
    }
    PyErr_Clear();
}

static int parse_device_pair(PyObject *obj, long *type, long *id) {
    if (!PyTuple_Check(obj) || PyTuple_GET_SIZE(obj) != 2) {
        PyErr_SetString(PyExc_TypeError, "dl_device must be a (device_type, device_id) tuple");
        return -1;
    }
    *type = PyLong_AsLong(PyTuple_GET_ITEM(obj, 0));
    *id = PyLong_AsLong(PyTuple_GET_ITEM(obj, 1));
    return PyErr_Occurred() ? -1 : 0;
}

static PyObject *tensor_dlpack(TensorObject *t, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"stream", "max_version", "dl_device", "copy", NULL};
    PyObject *stream = Py_None, *max_version = Py_None, *dl_device = Py_None, *copy = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|$OOOO:__dlpack__", kwlist, &stream,
                                     &max_version, &dl_device, &copy))
        return NULL;
    if (stream != Py_None) {
        PyErr_SetString(PyExc_BufferError, "stream must be None for a CPU tensor");
        return NULL;
    }
    if (dl_device != Py_None) {
        long type, id;
        if (parse_device_pair(dl_device, &type, &id) < 0) return NULL;
        if (type != kDLCPU || id != 0) {
            PyErr_Format(PyExc_BufferError, "cannot export a CPU tensor to device (%ld, %ld)", type, id);
            return NULL;
        }
    }
    int want_copy = 0;
    if (copy != Py_None) {
        want_copy = PyObject_IsTrue(copy);
        if (want_copy < 0) return NULL;
    }
    int versioned = 0;
    if (max_version != Py_None) {
        if (!PyTuple_Check(max_version) || PyTuple_GET_SIZE(max_version) != 2) {
            PyErr_SetString(PyExc_TypeError, "max_version must be None or a (major, minor) tuple");
            return NULL;
        }
        long major = PyLong_AsLong(PyTuple_GET_ITEM(max_version, 0));
        if (major == -1 && PyErr_Occurred()) return NULL;
        versioned = major >= 1;
    }
    dlpack_export *ex = calloc(1, sizeof *ex);
    if (!ex) return PyErr_NoMemory();
    void *data = t->data;
    if (want_copy) {
        size_t bytes = (size_t)tensor_numel(t) * sizeof(float);
        ex->copy = malloc(bytes ? bytes : 1);
        if (!ex->copy) {
            free(ex);
            return PyErr_NoMemory();
        }
        memcpy(ex->copy, t->data, bytes);
        data = ex->copy;
    }
    ex->owner = (PyObject *)t;
    Py_INCREF(t);
    DLTensor dl = {
        .data = data,
        .device = {kDLCPU, 0},
        .ndim = t->ndim,
        .dtype = {kDLFloat, 32, 1},
        .shape = t->shape,
        .strides = t->strides,
        .byte_offset = 0,
    };
    PyObject *capsule;
    if (versioned) {
        ex->is_versioned = 1;
        ex->versioned.version.major = MR_DLPACK_MAJOR_VERSION;
        ex->versioned.version.minor = MR_DLPACK_MINOR_VERSION;
        ex->versioned.manager_ctx = ex;
        ex->versioned.deleter = dlpack_versioned_deleter;
        ex->versioned.flags = want_copy ? DLPACK_FLAG_BITMASK_IS_COPIED : 0;
        ex->versioned.dl_tensor = dl;
        capsule = PyCapsule_New(&ex->versioned, "dltensor_versioned", dlpack_capsule_destructor);
    } else {
        ex->legacy.dl_tensor = dl;
        ex->legacy.manager_ctx = ex;
        ex->legacy.deleter = dlpack_legacy_deleter;
        capsule = PyCapsule_New(&ex->legacy, "dltensor", dlpack_capsule_destructor);
    }
    if (!capsule) {
        Py_DECREF(t);
        free(ex->copy);
        free(ex);
        return NULL;
    }
    return capsule;
}

static PyObject *tensor_dlpack_device(TensorObject *t, PyObject *unused) {
    (void)t;
    (void)unused;
    return Py_BuildValue("(ii)", (int)kDLCPU, 0);
}

static PyObject *tensor_get_shape(TensorObject *t, void *closure) {
    (void)closure;
    PyObject *shape = PyTuple_New(t->ndim);
    if (!shape) return NULL;
    for (int i = 0; i < t->ndim; i++) {
        PyObject *v = PyLong_FromLongLong(t->shape[i]);
        if (!v) {
            Py_DECREF(shape);
            return NULL;
        }
        PyTuple_SET_ITEM(shape, i, v);
    }
    return shape;
}

static PyObject *tensor_get_dtype(TensorObject *t, void *closure) {
    (void)t;
    (void)closure;
    return PyUnicode_FromString("float32");
}

static PyObject *tensor_get_device(TensorObject *t, void *closure) {
    (void)t;
    (void)closure;
    return PyUnicode_FromString("cpu");
}

static PyObject *tensor_numpy(TensorObject *t, PyObject *unused) {
    (void)unused;
    return PyArray_FromAny((PyObject *)t, NULL, 0, 0, 0, NULL);
}

static PyObject *tensor_repr(TensorObject *t) {
    if (t->ndim == 1) return PyUnicode_FromFormat("Tensor(shape=(%lld,), dtype=float32, device=cpu)", (long long)t->shape[0]);
    return PyUnicode_FromFormat("Tensor(shape=(%lld, %lld), dtype=float32, device=cpu)", (long long)t->shape[0],
                                (long long)t->shape[1]);
}

static PyMethodDef tensor_methods[] = {
    {"__dlpack__", (PyCFunction)(void (*)(void))tensor_dlpack, METH_VARARGS | METH_KEYWORDS,
     "__dlpack__(*, stream=None, max_version=None, dl_device=None, copy=None)\n"
     "Exports the tensor as a DLPack capsule (versioned when max_version >= (1, 0))."},
    {"__dlpack_device__", (PyCFunction)tensor_dlpack_device, METH_NOARGS,
     "Returns (device_type, device_id) as DLPack numbers: (1, 0) for the CPU."},
    {"numpy", (PyCFunction)tensor_numpy, METH_NOARGS, "A NumPy array viewing the same memory."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef tensor_getset[] = {
    {"shape", (getter)tensor_get_shape, NULL, "shape as a tuple", NULL},
    {"dtype", (getter)tensor_get_dtype, NULL, "element type ('float32')", NULL},
    {"device", (getter)tensor_get_device, NULL, "where the data lives ('cpu')", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot tensor_slots[] = {
    {Py_tp_dealloc, tensor_dealloc},
    {Py_tp_methods, tensor_methods},
    {Py_tp_getset, tensor_getset},
    {Py_tp_repr, tensor_repr},
    {Py_bf_getbuffer, tensor_getbuffer},
    {Py_bf_releasebuffer, tensor_releasebuffer},
    {Py_tp_doc, "A float32 result held by the mambaret core; export it with DLPack or numpy.asarray."},
    {0, NULL},
};

static PyType_Spec tensor_spec = {
    .name = "mambaret._C.Tensor",
    .basicsize = sizeof(TensorObject),
    .flags = Py_TPFLAGS_DEFAULT,
    .slots = tensor_slots,
};

/* ------------------------------------------------------------------------------------------ */
/* Model                                                                                       */

typedef struct {
    PyObject_HEAD
    mr_model *model;
    module_state *state;
} ModelObject;

static int config_int(PyObject *cfg, const char *key, int64_t *out, int required, int64_t fallback) {
    PyObject *v = PyDict_GetItemString(cfg, key); /* borrowed */
    if (!v) {
        if (required) {
            PyErr_Format(PyExc_ValueError, "config is missing '%s'", key);
            return -1;
        }
        *out = fallback;
        return 0;
    }
    if (!PyLong_Check(v)) {
        PyErr_Format(PyExc_ValueError, "config '%s' must be an int, got %s", key, Py_TYPE(v)->tp_name);
        return -1;
    }
    long long x = PyLong_AsLongLong(v);
    if (x == -1 && PyErr_Occurred()) return -1;
    *out = x;
    return 0;
}

static int model_init(ModelObject *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"config", NULL};
    PyObject *cfg;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!:Model", kwlist, &PyDict_Type, &cfg)) return -1;
    mr_config c = {0};
    int64_t use_bias = 0, use_conv_bias = 1;
    if (config_int(cfg, "hidden_size", &c.d_model, 1, 0) || config_int(cfg, "num_hidden_layers", &c.n_layer, 1, 0) ||
        config_int(cfg, "vocab_size", &c.vocab_size, 1, 0) ||
        config_int(cfg, "intermediate_size", &c.d_inner, 1, 0) || config_int(cfg, "state_size", &c.d_state, 1, 0) ||
        config_int(cfg, "conv_kernel", &c.d_conv, 1, 0) || config_int(cfg, "time_step_rank", &c.dt_rank, 1, 0) ||
        config_int(cfg, "use_bias", &use_bias, 0, 0) || config_int(cfg, "use_conv_bias", &use_conv_bias, 0, 1))
        return -1;
    PyObject *eps = PyDict_GetItemString(cfg, "layer_norm_epsilon");
    if (!eps) {
        PyErr_SetString(PyExc_ValueError, "config is missing 'layer_norm_epsilon'");
        return -1;
    }
    double e = PyFloat_AsDouble(eps);
    if (e == -1.0 && PyErr_Occurred()) return -1;
    c.norm_eps = (float)e;
    c.use_bias = use_bias != 0;
    c.use_conv_bias = use_conv_bias != 0;
    module_state *st = PyType_GetModuleState(Py_TYPE(self));
    if (!st) return -1;
    mr_error err = {0};
    mr_model *m = NULL;
    if (mr_model_create(&c, &st->blas, &m, &err)) {
        raise_error(&err);
        return -1;
    }
    mr_model_free(self->model);
    self->model = m;
    self->state = st;
    return 0;
}

static void model_dealloc(ModelObject *self) {
    mr_model_free(self->model);
    PyTypeObject *tp = Py_TYPE(self);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static int model_ready(ModelObject *self) {
    if (!self->model) {
        PyErr_SetString(PyExc_RuntimeError, "Model was not initialised");
        return 0;
    }
    return 1;
}

static const char *const kind_names[MR_T_COUNT] = {
    "embedding", "norm_f", "norm", "in_proj.weight", "in_proj.bias", "conv1d.weight", "conv1d.bias",
    "x_proj.weight", "dt_proj.weight", "dt_proj.bias", "A_log", "D", "out_proj.weight", "out_proj.bias",
};

static int parse_kind(PyObject *obj, mr_tensor_kind *kind) {
    const char *s = PyUnicode_AsUTF8(obj);
    if (!s) return -1;
    for (int k = 0; k < MR_T_COUNT; k++)
        if (strcmp(s, kind_names[k]) == 0) {
            *kind = (mr_tensor_kind)k;
            return 0;
        }
    PyErr_Format(PyExc_ValueError, "unknown tensor kind '%s'", s);
    return -1;
}

static PyObject *model_set_tensor(ModelObject *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"kind", "layer", "array", "bfloat16", NULL};
    PyObject *kind_obj, *arr_obj;
    long long layer;
    int bf16 = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "ULO|p:set_tensor", kwlist, &kind_obj, &layer, &arr_obj, &bf16))
        return NULL;
    if (!model_ready(self)) return NULL;
    mr_tensor_kind kind;
    if (parse_kind(kind_obj, &kind) < 0) return NULL;
    if (!PyArray_Check(arr_obj)) {
        PyErr_SetString(PyExc_TypeError, "array must be a numpy.ndarray");
        return NULL;
    }
    int type = PyArray_TYPE((PyArrayObject *)arr_obj);
    mr_dtype dtype;
    if (bf16) {
        if (type != NPY_UINT16) {
            PyErr_SetString(PyExc_TypeError, "bfloat16 data must be passed as its uint16 bit patterns");
            return NULL;
        }
        dtype = MR_DTYPE_BF16;
    } else if (type == NPY_FLOAT32) {
        dtype = MR_DTYPE_F32;
    } else if (type == NPY_FLOAT16) {
        dtype = MR_DTYPE_F16;
    } else {
        PyErr_Format(PyExc_TypeError, "tensor data must be float32, float16 or bfloat16, got %S",
                     (PyObject *)PyArray_DESCR((PyArrayObject *)arr_obj));
        return NULL;
    }
    PyArrayObject *arr = (PyArrayObject *)PyArray_FROM_OF(arr_obj, NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED);
    if (!arr) return NULL;
    int ndim = PyArray_NDIM(arr);
    if (ndim > 8) {
        Py_DECREF(arr);
        PyErr_SetString(PyExc_ValueError, "tensor has too many dimensions");
        return NULL;
    }
    int64_t shape[8];
    for (int i = 0; i < ndim; i++) shape[i] = PyArray_DIM(arr, i);
    mr_error err = {0};
    mr_status s;
    Py_BEGIN_ALLOW_THREADS
    s = mr_model_set_tensor(self->model, kind, layer, dtype, PyArray_DATA(arr), ndim, shape, &err);
    Py_END_ALLOW_THREADS
    Py_DECREF(arr);
    if (s) return raise_error(&err);
    Py_RETURN_NONE;
}

static PyObject *model_finish(ModelObject *self, PyObject *unused) {
    (void)unused;
    if (!model_ready(self)) return NULL;
    mr_error err = {0};
    if (mr_model_finish(self->model, &err)) return raise_error(&err);
    Py_RETURN_NONE;
}

static int parse_pooling(const char *s, mr_pooling *p) {
    if (strcmp(s, "last") == 0) *p = MR_POOL_LAST;
    else if (strcmp(s, "mean") == 0) *p = MR_POOL_MEAN;
    else if (strcmp(s, "all") == 0) *p = MR_POOL_ALL;
    else {
        PyErr_Format(PyExc_ValueError, "pooling must be 'last', 'mean' or 'all', got '%s'", s);
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(model_forward_doc,
"forward(tokens, offsets, *, pooling='last', max_tokens=8192, threads=1, convert_to='numpy')\n"
"--\n\n"
"Runs the backbone over a packed batch: tokens int32[T] and offsets int64[B+1] (sequence i is\n"
"tokens[offsets[i]:offsets[i+1]]). Returns float32 [B, d] final-norm states at each sequence's\n"
"last token ('last') or their mean ('mean'), or [T, d] for every token ('all'), as a NumPy array\n"
"or, with convert_to='tensor', a Tensor that exports through DLPack without a copy.");

static PyObject *model_forward(ModelObject *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"tokens", "offsets", "pooling", "max_tokens", "threads", "convert_to", NULL};
    PyObject *tokens_obj, *offsets_obj, *threads_obj = Py_None;
    const char *pooling_s = "last", *convert_to = "numpy";
    long long max_tokens = 8192;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|$sLOs:forward", kwlist, &tokens_obj, &offsets_obj,
                                     &pooling_s, &max_tokens, &threads_obj, &convert_to))
        return NULL;
    if (!model_ready(self)) return NULL;
    mr_pooling pooling;
    int threads;
    if (parse_pooling(pooling_s, &pooling) < 0 || parse_threads(threads_obj, &threads) < 0) return NULL;
    int as_tensor;
    if (strcmp(convert_to, "numpy") == 0) as_tensor = 0;
    else if (strcmp(convert_to, "tensor") == 0 || strcmp(convert_to, "dlpack") == 0) as_tensor = 1;
    else {
        PyErr_Format(PyExc_ValueError, "convert_to must be 'numpy' or 'tensor', got '%s'", convert_to);
        return NULL;
    }
    if (max_tokens <= 0) {
        PyErr_Format(PyExc_ValueError, "max_tokens must be positive, got %lld", max_tokens);
        return NULL;
    }
    PyArrayObject *tokens = require_array(tokens_obj, NPY_INT32, 1, "tokens");
    if (!tokens) return NULL;
    PyArrayObject *offsets = require_array(offsets_obj, NPY_INT64, 1, "offsets");
    if (!offsets) {
        Py_DECREF(tokens);
        return NULL;
    }
    PyObject *result = NULL;
    if (PyArray_DIM(offsets, 0) < 1) {
        PyErr_SetString(PyExc_ValueError, "offsets must hold at least one entry (0 for an empty batch)");
        goto done;
    }
    const mr_config *c = mr_model_config(self->model);
    mr_forward_args a = {
        .tokens = PyArray_DATA(tokens),
        .n_tokens = PyArray_DIM(tokens, 0),
        .offsets = PyArray_DATA(offsets),
        .n_seqs = PyArray_DIM(offsets, 0) - 1,
        .pooling = pooling,
        .max_tokens = max_tokens,
        .threads = threads,
    };
    int64_t shape[2] = {pooling == MR_POOL_ALL ? a.n_tokens : a.n_seqs, c->d_model};
    size_t bytes = (size_t)(shape[0] * shape[1]) * sizeof(float);
    float *out = malloc(bytes ? bytes : 1);
    if (!out) {
        PyErr_NoMemory();
        goto done;
    }
    a.out = out;
    mr_error err = {0};
    mr_status s;
    Py_BEGIN_ALLOW_THREADS
    s = mr_model_forward(self->model, &a, &err);
    Py_END_ALLOW_THREADS
    if (s) {
        free(out);
        raise_error(&err);
        goto done;
    }
    PyObject *tensor = tensor_new_owned(self->state, out, 2, shape);
    if (!tensor) goto done;
    if (as_tensor) {
        result = tensor;
    } else {
        result = PyArray_FromAny(tensor, NULL, 0, 0, 0, NULL); /* a view that keeps the tensor alive */
        Py_DECREF(tensor);
    }
done:
    Py_DECREF(tokens);
    Py_DECREF(offsets);
    return result;
}

static PyObject *model_workspace_bytes(ModelObject *self, PyObject *arg) {
    if (!model_ready(self)) return NULL;
    long long tokens = PyLong_AsLongLong(arg);
    if (tokens == -1 && PyErr_Occurred()) return NULL;
    if (tokens < 0) {
        PyErr_SetString(PyExc_ValueError, "tokens must be >= 0");
        return NULL;
    }
    return PyLong_FromLongLong(mr_model_workspace_bytes(self->model, tokens));
}

static PyObject *model_release_workspace(ModelObject *self, PyObject *unused) {
    (void)unused;
    if (!model_ready(self)) return NULL;
    mr_model_release_workspace(self->model);
    Py_RETURN_NONE;
}

static PyObject *model_get_config(ModelObject *self, void *closure) {
    (void)closure;
    if (!model_ready(self)) return NULL;
    const mr_config *c = mr_model_config(self->model);
    return Py_BuildValue("{s:L,s:L,s:L,s:L,s:L,s:L,s:L,s:d,s:O,s:O}", "hidden_size", (long long)c->d_model,
                         "num_hidden_layers", (long long)c->n_layer, "vocab_size", (long long)c->vocab_size,
                         "intermediate_size", (long long)c->d_inner, "state_size", (long long)c->d_state,
                         "conv_kernel", (long long)c->d_conv, "time_step_rank", (long long)c->dt_rank,
                         "layer_norm_epsilon", (double)c->norm_eps, "use_bias", c->use_bias ? Py_True : Py_False,
                         "use_conv_bias", c->use_conv_bias ? Py_True : Py_False);
}

static PyObject *model_get_blas(ModelObject *self, void *closure) {
    (void)closure;
    if (!model_ready(self)) return NULL;
    return PyUnicode_FromString(self->state->blas.name);
}

static PyMethodDef model_methods[] = {
    {"set_tensor", (PyCFunction)(void (*)(void))model_set_tensor, METH_VARARGS | METH_KEYWORDS,
     "set_tensor(kind, layer, array, bfloat16=False)\nCopies one checkpoint tensor in (float32, float16, or "
     "bfloat16 bits as uint16)."},
    {"finish", (PyCFunction)model_finish, METH_NOARGS, "Checks every tensor was set and freezes the weights."},
    {"forward", (PyCFunction)(void (*)(void))model_forward, METH_VARARGS | METH_KEYWORDS, model_forward_doc},
    {"workspace_bytes", (PyCFunction)model_workspace_bytes, METH_O,
     "workspace_bytes(tokens)\nBytes of working memory one forward call uses per micro-batch of this many tokens."},
    {"release_workspace", (PyCFunction)model_release_workspace, METH_NOARGS,
     "release_workspace()\nFrees the working memory kept from the last forward call for the next one."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef model_getset[] = {
    {"config", (getter)model_get_config, NULL, "the model's dimensions", NULL},
    {"blas", (getter)model_get_blas, NULL, "the BLAS this model's matrix products use", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot model_slots[] = {
    {Py_tp_init, model_init},
    {Py_tp_dealloc, model_dealloc},
    {Py_tp_methods, model_methods},
    {Py_tp_getset, model_getset},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_doc, "Model(config)\nA Mamba-1 backbone held by the C core: set_tensor() every weight, finish(), "
                "then forward()."},
    {0, NULL},
};

static PyType_Spec model_spec = {
    .name = "mambaret._C.Model",
    .basicsize = sizeof(ModelObject),
    .flags = Py_TPFLAGS_DEFAULT,
    .slots = model_slots,
};

/* ------------------------------------------------------------------------------------------ */
/* CUDA: CudaModel and CudaTensor, driving the optional mambaret._cuda through its C ABI table  */
/* (cuda/mr_cuda.h). Nothing here links against CUDA: the table is imported on first use, so  */
/* this module loads where libcudart and libcublas are absent.                                */

static const mr_cuda_api *g_cuda_api; /* process-wide, like the capsule it comes from */

static const mr_cuda_api *cuda_api(void) {
    if (g_cuda_api) return g_cuda_api;
    PyObject *mod = PyImport_ImportModule("mambaret._cuda");
    if (!mod) {
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyErr_NormalizeException(&type, &value, &tb);
        PyErr_Format(PyExc_RuntimeError, "CUDA is not available: mambaret._cuda cannot be imported (%S); "
                     "mambaret was built without nvcc or the CUDA libraries are missing", value ? value : Py_None);
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(tb);
        return NULL;
    }
    Py_DECREF(mod);
    const mr_cuda_api *api = PyCapsule_Import(MR_CUDA_CAPSULE_NAME, 0);
    if (!api) return NULL;
    if (api->abi_version != MR_CUDA_ABI_VERSION || api->struct_size < sizeof(mr_cuda_api)) {
        PyErr_Format(PyExc_RuntimeError, "mambaret._cuda has C ABI version %u, mambaret._C expects %u: rebuild both",
                     api->abi_version, (unsigned)MR_CUDA_ABI_VERSION);
        return NULL;
    }
    g_cuda_api = api;
    return api;
}

/* A stream argument as a CUDA stream handle: None is the default stream, ints are DLPack's
 * numbering (1 legacy default, 2 per-thread default, else a cudaStream_t value). */
static int parse_stream(PyObject *obj, void **stream) {
    if (obj == NULL || obj == Py_None) {
        *stream = NULL;
        return 0;
    }
    unsigned long long v = PyLong_AsUnsignedLongLong(obj);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        PyErr_SetString(PyExc_TypeError, "stream must be None or a non-negative int (a cudaStream_t value)");
        return -1;
    }
    *stream = (void *)(uintptr_t)v;
    return 0;
}

/* CudaTensor: a float32 result in device memory, exported through DLPack with the stream
 * handshake; `ready` is recorded on the producing stream after the result was written. */
typedef struct {
    PyObject_HEAD
    float *data;
    int device;
    int ndim;
    int64_t shape[2];
    int64_t strides[2];
    void *ready;
    PyObject *keepalive; /* list of objects the queued work may still read (DLPack inputs) */
} CudaTensorObject;

static PyObject *cuda_tensor_new(module_state *st, const mr_cuda_api *api, int device, int64_t rows, int64_t cols) {
    mr_error err = {0};
    void *data = NULL, *ready = NULL;
    size_t bytes = (size_t)rows * (size_t)cols * sizeof(float);
    if (api->malloc_device(device, bytes, &data, &err)) return raise_error(&err);
    if (api->event_create(device, &ready, &err)) {
        api->free_device(device, data);
        return raise_error(&err);
    }
    CudaTensorObject *t = PyObject_New(CudaTensorObject, st->cuda_tensor_type);
    if (!t) {
        api->event_destroy(ready);
        api->free_device(device, data);
        return NULL;
    }
    t->data = data;
    t->device = device;
    t->ndim = 2;
    t->shape[0] = rows;
    t->shape[1] = cols;
    t->strides[0] = cols;
    t->strides[1] = 1;
    t->ready = ready;
    t->keepalive = NULL;
    return (PyObject *)t;
}

static void cuda_tensor_dealloc(CudaTensorObject *t) {
    const mr_cuda_api *api = g_cuda_api; /* set: a CudaTensor only exists once it was imported */
    if (api) {
        api->free_device(t->device, t->data); /* waits for the device, then inputs may go */
        api->event_destroy(t->ready);
    }
    Py_XDECREF(t->keepalive);
    PyTypeObject *tp = Py_TYPE(t);
    PyObject_Free(t);
    Py_DECREF(tp);
}

static PyObject *cuda_tensor_dlpack(CudaTensorObject *t, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"stream", "max_version", "dl_device", "copy", NULL};
    PyObject *stream = Py_None, *max_version = Py_None, *dl_device = Py_None, *copy = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|$OOOO:__dlpack__", kwlist, &stream, &max_version, &dl_device,
                                     &copy))
        return NULL;
    if (dl_device != Py_None) {
        long type, id;
        if (parse_device_pair(dl_device, &type, &id) < 0) return NULL;
        if (type != kDLCUDA || id != t->device) {
            PyErr_Format(PyExc_BufferError, "this tensor is on CUDA device %d; export to (%ld, %ld) is not supported "
                         "(use .numpy() for a host copy)", t->device, type, id);
            return NULL;
        }
    }
    if (copy != Py_None && PyObject_IsTrue(copy) == 1) {
        PyErr_SetString(PyExc_BufferError, "copy=True is not supported for CUDA tensors; use .numpy() for a host copy");
        return NULL;
    }
    /* The consumer's stream waits for ours. None means the legacy default stream; -1 asks for
     * no synchronisation; 0 is ambiguous and disallowed by the DLPack protocol. */
    void *consumer = (void *)(uintptr_t)1;
    int sync = 1;
    if (stream != Py_None) {
        long long v = PyLong_AsLongLong(stream);
        if (v == -1 && PyErr_Occurred()) return NULL;
        if (v == 0) {
            PyErr_SetString(PyExc_ValueError, "stream=0 is ambiguous for CUDA; pass 1 (legacy default) or 2 (per-thread)");
            return NULL;
        }
        if (v == -1) sync = 0;
        else if (v < 0) {
            PyErr_Format(PyExc_ValueError, "invalid stream %lld", v);
            return NULL;
        } else consumer = (void *)(uintptr_t)v;
    }
    if (sync) {
        mr_error err = {0};
        if (g_cuda_api->stream_wait_event(consumer, t->ready, &err)) return raise_error(&err);
    }
    int versioned = 0;
    if (max_version != Py_None) {
        if (!PyTuple_Check(max_version) || PyTuple_GET_SIZE(max_version) != 2) {
            PyErr_SetString(PyExc_TypeError, "max_version must be None or a (major, minor) tuple");
            return NULL;
        }
        long major = PyLong_AsLong(PyTuple_GET_ITEM(max_version, 0));
        if (major == -1 && PyErr_Occurred()) return NULL;
        versioned = major >= 1;
    }
    dlpack_export *ex = calloc(1, sizeof *ex);
    if (!ex) return PyErr_NoMemory();
    ex->owner = (PyObject *)t;
    Py_INCREF(t);
    DLTensor dl = {
        .data = t->data,
        .device = {kDLCUDA, t->device},
        .ndim = t->ndim,
        .dtype = {kDLFloat, 32, 1},
        .shape = t->shape,
        .strides = t->strides,
        .byte_offset = 0,
    };
    PyObject *capsule;
    if (versioned) {
        ex->is_versioned = 1;
        ex->versioned.version.major = MR_DLPACK_MAJOR_VERSION;
        ex->versioned.version.minor = MR_DLPACK_MINOR_VERSION;
        ex->versioned.manager_ctx = ex;
        ex->versioned.deleter = dlpack_versioned_deleter;
        ex->versioned.dl_tensor = dl;
        capsule = PyCapsule_New(&ex->versioned, "dltensor_versioned", dlpack_capsule_destructor);
    } else {
        ex->legacy.dl_tensor = dl;
        ex->legacy.manager_ctx = ex;
        ex->legacy.deleter = dlpack_legacy_deleter;
        capsule = PyCapsule_New(&ex->legacy, "dltensor", dlpack_capsule_destructor);
    }
    if (!capsule) {
        Py_DECREF(t);
        free(ex);
    }
    return capsule;
}

static PyObject *cuda_tensor_dlpack_device(CudaTensorObject *t, PyObject *unused) {
    (void)unused;
    return Py_BuildValue("(ii)", (int)kDLCUDA, t->device);
}

static PyObject *cuda_tensor_numpy(CudaTensorObject *t, PyObject *unused) {
    (void)unused;
    npy_intp dims[2] = {(npy_intp)t->shape[0], (npy_intp)t->shape[1]};
    PyArrayObject *arr = (PyArrayObject *)PyArray_EMPTY(t->ndim, dims, NPY_FLOAT32, 0);
    if (!arr) return NULL;
    mr_error err = {0};
    mr_status s;
    size_t bytes = (size_t)(t->shape[0] * t->shape[1]) * sizeof(float);
    Py_BEGIN_ALLOW_THREADS
    s = g_cuda_api->copy_to_host(t->device, PyArray_DATA(arr), t->data, bytes, t->ready, &err);
    Py_END_ALLOW_THREADS
    if (s) {
        Py_DECREF(arr);
        return raise_error(&err);
    }
    return (PyObject *)arr;
}

static PyObject *cuda_tensor_get_shape(CudaTensorObject *t, void *closure) {
    (void)closure;
    return Py_BuildValue("(LL)", (long long)t->shape[0], (long long)t->shape[1]);
}

static PyObject *cuda_tensor_get_dtype(CudaTensorObject *t, void *closure) {
    (void)t;
    (void)closure;
    return PyUnicode_FromString("float32");
}

static PyObject *cuda_tensor_get_device(CudaTensorObject *t, void *closure) {
    (void)closure;
    return PyUnicode_FromFormat("cuda:%d", t->device);
}

static PyObject *cuda_tensor_repr(CudaTensorObject *t) {
    return PyUnicode_FromFormat("CudaTensor(shape=(%lld, %lld), dtype=float32, device=cuda:%d)", (long long)t->shape[0],
                                (long long)t->shape[1], t->device);
}

static PyMethodDef cuda_tensor_methods[] = {
    {"__dlpack__", (PyCFunction)(void (*)(void))cuda_tensor_dlpack, METH_VARARGS | METH_KEYWORDS,
     "__dlpack__(*, stream=None, max_version=None, dl_device=None, copy=None)\n"
     "Exports the tensor without a copy; the consumer's stream is made to wait for the result."},
    {"__dlpack_device__", (PyCFunction)cuda_tensor_dlpack_device, METH_NOARGS, "(2, device_id): a CUDA tensor."},
    {"numpy", (PyCFunction)cuda_tensor_numpy, METH_NOARGS, "A host copy as a NumPy array (waits for the result)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef cuda_tensor_getset[] = {
    {"shape", (getter)cuda_tensor_get_shape, NULL, "shape as a tuple", NULL},
    {"dtype", (getter)cuda_tensor_get_dtype, NULL, "element type ('float32')", NULL},
    {"device", (getter)cuda_tensor_get_device, NULL, "'cuda:N'", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot cuda_tensor_slots[] = {
    {Py_tp_dealloc, cuda_tensor_dealloc},
    {Py_tp_methods, cuda_tensor_methods},
    {Py_tp_getset, cuda_tensor_getset},
    {Py_tp_repr, cuda_tensor_repr},
    {Py_tp_doc, "A float32 result in GPU memory; hand it to torch or CuPy with their from_dlpack."},
    {0, NULL},
};

static PyType_Spec cuda_tensor_spec = {
    .name = "mambaret._C.CudaTensor",
    .basicsize = sizeof(CudaTensorObject),
    .flags = Py_TPFLAGS_DEFAULT,
    .slots = cuda_tensor_slots,
};

/* Owns a consumed DLPack input until the work reading it is finished. */
static void dlpack_input_release(PyObject *capsule) {
    void *p = PyCapsule_GetPointer(capsule, "mambaret.dlpack_input");
    int versioned = (int)(intptr_t)PyCapsule_GetContext(capsule);
    if (!p) {
        PyErr_Clear();
        return;
    }
    if (versioned) {
        DLManagedTensorVersioned *m = p;
        if (m->deleter) m->deleter(m);
    } else {
        DLManagedTensor *m = p;
        if (m->deleter) m->deleter(m);
    }
}

typedef struct {
    const void *data;
    int64_t n;
    int is_int64;
    PyObject *owner; /* the "mambaret.dlpack_input" capsule */
} device_ids;

/* Takes token ids from a DLPack producer on the model's device; its queued writes are ordered
 * before `stream` by the producer. ValueError for another device, the host, or a bad layout. */
static int take_device_ids(PyObject *obj, int device, void *stream, device_ids *out) {
    PyObject *dev = PyObject_CallMethod(obj, "__dlpack_device__", NULL);
    if (!dev) return -1;
    long type, id;
    int bad = parse_device_pair(dev, &type, &id);
    Py_DECREF(dev);
    if (bad) return -1;
    if ((type != kDLCUDA && type != kDLCUDAManaged) || id != device) {
        PyErr_Format(PyExc_ValueError, "tokens are on DLPack device (%ld, %ld) but the model is on cuda:%d; move them "
                     "to that device, or pass a NumPy array", type, id, device);
        return -1;
    }
    /* DLPack: the consumer passes its stream; 1 stands for the legacy default stream */
    PyObject *kw = Py_BuildValue("{s:K}", "stream", (unsigned long long)(stream ? (uintptr_t)stream : 1));
    PyObject *empty = PyTuple_New(0);
    PyObject *method = PyObject_GetAttrString(obj, "__dlpack__");
    PyObject *capsule = (kw && empty && method) ? PyObject_Call(method, empty, kw) : NULL;
    Py_XDECREF(kw);
    Py_XDECREF(empty);
    Py_XDECREF(method);
    if (!capsule) return -1;
    DLTensor *dl;
    void *managed;
    int versioned = PyCapsule_IsValid(capsule, "dltensor_versioned");
    if (versioned) {
        DLManagedTensorVersioned *m = PyCapsule_GetPointer(capsule, "dltensor_versioned");
        managed = m;
        dl = m ? &m->dl_tensor : NULL;
    } else {
        DLManagedTensor *m = PyCapsule_GetPointer(capsule, "dltensor");
        managed = m;
        dl = m ? &m->dl_tensor : NULL;
    }
    if (!dl) {
        Py_DECREF(capsule);
        return -1;
    }
    /* ours from here on: the renamed capsule no longer deletes it */
    if (PyCapsule_SetName(capsule, versioned ? "used_dltensor_versioned" : "used_dltensor") < 0) {
        Py_DECREF(capsule);
        return -1;
    }
    Py_DECREF(capsule);
    PyObject *owner = PyCapsule_New(managed, "mambaret.dlpack_input", dlpack_input_release);
    if (!owner || PyCapsule_SetContext(owner, (void *)(intptr_t)versioned) < 0) {
        if (owner) Py_DECREF(owner);
        else if (versioned) ((DLManagedTensorVersioned *)managed)->deleter(managed);
        else ((DLManagedTensor *)managed)->deleter(managed);
        return -1;
    }
    const char *why = NULL;
    if (dl->ndim != 1) why = "must be 1-D";
    else if (dl->dtype.code != kDLInt || (dl->dtype.bits != 32 && dl->dtype.bits != 64) || dl->dtype.lanes != 1)
        why = "must be int32 or int64";
    else if (dl->strides && dl->shape[0] > 1 && dl->strides[0] != 1) why = "must be contiguous";
    if (why) {
        PyErr_Format(PyExc_ValueError, "token ids from DLPack %s", why);
        Py_DECREF(owner);
        return -1;
    }
    out->data = (const char *)dl->data + dl->byte_offset;
    out->n = dl->shape[0];
    out->is_int64 = dl->dtype.bits == 64;
    out->owner = owner;
    return 0;
}

typedef struct {
    PyObject_HEAD
    mr_cuda_model *model;
    const mr_cuda_api *api;
    module_state *state;
    int device;
    mr_dtype dtype;
    mr_config cfg;
} CudaModelObject;

static int parse_compute_dtype(const char *s, mr_dtype *dtype) {
    if (strcmp(s, "float32") == 0) *dtype = MR_DTYPE_F32;
    else if (strcmp(s, "float16") == 0) *dtype = MR_DTYPE_F16;
    else if (strcmp(s, "bfloat16") == 0) *dtype = MR_DTYPE_BF16;
    else {
        PyErr_Format(PyExc_ValueError, "dtype must be 'bfloat16', 'float16' or 'float32', got '%s'", s);
        return -1;
    }
    return 0;
}

static const char *compute_dtype_name(mr_dtype d) {
    return d == MR_DTYPE_F32 ? "float32" : d == MR_DTYPE_F16 ? "float16" : "bfloat16";
}

static int cuda_model_init(CudaModelObject *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"model", "dtype", "device", NULL};
    PyObject *model_obj;
    const char *dtype_s = "bfloat16";
    int device = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|si:CudaModel", kwlist, &model_obj, &dtype_s, &device)) return -1;
    module_state *st = PyType_GetModuleState(Py_TYPE(self));
    if (!st) return -1;
    if (!PyObject_TypeCheck(model_obj, st->model_type)) {
        PyErr_SetString(PyExc_TypeError, "model must be a mambaret._C.Model");
        return -1;
    }
    const mr_model *cpu = ((ModelObject *)model_obj)->model;
    if (!cpu || !mr_model_is_finished(cpu)) {
        PyErr_SetString(PyExc_ValueError, "the Model must be complete (finish() called) before it goes to the GPU");
        return -1;
    }
    mr_dtype dtype;
    if (parse_compute_dtype(dtype_s, &dtype) < 0) return -1;
    const mr_cuda_api *api = cuda_api();
    if (!api) return -1;
    mr_error err = {0};
    mr_cuda_model *m = NULL;
    mr_status s;
    const mr_config *c = mr_model_config(cpu);
    Py_BEGIN_ALLOW_THREADS
    s = api->model_create(c, dtype, device, &m, &err);
    for (int k = 0; s == MR_OK && k < MR_T_COUNT; k++) {
        int64_t shape[3];
        int ndim;
        mr_error ignore = {0};
        if (mr_model_tensor_shape(cpu, (mr_tensor_kind)k, shape, &ndim, &ignore) != MR_OK) continue; /* absent */
        int64_t numel = 1;
        for (int i = 0; i < ndim; i++) numel *= shape[i];
        int64_t layers = k < MR_T_NORM ? 1 : c->n_layer;
        for (int64_t l = 0; s == MR_OK && l < layers; l++)
            s = api->model_set_tensor(m, (mr_tensor_kind)k, l, mr_model_tensor_data(cpu, (mr_tensor_kind)k, l), numel,
                                      &err);
    }
    if (s == MR_OK) s = api->model_finish(m, &err);
    if (s != MR_OK && m) {
        api->model_free(m);
        m = NULL;
    }
    Py_END_ALLOW_THREADS
    if (s) {
        raise_error(&err);
        return -1;
    }
    if (self->model) self->api->model_free(self->model);
    self->model = m;
    self->api = api;
    self->state = st;
    self->device = device;
    self->dtype = dtype;
    self->cfg = *c;
    return 0;
}

static void cuda_model_dealloc(CudaModelObject *self) {
    if (self->model) {
        mr_cuda_model *m = self->model;
        const mr_cuda_api *api = self->api;
        Py_BEGIN_ALLOW_THREADS
        api->model_free(m);
        Py_END_ALLOW_THREADS
    }
    PyTypeObject *tp = Py_TYPE(self);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static int cuda_model_ready(CudaModelObject *self) {
    if (!self->model) {
        PyErr_SetString(PyExc_RuntimeError, "CudaModel was not initialised");
        return 0;
    }
    return 1;
}

PyDoc_STRVAR(cuda_model_forward_doc,
"forward(tokens, offsets, *, pooling='last', max_tokens=65536, normalize=False, convert_to='numpy',\n"
"        stream=None, out=None, out_row=0, threads=None)\n"
"--\n\n"
"Runs the backbone on the GPU over a packed batch. tokens: int32 NumPy array, or a CUDA tensor\n"
"(int32/int64, any DLPack producer) on this model's device; offsets: int64 NumPy array [B+1].\n"
"convert_to='numpy' copies the float32 result to the host (the one wait); 'dlpack'/'tensor'\n"
"returns a CudaTensor that stays on the GPU, or writes into `out` (a CudaTensor) from row\n"
"out_row. stream: the CUDA stream to queue on (a cudaStream_t as int; None: the default\n"
"stream). normalize: L2-normalise pooled rows. threads is accepted and ignored.");

static PyObject *cuda_model_forward(CudaModelObject *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"tokens", "offsets", "pooling", "max_tokens", "normalize", "convert_to", "stream", "out",
                             "out_row", "threads", NULL};
    PyObject *tokens_obj, *offsets_obj, *stream_obj = Py_None, *out_obj = Py_None, *threads_obj = Py_None;
    const char *pooling_s = "last", *convert_to = "numpy";
    long long max_tokens = 65536, out_row = 0;
    int normalize = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|$sLpsOOLO:forward", kwlist, &tokens_obj, &offsets_obj,
                                     &pooling_s, &max_tokens, &normalize, &convert_to, &stream_obj, &out_obj, &out_row,
                                     &threads_obj))
        return NULL;
    (void)threads_obj;
    if (!cuda_model_ready(self)) return NULL;
    mr_pooling pooling;
    void *stream;
    if (parse_pooling(pooling_s, &pooling) < 0 || parse_stream(stream_obj, &stream) < 0) return NULL;
    int on_device;
    if (strcmp(convert_to, "numpy") == 0) on_device = 0;
    else if (strcmp(convert_to, "dlpack") == 0 || strcmp(convert_to, "tensor") == 0) on_device = 1;
    else {
        PyErr_Format(PyExc_ValueError, "convert_to must be 'numpy', 'dlpack' or 'tensor', got '%s'", convert_to);
        return NULL;
    }
    if (max_tokens <= 0) {
        PyErr_Format(PyExc_ValueError, "max_tokens must be positive, got %lld", max_tokens);
        return NULL;
    }
    PyArrayObject *offsets = require_array(offsets_obj, NPY_INT64, 1, "offsets");
    if (!offsets) return NULL;
    PyArrayObject *tokens = NULL;
    device_ids dev = {0};
    PyObject *result = NULL;
    if (PyArray_DIM(offsets, 0) < 1) {
        PyErr_SetString(PyExc_ValueError, "offsets must hold at least one entry (0 for an empty batch)");
        goto done;
    }
    if (PyArray_Check(tokens_obj)) {
        if (!(tokens = require_array(tokens_obj, NPY_INT32, 1, "tokens"))) goto done;
    } else if (PyObject_HasAttrString(tokens_obj, "__dlpack__")) {
        if (take_device_ids(tokens_obj, self->device, stream, &dev) < 0) goto done;
    } else {
        PyErr_Format(PyExc_TypeError, "tokens must be a NumPy int32 array or a CUDA tensor, got %s",
                     Py_TYPE(tokens_obj)->tp_name);
        goto done;
    }
    const int64_t n_seqs = PyArray_DIM(offsets, 0) - 1, d = self->cfg.d_model;
    const int64_t n_tokens = tokens ? PyArray_DIM(tokens, 0) : dev.n;
    const int64_t rows = pooling == MR_POOL_ALL ? n_tokens : n_seqs;
    mr_cuda_forward_args a = {
        .tokens = tokens ? PyArray_DATA(tokens) : dev.data,
        .tokens_on_device = tokens == NULL,
        .tokens_int64 = dev.is_int64,
        .n_tokens = n_tokens,
        .offsets = PyArray_DATA(offsets),
        .n_seqs = n_seqs,
        .pooling = pooling,
        .max_tokens = max_tokens,
        .normalize = normalize,
        .stream = stream,
        .out_on_device = on_device,
    };
    PyObject *target = NULL; /* what we return: a NumPy array or a CudaTensor */
    if (!on_device) {
        npy_intp dims[2] = {(npy_intp)rows, (npy_intp)d};
        target = PyArray_EMPTY(2, dims, NPY_FLOAT32, 0);
        if (!target) goto done;
        a.out = PyArray_DATA((PyArrayObject *)target);
    } else if (out_obj != Py_None) {
        if (!PyObject_TypeCheck(out_obj, self->state->cuda_tensor_type)) {
            PyErr_SetString(PyExc_TypeError, "out must be a mambaret._C.CudaTensor");
            goto done;
        }
        CudaTensorObject *o = (CudaTensorObject *)out_obj;
        if (o->device != self->device || o->shape[1] != d || out_row < 0 || out_row + rows > o->shape[0]) {
            PyErr_Format(PyExc_ValueError, "out (%lld x %lld on cuda:%d) cannot take %lld rows of %lld from row %lld",
                         (long long)o->shape[0], (long long)o->shape[1], o->device, (long long)rows, (long long)d,
                         out_row);
            goto done;
        }
        target = out_obj;
        Py_INCREF(target);
        a.out = o->data + out_row * d;
    } else {
        target = cuda_tensor_new(self->state, self->api, self->device, rows, d);
        if (!target) goto done;
        a.out = ((CudaTensorObject *)target)->data;
    }
    mr_error err = {0};
    mr_status s;
    Py_BEGIN_ALLOW_THREADS
    s = self->api->model_forward(self->model, &a, &err);
    Py_END_ALLOW_THREADS
    if (s == MR_OK && on_device) {
        CudaTensorObject *o = (CudaTensorObject *)target;
        s = self->api->event_record(o->ready, stream, &err);
        if (s == MR_OK && dev.owner) { /* the device ids must outlive the queued work reading them */
            if (!o->keepalive && !(o->keepalive = PyList_New(0))) {
                Py_DECREF(target);
                goto done;
            }
            if (PyList_Append(o->keepalive, dev.owner) < 0) {
                Py_DECREF(target);
                goto done;
            }
        }
    }
    if (s) {
        Py_DECREF(target);
        raise_error(&err);
        goto done;
    }
    result = target;
done:
    Py_XDECREF(tokens);
    Py_DECREF(offsets);
    Py_XDECREF(dev.owner);
    return result;
}

static PyObject *cuda_model_empty(CudaModelObject *self, PyObject *arg) {
    if (!cuda_model_ready(self)) return NULL;
    long long rows = PyLong_AsLongLong(arg);
    if (rows == -1 && PyErr_Occurred()) return NULL;
    if (rows < 0) {
        PyErr_SetString(PyExc_ValueError, "rows must be >= 0");
        return NULL;
    }
    return cuda_tensor_new(self->state, self->api, self->device, rows, self->cfg.d_model);
}

static PyObject *cuda_model_workspace_bytes(CudaModelObject *self, PyObject *arg) {
    if (!cuda_model_ready(self)) return NULL;
    long long tokens = PyLong_AsLongLong(arg);
    if (tokens == -1 && PyErr_Occurred()) return NULL;
    if (tokens < 0) {
        PyErr_SetString(PyExc_ValueError, "tokens must be >= 0");
        return NULL;
    }
    return PyLong_FromLongLong(self->api->model_workspace_bytes(self->model, tokens));
}

static PyObject *cuda_model_get_info(CudaModelObject *self, void *closure) {
    (void)closure;
    if (!cuda_model_ready(self)) return NULL;
    char desc[256] = "";
    mr_error err = {0};
    if (self->api->device_description(self->device, desc, sizeof desc, &err)) return raise_error(&err);
    return Py_BuildValue("{s:i,s:s,s:s,s:L}", "device", self->device, "dtype", compute_dtype_name(self->dtype),
                         "description", desc, "weight_bytes", (long long)self->api->model_weight_bytes(self->model));
}

static PyObject *cuda_model_get_blas(CudaModelObject *self, void *closure) {
    (void)closure;
    return PyUnicode_FromFormat("cuBLAS (%s)", compute_dtype_name(self->dtype));
}

static PyObject *cuda_model_get_dtype(CudaModelObject *self, void *closure) {
    (void)closure;
    return PyUnicode_FromString(compute_dtype_name(self->dtype));
}

static PyObject *cuda_model_get_device(CudaModelObject *self, void *closure) {
    (void)closure;
    return PyLong_FromLong(self->device);
}

static PyMethodDef cuda_model_methods[] = {
    {"forward", (PyCFunction)(void (*)(void))cuda_model_forward, METH_VARARGS | METH_KEYWORDS, cuda_model_forward_doc},
    {"empty", (PyCFunction)cuda_model_empty, METH_O,
     "empty(rows)\nAn uninitialised [rows, d] CudaTensor on this model's device, for forward(out=...)."},
    {"workspace_bytes", (PyCFunction)cuda_model_workspace_bytes, METH_O,
     "workspace_bytes(tokens)\nGPU bytes of the reused workspace for micro-batches of this many tokens."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef cuda_model_getset[] = {
    {"info", (getter)cuda_model_get_info, NULL, "device, dtype, description and weight bytes", NULL},
    {"blas", (getter)cuda_model_get_blas, NULL, "what runs the matrix products", NULL},
    {"dtype", (getter)cuda_model_get_dtype, NULL, "the compute dtype", NULL},
    {"device", (getter)cuda_model_get_device, NULL, "the CUDA device index", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot cuda_model_slots[] = {
    {Py_tp_init, cuda_model_init},
    {Py_tp_dealloc, cuda_model_dealloc},
    {Py_tp_methods, cuda_model_methods},
    {Py_tp_getset, cuda_model_getset},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_doc, "CudaModel(model, dtype='bfloat16', device=0)\nA finished Model's weights uploaded to a GPU "
                "(needs mambaret._cuda); forward() as Model.forward, on the device."},
    {0, NULL},
};

static PyType_Spec cuda_model_spec = {
    .name = "mambaret._C.CudaModel",
    .basicsize = sizeof(CudaModelObject),
    .flags = Py_TPFLAGS_DEFAULT,
    .slots = cuda_model_slots,
};

/* ------------------------------------------------------------------------------------------ */
/* Kernels exposed for the tests: each runs the fast op or its reference on NumPy inputs.      */

static PyArrayObject *new_f32(int ndim, int64_t d0, int64_t d1) {
    npy_intp dims[2] = {(npy_intp)d0, (npy_intp)d1};
    return (PyArrayObject *)PyArray_ZEROS(ndim, dims, NPY_FLOAT32, 0);
}

static PyArrayObject *optional_f32(PyObject *obj, int ndim, const char *what, int64_t d0, int64_t d1) {
    if (obj == Py_None) return NULL;
    PyArrayObject *a = require_array(obj, NPY_FLOAT32, ndim, what);
    if (!a) return NULL;
    if (PyArray_DIM(a, 0) != d0 || (ndim == 2 && PyArray_DIM(a, 1) != d1)) {
        PyErr_Format(PyExc_ValueError, "%s has the wrong shape", what);
        Py_DECREF(a);
        return NULL;
    }
    return a;
}

#define F32(a) ((a) ? (float *)PyArray_DATA(a) : NULL)

enum { VARIANT_AUTO, VARIANT_PORTABLE, VARIANT_REFERENCE };

/* "auto" (what the model runs: the best path for this CPU), "portable" or "reference". */
static int parse_variant(const char *s, int *variant) {
    if (strcmp(s, "auto") == 0) *variant = VARIANT_AUTO;
    else if (strcmp(s, "portable") == 0) *variant = VARIANT_PORTABLE;
    else if (strcmp(s, "reference") == 0) *variant = VARIANT_REFERENCE;
    else {
        PyErr_Format(PyExc_ValueError, "variant must be 'auto', 'portable' or 'reference', got '%s'", s);
        return -1;
    }
    return 0;
}

static PyObject *op_rmsnorm(PyObject *m, PyObject *args, PyObject *kwargs) {
    (void)m;
    static char *kwlist[] = {"x", "weight", "eps", "variant", "threads", NULL};
    PyObject *xo, *wo, *threads_obj = Py_None;
    const char *variant_s = "auto";
    double eps;
    int variant, threads;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOd|sO", kwlist, &xo, &wo, &eps, &variant_s, &threads_obj))
        return NULL;
    if (parse_variant(variant_s, &variant) < 0 || parse_threads(threads_obj, &threads) < 0) return NULL;
    PyArrayObject *x = require_array(xo, NPY_FLOAT32, 2, "x");
    if (!x) return NULL;
    int64_t T = PyArray_DIM(x, 0), d = PyArray_DIM(x, 1);
    PyArrayObject *w = optional_f32(wo, 1, "weight", d, 0), *out = NULL;
    if (!w) goto done;
    out = new_f32(2, T, d);
    if (!out) goto done;
    Py_BEGIN_ALLOW_THREADS
    if (variant == VARIANT_REFERENCE)
        mr_rmsnorm_f32_ref(F32(x), d, F32(w), T, d, (float)eps, F32(out), d);
    else {
#pragma omp parallel num_threads(threads)
        mr_rmsnorm_f32(F32(x), d, F32(w), T, d, (float)eps, F32(out), d, mr_thread_index(), mr_thread_count());
    }
    Py_END_ALLOW_THREADS
done:
    Py_DECREF(x);
    Py_XDECREF(w);
    return (PyObject *)out;
}

static PyObject *op_conv_silu(PyObject *m, PyObject *args, PyObject *kwargs) {
    (void)m;
    static char *kwlist[] = {"x", "weight", "bias", "state", "variant", "threads", NULL};
    PyObject *xo, *wo, *bo = Py_None, *so = Py_None, *threads_obj = Py_None;
    const char *variant_s = "auto";
    int variant, threads;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|OOsO", kwlist, &xo, &wo, &bo, &so, &variant_s, &threads_obj))
        return NULL;
    if (parse_variant(variant_s, &variant) < 0 || parse_threads(threads_obj, &threads) < 0) return NULL;
    PyArrayObject *x = require_array(xo, NPY_FLOAT32, 2, "x"), *w = NULL, *b = NULL, *s = NULL, *out = NULL,
                  *s_out = NULL;
    PyObject *result = NULL;
    if (!x) return NULL;
    int64_t L = PyArray_DIM(x, 0), E = PyArray_DIM(x, 1);
    w = require_array(wo, NPY_FLOAT32, 2, "weight");
    if (!w) goto done;
    int64_t K = PyArray_DIM(w, 1);
    if (PyArray_DIM(w, 0) != E || K < 1 || K > MR_MAX_CONV_KERNEL) {
        PyErr_SetString(PyExc_ValueError, "weight must be [E, K] with 1 <= K <= 64");
        goto done;
    }
    b = optional_f32(bo, 1, "bias", E, 0);
    if (!b && PyErr_Occurred()) goto done;
    s = optional_f32(so, 2, "state", K - 1, E);
    if (!s && PyErr_Occurred()) goto done;
    out = new_f32(2, L, E);
    s_out = new_f32(2, K - 1, E);
    if (!out || !s_out) goto done;
    Py_BEGIN_ALLOW_THREADS
    if (variant == VARIANT_REFERENCE)
        mr_conv_silu_f32_ref(L, E, K, F32(x), E, F32(w), F32(b), F32(s), F32(s_out), F32(out), E);
    else if (variant == VARIANT_PORTABLE)
        mr_conv_silu_f32_portable(L, E, K, F32(x), E, F32(w), F32(b), F32(s), F32(s_out), F32(out), E, 0, E);
    else {
#pragma omp parallel num_threads(threads)
        mr_conv_silu_f32(L, E, K, F32(x), E, F32(w), F32(b), F32(s), F32(s_out), F32(out), E, mr_thread_index(),
                         mr_thread_count());
    }
    Py_END_ALLOW_THREADS
    result = Py_BuildValue("(OO)", out, s_out);
done:
    Py_XDECREF(x);
    Py_XDECREF(w);
    Py_XDECREF(b);
    Py_XDECREF(s);
    Py_XDECREF(out);
    Py_XDECREF(s_out);
    return result;
}

static PyObject *op_selective_scan(PyObject *m, PyObject *args, PyObject *kwargs) {
    (void)m;
    static char *kwlist[] = {"u", "dt", "A", "B", "C", "dt_bias", "D", "z", "state", "variant", "threads", NULL};
    PyObject *uo, *dto, *Ao, *Bo, *Co, *dbo = Py_None, *Do = Py_None, *zo = Py_None, *so = Py_None,
                                         *threads_obj = Py_None;
    const char *variant_s = "auto";
    int variant, threads;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOOO|OOOOsO", kwlist, &uo, &dto, &Ao, &Bo, &Co, &dbo, &Do, &zo,
                                     &so, &variant_s, &threads_obj))
        return NULL;
    if (parse_variant(variant_s, &variant) < 0 || parse_threads(threads_obj, &threads) < 0) return NULL;
    PyObject *result = NULL;
    PyArrayObject *u = require_array(uo, NPY_FLOAT32, 2, "u"), *dt = NULL, *A = NULL, *B = NULL, *C = NULL,
                  *db = NULL, *D = NULL, *z = NULL, *s = NULL, *y = NULL, *s_out = NULL;
    if (!u) return NULL;
    int64_t L = PyArray_DIM(u, 0), E = PyArray_DIM(u, 1);
    if (!(dt = optional_f32(dto, 2, "dt", L, E))) goto done;
    A = require_array(Ao, NPY_FLOAT32, 2, "A");
    if (!A) goto done;
    int64_t N = PyArray_DIM(A, 1);
    if (PyArray_DIM(A, 0) != E || N < 1 || N > MR_MAX_STATE_SIZE) {
        PyErr_SetString(PyExc_ValueError, "A must be [E, N] with 1 <= N <= 256");
        goto done;
    }
    if (!(B = optional_f32(Bo, 2, "B", L, N)) || !(C = optional_f32(Co, 2, "C", L, N))) goto done;
    if (!(db = optional_f32(dbo, 1, "dt_bias", E, 0)) && PyErr_Occurred()) goto done;
    if (!(D = optional_f32(Do, 1, "D", E, 0)) && PyErr_Occurred()) goto done;
    if (!(z = optional_f32(zo, 2, "z", L, E)) && PyErr_Occurred()) goto done;
    if (!(s = optional_f32(so, 2, "state", E, N)) && PyErr_Occurred()) goto done;
    y = new_f32(2, L, E);
    s_out = new_f32(2, E, N);
    if (!y || !s_out) goto done;
    Py_BEGIN_ALLOW_THREADS
    if (variant == VARIANT_REFERENCE)
        mr_selective_scan_f32_ref(L, E, N, F32(u), E, F32(dt), E, F32(db), F32(A), F32(B), F32(C), N, F32(D), F32(z),
                                  E, F32(s), F32(s_out), F32(y), E);
    else if (variant == VARIANT_PORTABLE)
        mr_selective_scan_f32_portable(L, E, N, F32(u), E, F32(dt), E, F32(db), F32(A), F32(B), F32(C), N, F32(D),
                                       F32(z), E, F32(s), F32(s_out), F32(y), E, 0, E);
    else {
#pragma omp parallel num_threads(threads)
        mr_selective_scan_f32(L, E, N, F32(u), E, F32(dt), E, F32(db), F32(A), F32(B), F32(C), N, F32(D), F32(z), E,
                              F32(s), F32(s_out), F32(y), E, mr_thread_index(), mr_thread_count());
    }
    Py_END_ALLOW_THREADS
    result = Py_BuildValue("(OO)", y, s_out);
done:
    Py_XDECREF(u);
    Py_XDECREF(dt);
    Py_XDECREF(A);
    Py_XDECREF(B);
    Py_XDECREF(C);
    Py_XDECREF(db);
    Py_XDECREF(D);
    Py_XDECREF(z);
    Py_XDECREF(s);
    Py_XDECREF(y);
    Py_XDECREF(s_out);
    return result;
}

/* out = a[:, :K] @ w.T with w [N, K] packed here as the model packs it; a is [T, lda >= K]. */
static PyObject *op_linear_packed(PyObject *m, PyObject *args, PyObject *kwargs) {
    (void)m;
    static char *kwlist[] = {"a", "weight", "variant", "threads", NULL};
    PyObject *ao, *wo, *threads_obj = Py_None;
    const char *variant_s = "auto";
    int variant, threads;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|sO", kwlist, &ao, &wo, &variant_s, &threads_obj))
        return NULL;
    if (parse_variant(variant_s, &variant) < 0 || parse_threads(threads_obj, &threads) < 0) return NULL;
    if (variant == VARIANT_PORTABLE) {
        PyErr_SetString(PyExc_ValueError, "the packed linear kernels have no portable variant (the BLAS runs it)");
        return NULL;
    }
    PyArrayObject *a = require_array(ao, NPY_FLOAT32, 2, "a"), *w = NULL, *out = NULL;
    float *packed = NULL;
    if (!a) return NULL;
    w = require_array(wo, NPY_FLOAT32, 2, "weight");
    if (!w) goto done;
    int64_t T = PyArray_DIM(a, 0), lda = PyArray_DIM(a, 1), N = PyArray_DIM(w, 0), K = PyArray_DIM(w, 1);
    if (K > lda || K < 1 || N < 1) {
        PyErr_SetString(PyExc_ValueError, "weight must be [N, K] with 1 <= K <= a.shape[1] and N >= 1");
        goto done;
    }
    if (posix_memalign((void **)&packed, 64, (size_t)mr_packed_weight_floats(N, K) * sizeof(float)) != 0) {
        packed = NULL;
        PyErr_NoMemory();
        goto done;
    }
    out = new_f32(2, T, N);
    if (!out) goto done;
    Py_BEGIN_ALLOW_THREADS
    mr_pack_weight_f32(F32(w), N, K, packed);
    if (variant == VARIANT_REFERENCE)
        mr_linear_packed_f32_ref(T, N, K, F32(a), lda, packed, F32(out), N);
    else {
#pragma omp parallel num_threads(threads)
        mr_linear_packed_f32(T, N, K, F32(a), lda, packed, F32(out), N, mr_thread_index(), mr_thread_count());
    }
    Py_END_ALLOW_THREADS
done:
    free(packed);
    Py_DECREF(a);
    Py_XDECREF(w);
    return (PyObject *)out;
}

/* exp / softplus of a SIMD path ("avx2" or "avx512") over a float32 array, for the accuracy tests. */
static PyObject *op_vector_math(PyObject *m, PyObject *args) {
    (void)m;
    const char *fn, *isa;
    PyObject *xo;
    if (!PyArg_ParseTuple(args, "ssO:op_vector_math", &fn, &isa, &xo)) return NULL;
    int wide = strcmp(isa, "avx512") == 0;
    if (!wide && strcmp(isa, "avx2") != 0) {
        PyErr_SetString(PyExc_ValueError, "isa must be 'avx2' or 'avx512'");
        return NULL;
    }
    if (mr_cpu_simd_level() < (wide ? MR_SIMD_AVX512 : MR_SIMD_AVX2)) {
        PyErr_Format(PyExc_RuntimeError, "this CPU (or MAMBARET_SIMD) does not allow %s", isa);
        return NULL;
    }
    int is_exp = strcmp(fn, "exp") == 0;
    if (!is_exp && strcmp(fn, "softplus") != 0) {
        PyErr_SetString(PyExc_ValueError, "fn must be 'exp' or 'softplus'");
        return NULL;
    }
    PyArrayObject *x = require_array(xo, NPY_FLOAT32, 1, "x");
    if (!x) return NULL;
    PyArrayObject *out = new_f32(1, PyArray_DIM(x, 0), 0);
    if (out) {
        npy_intp n = PyArray_DIM(x, 0);
        if (wide) (is_exp ? mr_exp_f32_avx512 : mr_softplus_f32_avx512)(F32(x), F32(out), n);
        else (is_exp ? mr_exp_f32_avx2 : mr_softplus_f32_avx2)(F32(x), F32(out), n);
    }
    Py_DECREF(x);
    return (PyObject *)out;
}

static PyObject *op_gemm(PyObject *module, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"a", "w", "bias", "out", "fallback", "threads", NULL};
    PyObject *ao, *wo, *bo = Py_None, *oo = Py_None, *threads_obj = Py_None;
    int fallback = 0, threads;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|OOpO", kwlist, &ao, &wo, &bo, &oo, &fallback, &threads_obj))
        return NULL;
    if (parse_threads(threads_obj, &threads) < 0) return NULL;
    PyObject *result = NULL;
    PyArrayObject *a = require_array(ao, NPY_FLOAT32, 2, "a"), *w = NULL, *b = NULL, *out = NULL;
    if (!a) return NULL;
    int64_t M = PyArray_DIM(a, 0), K = PyArray_DIM(a, 1);
    w = require_array(wo, NPY_FLOAT32, 2, "w");
    if (!w) goto done;
    int64_t N = PyArray_DIM(w, 0);
    if (PyArray_DIM(w, 1) != K) {
        PyErr_SetString(PyExc_ValueError, "w must be [N, K] with a's K");
        goto done;
    }
    if (!(b = optional_f32(bo, 1, "bias", N, 0)) && PyErr_Occurred()) goto done;
    float beta = 0.0f;
    if (oo != Py_None) {
        PyArrayObject *given = optional_f32(oo, 2, "out", M, N);
        if (!given) goto done;
        out = (PyArrayObject *)PyArray_NewCopy(given, NPY_CORDER);
        Py_DECREF(given);
        beta = 1.0f;
    } else {
        out = new_f32(2, M, N);
    }
    if (!out) goto done;
    mr_blas fb;
    mr_blas_init_fallback(&fb);
    const mr_blas *blas = fallback ? &fb : &get_state(module)->blas;
    mr_error err = {0};
    mr_status s;
    Py_BEGIN_ALLOW_THREADS
    mr_blas_set_threads(blas, threads);
    s = mr_gemm_f32(blas, M, N, K, F32(a), K, F32(w), K, F32(b), beta, F32(out), N, threads, &err);
    Py_END_ALLOW_THREADS
    if (s) {
        raise_error(&err);
        goto done;
    }
    result = (PyObject *)out;
    out = NULL;
done:
    Py_XDECREF(a);
    Py_XDECREF(w);
    Py_XDECREF(b);
    Py_XDECREF(out);
    return result;
}

/* ------------------------------------------------------------------------------------------ */
/* flat index search (exact inner product, top-k): the core is mr_index.c                      */

/* Holds the arrays of one search while the GIL is released. */
typedef struct {
    PyArrayObject **arrays;
    mr_flat_segment *segments;
    Py_ssize_t count;
} segment_list;

static void segment_list_free(segment_list *list) {
    for (Py_ssize_t i = 0; i < list->count; i++) Py_XDECREF(list->arrays[i]);
    PyMem_Free(list->arrays);
    PyMem_Free(list->segments);
}

/* Every item of `seq` must be a float32 [rows, dim] C-contiguous array. */
static int segment_list_parse(PyObject *seq, int64_t dim, segment_list *list) {
    memset(list, 0, sizeof *list);
    PyObject *items = PySequence_Fast(seq, "segments must be a list of float32 [rows, dim] arrays");
    if (!items) return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(items);
    list->arrays = PyMem_Calloc((size_t)(n > 0 ? n : 1), sizeof *list->arrays);
    list->segments = PyMem_Calloc((size_t)(n > 0 ? n : 1), sizeof *list->segments);
    if (!list->arrays || !list->segments) {
        Py_DECREF(items);
        segment_list_free(list);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyArrayObject *a = require_array(PySequence_Fast_GET_ITEM(items, i), NPY_FLOAT32, 2, "a segment");
        if (!a) break;
        list->arrays[list->count++] = a;
        if (PyArray_DIM(a, 1) != dim) {
            PyErr_Format(PyExc_ValueError, "segment %zd has dimension %lld, the queries have %lld", i,
                         (long long)PyArray_DIM(a, 1), (long long)dim);
            break;
        }
        list->segments[i].vectors = (const float *)PyArray_DATA(a);
        list->segments[i].rows = PyArray_DIM(a, 0);
    }
    Py_DECREF(items);
    if (PyErr_Occurred()) {
        segment_list_free(list);
        return -1;
    }
    return 0;
}

static PyObject *flat_search(PyObject *module, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"queries", "segments", "k", "threads", "reference", NULL};
    PyObject *qo, *so, *threads_obj = Py_None;
    long long k;
    int ref = 0, threads;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOL|Op:flat_search", kwlist, &qo, &so, &k, &threads_obj, &ref))
        return NULL;
    if (parse_threads(threads_obj, &threads) < 0) return NULL;
    if (k <= 0) {
        PyErr_Format(PyExc_ValueError, "k must be positive, got %lld", k);
        return NULL;
    }
    PyArrayObject *q = require_array(qo, NPY_FLOAT32, 2, "queries");
    if (!q) return NULL;
    const int64_t nq = PyArray_DIM(q, 0), dim = PyArray_DIM(q, 1);
    segment_list list;
    if (segment_list_parse(so, dim, &list) < 0) {
        Py_DECREF(q);
        return NULL;
    }
    npy_intp dims[2] = {(npy_intp)nq, (npy_intp)k};
    PyArrayObject *scores = (PyArrayObject *)PyArray_SimpleNew(2, dims, NPY_FLOAT32);
    PyArrayObject *ids = scores ? (PyArrayObject *)PyArray_SimpleNew(2, dims, NPY_INT64) : NULL;
    PyObject *result = NULL;
    if (ids) {
        mr_flat_search_args a = {
            .queries = (const float *)PyArray_DATA(q), .nq = nq, .dim = dim,
            .segments = list.segments, .n_segments = list.count, .k = k, .threads = threads,
            .out_scores = (float *)PyArray_DATA(scores), .out_ids = (int64_t *)PyArray_DATA(ids),
        };
        const mr_blas blas = get_state(module)->blas; /* a copy: set_blas may run meanwhile */
        mr_error err = {0};
        mr_status s;
        Py_BEGIN_ALLOW_THREADS
        s = ref ? mr_flat_search_ref(&a, &err) : mr_flat_search(&blas, &a, &err);
        Py_END_ALLOW_THREADS
        if (s) raise_error(&err);
        else result = PyTuple_Pack(2, (PyObject *)scores, (PyObject *)ids);
    }
    Py_DECREF(q);
    segment_list_free(&list);
    Py_XDECREF(scores);
    Py_XDECREF(ids);
    return result;
}

/* ------------------------------------------------------------------------------------------ */
/* module functions                                                                            */

static PyObject *set_blas(PyObject *module, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"path", "sgemm_symbol", "threads_symbol", "name", NULL};
    const char *path = NULL, *sgemm_symbol = "cblas_sgemm", *threads_symbol = "", *name = "";
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "z|sss:set_blas", kwlist, &path, &sgemm_symbol, &threads_symbol,
                                     &name))
        return NULL;
    module_state *st = get_state(module);
    mr_blas next;
    if (!path) {
        mr_blas_init_fallback(&next);
    } else {
        mr_error err = {0};
        mr_status s;
        Py_BEGIN_ALLOW_THREADS
        s = mr_blas_open(&next, path, sgemm_symbol, threads_symbol, name, &err);
        Py_END_ALLOW_THREADS
        if (s) return raise_error(&err);
    }
    /* the previous library stays loaded: models created with it still call into it */
    st->blas = next;
    Py_RETURN_NONE;
}

static PyObject *build_info(PyObject *module, PyObject *unused) {
    (void)unused;
    module_state *st = get_state(module);
#ifdef _OPENMP
    PyObject *openmp = Py_True;
#else
    PyObject *openmp = Py_False;
#endif
    return Py_BuildValue("{s:s,s:s,s:O,s:i,s:i}", "blas", st->blas.name, "simd", mr_simd_path(), "openmp", openmp,
                         "max_threads", mr_max_threads(), "dlpack_version", MR_DLPACK_MAJOR_VERSION);
}

static PyObject *tensor_from_array(PyObject *module, PyObject *arg) {
    PyArrayObject *a = require_array(arg, NPY_FLOAT32, -1, "array");
    if (!a) return NULL;
    int ndim = PyArray_NDIM(a);
    if (ndim < 1 || ndim > 2) {
        Py_DECREF(a);
        PyErr_SetString(PyExc_ValueError, "array must have 1 or 2 dimensions");
        return NULL;
    }
    int64_t shape[2] = {PyArray_DIM(a, 0), ndim == 2 ? PyArray_DIM(a, 1) : 1};
    size_t bytes = (size_t)(shape[0] * shape[1]) * sizeof(float);
    float *data = malloc(bytes ? bytes : 1);
    if (!data) {
        Py_DECREF(a);
        return PyErr_NoMemory();
    }
    memcpy(data, PyArray_DATA(a), bytes);
    Py_DECREF(a);
    return tensor_new_owned(get_state(module), data, ndim, shape);
}

static PyMethodDef module_methods[] = {
    {"tensor_from_array", (PyCFunction)tensor_from_array, METH_O,
     "tensor_from_array(array)\nCopies a float32 1-D or 2-D array into a core Tensor (DLPack producer)."},
    {"set_blas", (PyCFunction)(void (*)(void))set_blas, METH_VARARGS | METH_KEYWORDS,
     "set_blas(path, sgemm_symbol='cblas_sgemm', threads_symbol='', name='')\n"
     "Loads a BLAS for models created afterwards; path=None selects the built-in fallback."},
    {"build_info", (PyCFunction)build_info, METH_NOARGS, "BLAS, SIMD path and thread facts of this build."},
    {"op_rmsnorm", (PyCFunction)(void (*)(void))op_rmsnorm, METH_VARARGS | METH_KEYWORDS,
     "op_rmsnorm(x, weight, eps, variant='auto', threads=1): one kernel, for tests."},
    {"op_conv_silu", (PyCFunction)(void (*)(void))op_conv_silu, METH_VARARGS | METH_KEYWORDS,
     "op_conv_silu(x, weight, bias=None, state=None, variant='auto', threads=1) -> (out, state)"},
    {"op_linear_packed", (PyCFunction)(void (*)(void))op_linear_packed, METH_VARARGS | METH_KEYWORDS,
     "op_linear_packed(a, weight, variant='auto', threads=1): a[:, :K] @ weight.T through the packed kernels"},
    {"op_selective_scan", (PyCFunction)(void (*)(void))op_selective_scan, METH_VARARGS | METH_KEYWORDS,
     "op_selective_scan(u, dt, A, B, C, dt_bias=None, D=None, z=None, state=None, variant='auto', threads=1)"
     " -> (y, state)"},
    {"op_vector_math", (PyCFunction)op_vector_math, METH_VARARGS,
     "op_vector_math(fn, isa, x): 'exp' or 'softplus' of the 'avx2' or 'avx512' path over a float32 vector."},
    {"op_gemm", (PyCFunction)(void (*)(void))op_gemm, METH_VARARGS | METH_KEYWORDS,
     "op_gemm(a, w, bias=None, out=None, fallback=False, threads=1): a @ w.T (+ bias) (+ out)"},
    {"flat_search", (PyCFunction)(void (*)(void))flat_search, METH_VARARGS | METH_KEYWORDS,
     "flat_search(queries, segments, k, threads=1, reference=False) -> (scores, ids)\n"
     "Exact inner-product top-k of float32 queries [nq, dim] over a list of float32 [rows, dim]\n"
     "segments; ids are row positions across the segments. Sorted best first (ties: lower id),\n"
     "padded with (-inf, -1) when k exceeds the rows."},
    {NULL, NULL, 0, NULL},
};

int mr_py_add_train(PyObject *module); /* csrc/python/train.c */

static int module_exec(PyObject *module) {
    module_state *st = get_state(module);
    mr_blas_init_fallback(&st->blas);
    st->tensor_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &tensor_spec, NULL);
    if (!st->tensor_type) return -1;
    if (PyModule_AddObjectRef(module, "Tensor", (PyObject *)st->tensor_type) < 0) return -1;
    st->model_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &model_spec, NULL);
    if (!st->model_type) return -1;
    if (PyModule_AddObjectRef(module, "Model", (PyObject *)st->model_type) < 0) return -1;
    st->cuda_tensor_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &cuda_tensor_spec, NULL);
    if (!st->cuda_tensor_type) return -1;
    if (PyModule_AddObjectRef(module, "CudaTensor", (PyObject *)st->cuda_tensor_type) < 0) return -1;
    PyObject *cuda_model_type = PyType_FromModuleAndSpec(module, &cuda_model_spec, NULL);
    if (!cuda_model_type) return -1;
    if (PyModule_AddObject(module, "CudaModel", cuda_model_type) < 0) {
        Py_DECREF(cuda_model_type);
        return -1;
    }
    if (PyModule_AddIntConstant(module, "MAX_STATE_SIZE", MR_MAX_STATE_SIZE) < 0 ||
        PyModule_AddIntConstant(module, "MAX_CONV_KERNEL", MR_MAX_CONV_KERNEL) < 0)
        return -1;
    if (mr_py_add_train(module) < 0) return -1;
    return 0;
}

static int module_traverse(PyObject *module, visitproc visit, void *arg) {
    module_state *st = get_state(module);
    if (st) {
        Py_VISIT(st->tensor_type);
        Py_VISIT(st->model_type);
        Py_VISIT(st->cuda_tensor_type);
    }
    return 0;
}

static int module_clear(PyObject *module) {
    module_state *st = get_state(module);
    if (st) {
        Py_CLEAR(st->tensor_type);
        Py_CLEAR(st->model_type);
        Py_CLEAR(st->cuda_tensor_type);
    }
    return 0;
}

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
    {0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "mambaret._C",
    .m_doc = "The C core of mambaret: the Mamba-1 encoder, its kernels and DLPack tensors.",
    .m_size = sizeof(module_state),
    .m_methods = module_methods,
    .m_slots = module_slots,
    .m_traverse = module_traverse,
    .m_clear = module_clear,
};

PyMODINIT_FUNC PyInit__C(void) {
    import_array();
    return PyModuleDef_Init(&module_def);
}
