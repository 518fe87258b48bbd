/* The int8 kernels for the tests and benchmarks: the int8 linear on a named path and its
 * reference twin, per-token quantization, the Hadamard rotation and its twin, and which paths
 * this CPU runs. */
#include "py_common.h"

#include <stdlib.h>
#include <string.h>

#include "gemm/mr_linear_int8.h"
#include "ops/mr_hadamard.h"

static int parse_kernel(const char *name, mr_int8_kernel *out) {
    const int k = mr_int8_kernel_parse(name);
    if (k == -2) {
        PyErr_Format(PyExc_ValueError, "int8 kernel must be auto, portable, avx2, avxvnni or avx512vnni, got '%s'", name);
        return -1;
    }
    *out = (mr_int8_kernel)k;
    return 0;
}

/* linear_int8(a, weight, scales, bias=None, out=None, kernel='auto') */
static PyObject *op_linear_int8(PyObject *m, PyObject *args, PyObject *kwargs) {
    (void)m;
    static char *kwlist[] = {"a", "weight", "scales", "bias", "out", "kernel", NULL};
    PyObject *ao, *wo, *so, *bo = Py_None, *oo = Py_None;
    const char *kernel_s = "auto";
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOO|OOs:linear_int8", kwlist, &ao, &wo, &so, &bo, &oo, &kernel_s))
        return NULL;
    mr_int8_kernel kernel = MR_I8_AUTO;
    const int reference = strcmp(kernel_s, "reference") == 0;
    if (!reference && parse_kernel(kernel_s, &kernel) < 0) return NULL;
    PyArrayObject *a = NULL, *w = NULL, *s = NULL, *b = NULL, *out = NULL;
    PyObject *result = NULL;
    void *scratch = NULL;
    mr_int8_linear L = {0};
    if (!(a = mr_py_require_array(ao, NPY_FLOAT32, 2, "a")) || !(w = mr_py_require_array(wo, NPY_INT8, 2, "weight")) ||
        !(s = mr_py_require_array(so, NPY_FLOAT32, 1, "scales")))
        goto done;
    const int64_t T = PyArray_DIM(a, 0), K = PyArray_DIM(a, 1), N = PyArray_DIM(w, 0);
    if (PyArray_DIM(w, 1) != K || PyArray_DIM(s, 0) != N) {
        PyErr_SetString(PyExc_ValueError, "weight must be [N, K] for a [T, K] and scales [N]");
        goto done;
    }
    if (bo != Py_None) {
        if (!(b = mr_py_require_array(bo, NPY_FLOAT32, 1, "bias"))) goto done;
        if (PyArray_DIM(b, 0) != N) {
            PyErr_SetString(PyExc_ValueError, "bias must be [N]");
            goto done;
        }
    }
    const int accumulate = oo != Py_None;
    if (accumulate) {
        PyArrayObject *given = mr_py_require_array(oo, NPY_FLOAT32, 2, "out");
        if (!given) goto done;
        if (PyArray_DIM(given, 0) != T || PyArray_DIM(given, 1) != N) {
            Py_DECREF(given);
            PyErr_SetString(PyExc_ValueError, "out must be [T, N]");
            goto done;
        }
        out = (PyArrayObject *)PyArray_NewCopy(given, NPY_CORDER);
        Py_DECREF(given);
    } else {
        npy_intp dims[2] = {(npy_intp)T, (npy_intp)N};
        out = (PyArrayObject *)PyArray_ZEROS(2, dims, NPY_FLOAT32, 0);
    }
    if (!out) goto done;
    const float *bias = b ? PyArray_DATA(b) : NULL;
    mr_error err = {0};
    if (reference) {
        Py_BEGIN_ALLOW_THREADS
        mr_linear_int8_f32_ref(PyArray_DATA(w), PyArray_DATA(s), N, K, T, PyArray_DATA(a), K, bias, accumulate,
                               PyArray_DATA(out), N);
        Py_END_ALLOW_THREADS
    } else {
        if (mr_int8_linear_init(&L, PyArray_DATA(w), PyArray_DATA(s), N, K, &err)) {
            mr_py_raise(&err);
            goto done;
        }
        if (!(scratch = malloc((size_t)mr_int8_scratch_bytes(T, K)))) {
            PyErr_NoMemory();
            goto done;
        }
        mr_status st;
        Py_BEGIN_ALLOW_THREADS
        st = mr_linear_int8_f32_with(kernel, &L, T, PyArray_DATA(a), K, bias, accumulate, PyArray_DATA(out), N, scratch,
                                     &err);
        Py_END_ALLOW_THREADS
        if (st) {
            mr_py_raise(&err);
            goto done;
        }
    }
    result = (PyObject *)out;
    out = NULL;
done:
    mr_int8_linear_free(&L);
    free(scratch);
    Py_XDECREF(a);
    Py_XDECREF(w);
    Py_XDECREF(s);
    Py_XDECREF(b);
    Py_XDECREF(out);
    return result;
}

