/* Model: a backbone held by the C core (its architecture from the config, Mamba-1 by default).
 * Its weights arrive one checkpoint tensor at a time (set_tensor), finish() freezes them, forward() runs a packed batch with the GIL released. */
#include "py_common.h"

#include <math.h>
#include "models/mr_quant.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    PyObject_HEAD
    mr_model *model;
    mr_py_state *state;
} ModelObject;

const mr_model *mr_py_model_core(PyObject *obj, mr_py_state *st) {
    if (!PyObject_TypeCheck(obj, st->model_type)) {
        PyErr_SetString(PyExc_TypeError, "model must be a mambaret._C.Model");
        return NULL;
    }
    const mr_model *m = ((ModelObject *)obj)->model;
    if (!m || !mr_model_is_finished(m)) {
        PyErr_SetString(PyExc_ValueError, "the Model must be complete (finish() called) before it goes to the GPU");
        return NULL;
    }
    return m;
}

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

/* An optional float; NaN passes through to the architecture's check, which names the field. */
static int config_float(PyObject *cfg, const char *key, double *out) {
    PyObject *v = PyDict_GetItemString(cfg, key); /* borrowed */
    if (!v) return 0;
    if (!PyFloat_Check(v) && !PyLong_Check(v)) {
        PyErr_Format(PyExc_ValueError, "config '%s' must be a number, got %s", key, Py_TYPE(v)->tp_name);
        return -1;
    }
    double x = PyFloat_AsDouble(v);
    if (x == -1.0 && PyErr_Occurred()) return -1;
    *out = x;
    return 0;
}

/* An optional pair of numbers, such as time_step_limit (min, max). */
static int config_pair(PyObject *cfg, const char *key, double out[2]) {
    PyObject *v = PyDict_GetItemString(cfg, key); /* borrowed */
    if (!v) return 0;
    PyObject *seq = PySequence_Fast(v, "");
    if (!seq || PySequence_Fast_GET_SIZE(seq) != 2) {
        Py_XDECREF(seq);
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "config '%s' must be a pair of numbers (min, max)", key);
        return -1;
    }
    for (int i = 0; i < 2; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        if (!PyFloat_Check(item) && !PyLong_Check(item)) {
            Py_DECREF(seq);
            PyErr_Format(PyExc_ValueError, "config '%s' must be a pair of numbers (min, max)", key);
            return -1;
        }
        out[i] = PyFloat_AsDouble(item);
    }
    Py_DECREF(seq);
    return PyErr_Occurred() ? -1 : 0;
}

