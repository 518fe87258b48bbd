/* forward(tokens, offsets, *, ...) as Model and CudaModel take it: one keyword table says which
 * model takes which keyword, so adding a keyword is one edit here. */
#include "py_common.h"

enum {
    ARG_POOLING, ARG_MAX_TOKENS, ARG_THREADS, ARG_NORMALIZE, ARG_CONVERT_TO, ARG_STREAM, ARG_OUT, ARG_OUT_ROW,
    ARG_EXIT_LAYER, ARG_COUNT
};

static char *kwlist[] = {"tokens", "offsets", "pooling", "max_tokens", "threads", "normalize", "convert_to",
                         "stream", "out", "out_row", "exit_layer", NULL};

/* Which models take each keyword-only argument (in kwlist order, after tokens and offsets). */
static const int taken_by[ARG_COUNT] = {
    [ARG_POOLING] = MR_PY_ON_CPU | MR_PY_ON_CUDA,
    [ARG_MAX_TOKENS] = MR_PY_ON_CPU | MR_PY_ON_CUDA,
    [ARG_THREADS] = MR_PY_ON_CPU,
    [ARG_NORMALIZE] = MR_PY_ON_CPU | MR_PY_ON_CUDA,
    [ARG_CONVERT_TO] = MR_PY_ON_CPU | MR_PY_ON_CUDA,
    [ARG_STREAM] = MR_PY_ON_CUDA,
    [ARG_OUT] = MR_PY_ON_CUDA,
    [ARG_OUT_ROW] = MR_PY_ON_CUDA,
    [ARG_EXIT_LAYER] = MR_PY_ON_CPU | MR_PY_ON_CUDA,
};

static int parse_pooling(PyObject *obj, mr_pooling *p) {
    static const char *const names[] = {"last", "mean", "all"};
    static const int values[] = {MR_POOL_LAST, MR_POOL_MEAN, MR_POOL_ALL};
    const char *s = PyUnicode_AsUTF8(obj);
    int v;
    if (!s || mr_py_parse_choice(s, "pooling", names, values, 3, &v) < 0) return -1;
    *p = (mr_pooling)v;
    return 0;
}

static int parse_convert_to(PyObject *obj, int *as_tensor) {
    static const char *const names[] = {"numpy", "dlpack", "tensor"};
    static const int values[] = {0, 1, 1};
    const char *s = PyUnicode_AsUTF8(obj);
    return s ? mr_py_parse_choice(s, "convert_to", names, values, 3, as_tensor) : -1;
}

static int parse_long_long(PyObject *obj, long long *out) {
    *out = PyLong_AsLongLong(obj);
    return *out == -1 && PyErr_Occurred() ? -1 : 0;
}

/* A given string argument must be a str, as PyArg_Parse's "s" demands. */
static int check_str(PyObject *obj, const char *name) {
    if (PyUnicode_Check(obj)) return 0;
    PyErr_Format(PyExc_TypeError, "forward() argument '%s' must be str, not %s", name, Py_TYPE(obj)->tp_name);
    return -1;
}

int mr_py_parse_forward(PyObject *args, PyObject *kwargs, mr_py_device_kind where, long long default_max_tokens,
                        mr_py_forward_request *req) {
    PyObject *tokens, *offsets, *given[ARG_COUNT] = {0};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|$OOOOOOOOO:forward", kwlist, &tokens, &offsets,
                                     &given[ARG_POOLING], &given[ARG_MAX_TOKENS], &given[ARG_THREADS],
                                     &given[ARG_NORMALIZE], &given[ARG_CONVERT_TO], &given[ARG_STREAM], &given[ARG_OUT],
                                     &given[ARG_OUT_ROW], &given[ARG_EXIT_LAYER]))
        return -1;
    for (int i = 0; i < ARG_COUNT; i++)
        if (given[i] && !(taken_by[i] & where)) {
            PyErr_Format(PyExc_TypeError, "forward() got an unexpected keyword argument '%s'", kwlist[i + 2]);
            return -1;
        }
    *req = (mr_py_forward_request){
        .tokens = tokens, .pooling = MR_POOL_LAST, .max_tokens = default_max_tokens, .threads = 1,
        .stream = Py_None, .out = Py_None,
    };
    if (given[ARG_POOLING] && (check_str(given[ARG_POOLING], "pooling") || parse_pooling(given[ARG_POOLING], &req->pooling)))
        return -1;
    if (given[ARG_CONVERT_TO] &&
        (check_str(given[ARG_CONVERT_TO], "convert_to") || parse_convert_to(given[ARG_CONVERT_TO], &req->as_tensor)))
        return -1;
    if (mr_py_parse_threads(given[ARG_THREADS], &req->threads) < 0) return -1;
    if (given[ARG_NORMALIZE] && (req->normalize = PyObject_IsTrue(given[ARG_NORMALIZE])) < 0) return -1;
    if (given[ARG_MAX_TOKENS] && parse_long_long(given[ARG_MAX_TOKENS], &req->max_tokens) < 0) return -1;
    if (given[ARG_OUT_ROW] && parse_long_long(given[ARG_OUT_ROW], &req->out_row) < 0) return -1;
    if (given[ARG_EXIT_LAYER] && given[ARG_EXIT_LAYER] != Py_None) { /* None: every layer */
        if (PyBool_Check(given[ARG_EXIT_LAYER]) || !PyLong_Check(given[ARG_EXIT_LAYER])) {
            PyErr_Format(PyExc_ValueError, "exit_layer must be an int or None, got %R", given[ARG_EXIT_LAYER]);
            return -1;
        }
        if (parse_long_long(given[ARG_EXIT_LAYER], &req->exit_layer) < 0) return -1;
        if (req->exit_layer < 1) {
            PyErr_Format(PyExc_ValueError, "exit_layer must be at least 1 (layers count from 1), got %lld",
                         req->exit_layer);
            return -1;
        }
    }
    if (given[ARG_STREAM]) req->stream = given[ARG_STREAM];
    if (given[ARG_OUT]) req->out = given[ARG_OUT];
    if (req->max_tokens <= 0) {
        PyErr_Format(PyExc_ValueError, "max_tokens must be positive, got %lld", req->max_tokens);
        return -1;
    }
    if (!(req->offsets = mr_py_require_array(offsets, NPY_INT64, 1, "offsets"))) return -1;
    if (PyArray_DIM(req->offsets, 0) < 1) {
        PyErr_SetString(PyExc_ValueError, "offsets must hold at least one entry (0 for an empty batch)");
        Py_CLEAR(req->offsets);
        return -1;
    }
    return 0;
}

void mr_py_forward_request_release(mr_py_forward_request *req) { Py_CLEAR(req->offsets); }
