/* Result tensors: what the host Tensor and the CudaTensor share (shape, dtype, device, repr and
 * the one DLPack exporter, parameterised by the tensor's device), and the host Tensor itself: a
 * float32 result owned by C, readable through the buffer protocol and DLPack. */
#include "py_common.h"

#include <stdlib.h>
#include <string.h>

void mr_py_tensor_set_shape(mr_py_tensor *t, int ndim, const int64_t *shape) {
    t->ndim = ndim;
    int64_t stride = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        t->shape[i] = shape[i];
        t->strides[i] = stride;
        stride *= shape[i];
    }
}

int64_t mr_py_tensor_numel(const mr_py_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

/* ---- DLPack export ------------------------------------------------------------------------- */

/* The managed tensor keeps the owner alive; its deleter runs exactly once: by the consumer after
 * it renamed the capsule, or by the capsule's destructor when nobody consumed it. */
typedef struct {
    DLManagedTensor legacy;
    DLManagedTensorVersioned versioned;
    PyObject *owner;
    float *copy; /* non-NULL when copy=True asked for a buffer of the consumer's own */
} dlpack_export;

static void dlpack_export_free(dlpack_export *ex) {
    PyGILState_STATE g = PyGILState_Ensure(); /* a consumer may call the deleter without the GIL */
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
    /* it may run while an exception is being raised (a frame unwinding): keep that exception */
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    /* a consumed capsule was renamed "used_dltensor[_versioned]": its consumer owns it now */
    if (PyCapsule_IsValid(capsule, "dltensor")) {
        DLManagedTensor *m = PyCapsule_GetPointer(capsule, "dltensor");
        if (m && m->deleter) m->deleter(m);
    } else if (PyCapsule_IsValid(capsule, "dltensor_versioned")) {
        DLManagedTensorVersioned *m = PyCapsule_GetPointer(capsule, "dltensor_versioned");
        if (m && m->deleter) m->deleter(m);
    }
    PyErr_Restore(type, value, traceback); /* also drops anything the checks above raised */
}

/* The capsule for `t` (or for `copy`, a buffer of the consumer's own that the export frees). */
static PyObject *dlpack_capsule(mr_py_tensor *t, int versioned, float *copy) {
    dlpack_export *ex = calloc(1, sizeof *ex);
    if (!ex) {
        free(copy);
        return PyErr_NoMemory();
    }
    ex->owner = (PyObject *)t;
    ex->copy = copy;
    Py_INCREF(t);
    DLTensor dl = {
        .data = copy ? copy : t->data,
        .device = t->device,
        .ndim = t->ndim,
        .dtype = {kDLFloat, 32, 1},
        .shape = t->shape,
        .strides = t->strides,
        .byte_offset = 0,
    };
    PyObject *capsule;
    if (versioned) {
        ex->versioned.version.major = MR_DLPACK_MAJOR_VERSION;
        ex->versioned.version.minor = MR_DLPACK_MINOR_VERSION;
        ex->versioned.manager_ctx = ex;
        ex->versioned.deleter = dlpack_versioned_deleter;
        ex->versioned.flags = copy ? DLPACK_FLAG_BITMASK_IS_COPIED : 0;
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
    }
    return capsule;
}

PyObject *mr_py_tensor_dlpack(mr_py_tensor *t, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"stream", "max_version", "dl_device", "copy", NULL};
    PyObject *stream = Py_None, *max_version = Py_None, *dl_device = Py_None, *copy = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|$OOOO:__dlpack__", kwlist, &stream, &max_version, &dl_device,
                                     &copy))
        return NULL;
    const int on_cuda = t->device.device_type == kDLCUDA;
    if (!on_cuda && stream != Py_None) {
        PyErr_SetString(PyExc_BufferError, "stream must be None for a CPU tensor");
        return NULL;
    }
    if (dl_device != Py_None) {
        long type, id;
        if (mr_py_parse_device_pair(dl_device, &type, &id) < 0) return NULL;
        if (type != (long)t->device.device_type || id != (long)t->device.device_id) {
            if (on_cuda)
                PyErr_Format(PyExc_BufferError, "this tensor is on CUDA device %d; export to (%ld, %ld) is not "
                             "supported (use .numpy() for a host copy)", t->device.device_id, type, id);
            else
                PyErr_Format(PyExc_BufferError, "cannot export a CPU tensor to device (%ld, %ld)", type, id);
            return NULL;
        }
    }
    int want_copy = 0;
    if (copy != Py_None && (want_copy = PyObject_IsTrue(copy)) < 0) return NULL;
    if (on_cuda && want_copy) {
        PyErr_SetString(PyExc_BufferError, "copy=True is not supported for CUDA tensors; use .numpy() for a host copy");
        return NULL;
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
    if (on_cuda && mr_py_cuda_tensor_handshake(t, stream) < 0) return NULL;
    float *buffer = NULL;
    if (want_copy) {
        size_t bytes = (size_t)mr_py_tensor_numel(t) * sizeof(float);
        if (!(buffer = malloc(bytes ? bytes : 1))) return PyErr_NoMemory();
        memcpy(buffer, t->data, bytes);
    }
    return dlpack_capsule(t, versioned, buffer);
}