static int model_init(ModelObject *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"config", NULL};
    PyObject *cfg;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!:Model", kwlist, &PyDict_Type, &cfg)) return -1;
    mr_config c = {0};
    int64_t use_bias = 0, use_conv_bias = 1, int8 = 0;
    if (config_int(cfg, "hidden_size", &c.d_model, 1, 0) || config_int(cfg, "num_hidden_layers", &c.n_layer, 1, 0) ||
        config_int(cfg, "vocab_size", &c.vocab_size, 1, 0) ||
        config_int(cfg, "intermediate_size", &c.d_inner, 1, 0) || config_int(cfg, "state_size", &c.d_state, 1, 0) ||
        config_int(cfg, "conv_kernel", &c.d_conv, 1, 0) || config_int(cfg, "time_step_rank", &c.dt_rank, 0, 0) ||
        config_int(cfg, "use_bias", &use_bias, 0, 0) || config_int(cfg, "use_conv_bias", &use_conv_bias, 0, 1) ||
        config_int(cfg, "num_heads", &c.n_heads, 0, 0) || config_int(cfg, "head_dim", &c.head_dim, 0, 0) ||
        config_int(cfg, "n_groups", &c.n_groups, 0, 1) || config_int(cfg, "int8", &int8, 0, 0))
        return -1;
    double mixer_eps = 1e-6, dt_limit[2] = {0.0, INFINITY};
    if (config_float(cfg, "mixer_rms_eps", &mixer_eps) || config_pair(cfg, "time_step_limit", dt_limit)) return -1;
    c.mixer_eps = (float)mixer_eps;
    c.dt_min = (float)dt_limit[0];
    c.dt_max = (float)dt_limit[1];
    PyObject *arch = PyDict_GetItemString(cfg, "arch"); /* transformers' model_type; Mamba-1 without it */
    if (arch) {
        const char *name = PyUnicode_Check(arch) ? PyUnicode_AsUTF8(arch) : NULL;
        if (!name && PyErr_Occurred()) return -1;
        const int kind = mr_arch_parse(name);
        if (kind < 0) {
            PyErr_Format(PyExc_ValueError,
                         "config 'arch' must name an architecture the engine runs ('mamba', 'mamba2' or "
                         "'falcon_mamba'), got %R", arch);
            return -1;
        }
        c.arch = (mr_arch_kind)kind;
    }
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
    c.int8 = int8 != 0;
    mr_py_state *st = PyType_GetModuleState(Py_TYPE(self));
    if (!st) return -1;
    mr_error err = {0};
    mr_model *m = NULL;
    if (mr_model_create(&c, &st->blas, &m, &err)) {
        mr_py_raise(&err);
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

/* A tensor kind by its name in the table (csrc/models/mr_tensors.c), e.g. "mixer.in_proj.weight". */
static int parse_kind(const mr_model *m, PyObject *obj, mr_tensor_kind *kind) {
    const char *s = PyUnicode_AsUTF8(obj);
    if (!s) return -1;
    const int k = mr_tensor_find(mr_model_config(m), s);
    if (k >= 0) {
        *kind = (mr_tensor_kind)k;
        return 0;
    }
    for (int j = 0; j < MR_T_COUNT; j++)
        if (strcmp(s, mr_tensor_table[j].name) == 0) {
            PyErr_Format(PyExc_ValueError, "unexpected tensor '%s' (not part of a %s model)", s,
                         mr_arch_name(mr_model_config(m)->arch));
            return -1;
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
    if (parse_kind(self->model, kind_obj, &kind) < 0) return NULL;
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
    if (s) return mr_py_raise(&err);
    Py_RETURN_NONE;
}

static PyObject *model_set_exit_gain(ModelObject *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"layer", "array", "bfloat16", NULL};
    PyObject *arr_obj;
    long long layer;
    int bf16 = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "LO|p:set_exit_gain", kwlist, &layer, &arr_obj, &bf16)) return NULL;
    if (!model_ready(self)) return NULL;
    if (!PyArray_Check(arr_obj)) {
        PyErr_SetString(PyExc_TypeError, "array must be a numpy.ndarray");
        return NULL;
    }
    int type = PyArray_TYPE((PyArrayObject *)arr_obj);
    mr_dtype dtype;
    if (bf16 ? type != NPY_UINT16 : type != NPY_FLOAT32 && type != NPY_FLOAT16) {
        PyErr_SetString(PyExc_TypeError, "an exit head must be float32, float16 or bfloat16 (as uint16 bits)");
        return NULL;
    }
    dtype = bf16 ? MR_DTYPE_BF16 : type == NPY_FLOAT32 ? MR_DTYPE_F32 : MR_DTYPE_F16;
    PyArrayObject *arr = (PyArrayObject *)PyArray_FROM_OF(arr_obj, NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED);
    if (!arr) return NULL;
    if (PyArray_NDIM(arr) != 1) {
        PyErr_Format(PyExc_ValueError, "tensor 'exits.%lld.weight' must be a vector of hidden_size values, got %d "
                     "dimensions", layer, PyArray_NDIM(arr));
        Py_DECREF(arr);
        return NULL;
    }
    int64_t n = PyArray_DIM(arr, 0);
    mr_error err = {0};
    mr_status s = mr_model_set_exit_gain(self->model, layer, dtype, PyArray_DATA(arr), n, &err);
    Py_DECREF(arr);
    if (s) return mr_py_raise(&err);
    Py_RETURN_NONE;
}

/* set_int8_linear(kind, layer, weight, scales, signs=None, block=0): an int8 model's in_proj or
 * out_proj (models/mr_quant.h), with out_proj's input rotation. */
