/* mambaret._C: search over compressed vectors (binary and int8 codes) and rescoring. */
#include "py_common.h"

#include <string.h>

#include "base/mr_error.h"
#include "search/mr_codes_index.h"

static int parse_kernel(const char *name, mr_isa *kernel, int *reference) {
    *reference = strcmp(name, "reference") == 0;
    const int isa = *reference ? MR_ISA_AUTO : mr_isa_parse(name);
    if (isa < MR_ISA_AUTO) {
        PyErr_Format(PyExc_ValueError, "kernel must be auto, portable, avx2, avx512 or reference, got %s", name);
        return -1;
    }
    *kernel = (mr_isa)isa;
    return 0;
}

/* queries [nq, width] and a list of [rows, width] segments, all of the code dtype */
static PyObject *code_search(PyObject *args, PyObject *kwargs, int int8, const char *format) {
    static char *kwlist[] = {"queries", "segments", "k", "threads", "kernel", NULL};
    PyObject *qo, *so;
    long long k;
    int threads = 1, reference;
    const char *kernel_name = "auto";
    mr_isa kernel;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, format, kwlist, &qo, &so, &k, &threads, &kernel_name)) return NULL;
    if (mr_py_check_threads(threads) < 0 || parse_kernel(kernel_name, &kernel, &reference) < 0) return NULL;
    if (k <= 0) {
        PyErr_Format(PyExc_ValueError, "k must be positive, got %lld", k);
        return NULL;
    }
    const int dtype = int8 ? NPY_INT8 : NPY_UINT8;
    PyArrayObject *q = mr_py_require_array(qo, dtype, 2, "queries");
    if (!q) return NULL;
    PyObject *items = PySequence_Fast(so, "segments must be a list of [rows, width] code arrays");
    if (!items) {
        Py_DECREF(q);
        return NULL;
    }
    const Py_ssize_t n = PySequence_Fast_GET_SIZE(items);
    const int64_t nq = PyArray_DIM(q, 0), width = PyArray_DIM(q, 1);
    mr_code_segment *segments = PyMem_Calloc((size_t)(n > 0 ? n : 1), sizeof *segments);
    PyArrayObject *scores = NULL, *ids = NULL;
    PyObject *result = NULL;
    if (!segments) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        /* the list holds its arrays alive for the whole call */
        PyArrayObject *seg = mr_py_require_array(PySequence_Fast_GET_ITEM(items, i), dtype, 2, "a segment");
        if (!seg) goto done;
        Py_DECREF(seg);
        if (PyArray_DIM(seg, 1) != width) {
            PyErr_Format(PyExc_ValueError, "segment %zd has %lld bytes per code, the queries have %lld", i,
                         (long long)PyArray_DIM(seg, 1), (long long)width);
            goto done;
        }
        segments[i].codes = (const uint8_t *)PyArray_DATA(seg);
        segments[i].rows = PyArray_DIM(seg, 0);
    }
    npy_intp dims[2] = {(npy_intp)nq, (npy_intp)k};
    scores = (PyArrayObject *)PyArray_SimpleNew(2, dims, NPY_FLOAT32);
    ids = scores ? (PyArrayObject *)PyArray_SimpleNew(2, dims, NPY_INT64) : NULL;
    if (!ids) goto done;
    mr_code_search_args a = {
        .queries = (const uint8_t *)PyArray_DATA(q), .nq = nq, .width = width, .segments = segments,
        .n_segments = n, .k = k, .threads = threads, .kernel = kernel,
        .out_scores = (float *)PyArray_DATA(scores), .out_ids = (int64_t *)PyArray_DATA(ids),
    };
    mr_error err = {0};
    mr_status s;
    Py_BEGIN_ALLOW_THREADS
    if (int8) s = reference ? mr_int8_search_ref(&a, &err) : mr_int8_search(&a, &err);
    else s = reference ? mr_hamming_search_ref(&a, &err) : mr_hamming_search(&a, &err);
    Py_END_ALLOW_THREADS
    if (s) mr_py_raise(&err);
    else result = PyTuple_Pack(2, (PyObject *)scores, (PyObject *)ids);
done:
    PyMem_Free(segments);
    Py_DECREF(items);
    Py_DECREF(q);
    Py_XDECREF(scores);
    Py_XDECREF(ids);
    return result;
}

static PyObject *hamming_search(PyObject *module, PyObject *args, PyObject *kwargs) {
    (void)module;
    return code_search(args, kwargs, 0, "OOL|is:hamming_search");
}

static PyObject *int8_search(PyObject *module, PyObject *args, PyObject *kwargs) {
    (void)module;
    return code_search(args, kwargs, 1, "OOL|is:int8_search");
}