/* quantize_rows_int8(a) -> (q int8 [T, K], scales float32 [T]) */
static PyObject *op_quantize_rows_int8(PyObject *m, PyObject *arg) {
    (void)m;
    PyArrayObject *a = mr_py_require_array(arg, NPY_FLOAT32, 2, "a");
    if (!a) return NULL;
    const int64_t T = PyArray_DIM(a, 0), K = PyArray_DIM(a, 1);
    npy_intp qd[2] = {(npy_intp)T, (npy_intp)K}, sd[1] = {(npy_intp)T};
    PyArrayObject *q = (PyArrayObject *)PyArray_ZEROS(2, qd, NPY_INT8, 0);
    PyArrayObject *s = (PyArrayObject *)PyArray_ZEROS(1, sd, NPY_FLOAT32, 0);
    if (!q || !s) {
        Py_DECREF(a);
        Py_XDECREF(q);
        Py_XDECREF(s);
        return NULL;
    }
    mr_quantize_rows_i8(PyArray_DATA(a), K, T, K, PyArray_DATA(q), K, PyArray_DATA(s), 0);
    Py_DECREF(a);
    return Py_BuildValue("(NN)", q, s);
}

/* hadamard(x, block, signs=None, reference=False) -> rotated copy of x [T, n] */
static PyObject *op_hadamard(PyObject *m, PyObject *args, PyObject *kwargs) {
    (void)m;
    static char *kwlist[] = {"x", "block", "signs", "reference", NULL};
    PyObject *xo, *so = Py_None;
    long long block;
    int reference = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OL|Op:hadamard", kwlist, &xo, &block, &so, &reference)) return NULL;
    PyArrayObject *x = mr_py_require_array(xo, NPY_FLOAT32, 2, "x"), *s = NULL, *out = NULL;
    if (!x) return NULL;
    const int64_t T = PyArray_DIM(x, 0), n = PyArray_DIM(x, 1);
    if (!mr_hadamard_block_ok(n, block)) {
        PyErr_Format(PyExc_ValueError, "block %lld must be a power of two dividing %lld", block, (long long)n);
        goto done;
    }
    if (so != Py_None) {
        if (!(s = mr_py_require_array(so, NPY_INT8, 1, "signs"))) goto done;
        if (PyArray_DIM(s, 0) != n) {
            PyErr_SetString(PyExc_ValueError, "signs must have one value per column");
            goto done;
        }
    }
    out = (PyArrayObject *)PyArray_NewCopy(x, NPY_CORDER);
    if (!out) goto done;
    const int8_t *signs = s ? PyArray_DATA(s) : NULL;
    if (reference)
        mr_hadamard_rows_f32_ref(PyArray_DATA(x), n, T, n, block, signs, PyArray_DATA(out), n);
    else
        mr_hadamard_rows_f32(PyArray_DATA(out), n, T, n, block, signs);
done:
    Py_DECREF(x);
    Py_XDECREF(s);
    return (PyObject *)out;
}