PyObject *mr_py_tensor_dlpack_device(mr_py_tensor *t, PyObject *unused) {
    (void)unused;
    return Py_BuildValue("(ii)", (int)t->device.device_type, (int)t->device.device_id);
}

/* ---- shape, dtype, device, repr ------------------------------------------------------------ */

static PyObject *tensor_get_shape(mr_py_tensor *t, void *closure) {
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

static PyObject *tensor_get_dtype(mr_py_tensor *t, void *closure) {
    (void)t;
    (void)closure;
    return PyUnicode_FromString("float32");
}

static PyObject *tensor_get_device(mr_py_tensor *t, void *closure) {
    (void)closure;
    if (t->device.device_type == kDLCUDA) return PyUnicode_FromFormat("cuda:%d", t->device.device_id);
    return PyUnicode_FromString("cpu");
}

PyObject *mr_py_tensor_repr(mr_py_tensor *t) {
    PyObject *shape = tensor_get_shape(t, NULL), *device = tensor_get_device(t, NULL), *repr = NULL;
    if (shape && device)
        repr = PyUnicode_FromFormat("%s(shape=%R, dtype=float32, device=%U)",
                                    t->device.device_type == kDLCUDA ? "CudaTensor" : "Tensor", shape, device);
    Py_XDECREF(shape);
    Py_XDECREF(device);
    return repr;
}

PyGetSetDef mr_py_tensor_getset[] = {
    {"shape", (getter)tensor_get_shape, NULL, "shape as a tuple", NULL},
    {"dtype", (getter)tensor_get_dtype, NULL, "element type ('float32')", NULL},
    {"device", (getter)tensor_get_device, NULL, "where the data lives: 'cpu' or 'cuda:N'", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

/* ---- the host Tensor ----------------------------------------------------------------------- */

typedef struct {
    mr_py_tensor base;
    Py_ssize_t buf_shape[2], buf_strides[2];
    Py_ssize_t exports;
} TensorObject;

PyObject *mr_py_tensor_new_owned(mr_py_state *st, float *data, int ndim, const int64_t *shape) {
    TensorObject *t = PyObject_New(TensorObject, st->tensor_type);
    if (!t) {
        free(data);
        return NULL;
    }
    t->base.data = data;
    t->base.device = (DLDevice){kDLCPU, 0};
    mr_py_tensor_set_shape(&t->base, ndim, shape);
    t->exports = 0;
    for (int i = 0; i < ndim; i++) {
        t->buf_shape[i] = (Py_ssize_t)t->base.shape[i];
        t->buf_strides[i] = (Py_ssize_t)(t->base.strides[i] * (int64_t)sizeof(float));
    }
    return (PyObject *)t;
}

static void tensor_dealloc(TensorObject *t) {
    free(t->base.data);
    PyTypeObject *tp = Py_TYPE(t);
    PyObject_Free(t);
    Py_DECREF(tp);
}

static int tensor_getbuffer(TensorObject *t, Py_buffer *view, int flags) {
    (void)flags;
    view->buf = t->base.data;
    view->obj = (PyObject *)t;
    Py_INCREF(t);
    view->len = (Py_ssize_t)(mr_py_tensor_numel(&t->base) * (int64_t)sizeof(float));
    view->readonly = 0;
    view->itemsize = sizeof(float);
    view->format = "f";
    view->ndim = t->base.ndim;
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

static PyObject *tensor_numpy(TensorObject *t, PyObject *unused) {
    (void)unused;
    return PyArray_FromAny((PyObject *)t, NULL, 0, 0, 0, NULL);
}

static PyMethodDef tensor_methods[] = {
    MR_PY_TENSOR_DLPACK_METHODS,
    {"numpy", (PyCFunction)tensor_numpy, METH_NOARGS, "A NumPy array viewing the same memory."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot tensor_slots[] = {
    {Py_tp_dealloc, tensor_dealloc},
    {Py_tp_methods, tensor_methods},
    {Py_tp_getset, mr_py_tensor_getset},
    {Py_tp_repr, mr_py_tensor_repr},
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

static PyObject *tensor_from_array(PyObject *module, PyObject *arg) {
    PyArrayObject *a = mr_py_require_array(arg, NPY_FLOAT32, -1, "array");
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
    return mr_py_tensor_new_owned(mr_py_state_of(module), data, ndim, shape);
}

static PyMethodDef tensor_functions[] = {
    {"tensor_from_array", (PyCFunction)tensor_from_array, METH_O,
     "tensor_from_array(array)\nCopies a float32 1-D or 2-D array into a core Tensor (DLPack producer)."},
    {NULL, NULL, 0, NULL},
};

int mr_py_add_tensor(PyObject *module) {
    if (PyModule_AddFunctions(module, tensor_functions) < 0) return -1;
    return mr_py_add_type(module, &tensor_spec, "Tensor", &mr_py_state_of(module)->tensor_type);
}