static PyObject *rescore(PyObject *module, PyObject *args, PyObject *kwargs) {
    (void)module;
    static char *kwlist[] = {"weights", "bias", "candidates", "vectors", "k", "threads", "reference", NULL};
    PyObject *wo, *bo, *co, *vo;
    long long k;
    int threads = 1, reference = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOOL|ip:rescore", kwlist, &wo, &bo, &co, &vo, &k, &threads,
                                     &reference))
        return NULL;
    if (mr_py_check_threads(threads) < 0) return NULL;
    if (k <= 0) {
        PyErr_Format(PyExc_ValueError, "k must be positive, got %lld", k);
        return NULL;
    }
    if (!PyArray_Check(vo)) {
        PyErr_SetString(PyExc_TypeError, "vectors must be a numpy.ndarray");
        return NULL;
    }
    const int int8 = PyArray_TYPE((PyArrayObject *)vo) == NPY_INT8;
    PyArrayObject *w = mr_py_require_array(wo, NPY_FLOAT32, 2, "weights");
    PyArrayObject *b = (w && bo != Py_None) ? mr_py_require_array(bo, NPY_FLOAT32, 1, "bias") : NULL;
    PyArrayObject *c = (w && (bo == Py_None || b)) ? mr_py_require_array(co, NPY_INT64, 2, "candidates") : NULL;
    PyArrayObject *v = c ? mr_py_require_array(vo, int8 ? NPY_INT8 : NPY_FLOAT32, 2, "vectors") : NULL;
    PyArrayObject *scores = NULL, *ids = NULL;
    PyObject *result = NULL;
    if (!v) goto done;
    const int64_t nq = PyArray_DIM(w, 0), dim = PyArray_DIM(w, 1);
    if (PyArray_DIM(v, 1) != dim || PyArray_DIM(c, 0) != nq || (b && PyArray_DIM(b, 0) != nq)) {
        PyErr_SetString(PyExc_ValueError, "rescore: weights, bias, candidates and vectors do not agree in shape");
        goto done;
    }
    npy_intp dims[2] = {(npy_intp)nq, (npy_intp)k};
    scores = (PyArrayObject *)PyArray_SimpleNew(2, dims, NPY_FLOAT32);
    ids = scores ? (PyArrayObject *)PyArray_SimpleNew(2, dims, NPY_INT64) : NULL;
    if (!ids) goto done;
    mr_rescore_args a = {
        .weights = (const float *)PyArray_DATA(w), .bias = b ? (const float *)PyArray_DATA(b) : NULL,
        .nq = nq, .dim = dim, .candidates = (const int64_t *)PyArray_DATA(c), .n_candidates = PyArray_DIM(c, 1),
        .vectors = PyArray_DATA(v), .rows = PyArray_DIM(v, 0), .vectors_int8 = int8, .k = k, .threads = threads,
        .out_scores = (float *)PyArray_DATA(scores), .out_ids = (int64_t *)PyArray_DATA(ids),
    };
    mr_error err = {0};
    mr_status s;
    Py_BEGIN_ALLOW_THREADS
    s = reference ? mr_rescore_ref(&a, &err) : mr_rescore(&a, &err);
    Py_END_ALLOW_THREADS
    if (s) mr_py_raise(&err);
    else result = PyTuple_Pack(2, (PyObject *)scores, (PyObject *)ids);
done:
    Py_XDECREF(w);
    Py_XDECREF(b);
    Py_XDECREF(c);
    Py_XDECREF(v);
    Py_XDECREF(scores);
    Py_XDECREF(ids);
    return result;
}

static PyObject *code_kernels(PyObject *module, PyObject *arg) {
    (void)module;
    const int int8 = PyObject_IsTrue(arg);
    if (int8 < 0) return NULL;
    PyObject *list = PyList_New(0);
    for (int i = 0; list && i < MR_ISA_COUNT; i++) {
        if (!mr_code_kernel_available((mr_isa)i, int8)) continue;
        PyObject *name = PyUnicode_FromString(mr_isa_name((mr_isa)i));
        if (!name || PyList_Append(list, name) < 0) Py_CLEAR(list);
        Py_XDECREF(name);
    }
    return list;
}

static PyObject *code_kernel_auto(PyObject *module, PyObject *args) {
    (void)module;
    int int8;
    long long width;
    if (!PyArg_ParseTuple(args, "pL:code_kernel_auto", &int8, &width)) return NULL;
    return PyUnicode_FromString(mr_isa_name(mr_code_kernel_auto(int8, width)));
}

static PyMethodDef search_codes_methods[] = {
    {"code_kernel_auto", (PyCFunction)code_kernel_auto, METH_VARARGS,
     "code_kernel_auto(int8, width) -> name of the kernel kernel='auto' runs for codes of that kind and width (bytes)."},
    {"hamming_search", (PyCFunction)(void (*)(void))hamming_search, METH_VARARGS | METH_KEYWORDS,
     "hamming_search(queries, segments, k, threads=1, kernel='auto') -> (scores, ids)\n"
     "Top-k of packed-bit uint8 codes [nq, width] over uint8 [rows, width] segments by Hamming\n"
     "distance; score = 8 * width - 2 * distance, best first (ties: lower id), (-inf, -1) padding.\n"
     "kernel: auto, portable, avx2, avx512 (VPOPCNTDQ) or reference."},
    {"int8_search", (PyCFunction)(void (*)(void))int8_search, METH_VARARGS | METH_KEYWORDS,
     "int8_search(queries, segments, k, threads=1, kernel='auto') -> (scores, ids)\n"
     "Top-k by the integer inner product of int8 codes [nq, dim] over int8 [rows, dim] segments."},
    {"rescore", (PyCFunction)(void (*)(void))rescore, METH_VARARGS | METH_KEYWORDS,
     "rescore(weights, bias, candidates, vectors, k, threads=1, reference=False) -> (scores, positions)\n"
     "Scores bias[q] + weights[q] . vectors[p] (float32 or int8 vectors) for the candidate positions\n"
     "of each query (-1: none) and keeps the k best."},
    {"code_kernels", (PyCFunction)code_kernels, METH_O,
     "code_kernels(int8) -> list of the code-search kernels this CPU runs."},
    {NULL, NULL, 0, NULL},
};

int mr_py_add_search_codes(PyObject *module) { return PyModule_AddFunctions(module, search_codes_methods); }
