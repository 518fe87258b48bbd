/* flat_search: exact inner-product top-k over a list of float32 segments; the core is mr_index.c. */
#include "py_common.h"

#include <string.h>

#include "search/mr_index.h"

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
        PyArrayObject *a = mr_py_require_array(PySequence_Fast_GET_ITEM(items, i), NPY_FLOAT32, 2, "a segment");
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
    if (mr_py_parse_threads(threads_obj, &threads) < 0) return NULL;
    if (k <= 0) {
        PyErr_Format(PyExc_ValueError, "k must be positive, got %lld", k);
        return NULL;
    }
    PyArrayObject *q = mr_py_require_array(qo, NPY_FLOAT32, 2, "queries");
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
        const mr_blas blas = mr_py_state_of(module)->blas; /* a copy: set_blas may run meanwhile */
        mr_error err = {0};
        mr_status s;
        Py_BEGIN_ALLOW_THREADS
        s = ref ? mr_flat_search_ref(&a, &err) : mr_flat_search(&blas, &a, &err);
        Py_END_ALLOW_THREADS
        if (s) mr_py_raise(&err);
        else result = PyTuple_Pack(2, (PyObject *)scores, (PyObject *)ids);
    }
    Py_DECREF(q);
    segment_list_free(&list);
    Py_XDECREF(scores);
    Py_XDECREF(ids);
    return result;
}

static PyMethodDef search_functions[] = {
    {"flat_search", (PyCFunction)(void (*)(void))flat_search, METH_VARARGS | METH_KEYWORDS,
     "flat_search(queries, segments, k, threads=1, reference=False) -> (scores, ids)\n"
     "Exact inner-product top-k of float32 queries [nq, dim] over a list of float32 [rows, dim]\n"
     "segments; ids are row positions across the segments. Sorted best first (ties: lower id),\n"
     "padded with (-inf, -1) when k exceeds the rows."},
    {NULL, NULL, 0, NULL},
};

int mr_py_add_search(PyObject *module) { return PyModule_AddFunctions(module, search_functions); }