static PyObject *model_set_int8_linear(ModelObject *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"kind", "layer", "weight", "scales", "signs", "block", NULL};
    PyObject *kind_obj, *wo, *so, *go = Py_None;
    long long layer, block = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "ULOO|OL:set_int8_linear", kwlist, &kind_obj, &layer, &wo, &so, &go,
                                     &block))
        return NULL;
    if (!model_ready(self)) return NULL;
    mr_tensor_kind kind;
    if (parse_kind(self->model, kind_obj, &kind) < 0) return NULL;
    PyArrayObject *w = mr_py_require_array(wo, NPY_INT8, -1, "weight"), *s = NULL, *g = NULL;
    PyObject *result = NULL;
    if (!w || !(s = mr_py_require_array(so, NPY_FLOAT32, 1, "scales"))) goto done;
    if (go != Py_None && !(g = mr_py_require_array(go, NPY_INT8, 1, "signs"))) goto done;
    const int ndim = PyArray_NDIM(w);
    int64_t shape[2] = {ndim > 0 ? PyArray_DIM(w, 0) : 0, ndim > 1 ? PyArray_DIM(w, 1) : 0};
    mr_error err = {0};
    mr_status st;
    Py_BEGIN_ALLOW_THREADS
    st = mr_model_set_int8_linear(self->model, kind, layer, PyArray_DATA(w), ndim, shape, PyArray_DATA(s),
                                  PyArray_DIM(s, 0), g ? PyArray_DATA(g) : NULL, g ? PyArray_DIM(g, 0) : 0, block,
                                  &err);
    Py_END_ALLOW_THREADS
    if (st) {
        mr_py_raise(&err);
        goto done;
    }
    Py_INCREF(Py_None);
    result = Py_None;
done:
    Py_XDECREF(w);
    Py_XDECREF(s);
    Py_XDECREF(g);
    return result;
}

static PyObject *model_finish(ModelObject *self, PyObject *unused) {
    (void)unused;
    if (!model_ready(self)) return NULL;
    mr_error err = {0};
    if (mr_model_finish(self->model, &err)) return mr_py_raise(&err);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(model_forward_doc,
"forward(tokens, offsets, *, pooling='last', max_tokens=8192, threads=1, normalize=False, convert_to='numpy',\n"
"        exit_layer=None)\n"
"--\n\n"
"Runs the backbone over a packed batch: tokens int32[T] and offsets int64[B+1] (sequence i is\n"
"tokens[offsets[i]:offsets[i+1]]). Returns float32 [B, d] final-norm states at each sequence's\n"
"last token ('last') or their mean ('mean'), L2-normalised when normalize is true, or [T, d] for\n"
"every token ('all'), as a NumPy array or, with convert_to='tensor', a Tensor that exports through\n"
"DLPack without a copy. exit_layer=k (1-based) stops after block k and pools its output through\n"
"exit k's own gain (set_exit_gain) or else the final norm's.");

static PyObject *model_forward(ModelObject *self, PyObject *args, PyObject *kwargs) {
    mr_py_forward_request req;
    if (mr_py_parse_forward(args, kwargs, MR_PY_ON_CPU, 8192, &req) < 0) return NULL;
    PyObject *result = NULL;
    PyArrayObject *tokens = NULL;
    if (!model_ready(self) || !(tokens = mr_py_require_array(req.tokens, NPY_INT32, 1, "tokens"))) goto done;
    const mr_config *c = mr_model_config(self->model);
    mr_forward_args a = {
        .tokens = PyArray_DATA(tokens),
        .n_tokens = PyArray_DIM(tokens, 0),
        .offsets = PyArray_DATA(req.offsets),
        .n_seqs = PyArray_DIM(req.offsets, 0) - 1,
        .pooling = req.pooling,
        .max_tokens = req.max_tokens,
        .threads = req.threads,
        .normalize = req.normalize,
        .exit_layer = req.exit_layer,
    };
    int64_t shape[2] = {req.pooling == MR_POOL_ALL ? a.n_tokens : a.n_seqs, c->d_model};
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
        mr_py_raise(&err);
        goto done;
    }
    PyObject *tensor = mr_py_tensor_new_owned(self->state, out, 2, shape);
    if (!tensor) goto done;
    if (req.as_tensor) {
        result = tensor;
    } else {
        result = PyArray_FromAny(tensor, NULL, 0, 0, 0, NULL); /* a view that keeps the tensor alive */
        Py_DECREF(tensor);
    }
done:
    Py_XDECREF(tokens);
    mr_py_forward_request_release(&req);
    return result;
}

