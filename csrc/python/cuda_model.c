/* CudaModel: a finished Model's weights uploaded to a GPU through mambaret._cuda's ABI table, its
 * forward (the arguments parsed as Model's are), and token ids taken from a DLPack producer. */
#include "py_common.h"
#include "py_cuda.h"

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
    int bad = mr_py_parse_device_pair(dev, &type, &id);
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
    mr_py_state *state;
    int device;
    mr_dtype dtype;
    mr_config cfg;
} CudaModelObject;

static int parse_compute_dtype(const char *s, mr_dtype *dtype) {
    static const char *const names[] = {"bfloat16", "float16", "float32"};
    static const int values[] = {MR_DTYPE_BF16, MR_DTYPE_F16, MR_DTYPE_F32};
    int v;
    if (mr_py_parse_choice(s, "dtype", names, values, 3, &v) < 0) return -1;
    *dtype = (mr_dtype)v;
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
    mr_py_state *st = PyType_GetModuleState(Py_TYPE(self));
    if (!st) return -1;
    const mr_model *cpu = mr_py_model_core(model_obj, st);
    if (!cpu) return -1;
    mr_dtype dtype;
    if (parse_compute_dtype(dtype_s, &dtype) < 0) return -1;
    const mr_cuda_api *api = mr_py_cuda_api();
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
    for (int64_t k = 1; s == MR_OK && k < c->n_layer; k++) {
        const float *gain = mr_model_exit_gain(cpu, k);
        if (gain) s = api->model_set_exit_gain(m, k, gain, c->d_model, &err);
    }
    if (s == MR_OK) s = api->model_finish(m, &err);
    if (s != MR_OK && m) {
        api->model_free(m);
        m = NULL;
    }
    Py_END_ALLOW_THREADS
    if (s) {
        mr_py_raise(&err);
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
"        stream=None, out=None, out_row=0, exit_layer=None)\n"
"--\n\n"
"Runs the backbone on the GPU over a packed batch. tokens: int32 NumPy array, or a CUDA tensor\n"
"(int32/int64, any DLPack producer) on this model's device; offsets: int64 NumPy array [B+1].\n"
"convert_to='numpy' copies the float32 result to the host (the one wait); 'dlpack'/'tensor'\n"
"returns a CudaTensor that stays on the GPU, or writes into `out` (a CudaTensor) from row\n"
"out_row. stream: the CUDA stream to queue on (a cudaStream_t as int; None: the default\n"
"stream). normalize: L2-normalise pooled rows. exit_layer=k (1-based) stops after block k and\n"
"pools through exit k's gain, as Model.forward does.");

static PyObject *cuda_model_forward(CudaModelObject *self, PyObject *args, PyObject *kwargs) {
    mr_py_forward_request req;
    if (mr_py_parse_forward(args, kwargs, MR_PY_ON_CUDA, 65536, &req) < 0) return NULL;
    PyArrayObject *tokens = NULL;
    device_ids dev = {0};
    PyObject *result = NULL;
    void *stream;
    if (!cuda_model_ready(self) || mr_py_parse_stream(req.stream, &stream) < 0) goto done;
    if (PyArray_Check(req.tokens)) {
        if (!(tokens = mr_py_require_array(req.tokens, NPY_INT32, 1, "tokens"))) goto done;
    } else if (PyObject_HasAttrString(req.tokens, "__dlpack__")) {
        if (take_device_ids(req.tokens, self->device, stream, &dev) < 0) goto done;
    } else {
        PyErr_Format(PyExc_TypeError, "tokens must be a NumPy int32 array or a CUDA tensor, got %s",
                     Py_TYPE(req.tokens)->tp_name);
        goto done;
    }
    const int64_t n_seqs = PyArray_DIM(req.offsets, 0) - 1, d = self->cfg.d_model;
    const int64_t n_tokens = tokens ? PyArray_DIM(tokens, 0) : dev.n;
    const int64_t rows = req.pooling == MR_POOL_ALL ? n_tokens : n_seqs;
    mr_cuda_forward_args a = {
        .tokens = tokens ? PyArray_DATA(tokens) : dev.data,
        .tokens_on_device = tokens == NULL,
        .tokens_int64 = dev.is_int64,
        .n_tokens = n_tokens,
        .offsets = PyArray_DATA(req.offsets),
        .n_seqs = n_seqs,
        .pooling = req.pooling,
        .max_tokens = req.max_tokens,
        .normalize = req.normalize,
        .stream = stream,
        .out_on_device = req.as_tensor,
        .exit_layer = req.exit_layer,
    };
    PyObject *target = NULL; /* what we return: a NumPy array or a CudaTensor */
    if (!req.as_tensor) {
        npy_intp dims[2] = {(npy_intp)rows, (npy_intp)d};
        target = PyArray_EMPTY(2, dims, NPY_FLOAT32, 0);
        if (!target) goto done;
        a.out = PyArray_DATA((PyArrayObject *)target);
    } else if (req.out != Py_None) {
        if (!PyObject_TypeCheck(req.out, self->state->cuda_tensor_type)) {
            PyErr_SetString(PyExc_TypeError, "out must be a mambaret._C.CudaTensor");
            goto done;
        }
        mr_py_tensor *o = &((mr_py_cuda_tensor *)req.out)->base;
        if (o->device.device_id != self->device || o->ndim != 2 || o->shape[1] != d || req.out_row < 0 ||
            req.out_row + rows > o->shape[0]) {
            PyErr_Format(PyExc_ValueError, "out (%lld x %lld on cuda:%d) cannot take %lld rows of %lld from row %lld",
                         (long long)o->shape[0], (long long)o->shape[1], o->device.device_id, (long long)rows,
                         (long long)d, req.out_row);
            goto done;
        }
        target = req.out;
        Py_INCREF(target);
        a.out = o->data + req.out_row * d;
    } else {
        target = mr_py_cuda_tensor_new(self->state, self->api, self->device, rows, d);
        if (!target) goto done;
        a.out = ((mr_py_cuda_tensor *)target)->base.data;
    }
    mr_error err = {0};
    mr_status s;
    Py_BEGIN_ALLOW_THREADS
    s = self->api->model_forward(self->model, &a, &err);
    Py_END_ALLOW_THREADS
    if (s == MR_OK && req.as_tensor) {
        mr_py_cuda_tensor *o = (mr_py_cuda_tensor *)target;
        s = self->api->event_record(self->device, o->ready, stream, &err); /* on the model's device */
        if (s == MR_OK && dev.owner) { /* the device ids must outlive the queued work reading them */
            if ((!o->keepalive && !(o->keepalive = PyList_New(0))) || PyList_Append(o->keepalive, dev.owner) < 0) {
                Py_DECREF(target);
                goto done;
            }
        }
    }
    if (s) {
        Py_DECREF(target);
        mr_py_raise(&err);
        goto done;
    }
    result = target;
done:
    Py_XDECREF(tokens);
    Py_XDECREF(dev.owner);
    mr_py_forward_request_release(&req);
    return result;
}

static PyObject *cuda_model_empty(CudaModelObject *self, PyObject *arg) {
    if (!cuda_model_ready(self)) return NULL;
    long long rows;
    if (mr_py_parse_count(arg, "rows", &rows) < 0) return NULL;
    return mr_py_cuda_tensor_new(self->state, self->api, self->device, rows, self->cfg.d_model);
}

static PyObject *cuda_model_workspace_bytes(CudaModelObject *self, PyObject *arg) {
    if (!cuda_model_ready(self)) return NULL;
    long long tokens;
    if (mr_py_parse_count(arg, "tokens", &tokens) < 0) return NULL;
    return PyLong_FromLongLong(self->api->model_workspace_bytes(self->model, tokens));
}

static PyObject *cuda_model_get_info(CudaModelObject *self, void *closure) {
    (void)closure;
    if (!cuda_model_ready(self)) return NULL;
    char desc[256] = "";
    mr_error err = {0};
    if (self->api->device_description(self->device, desc, sizeof desc, &err)) return mr_py_raise(&err);
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

int mr_py_add_cuda_model(PyObject *module) { return mr_py_add_type(module, &cuda_model_spec, "CudaModel", NULL); }
