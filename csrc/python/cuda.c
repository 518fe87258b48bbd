/* The bridge to the optional mambaret._cuda: its C ABI table (mr_cuda.h), imported on first use so
 * that this module loads where libcudart and libcublas are absent, stream arguments, and the
 * CudaTensor: a float32 result in device memory that leaves through DLPack with the stream
 * handshake. Nothing here links against CUDA. */
#include "py_common.h"
#include "py_cuda.h"

#include <string.h>

static const mr_cuda_api *g_cuda_api; /* process-wide, like the capsule it comes from */

const mr_cuda_api *mr_py_cuda_api(void) {
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

int mr_py_parse_stream(PyObject *obj, void **stream) {
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

/* ---- CudaTensor ---------------------------------------------------------------------------- */

PyObject *mr_py_cuda_tensor_new(mr_py_state *st, const mr_cuda_api *api, int device, int64_t rows, int64_t cols) {
    mr_error err = {0};
    void *data = NULL, *ready = NULL;
    size_t bytes = (size_t)rows * (size_t)cols * sizeof(float);
    if (api->malloc_device(device, bytes, &data, &err)) return mr_py_raise(&err);
    if (api->event_create(device, &ready, &err)) {
        api->free_device(device, data);
        return mr_py_raise(&err);
    }
    mr_py_cuda_tensor *t = PyObject_New(mr_py_cuda_tensor, st->cuda_tensor_type);
    if (!t) {
        api->event_destroy(ready);
        api->free_device(device, data);
        return NULL;
    }
    t->base.data = data;
    t->base.device = (DLDevice){kDLCUDA, device};
    mr_py_tensor_set_shape(&t->base, 2, (int64_t[2]){rows, cols});
    t->ready = ready;
    t->keepalive = NULL;
    t->view_of = NULL;
    return (PyObject *)t;
}

static int interpreter_finalizing(void) {
#if PY_VERSION_HEX >= 0x030D0000
    return Py_IsFinalizing();
#else
    return _Py_IsFinalizing();
#endif
}

static void cuda_tensor_dealloc(mr_py_cuda_tensor *t) {
    const mr_cuda_api *api = g_cuda_api; /* set: a CudaTensor only exists once it was imported */
    if (api && !t->view_of) {
        /* cudaFree waits for the whole device: other Python threads run meanwhile (unless the
         * interpreter is shutting down, when giving up the GIL is not safe) */
        PyThreadState *saved = interpreter_finalizing() ? NULL : PyEval_SaveThread();
        api->free_device(t->base.device.device_id, t->base.data);
        api->event_destroy(t->ready);
        if (saved) PyEval_RestoreThread(saved);
    }
    Py_XDECREF(t->keepalive); /* after the free: the queued work reading these has finished */
    Py_XDECREF(t->view_of);
    PyTypeObject *tp = Py_TYPE(t);
    PyObject_Free(t);
    Py_DECREF(tp);
}

/* Row i as a 1-D CudaTensor sharing this one's memory and readiness (a single input's
 * embedding, shaped [d] as on the CPU). */
static PyObject *cuda_tensor_row(mr_py_cuda_tensor *t, PyObject *arg) {
    long long i = PyLong_AsLongLong(arg);
    if (i == -1 && PyErr_Occurred()) return NULL;
    if (t->base.ndim != 2) {
        PyErr_SetString(PyExc_ValueError, "row() needs a 2-D tensor");
        return NULL;
    }
    if (i < 0 || i >= t->base.shape[0]) {
        PyErr_Format(PyExc_IndexError, "row %lld is out of range for %lld rows", i, (long long)t->base.shape[0]);
        return NULL;
    }
    mr_py_cuda_tensor *owner = t; /* views are 1-D, so t owns its memory */
    mr_py_cuda_tensor *row = PyObject_New(mr_py_cuda_tensor, Py_TYPE(t));
    if (!row) return NULL;
    row->base.data = t->base.data + i * t->base.strides[0];
    row->base.device = t->base.device;
    mr_py_tensor_set_shape(&row->base, 1, &t->base.shape[1]);
    row->ready = t->ready;
    row->keepalive = NULL;
    row->view_of = (PyObject *)owner;
    Py_INCREF(owner);
    return (PyObject *)row;
}

/* The consumer's stream waits for ours. None means the legacy default stream; -1 asks for no
 * synchronisation; 0 is ambiguous and disallowed by the DLPack protocol. */
int mr_py_cuda_tensor_handshake(mr_py_tensor *base, PyObject *stream) {
    mr_py_cuda_tensor *t = (mr_py_cuda_tensor *)base;
    void *consumer = (void *)(uintptr_t)1;
    if (stream != Py_None) {
        long long v = PyLong_AsLongLong(stream);
        if (v == -1 && PyErr_Occurred()) return -1;
        if (v == 0) {
            PyErr_SetString(PyExc_ValueError, "stream=0 is ambiguous for CUDA; pass 1 (legacy default) or 2 (per-thread)");
            return -1;
        }
        if (v == -1) return 0;
        if (v < 0) {
            PyErr_Format(PyExc_ValueError, "invalid stream %lld", v);
            return -1;
        }
        consumer = (void *)(uintptr_t)v;
    }
    mr_error err = {0};
    if (g_cuda_api->stream_wait_event(t->base.device.device_id, consumer, t->ready, &err)) {
        mr_py_raise(&err);
        return -1;
    }
    return 0;
}

static PyObject *cuda_tensor_numpy(mr_py_cuda_tensor *t, PyObject *unused) {
    (void)unused;
    npy_intp dims[2] = {(npy_intp)t->base.shape[0], (npy_intp)t->base.shape[1]};
    PyArrayObject *arr = (PyArrayObject *)PyArray_EMPTY(t->base.ndim, dims, NPY_FLOAT32, 0);
    if (!arr) return NULL;
    mr_error err = {0};
    mr_status s;
    size_t bytes = (size_t)mr_py_tensor_numel(&t->base) * sizeof(float);
    Py_BEGIN_ALLOW_THREADS
    s = g_cuda_api->copy_to_host(t->base.device.device_id, PyArray_DATA(arr), t->base.data, bytes, t->ready, &err);
    Py_END_ALLOW_THREADS
    if (s) {
        Py_DECREF(arr);
        return mr_py_raise(&err);
    }
    return (PyObject *)arr;
}

static PyMethodDef cuda_tensor_methods[] = {
    MR_PY_TENSOR_DLPACK_METHODS,
    {"numpy", (PyCFunction)cuda_tensor_numpy, METH_NOARGS, "A host copy as a NumPy array (waits for the result)."},
    {"row", (PyCFunction)cuda_tensor_row, METH_O,
     "row(i)\nRow i of a 2-D tensor as a 1-D CudaTensor sharing its memory (no copy)."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot cuda_tensor_slots[] = {
    {Py_tp_dealloc, cuda_tensor_dealloc},
    {Py_tp_methods, cuda_tensor_methods},
    {Py_tp_getset, mr_py_tensor_getset},
    {Py_tp_repr, mr_py_tensor_repr},
    {Py_tp_doc, "A float32 result in GPU memory; hand it to torch or CuPy with their from_dlpack."},
    {0, NULL},
};

static PyType_Spec cuda_tensor_spec = {
    .name = "mambaret._C.CudaTensor",
    .basicsize = sizeof(mr_py_cuda_tensor),
    .flags = Py_TPFLAGS_DEFAULT,
    .slots = cuda_tensor_slots,
};

int mr_py_add_cuda(PyObject *module) {
    if (mr_py_add_type(module, &cuda_tensor_spec, "CudaTensor", &mr_py_state_of(module)->cuda_tensor_type) < 0)
        return -1;
    return mr_py_add_cuda_model(module);
}