static PyObject *model_workspace_bytes(ModelObject *self, PyObject *arg) {
    if (!model_ready(self)) return NULL;
    long long tokens;
    if (mr_py_parse_count(arg, "tokens", &tokens) < 0) return NULL;
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
    return Py_BuildValue("{s:L,s:L,s:L,s:L,s:L,s:L,s:L,s:d,s:O,s:O,s:O}", "hidden_size", (long long)c->d_model,
                         "num_hidden_layers", (long long)c->n_layer, "vocab_size", (long long)c->vocab_size,
                         "intermediate_size", (long long)c->d_inner, "state_size", (long long)c->d_state,
                         "conv_kernel", (long long)c->d_conv, "time_step_rank", (long long)c->dt_rank,
                         "layer_norm_epsilon", (double)c->norm_eps, "use_bias", c->use_bias ? Py_True : Py_False,
                         "use_conv_bias", c->use_conv_bias ? Py_True : Py_False, "int8", c->int8 ? Py_True : Py_False);
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
    {"set_exit_gain", (PyCFunction)(void (*)(void))model_set_exit_gain, METH_VARARGS | METH_KEYWORDS,
     "set_exit_gain(layer, array, bfloat16=False)\nExit `layer`'s own gain vector [d] (checkpoint tensor "
     "exits.{layer}.weight), for layers 1..n_layer-1; exits without one pool through the final norm's."},
    {"set_int8_linear", (PyCFunction)(void (*)(void))model_set_int8_linear, METH_VARARGS | METH_KEYWORDS,
     "set_int8_linear(kind, layer, weight, scales, signs=None, block=0)\nAn int8 model's in_proj or out_proj: "
     "int8 weight [N, K], float32 scales [N], and out_proj's input rotation (int8 signs [K], power-of-two block)."},
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

/* The table of tensor kinds (csrc/models/mr_tensors.c) for the Python readers and writers of checkpoints. */
static PyObject *tensor_table(PyObject *module, PyObject *unused) {
    (void)module;
    (void)unused;
    static const char *const conditions[] = {[MR_ALWAYS] = "always", [MR_IF_BIAS] = "use_bias",
                                             [MR_IF_CONV_BIAS] = "use_conv_bias"};
    PyObject *rows = PyTuple_New(MR_T_COUNT);
    for (int k = 0; rows && k < MR_T_COUNT; k++) {
        const mr_tensor_info *t = &mr_tensor_table[k];
        PyObject *dims = PyTuple_New(t->ndim);
        for (int i = 0; dims && i < t->ndim; i++) {
            PyObject *name = PyUnicode_FromString(mr_dim_name(t->dims[i]));
            if (!name) Py_CLEAR(dims);
            else PyTuple_SET_ITEM(dims, i, name);
        }
        int n_archs = 0; /* the model_types that have this tensor */
        for (int a = 0; a < MR_ARCH_COUNT; a++) n_archs += (t->archs & MR_ARCH_BIT(a)) != 0;
        PyObject *archs = dims ? PyTuple_New(n_archs) : NULL;
        for (int a = 0, i = 0; archs && a < MR_ARCH_COUNT; a++) {
            if (!(t->archs & MR_ARCH_BIT(a))) continue;
            PyObject *name = PyUnicode_FromString(mr_arch_name((mr_arch_kind)a));
            if (!name) Py_CLEAR(archs);
            else PyTuple_SET_ITEM(archs, i++, name);
        }
        if (!archs) Py_CLEAR(dims);
        PyObject *row = dims ? Py_BuildValue("{s:i,s:s,s:O,s:s,s:N,s:O,s:N}", "kind", k, "name", t->name, "per_layer",
                                             t->per_layer ? Py_True : Py_False, "condition", conditions[t->condition],
                                             "dims", dims, "is_matrix", t->is_matrix ? Py_True : Py_False,
                                             "architectures", archs)
                             : NULL;
        if (!row) Py_CLEAR(rows);
        else PyTuple_SET_ITEM(rows, k, row);
    }
    return rows;
}

static PyMethodDef model_functions[] = {
    {"tensor_table", tensor_table, METH_NOARGS,
     "tensor_table() -> tuple of dicts\nThe tensors of a checkpoint, one per kind: name (transformers'\n"
     "MambaModel name; per-layer ones follow 'layers.{i}.'), per_layer, condition ('always', 'use_bias',\n"
     "'use_conv_bias'), dims (config field names, e.g. '2*intermediate_size'), is_matrix, architectures\n"
     "(the model_types that have it, e.g. ('mamba',))."},
    {NULL, NULL, 0, NULL},
};

int mr_py_add_model(PyObject *module) {
    if (PyModule_AddFunctions(module, model_functions) < 0) return -1;
    return mr_py_add_type(module, &model_spec, "Model", &mr_py_state_of(module)->model_type);
}