/* int8_kernels() -> {"portable": True, "avx2": ..., "avxvnni": ..., "avx512vnni": ..., "best": name, "path": text} */
static PyObject *int8_kernels(PyObject *m, PyObject *unused) {
    (void)m;
    (void)unused;
    PyObject *d = PyDict_New();
    for (int k = 0; d && k < MR_I8_COUNT; k++)
        if (PyDict_SetItemString(d, mr_int8_kernel_name((mr_int8_kernel)k),
                                 mr_int8_kernel_available((mr_int8_kernel)k) ? Py_True : Py_False) < 0)
            Py_CLEAR(d);
    PyObject *best = d ? PyUnicode_FromString(mr_int8_kernel_name(mr_int8_kernel_best())) : NULL;
    PyObject *path = best ? PyUnicode_FromString(mr_int8_path()) : NULL;
    if (!path || PyDict_SetItemString(d, "best", best) < 0 || PyDict_SetItemString(d, "path", path) < 0) Py_CLEAR(d);
    Py_XDECREF(best);
    Py_XDECREF(path);
    return d;
}

/* set_int8_kernel(name) -> previous: the model's int8 kernel for the rest of the process ("auto": the dispatch's) */
static PyObject *set_int8_kernel(PyObject *m, PyObject *arg) {
    (void)m;
    const char *name = PyUnicode_Check(arg) ? PyUnicode_AsUTF8(arg) : NULL;
    if (!name) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "set_int8_kernel takes a kernel name");
        return NULL;
    }
    mr_int8_kernel k;
    if (parse_kernel(name, &k) < 0) return NULL;
    if (k != MR_I8_AUTO && !mr_int8_kernel_available(k)) {
        PyErr_Format(PyExc_ValueError, "the int8 kernel '%s' does not run on this CPU", name);
        return NULL;
    }
    const mr_int8_kernel previous = mr_int8_set_kernel(k);
    return PyUnicode_FromString(previous == MR_I8_AUTO ? "auto" : mr_int8_kernel_name(previous));
}

static PyMethodDef int8_functions[] = {
    {"set_int8_kernel", (PyCFunction)set_int8_kernel, METH_O,
     "set_int8_kernel(name) -> previous\nThe int8 kernel the models use from now on: auto (the dispatch's choice),\n"
     "portable, avx2, avxvnni or avx512vnni; for benchmarks and tests that compare paths in one process."},
    {"op_linear_int8", (PyCFunction)(void (*)(void))op_linear_int8, METH_VARARGS | METH_KEYWORDS,
     "op_linear_int8(a, weight, scales, bias=None, out=None, kernel='auto')\n"
     "out = per-token int8 a times int8 weight [N, K] with per-row scales (+ bias), added onto a copy of out\n"
     "when given; kernel: auto, portable, avx2, avxvnni, avx512vnni or reference."},
    {"op_quantize_rows_int8", (PyCFunction)op_quantize_rows_int8, METH_O,
     "op_quantize_rows_int8(a) -> (q, scales): per-row int8 in [-127, 127], scales = max|row| / 127."},
    {"op_hadamard", (PyCFunction)(void (*)(void))op_hadamard, METH_VARARGS | METH_KEYWORDS,
     "op_hadamard(x, block, signs=None, reference=False)\nEach row times blockdiag(H_block)/sqrt(block) . diag(signs)."},
    {"int8_kernels", (PyCFunction)int8_kernels, METH_NOARGS,
     "int8_kernels() -> dict: which int8 product paths this CPU runs, the one in use ('best') and its description."},
    {NULL, NULL, 0, NULL},
};

int mr_py_add_int8(PyObject *module) { return PyModule_AddFunctions(module, int8_functions); }
